# The deploy benchmark's client side (`cargo xtask bench deploy` runs it against a fresh
# release server): AllAtOnce to 50 agents with a 1 MB revision and no-op hooks beside the
# same files copied and scripts run directly on the hosts, OneAtATime to 10 agents (time per
# host beyond its hooks), and an agent's idle CPU and RSS while it polls. Prints one JSON
# object.
import concurrent.futures
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

import boto3
import botocore.config

port, bin_path, key, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
url = f"http://127.0.0.1:{port}"
cfg = botocore.config.Config(retries={"max_attempts": 1}, max_pool_connections=16)
kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret, config=cfg)
cd, s3 = boto3.client("codedeploy", **kw), boto3.client("s3", **kw)
work = tempfile.mkdtemp(prefix="slipway-bench-deploy-")
HOOKS = ("BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService")


def bundle(dest):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        spec = f"version: 0.0\nos: linux\nfiles:\n  - source: /app\n    destination: {dest}\nfile_exists_behavior: OVERWRITE\nhooks:\n"
        spec += "".join(f"  {h}:\n    - location: noop.sh\n" for h in HOOKS)
        z.writestr("appspec.yml", spec)
        info = zipfile.ZipInfo("noop.sh")
        info.external_attr = 0o755 << 16
        z.writestr(info, "#!/bin/sh\nexit 0\n")
        z.writestr("app/payload.bin", os.urandom(1 << 20))
    return buf.getvalue()


def fleet(n, tag):
    procs = []
    for i in range(n):
        name = f"{tag}-{i}"
        arn = f"arn:aws:iam::000000000000:user/{name}"
        cd.register_on_premises_instance(instanceName=name, iamUserArn=arn)
        cd.add_tags_to_on_premises_instances(instanceNames=[name], tags=[{"Key": "fleet", "Value": tag}])
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_HOST_IDENTIFIER=arn, AWS_REGION="us-east-1", SLIPWAY_LOG="warn")
        procs.append(subprocess.Popen([bin_path, "agent", "--endpoint", url, "--root-dir", f"{work}/{name}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    cd.create_deployment_group(applicationName="bench", deploymentGroupName=tag, serviceRoleArn="arn:aws:iam::000000000000:role/cd",
                               onPremisesInstanceTagFilters=[{"Key": "fleet", "Value": tag, "Type": "KEY_AND_VALUE"}])
    return procs


def deploy(group, config, key_name):
    start = time.time()
    d = cd.create_deployment(applicationName="bench", deploymentGroupName=group, deploymentConfigName=config,
                             revision={"revisionType": "S3", "s3Location": {"bucket": "bench", "key": key_name, "bundleType": "zip"}})["deploymentId"]
    while True:
        info = cd.get_deployment(deploymentId=d)["deploymentInfo"]
        if info["status"] in ("Succeeded", "Failed", "Stopped"):
            break
        time.sleep(0.01)
    wall = time.time() - start
    assert info["status"] == "Succeeded", info
    return wall


def direct(n, blob, dest_root):
    """The same work done directly on each of n hosts at once: unpack, copy, run the hooks."""
    def host(i):
        d = f"{work}/direct-{i}"
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/bundle.zip", "wb") as f:
            f.write(blob)
        with zipfile.ZipFile(f"{d}/bundle.zip") as z:
            z.extractall(f"{d}/archive")
        os.chmod(f"{d}/archive/noop.sh", 0o755)
        os.makedirs(dest_root, exist_ok=True)
        shutil.copy(f"{d}/archive/app/payload.bin", f"{dest_root}/payload.bin")
        for _ in HOOKS:
            subprocess.run([f"{d}/archive/noop.sh"], check=True)
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(host, range(n)))
    return time.time() - start


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def cpu_rss(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")) / 1024.0
    return cpu, rss


s3.create_bucket(Bucket="bench")
s3.put_bucket_versioning(Bucket="bench", VersioningConfiguration={"Status": "Enabled"})
cd.create_application(applicationName="bench")
out = {}
agents = []
try:
    dest = f"{work}/installed"
    blob = bundle(dest)
    s3.put_object(Bucket="bench", Key="b.zip", Body=blob)
    agents += fleet(50, "fifty")
    time.sleep(2)
    walls, directs = [], []
    for _ in range(3):
        walls.append(deploy("fifty", "CodeDeployDefault.AllAtOnce", "b.zip"))
        directs.append(direct(50, blob, f"{work}/direct-installed"))
    out["all_at_once_s"], out["direct_s"] = walls, directs
    stop(agents)
    agents = fleet(10, "ten")
    time.sleep(1)
    ones, hooks = [], []
    for _ in range(3):
        ones.append(deploy("ten", "CodeDeployDefault.OneAtATime", "b.zip"))
        hooks.append(direct(1, blob, f"{work}/direct-one"))
    out["one_at_a_time_s"], out["one_host_direct_s"] = ones, hooks
    # Idle: one agent polling, sampled over 10 s.
    pid = agents[0].pid
    c0, _ = cpu_rss(pid)
    time.sleep(10)
    c1, rss = cpu_rss(pid)
    out["idle_cpu_pct"] = (c1 - c0) / 10 * 100
    out["idle_rss_mb"] = rss
finally:
    stop(agents)
    shutil.rmtree(work, ignore_errors=True)
print(json.dumps(out))
