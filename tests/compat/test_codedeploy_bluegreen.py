"""Blue/green CodeDeploy deployments moving real traffic: an nginx or HAProxy load balancer
whose upstream Slipway rewrites and reloads gracefully, agents as separate processes, and a
client sending requests through it in a loop the whole time — no request may fail while
traffic moves to the replacement hosts, nor while a failed deployment moves it back."""

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile

import pytest
from botocore.exceptions import ClientError

from conftest import Server, free_port
from test_codedeploy import BIN, agent_user, wait

START = """#!/bin/sh
mkdir -p "$AGENT_OUT"
cd "$(dirname "$0")/site"
setsid python3 -m http.server "$AGENT_PORT" --bind 127.0.0.1 >/dev/null 2>&1 < /dev/null &
echo $! > "$AGENT_OUT/server.pid"
"""
STOP = """#!/bin/sh
[ -f "$AGENT_OUT/server.pid" ] && kill "$(cat "$AGENT_OUT/server.pid")" 2>/dev/null
rm -f "$AGENT_OUT/server.pid"
exit 0
"""
VALIDATE = """#!/bin/sh
for i in $(seq 1 100); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$AGENT_PORT/', timeout=1)" 2>/dev/null && exit 0
  sleep 0.1
done
exit 1
"""
MAYBE_FAIL = """#!/bin/sh
[ -e "$AGENT_OUT/fail-$LIFECYCLE_EVENT" ] && { echo "failing $LIFECYCLE_EVENT on purpose" >&2; exit 4; }
exit 0
"""


def bundle(version):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        hooks = {
            "ApplicationStop": "stop.sh",
            "ApplicationStart": "start.sh",
            "ValidateService": "validate.sh",
            "AfterAllowTraffic": "maybe_fail.sh",
        }
        spec = "version: 0.0\nos: linux\nhooks:\n" + "".join(
            f"  {ev}:\n    - location: {loc}\n      timeout: 30\n" for ev, loc in hooks.items()
        )
        z.writestr("appspec.yml", spec)
        for name, text in [("start.sh", START), ("stop.sh", STOP), ("validate.sh", VALIDATE), ("maybe_fail.sh", MAYBE_FAIL)]:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            z.writestr(info, text)
        z.writestr("site/index.html", version)
    return buf.getvalue()


class Nginx:
    def __init__(self, workdir, backends):
        self.prefix = workdir / "nginx"
        self.prefix.mkdir()
        self.port = free_port()
        self.conf = self.prefix / "nginx.conf"
        servers = "".join(f"        server {b};\n" for b in backends)
        self.conf.write_text(
            f"""worker_processes 1;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {self.prefix}/body;
    proxy_temp_path {self.prefix}/proxy;
    fastcgi_temp_path {self.prefix}/fastcgi;
    uwsgi_temp_path {self.prefix}/uwsgi;
    scgi_temp_path {self.prefix}/scgi;
    upstream web {{
        # slipway:servers web begin
{servers}        # slipway:servers web end
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{ proxy_pass http://web; proxy_next_upstream off; }}
    }}
}}
"""
        )
        base = ["nginx", "-p", str(self.prefix), "-c", str(self.conf)]
        self.check = base + ["-t", "-q"]
        self.reload = base + ["-s", "reload"]
        subprocess.run(base, check=True)
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self):
        subprocess.run(["nginx", "-p", str(self.prefix), "-c", str(self.conf), "-s", "stop"], check=False)


class HAProxy:
    """HAProxy in master-worker mode: a reload (SIGUSR2 to the master, waited for) hands the
    listening socket to the new worker, so no connection is refused while it happens."""

    def __init__(self, workdir, backends):
        self.prefix = workdir / "haproxy"
        self.prefix.mkdir()
        self.port = free_port()
        self.conf = self.prefix / "haproxy.cfg"
        servers = "".join(f"    server b{i} {b}\n" for i, b in enumerate(backends))
        self.conf.write_text(
            f"""global
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend web
    bind 127.0.0.1:{self.port}
    default_backend web
backend web
    # slipway:servers web begin
{servers}    # slipway:servers web end
"""
        )
        pidfile = self.prefix / "haproxy.pid"
        exe = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin")
        self.check = [exe, "-c", "-q", "-f", str(self.conf)]
        self.proc = subprocess.Popen([exe, "-W", "-f", str(self.conf), "-p", str(pidfile)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reload = pathlib.Path(__file__).parent / "fixtures" / "haproxy-reload.sh"
        self.reload = ["sh", str(reload), str(self.proc.pid)]
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=1)
                break
            except OSError:
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


BALANCERS = {"nginx": Nginx, "haproxy": HAProxy}


class Load:
    """Requests through the load balancer in a loop; counts failures and versions seen."""

    def __init__(self, url):
        self.url = url
        self.failures = []
        self.seen = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    self.seen.append(r.read().decode().strip())
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(e))
            time.sleep(0.005)

    def end(self):
        self.stop = True
        self.thread.join()
        return self


def balancer_installed(kind):
    return shutil.which(kind, path=os.environ.get("PATH", "") + ":/usr/sbin") is not None


