# The console benchmark's client side (`cargo xtask bench console` runs it against a fresh
# release server): the server time of the pipeline page with 1,000 executions in its history
# beside the API calls the page is made of, the build page beside BatchGetBuilds +
# GetLogEvents, and (with Playwright and Chromium installed) the time from a state change to
# the browser showing it. Prints one JSON object.
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import boto3
import botocore.config

port, key, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
url = f"http://127.0.0.1:{port}"
cfg = botocore.config.Config(retries={"max_attempts": 1}, max_pool_connections=8)
kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret, config=cfg)
cc, cp, cb, s3 = (boto3.client(s, **kw) for s in ("codecommit", "codepipeline", "codebuild", "s3"))

cc.create_repository(repositoryName="app")
cc.put_file(repositoryName="app", branchName="main", filePath="buildspec.yml", fileContent=b"version: 0.2\nphases:\n  build:\n    commands:\n      - seq 1 10000\n", commitMessage="init")
s3.create_bucket(Bucket="artifacts")


def action(name, category, provider, config=None, outputs=()):
    return {"name": name, "actionTypeId": {"category": category, "owner": "AWS", "provider": provider, "version": "1"},
            "configuration": config or {}, "outputArtifacts": [{"name": n} for n in outputs], "runOrder": 1}


cp.create_pipeline(pipeline={
    "name": "busy", "roleArn": "arn:aws:iam::000000000000:role/p", "artifactStore": {"type": "S3", "location": "artifacts"},
    "stages": [
        {"name": "Source", "actions": [action("Source", "Source", "CodeCommit", {"RepositoryName": "app", "BranchName": "main", "PollForSourceChanges": "false"}, ["Src"])]},
        {"name": "Approve", "actions": [action("Approval", "Approval", "Manual")]},
    ]})
t0 = time.time()
for _ in range(999):
    cp.start_pipeline_execution(name="busy")
seed_s = time.time() - t0


def count():
    n, token = 0, None
    while True:
        r = cp.list_pipeline_executions(pipelineName="busy", maxResults=100, **({"nextToken": token} if token else {}))
        n += len(r["pipelineExecutionSummaries"])
        token = r.get("nextToken")
        if not token:
            return n


executions = count()

# A console session for the root key.
form = urllib.parse.urlencode({"access_key_id": key, "secret_access_key": secret}).encode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


opener = urllib.request.build_opener(NoRedirect)
try:
    opener.open(urllib.request.Request(f"{url}/-/console/signin", data=form))
except urllib.error.HTTPError as e:
    cookie = e.headers["set-cookie"].split(";")[0]


def page_ms(path, n=30):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url + path, headers={"cookie": cookie})) as r:
            assert r.status == 200
            r.read()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out[3:])


def api_ms(fn, n=30):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out[3:])


pipeline_page = page_ms("/-/console/pipelines/busy")
pipeline_api = api_ms(lambda: (cp.get_pipeline(name="busy"), cp.get_pipeline_state(name="busy"),
                               cp.list_pipeline_executions(pipelineName="busy", maxResults=50)))

# One build with a 10,000-line log.
cb.create_project(name="logs", source={"type": "CODECOMMIT", "location": f"{url}/v1/repos/app"}, artifacts={"type": "NO_ARTIFACTS"},
                  environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0", "computeType": "BUILD_GENERAL1_SMALL"},
                  serviceRole="arn:aws:iam::000000000000:role/b")
bid = cb.start_build(projectName="logs")["build"]["id"]
while not cb.batch_get_builds(ids=[bid])["builds"][0]["buildComplete"]:
    time.sleep(0.5)
b = cb.batch_get_builds(ids=[bid])["builds"][0]
logs = boto3.client("logs", **kw)
project, uuid = bid.split(":")
build_page = page_ms(f"/-/console/builds/{project}/{uuid}")
build_api = api_ms(lambda: (cb.batch_get_builds(ids=[bid]), logs.get_log_events(
    logGroupName=b["logs"]["groupName"], logStreamName=b["logs"]["streamName"], startFromHead=False, limit=10000)))

# A state change → the browser shows it.
live_ms = None
chromium = shutil.which("chromium")
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None
if chromium and sync_playwright:
    cp.create_pipeline(pipeline={
        "name": "watched", "roleArn": "arn:aws:iam::000000000000:role/p", "artifactStore": {"type": "S3", "location": "artifacts"},
        "stages": [
            {"name": "Source", "actions": [action("Source", "Source", "CodeCommit", {"RepositoryName": "app", "BranchName": "main", "PollForSourceChanges": "false"}, ["Src"])]},
            {"name": "Approve", "actions": [action("Approval", "Approval", "Manual")]},
        ]})
    samples = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        ctx = browser.new_context()
        ctx.add_cookies([{"name": cookie.split("=")[0], "value": cookie.split("=", 1)[1], "url": f"{url}/-/console/"}])
        page = ctx.new_page()
        last = None
        for i in range(5):
            if i > 0:
                cp.start_pipeline_execution(name="watched")
            # The approval waiting now (the creation's execution first, then each new one).
            while True:
                st = cp.get_pipeline_state(name="watched")["stageStates"][1]
                ex = st["actionStates"][0].get("latestExecution", {})
                if ex.get("token") and ex.get("status") == "InProgress" and ex["token"] != last:
                    break
                time.sleep(0.1)
            last = ex["token"]
            page.goto(f"{url}/-/console/pipelines/watched")
            badge = page.locator('article.stage[data-stage="Approve"] > header .badge')
            badge.wait_for()
            page.wait_for_timeout(500)
            t = time.perf_counter()
            cp.put_approval_result(pipelineName="watched", stageName="Approve", actionName="Approval",
                                   token=ex["token"], result={"summary": "ok", "status": "Approved"})
            page.wait_for_function("() => document.querySelector('article.stage[data-stage=\"Approve\"] > header .badge').textContent == 'Succeeded'")
            samples.append((time.perf_counter() - t) * 1000)
        browser.close()
    live_ms = statistics.median(samples)

print(json.dumps({"executions": executions, "seed_s": seed_s, "pipeline_page_ms": pipeline_page, "pipeline_api_ms": pipeline_api,
                  "build_page_ms": build_page, "build_api_ms": build_api, "log_lines": 10000, "live_ms": live_ms}))
