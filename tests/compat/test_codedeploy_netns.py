"""CodeDeploy to hosts that are hosts: each `slipway agent` runs in its own network namespace
(its own loopback, joined to the server by a unix-socket relay), and each serves the
revision's app on the same 127.0.0.1:8080. The deployment group's health check is a command
each host's agent runs there; it gates every host after its last event, is run again while
later batches deploy, and stops the deployment (ALARM_ACTIVE) and rolls it back when it fails."""

import io
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
import zipfile

import pytest

from conftest import BIN, Server
from test_codedeploy import agent_user, wait

RELAY = pathlib.Path(__file__).parent / "fixtures" / "relay.py"

CHECK = (
    "command:python3 -c \"import sys, urllib.request as u; "
    "sys.exit(u.urlopen('http://127.0.0.1:8080/health', timeout=3).read().strip() != b'ok')\""
)

START = """#!/bin/sh
# Serves this revision's site on 127.0.0.1:8080 of this host.
cd "$(dirname "$0")"
if [ -e "$AGENT_OUT/sick" ]; then echo sick > site/health; else echo ok > site/health; fi
nohup python3 -m http.server 8080 --bind 127.0.0.1 --directory site >/dev/null 2>&1 &
echo $! > "$AGENT_OUT/http.pid"
for i in $(seq 50); do
  python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/health', timeout=1)" 2>/dev/null && break
  sleep 0.1
done
# A host marked to decay turns sick a while after it started.
if [ -e "$AGENT_OUT/decay" ]; then (sleep 5; echo sick > site/health) >/dev/null 2>&1 & fi
echo "serving $(cat site/VERSION) on 127.0.0.1:8080"
"""

STOP = """#!/bin/sh
if [ -e "$AGENT_OUT/http.pid" ]; then
  pid=$(cat "$AGENT_OUT/http.pid")
  kill "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$AGENT_OUT/http.pid"
fi
"""


def netns_available():
    if not shutil.which("unshare") or not shutil.which("ip", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not netns_available(), reason="network namespaces cannot be created here")


def bundle(version, validate_sleep=0):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            "appspec.yml",
            "version: 0.0\nos: linux\nhooks:\n"
            "  ApplicationStop:\n    - location: stop.sh\n"
            "  ApplicationStart:\n    - location: start.sh\n      timeout: 30\n"
            "  ValidateService:\n    - location: validate.sh\n",
        )
        for name, text in [("start.sh", START), ("stop.sh", STOP), ("validate.sh", f"#!/bin/sh\nsleep {validate_sleep}\n")]:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            z.writestr(info, text)
        z.writestr("site/VERSION", version)
    return buf.getvalue()


class Hosts:
    """Agents, each alone in a network namespace with a relay to the server."""

    def __init__(self, server, workdir, n):
        self.server = server
        self.sock_dir = pathlib.Path(tempfile.mkdtemp(prefix="relay-", dir="/tmp"))
        sock = self.sock_dir / "s"
        self.outer = subprocess.Popen(
            ["python3", str(RELAY), "unix", str(sock), "tcp", str(server.port)], stdout=subprocess.PIPE
        )
        assert self.outer.stdout.readline().strip() == b"ready"
        self.procs = {}
        self.out = {}
        for i in range(n):
            name = f"host{i}"
            key, arn = agent_user(server, name, [{"Key": "role", "Value": "isolated"}])
            out = workdir / f"out-{name}"
            out.mkdir()
            self.out[name] = out
            env = dict(os.environ)
            env.update(
                AWS_ACCESS_KEY_ID=key["AccessKeyId"],
                AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"],
                AWS_HOST_IDENTIFIER=arn,
                AWS_REGION="us-east-1",
                AGENT_OUT=str(out),
                PATH=env.get("PATH", "") + ":/usr/sbin:/sbin",
            )
            script = (
                f"ip link set lo up && python3 {RELAY} tcp 4566 unix {sock} > /dev/null & "
                f"exec {BIN} agent --endpoint http://127.0.0.1:4566 --instance-name {name} "
                f"--root-dir {workdir / ('root-' + name)} --heartbeat-secs 1"
            )
            log = open(workdir / f"agent-{name}.log", "ab")
            self.procs[name] = subprocess.Popen(
                ["unshare", "--net", "sh", "-c", script], env=env, stdout=log, stderr=log, start_new_session=True
            )

    def run_in(self, name, *cmd):
        """Runs a command in host `name`'s network namespace."""
        return subprocess.run(
            ["nsenter", f"--net=/proc/{self.procs[name].pid}/ns/net", *cmd], capture_output=True, text=True, timeout=30
        )

    def serves(self, name):
        p = self.run_in(name, "python3", "-c", "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/VERSION', timeout=3).read().decode())")
        return p.stdout.strip() if p.returncode == 0 else None

    def stop(self):
        for name, p in self.procs.items():
            ns = os.readlink(f"/proc/{p.pid}/ns/net") if p.poll() is None else None
            # Everything in the host's namespace: the agent, its relay, the app it started.
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if ns and os.readlink(f"/proc/{pid}/ns/net") == ns:
                        os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            p.wait(timeout=10)
        self.outer.kill()
        self.outer.wait()
        shutil.rmtree(self.sock_dir, ignore_errors=True)