def serve_by_hand(site_dir, port):
    """A web server started outside Slipway (an original host's app), once it answers."""
    p = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=site_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    return p


class Site:
    """A load balancer in front of hosts (each an agent with its own port, tagged with its
    role), the original ones serving v1 from servers started by hand, and a server whose
    target group `web` is that load balancer."""

    def __init__(self, workdir, kind, roles):
        self.workdir = workdir
        self.backends = {name: free_port() for name in roles}
        v1 = workdir / "v1"
        v1.mkdir()
        (v1 / "index.html").write_text("v1")
        blue = [n for n, r in roles.items() if r == "blue"]
        self.by_hand = [serve_by_hand(v1, self.backends[h]) for h in blue]
        self.lb = BALANCERS[kind](workdir, [f"127.0.0.1:{self.backends[h]}" for h in blue])
        lbs = workdir / "load-balancers.json"
        lbs.write_text(json.dumps({"web": {"kind": kind, "config": str(self.lb.conf), "check": self.lb.check, "reload": self.lb.reload}}))
        self.s = Server(workdir / "data", env={"SLIPWAY_LOAD_BALANCERS": str(lbs), "SLIPWAY_AGENT_TIMEOUT_SECS": "20"}).start()
        self.cd = self.s.client("codedeploy")
        self.s3 = self.s.client("s3")
        self.s3.create_bucket(Bucket="rev")
        self.s3.put_bucket_versioning(Bucket="rev", VersioningConfiguration={"Status": "Enabled"})
        self.agents = []
        for name, port in self.backends.items():
            s = self.s
            key, arn = agent_user(s, name, [{"Key": "role", "Value": roles[name]}, {"Key": "slipway:address", "Value": f"127.0.0.1:{port}"}])
            out = workdir / f"out-{name}"
            env = dict(os.environ, AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"], AWS_HOST_IDENTIFIER=arn, AWS_REGION="us-east-1", AGENT_OUT=str(out), AGENT_PORT=str(port))
            log = open(workdir / f"agent-{name}.log", "ab")
            self.agents.append(subprocess.Popen([BIN, "agent", "--endpoint", s.url, "--root-dir", str(workdir / f"root-{name}"), "--heartbeat-secs", "1"], env=env, stdout=log, stderr=log))
        self.cd.create_application(applicationName="shop")

    def group(self, **blue_green):
        self.cd.create_deployment_group(
            applicationName="shop",
            deploymentGroupName="bg",
            serviceRoleArn="arn:aws:iam::000000000000:role/cd",
            deploymentConfigName="CodeDeployDefault.OneAtATime",
            onPremisesInstanceTagFilters=[{"Key": "role", "Value": "blue", "Type": "KEY_AND_VALUE"}],
            deploymentStyle={"deploymentType": "BLUE_GREEN", "deploymentOption": "WITH_TRAFFIC_CONTROL"},
            loadBalancerInfo={"targetGroupInfoList": [{"name": "web"}]},
            blueGreenDeploymentConfiguration={"greenFleetProvisioningOption": {"action": "DISCOVER_EXISTING"}, **blue_green},
            autoRollbackConfiguration={"enabled": True, "events": ["DEPLOYMENT_FAILURE"]},
        )

    def deploy(self, version, role):
        put = self.s3.put_object(Bucket="rev", Key="shop.zip", Body=bundle(version))
        return self.cd.create_deployment(
            applicationName="shop",
            deploymentGroupName="bg",
            revision={"revisionType": "S3", "s3Location": {"bucket": "rev", "key": "shop.zip", "bundleType": "zip", "version": put["VersionId"]}},
            targetInstances={"tagFilters": [{"Key": "role", "Value": role, "Type": "KEY_AND_VALUE"}]},
        )["deploymentId"]

    def get(self):
        with urllib.request.urlopen(self.lb.url, timeout=5) as r:
            return r.read().decode().strip()

    def stop(self):
        for a in self.agents:
            a.terminate()
        for a in self.agents:
            a.wait(timeout=10)
        self.lb.stop()
        for p in self.by_hand:
            p.kill()
        self.s.stop()
        for h in self.backends:
            pid = self.workdir / f"out-{h}" / "server.pid"
            if pid.exists():
                try:
                    os.kill(int(pid.read_text()), 15)
                except (OSError, ValueError):
                    pass


@pytest.mark.parametrize("kind", list(BALANCERS))
def test_blue_green_under_load_and_rollback_moves_traffic_back(workdir, kind):
    if not balancer_installed(kind):
        pytest.skip(f"{kind} is not installed")
    site = Site(workdir, kind, {"host0": "blue", "host1": "blue", "host2": "green", "host3": "green"})
    try:
        cd = site.cd
        site.group(
            terminateBlueInstancesOnDeploymentSuccess={"action": "KEEP_ALIVE"},
            deploymentReadyOption={"actionOnTimeout": "CONTINUE_DEPLOYMENT"},
        )

        # 1. Traffic moves from blue (v1) to green (v2) under load.
        load = Load(site.lb.url)
        time.sleep(0.5)
        d1 = site.deploy("v2", "green")
        info = wait(cd, d1, timeout=120)
        time.sleep(0.5)
        load.end()
        assert info["status"] == "Succeeded", info
        assert load.failures == [], load.failures[:5]
        assert "v1" in load.seen and load.seen[-20:] == ["v2"] * 20
        labels = {
            t["instanceTarget"]["targetId"]: t["instanceTarget"]["instanceLabel"]
            for t in cd.batch_get_deployment_targets(deploymentId=d1, targetIds=list(site.backends))["deploymentTargets"]
        }
        assert labels == {"host0": "Blue", "host1": "Blue", "host2": "Green", "host3": "Green"}
        blue = cd.get_deployment_instance(deploymentId=d1, instanceId="host0")["instanceSummary"]
        assert [e["lifecycleEventName"] for e in blue["lifecycleEvents"]] == ["BeforeBlockTraffic", "BlockTraffic", "AfterBlockTraffic"]
        # The group's fleet is now the replacement one; the original hosts are kept.
        g = cd.get_deployment_group(applicationName="shop", deploymentGroupName="bg")["deploymentGroupInfo"]
        assert g["onPremisesInstanceTagFilters"] == [{"Key": "role", "Value": "green", "Type": "KEY_AND_VALUE"}]
        assert "deregisterTime" not in cd.get_on_premises_instance(instanceName="host0")["instanceInfo"]
        for p in site.by_hand:
            p.terminate()

        # 2. A deployment to host0/host1 (v3) whose AfterAllowTraffic fails: traffic, which
        # had begun to reach v3, is moved back to green (v2) by the rollback.
        for h in ("host0", "host1"):
            (workdir / f"out-{h}").mkdir(exist_ok=True)
            (workdir / f"out-{h}" / "fail-AfterAllowTraffic").touch()
        load = Load(site.lb.url)
        d2 = site.deploy("v3", "blue")
        info = wait(cd, d2, timeout=120)
        assert info["status"] == "Failed", info
        rb = info["rollbackInfo"]["rollbackDeploymentId"]
        rbinfo = wait(cd, rb, timeout=120)
        time.sleep(0.5)
        load.end()
        assert rbinfo["status"] == "Succeeded", rbinfo
        assert rbinfo["creator"] == "codeDeployRollback"
        assert load.failures == [], load.failures[:5]
        assert "v3" in load.seen, "traffic reached the new revision before the failure"
        assert load.seen[-20:] == ["v2"] * 20
        assert site.get() == "v2"
    finally:
        site.stop()


def test_blue_green_waits_for_continue_and_terminates_the_original_hosts(workdir):
    kind = next((k for k in BALANCERS if balancer_installed(k)), None)
    if kind is None:
        pytest.skip("neither nginx nor haproxy is installed")
    site = Site(workdir, kind, {"host0": "blue", "host1": "green"})
    try:
        cd = site.cd
        site.group(
            terminateBlueInstancesOnDeploymentSuccess={"action": "TERMINATE", "terminationWaitTimeInMinutes": 5},
            deploymentReadyOption={"actionOnTimeout": "STOP_DEPLOYMENT", "waitTimeInMinutes": 30},
        )
        d1 = site.deploy("v2", "green")
        deadline = time.time() + 60
        while cd.get_deployment(deploymentId=d1)["deploymentInfo"]["status"] != "Ready":
            assert time.time() < deadline, cd.get_deployment(deploymentId=d1)["deploymentInfo"]
            time.sleep(0.2)
        # Ready: the replacement is installed, traffic has not moved.
        green = cd.get_deployment_target(deploymentId=d1, targetId="host1")["deploymentTarget"]["instanceTarget"]
        assert green["status"] == "Ready"
        assert [site.get() for _ in range(5)] == ["v1"] * 5
        cd.continue_deployment(deploymentId=d1)
        info = wait(cd, d1, timeout=60)
        assert info["status"] == "Succeeded", info
        # A reload is applied by the load balancer's new workers as the old ones finish (nginx
        # signals its master and returns): v2 within moments.
        deadline = time.time() + 5
        while site.get() != "v2":
            assert time.time() < deadline, "traffic did not move to the replacement host"
            time.sleep(0.1)
        # The original host waits out its termination time, unless told not to.
        assert info["instanceTerminationWaitTimeStarted"] is True
        time.sleep(1.5)
        assert "deregisterTime" not in cd.get_on_premises_instance(instanceName="host0")["instanceInfo"]
        cd.skip_wait_time_for_instance_termination(deploymentId=d1)
        deadline = time.time() + 15
        while "deregisterTime" not in cd.get_on_premises_instance(instanceName="host0")["instanceInfo"]:
            assert time.time() < deadline, "the original host was not deregistered"
            time.sleep(0.2)
        with pytest.raises(ClientError) as e:
            cd.continue_deployment(deploymentId=d1)
        assert e.value.response["Error"]["Code"] == "DeploymentAlreadyCompletedException"
    finally:
        site.stop()
