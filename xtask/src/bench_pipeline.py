# The pipeline benchmark's client side (`cargo xtask bench pipeline` runs it against a fresh
# release server): push → execution latency, a 3-stage pipeline beside its parts run
# directly, and 100 PARALLEL executions at once. Prints one JSON object.
import concurrent.futures
import io
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

import boto3
import botocore.config

port, pid, data_dir, key, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
url = f"http://127.0.0.1:{port}"
cfg = botocore.config.Config(retries={"max_attempts": 1}, max_pool_connections=32)
kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret, config=cfg)
cc, cp, cb, s3 = (boto3.client(s, **kw) for s in ("codecommit", "codepipeline", "codebuild", "s3"))
env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION="us-east-1",
           AWS_ENDPOINT_URL=url, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
           GIT_COMMITTER_EMAIL="b@b", AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
HELPER = "!aws codecommit credential-helper --ignore-host-check $@"


def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0


def rss_mb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0


def events():
    db = sqlite3.connect(os.path.join(data_dir, "slipway.db"))
    try:
        return db.execute("SELECT COUNT(*) FROM event_outbox WHERE source = 'aws.codepipeline'").fetchone()[0]
    finally:
        db.close()


def git(*args, cwd):
    subprocess.run(["git", "-c", f"credential.helper={HELPER}", "-c", "credential.UseHttpPath=true", *args],
                   cwd=cwd, env=env, check=True, capture_output=True)


def action(name, category, provider, config, inputs=(), outputs=()):
    return {"name": name, "actionTypeId": {"category": category, "owner": "AWS", "provider": provider, "version": "1"},
            "configuration": config, "inputArtifacts": [{"name": n} for n in inputs],
            "outputArtifacts": [{"name": n} for n in outputs]}


def source(repo):
    return {"name": "Source", "actions": [action("Source", "Source", "CodeCommit",
            {"RepositoryName": repo, "BranchName": "main", "PollForSourceChanges": "false"}, outputs=["Src"])]}


def pipeline(name, stages, mode=None):
    d = {"name": name, "roleArn": "arn:aws:iam::000000000000:role/p",
         "artifactStore": {"type": "S3", "location": "artifacts"}, "stages": stages}
    if mode:
        d.update(pipelineType="V2", executionMode=mode)
    cp.create_pipeline(pipeline=d)


def wait_execution(name, eid, poll=0.01):
    while True:
        e = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)["pipelineExecution"]
        if e["status"] not in ("InProgress", "Stopping"):
            return e
        time.sleep(poll)


s3.create_bucket(Bucket="artifacts")
s3.put_bucket_versioning(Bucket="artifacts", VersioningConfiguration={"Status": "Enabled"})
s3.create_bucket(Bucket="site")
work = tempfile.mkdtemp(prefix="bench-pipeline-")
cc.create_repository(repositoryName="app")
local = os.path.join(work, "app")
os.makedirs(local)
subprocess.run(["git", "init", "-q", "-b", "main"], cwd=local, check=True, env=env)
open(os.path.join(local, "app.txt"), "w").write("0\n")
subprocess.run(["git", "add", "-A"], cwd=local, check=True, env=env)
subprocess.run(["git", "commit", "-qm", "0"], cwd=local, check=True, env=env)
git("push", "-q", f"{url}/v1/repos/app", "main", cwd=local)
out = {}

# 1. push acknowledged → execution InProgress (the execution's own start time).
pipeline("latency", [source("app"), {"name": "Hold", "actions": [action("Approval", "Approval", "Manual", {})]}])
latencies, push_ms = [], []
for i in range(1, 21):
    open(os.path.join(local, "app.txt"), "w").write(f"{i}\n")
    subprocess.run(["git", "commit", "-qam", str(i)], cwd=local, check=True, env=env)
    pushed = time.time()
    git("push", "-q", f"{url}/v1/repos/app", "main", cwd=local)
    acked = time.time()
    push_ms.append((acked - pushed) * 1000)
    while True:
        xs = cp.list_pipeline_executions(pipelineName="latency", maxResults=1)["pipelineExecutionSummaries"]
        if xs and xs[0]["trigger"]["triggerType"] == "CloudWatchEvent" and xs[0]["startTime"].timestamp() > acked - 5 \
                and len(cp.list_pipeline_executions(pipelineName="latency")["pipelineExecutionSummaries"]) == i + 1:
            # Negative: the execution started before `git push` had returned.
            latencies.append(xs[0]["startTime"].timestamp() - acked)
            break
        time.sleep(0.002)