def explain(cd, deployment_id):
    """What went wrong on each host: its failed lifecycle events' diagnostics."""
    out = [cd.get_deployment(deploymentId=deployment_id)["deploymentInfo"].get("errorInformation")]
    for i in cd.list_deployment_instances(deploymentId=deployment_id)["instancesList"]:
        for e in cd.get_deployment_instance(deploymentId=deployment_id, instanceId=i)["instanceSummary"]["lifecycleEvents"]:
            if e.get("status") == "Failed":
                out.append((i, e["lifecycleEventName"], e.get("diagnostics")))
    return out


@pytest.fixture
def hosts(workdir):
    s = Server(workdir / "data", env={"SLIPWAY_AGENT_TIMEOUT_SECS": "20"}).start()
    h = Hosts(s, workdir, 3)
    yield h
    h.stop()
    s.stop()


def test_agents_in_network_namespaces_with_command_health_checks(hosts):
    s = hosts.server
    cd = s.client("codedeploy")
    s3 = s.client("s3")
    s3.create_bucket(Bucket="isolated")
    s3.put_bucket_versioning(Bucket="isolated", VersioningConfiguration={"Status": "Enabled"})
    cd.create_application(applicationName="iso", computePlatform="Server")
    cd.create_deployment_group(
        applicationName="iso",
        deploymentGroupName="hosts",
        serviceRoleArn="arn:aws:iam::000000000000:role/codedeploy",
        deploymentConfigName="CodeDeployDefault.OneAtATime",
        onPremisesInstanceTagFilters=[{"Key": "role", "Value": "isolated", "Type": "KEY_AND_VALUE"}],
        alarmConfiguration={"enabled": True, "alarms": [{"name": CHECK}]},
        autoRollbackConfiguration={"enabled": True, "events": ["DEPLOYMENT_STOP_ON_ALARM"]},
    )

    def deploy(version, **kw):
        put = s3.put_object(Bucket="isolated", Key="iso.zip", Body=bundle(version, **kw))
        return cd.create_deployment(
            applicationName="iso",
            deploymentGroupName="hosts",
            revision={"revisionType": "S3", "s3Location": {"bucket": "isolated", "key": "iso.zip", "bundleType": "zip", "version": put["VersionId"]}},
        )["deploymentId"]

    # Every host serves v1 on the same port of its own loopback, checked by its own agent.
    d1 = deploy("v1")
    info = wait(cd, d1, timeout=180)
    assert info["status"] == "Succeeded", explain(cd, d1)
    assert {n: hosts.serves(n) for n in hosts.procs} == {"host0": "v1", "host1": "v1", "host2": "v1"}
    # The check is no lifecycle event.
    events = cd.get_deployment_instance(deploymentId=d1, instanceId="host0")["instanceSummary"]["lifecycleEvents"]
    assert [e["lifecycleEventName"] for e in events][-1] == "ValidateService"

    # v2 is unhealthy on host1 only: host0 passes, host1's check stops the deployment before
    # host2 is touched, and the rollback puts v1 back everywhere.
    (hosts.out["host1"] / "sick").touch()
    d2 = deploy("v2")
    info = wait(cd, d2, timeout=180)
    (hosts.out["host1"] / "sick").unlink()
    assert info["status"] == "Stopped", explain(cd, info["deploymentId"])
    assert info["errorInformation"]["code"] == "ALARM_ACTIVE"
    assert "host1" in info["errorInformation"]["message"] and CHECK in info["errorInformation"]["message"]
    statuses = {
        t["instanceTarget"]["targetId"]: t["instanceTarget"]["status"]
        for t in cd.batch_get_deployment_targets(deploymentId=d2, targetIds=["host0", "host1", "host2"])["deploymentTargets"]
    }
    assert statuses == {"host0": "Succeeded", "host1": "Failed", "host2": "Skipped"}
    rb = wait(cd, info["rollbackInfo"]["rollbackDeploymentId"], timeout=180)
    assert rb["status"] == "Succeeded", explain(cd, rb["deploymentId"])
    assert {n: hosts.serves(n) for n in hosts.procs} == {"host0": "v1", "host1": "v1", "host2": "v1"}

    # During the rollout: host0 passes its check, turns sick while host1 and host2 deploy, and
    # its periodic check stops the deployment.
    (hosts.out["host0"] / "decay").touch()
    d3 = deploy("v3", validate_sleep=3)
    info = wait(cd, d3, timeout=180)
    assert info["status"] == "Stopped", explain(cd, info["deploymentId"])
    assert info["errorInformation"]["code"] == "ALARM_ACTIVE"
    assert "host0" in info["errorInformation"]["message"], info
    host0 = cd.get_deployment_target(deploymentId=d3, targetId="host0")["deploymentTarget"]["instanceTarget"]
    assert host0["status"] == "Succeeded"
    assert info["deploymentOverview"]["Skipped"] + info["deploymentOverview"]["Failed"] >= 1, info