cp.delete_pipeline(name="latency")
out["push_latency_ms"] = [round(x * 1000, 1) for x in latencies]
out["push_ms"] = push_ms

# 2. Source → CodeBuild `true` → S3 deploy, beside the same build started directly plus the
#    same upload.
spec = "version: 0.2\nphases:\n  build:\n    commands:\n      - 'true'\nartifacts:\n  files: ['app.txt']\n"
env_ = {"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0", "computeType": "BUILD_GENERAL1_SMALL"}
cb.create_project(name="noop", source={"type": "CODEPIPELINE", "buildspec": spec}, artifacts={"type": "CODEPIPELINE"},
                  environment=env_, serviceRole="arn:aws:iam::000000000000:role/b")
cb.create_project(name="direct", source={"type": "NO_SOURCE", "buildspec": spec.replace("artifacts:\n  files: ['app.txt']\n", "")},
                  artifacts={"type": "NO_ARTIFACTS"}, environment=env_, serviceRole="arn:aws:iam::000000000000:role/b")
pipeline("three", [source("app"),
                   {"name": "Build", "actions": [action("Build", "Build", "CodeBuild", {"ProjectName": "noop"}, ["Src"], ["Out"])]},
                   {"name": "Deploy", "actions": [action("Deploy", "Deploy", "S3", {"BucketName": "site", "Extract": "false", "ObjectKey": "out.zip"}, ["Out"])]}])
first = cp.list_pipeline_executions(pipelineName="three")["pipelineExecutionSummaries"][0]["pipelineExecutionId"]
wait_execution("three", first)
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("app.txt", "x\n")
payload = buf.getvalue()
piped, direct = [], []
for _ in range(5):
    t = time.time()
    eid = cp.start_pipeline_execution(name="three")["pipelineExecutionId"]
    e = wait_execution("three", eid)
    assert e["status"] == "Succeeded", e
    piped.append(time.time() - t)
    t = time.time()
    bid = cb.start_build(projectName="direct")["build"]["id"]
    while not cb.batch_get_builds(ids=[bid])["builds"][0]["buildComplete"]:
        time.sleep(0.01)
    s3.put_object(Bucket="site", Key="direct.zip", Body=payload)
    direct.append(time.time() - t)
out["three_stage_s"] = piped
out["direct_s"] = direct

# 3. 100 executions of a PARALLEL pipeline started at once.
pipeline("par", [source("app"), {"name": "Deploy", "actions": [action("Deploy", "Deploy", "S3",
         {"BucketName": "site", "Extract": "false", "ObjectKey": "par/#{codepipeline.PipelineExecutionId}.zip"}, ["Src"])]}],
         mode="PARALLEL")
wait_execution("par", cp.list_pipeline_executions(pipelineName="par")["pipelineExecutionSummaries"][0]["pipelineExecutionId"])
cpu0, rss0, ev0 = cpu(), rss_mb(), events()
t = time.time()
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    ids = list(pool.map(lambda _: cp.start_pipeline_execution(name="par")["pipelineExecutionId"], range(100)))
done = {}
while len(done) < 100:
    for x in cp.get_paginator("list_pipeline_executions").paginate(pipelineName="par").build_full_result()["pipelineExecutionSummaries"]:
        if x["pipelineExecutionId"] in ids and x["status"] not in ("InProgress", "Stopping"):
            done[x["pipelineExecutionId"]] = x["status"]
    time.sleep(0.05)
wall = time.time() - t
cpu1, rss1, ev1 = cpu(), rss_mb(), events()
runs = cp.get_paginator("list_action_executions").paginate(pipelineName="par").build_full_result()["actionExecutionDetails"]
per = {}
for r in runs:
    if r["pipelineExecutionId"] in ids:
        per[(r["pipelineExecutionId"], r["actionName"])] = per.get((r["pipelineExecutionId"], r["actionName"]), 0) + 1
objects = s3.get_paginator("list_objects_v2").paginate(Bucket="site", Prefix="par/").build_full_result().get("Contents", [])
out["parallel"] = {
    "succeeded": sum(1 for s in done.values() if s == "Succeeded"),
    "wall_s": wall,
    "action_runs": len(per),
    "doubled": sum(1 for n in per.values() if n > 1),
    "deployed_objects": len([o for o in objects if o["Key"][4:-4] in ids]),
    "transitions": ev1 - ev0,
    "cpu_s": cpu1 - cpu0,
    "rss_mb": [rss0, rss1],
}
print(json.dumps(out))
