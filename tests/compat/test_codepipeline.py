"""CodePipeline with the real aws-cli and git: pipelines from JSON, pushes that start them,
builds, approvals, deployments to S3, retries, transitions, modes, and invalid declarations."""

import copy
import io
import json
import subprocess
import time
import zipfile

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import ACCOUNT
from test_codebuild import create_project, push_repo

BUILDSPEC = """version: 0.2
env:
  exported-variables: [GREETING]
phases:
  build:
    commands:
      - test -f app.txt
      - export GREETING="hello from $COMMIT"
      - mkdir -p out && cp app.txt out/ && echo "$COMMIT" > out/commit.txt
artifacts:
  base-directory: out
  files: ['**/*']
"""


def action(name, category, provider, config=None, inputs=(), outputs=(), run_order=1, namespace=None):
    a = {
        "name": name,
        "actionTypeId": {"category": category, "owner": "AWS", "provider": provider, "version": "1"},
        "runOrder": run_order,
        "configuration": config or {},
        "inputArtifacts": [{"name": n} for n in inputs],
        "outputArtifacts": [{"name": n} for n in outputs],
    }
    if namespace:
        a["namespace"] = namespace
    return a


def declaration(name, repo="app", project="app-build", bucket="artifacts", deploy="site", mode=None, approval=True):
    stages = [
        {"name": "Source", "actions": [action("Source", "Source", "CodeCommit", {
            "RepositoryName": repo, "BranchName": "main", "PollForSourceChanges": "false"},
            outputs=["SourceOutput"], namespace="SourceVariables")]},
        {"name": "Build", "actions": [action("Build", "Build", "CodeBuild", {
            "ProjectName": project,
            "EnvironmentVariables": json.dumps([{"name": "COMMIT", "value": "#{SourceVariables.CommitId}", "type": "PLAINTEXT"}]),
        }, inputs=["SourceOutput"], outputs=["BuildOutput"], namespace="BuildVariables")]},
    ]
    if approval:
        stages.append({"name": "Approve", "actions": [action("Approval", "Approval", "Manual", {"CustomData": "ship #{BuildVariables.GREETING}?"})]})
    stages.append({"name": "Deploy", "actions": [action("Deploy", "Deploy", "S3", {"BucketName": deploy, "Extract": "true", "ObjectKey": "web"}, inputs=["BuildOutput"])]})
    d = {
        "name": name,
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/pipeline",
        "artifactStore": {"type": "S3", "location": bucket},
        "stages": stages,
    }
    if mode:
        d["pipelineType"] = "V2"
        d["executionMode"] = mode
    return d


def setup(server, workdir, files=None):
    commit = push_repo(server, workdir, "app", files or {"app.txt": "v1\n", "buildspec.yml": BUILDSPEC})
    for b in ("artifacts", "site"):
        server.aws("s3api", "create-bucket", "--bucket", b)
    server.aws("s3api", "put-bucket-versioning", "--bucket", "artifacts", "--versioning-configuration", "Status=Enabled")
    create_project(server, "app-build", {"type": "CODEPIPELINE"}, {"type": "CODEPIPELINE"})
    return commit


def create(server, d):
    return server.aws("codepipeline", "create-pipeline", "--pipeline", json.dumps(d))


def state(server, name):
    return server.aws("codepipeline", "get-pipeline-state", "--name", name)


def stage(st, name):
    return next(s for s in st["stageStates"] if s["stageName"] == name)


def executions(server, name):
    return server.aws("codepipeline", "list-pipeline-executions", "--pipeline-name", name)["pipelineExecutionSummaries"]


def wait(server, what, check, timeout=180):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = what()
        if check(last):
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out; last: {json.dumps(last, indent=1, default=str)[:4000]}")


def execution(server, name, eid):
    return server.aws("codepipeline", "get-pipeline-execution", "--pipeline-name", name,
                      "--pipeline-execution-id", eid)["pipelineExecution"]


def wait_status(server, name, eid, statuses, timeout=180):
    return wait(server, lambda: execution(server, name, eid), lambda e: e["status"] in statuses, timeout)


def approval_token(server, name, stage_name="Approve"):
    st = wait(server, lambda: state(server, name),
              lambda s: stage(s, stage_name)["actionStates"][0].get("latestExecution", {}).get("token"))
    return stage(st, stage_name)["actionStates"][0]["latestExecution"]["token"]


def approve(server, name, token, status="Approved", stage_name="Approve"):
    return server.aws("codepipeline", "put-approval-result", "--pipeline-name", name, "--stage-name", stage_name,
                      "--action-name", "Approval", "--token", token,
                      "--result", json.dumps({"summary": "looks good", "status": status}))


def push_change(server, workdir, text):
    local = workdir / "app"
    env = server.env()
    (local / "app.txt").write_text(text)
    subprocess.run(["git", "commit", "-qam", f"change {text.strip()}"], cwd=local, check=True, env=env)
    server.git("push", "-q", server.repo_url("app"), "main", cwd=local)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=local, capture_output=True, text=True).stdout.strip()


def test_push_builds_approves_and_deploys(server, workdir):
    commit = setup(server, workdir)
    d = declaration("release")
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:approvals"
    d["stages"][2]["actions"][0]["configuration"]["NotificationArn"] = topic
    out = create(server, d)
    assert out["pipeline"]["version"] == 1 and out["pipeline"]["pipelineType"] == "V1"
    # CreatePipeline runs the pipeline once.
    [first] = executions(server, "release")
    assert first["trigger"]["triggerType"] == "CreatePipeline"
    token = approval_token(server, "release")
    st = state(server, "release")
    src = stage(st, "Source")["actionStates"][0]
    assert src["currentRevision"]["revisionId"] == commit
    assert stage(st, "Build")["latestExecution"]["status"] == "Succeeded"
    assert stage(st, "Approve")["latestExecution"]["status"] == "InProgress"
    # The approval's notification, as SNS would carry it, is in the outbox with its token.
    [note] = [e for e in server.events() if e["detail-type"] == "CodePipeline Manual Approval Notification"]
    assert note["detail"]["notificationArn"] == topic and note["detail"]["approval"]["token"] == token
    # Variables resolved across stages: the build's exported variable in the approval's data.
    details = server.aws("codepipeline", "list-action-executions", "--pipeline-name", "release",
                         "--filter", json.dumps({"pipelineExecutionId": first["pipelineExecutionId"]}))["actionExecutionDetails"]
    by_action = {d["actionName"]: d for d in details}
    assert by_action["Approval"]["input"]["resolvedConfiguration"]["CustomData"] == f"ship hello from {commit}?"
    assert by_action["Source"]["output"]["outputVariables"]["CommitId"] == commit
    build_out = by_action["Build"]["output"]["outputArtifacts"][0]["s3location"]
    assert build_out["bucket"] == "artifacts" and build_out["key"].startswith("release/BuildOutpu/")
    # Artifacts are in the bucket, zipped.
    obj = server.client("s3").get_object(Bucket="artifacts", Key=build_out["key"])["Body"].read()
    assert sorted(zipfile.ZipFile(io.BytesIO(obj)).namelist()) == ["app.txt", "commit.txt"]
    approve(server, "release", token)
    done = wait_status(server, "release", first["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert done["status"] == "Succeeded", done
    assert done["artifactRevisions"][0]["revisionId"] == commit
    w = watch(server, "release", "--execution-id", first["pipelineExecutionId"])
    assert w.returncode == 0 and "✓ Deploy" in w.stdout, w.stdout + w.stderr
    site = server.client("s3")
    assert site.get_object(Bucket="site", Key="web/commit.txt")["Body"].read().decode().strip() == commit
    # A second approval with the same token is refused.
    err = server.aws(
        "codepipeline", "put-approval-result", "--pipeline-name", "release", "--stage-name", "Approve",
        "--action-name", "Approval", "--token", token,
        "--result", json.dumps({"summary": "again", "status": "Approved"}), check=False)
    assert err.code == "ApprovalAlreadyCompletedException"

    # A push starts the pipeline with the pushed commit.
    new = push_change(server, workdir, "v2\n")
    second = wait(server, lambda: executions(server, "release"), lambda x: len(x) == 2)[0]
    assert second["trigger"]["triggerType"] == "CloudWatchEvent"
    approve(server, "release", approval_token_for(server, "release", second["pipelineExecutionId"]))
    done = wait_status(server, "release", second["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert done["status"] == "Succeeded" and done["artifactRevisions"][0]["revisionId"] == new
    assert site.get_object(Bucket="site", Key="web/app.txt")["Body"].read() == b"v2\n"
    # EventBridge-shaped events for the execution, its stages and actions.
    kinds = {(e["detail-type"], e["detail"].get("state")) for e in server.events() if e["source"] == "aws.codepipeline"}
    for k in [("CodePipeline Pipeline Execution State Change", "STARTED"),
              ("CodePipeline Pipeline Execution State Change", "SUCCEEDED"),
              ("CodePipeline Stage Execution State Change", "SUCCEEDED"),
              ("CodePipeline Action Execution State Change", "STARTED")]:
        assert k in kinds, kinds


def watch(server, name, *args):
    from conftest import BIN
    return subprocess.run([BIN, "pipeline", "watch", name, *args], capture_output=True, text=True,
                          env=server.env(), timeout=120)


def approval_token_for(server, name, eid):
    def latest():
        st = state(server, name)
        a = stage(st, "Approve")["actionStates"][0].get("latestExecution", {})
        ok = stage(st, "Approve").get("latestExecution", {}).get("pipelineExecutionId") == eid and a.get("token")
        return a.get("token") if ok else None
    return wait(server, latest, bool)


def test_rejection_fails_and_a_failed_build_is_retried(server, workdir):
    setup(server, workdir, {"app.txt": "v1\n", "buildspec.yml": BUILDSPEC.replace("test -f app.txt", "test -f fixed.txt")})
    create(server, declaration("release"))
    [first] = executions(server, "release")
    eid = first["pipelineExecutionId"]
    failed = wait_status(server, "release", eid, {"Failed", "Succeeded"})
    assert failed["status"] == "Failed"
    st = state(server, "release")
    b = stage(st, "Build")
    assert b["latestExecution"]["status"] == "Failed"
    assert b["actionStates"][0]["latestExecution"]["errorDetails"]["code"] == "JobFailed"
    # `slipway pipeline watch` shows the stages, the failed action and its build's log tail.
    w = watch(server, "release")
    assert w.returncode == 1, w.stderr
    assert f"release · execution {eid} · Failed" in w.stdout
    assert "✓ Source" in w.stdout and "✗ Build" in w.stdout
    assert "lines of build app-build:" in w.stdout and "test -f fixed.txt" in w.stdout, w.stdout
    # Retrying a stage that did not fail is refused; the failed one reruns its failed action.
    err = server.aws("codepipeline", "retry-stage-execution", "--pipeline-name", "release", "--stage-name", "Source",
                     "--pipeline-execution-id", eid, "--retry-mode", "FAILED_ACTIONS", check=False)
    assert err.code == "StageNotRetryableException"
    # Fix the project's buildspec so the rerun succeeds (the source revision stays the same).
    server.aws("codebuild", "update-project", "--name", "app-build", "--source",
               json.dumps({"type": "CODEPIPELINE", "buildspec": BUILDSPEC}))
    out = server.aws("codepipeline", "retry-stage-execution", "--pipeline-name", "release", "--stage-name", "Build",
                     "--pipeline-execution-id", eid, "--retry-mode", "FAILED_ACTIONS")
    assert out["pipelineExecutionId"] == eid
    token = approval_token(server, "release")
    details = server.aws("codepipeline", "list-action-executions", "--pipeline-name", "release")["actionExecutionDetails"]
    assert [d["status"] for d in details if d["actionName"] == "Source"] == ["Succeeded"]  # not rerun
    assert sorted(d["status"] for d in details if d["actionName"] == "Build") == ["Failed", "Succeeded"]
    # A rejection fails the stage and the execution.
    approve(server, "release", token, status="Rejected")
    done = wait_status(server, "release", eid, {"Failed", "Succeeded"})
    assert done["status"] == "Failed"
    assert stage(state(server, "release"), "Approve")["latestExecution"]["status"] == "Failed"


def test_disabled_transition_holds_and_superseded_mode(server, workdir):
    setup(server, workdir)
    create(server, declaration("release", approval=False))
    # The run that creation starts may finish before any transition could be disabled; let it
    # finish, then disable the transition and start the run this test follows.
    [created] = executions(server, "release")
    wait_status(server, "release", created["pipelineExecutionId"], {"Succeeded", "Failed"})
    server.aws("codepipeline", "disable-stage-transition", "--pipeline-name", "release", "--stage-name", "Deploy",
               "--transition-type", "Inbound", "--reason", "freeze")
    eid = server.aws("codepipeline", "start-pipeline-execution", "--name", "release")["pipelineExecutionId"]
    st = wait(server, lambda: state(server, "release"), lambda s: stage(s, "Deploy").get("inboundExecution"))
    t = stage(st, "Deploy")["inboundTransitionState"]
    assert (t["enabled"], t["disabledReason"]) == (False, "freeze")
    assert stage(st, "Deploy")["inboundExecution"]["pipelineExecutionId"] == eid
    # A newer execution reaching the same boundary supersedes the waiting one.
    second = server.aws("codepipeline", "start-pipeline-execution", "--name", "release")["pipelineExecutionId"]
    wait_status(server, "release", eid, {"Superseded"})
    server.aws("codepipeline", "enable-stage-transition", "--pipeline-name", "release", "--stage-name", "Deploy",
               "--transition-type", "Inbound")
    assert wait_status(server, "release", second, {"Succeeded", "Failed"})["status"] == "Succeeded"
    assert execution(server, "release", eid)["status"] == "Superseded"


def test_stop_abandons_the_approval(server, workdir):
    setup(server, workdir)
    create(server, declaration("release"))
    [first] = executions(server, "release")
    eid = first["pipelineExecutionId"]
    approval_token(server, "release")
    server.aws("codepipeline", "stop-pipeline-execution", "--pipeline-name", "release", "--pipeline-execution-id", eid,
               "--abandon", "--reason", "not today")
    done = wait_status(server, "release", eid, {"Stopped"})
    assert done["status"] == "Stopped"
    [summary] = executions(server, "release")
    assert summary["stopTrigger"]["reason"] == "not today"
    err = server.aws("codepipeline", "stop-pipeline-execution", "--pipeline-name", "release",
                     "--pipeline-execution-id", eid, check=False)
    assert err.code == "PipelineExecutionNotStoppableException"


def test_pipeline_crud_tags_and_errors(server, workdir):
    setup(server, workdir)
    d = declaration("p1")
    out = server.aws("codepipeline", "create-pipeline", "--pipeline", json.dumps(d), "--tags", "key=team,value=web")
    assert out["tags"] == [{"key": "team", "value": "web"}]
    err = server.aws("codepipeline", "create-pipeline", "--pipeline", json.dumps(d), check=False)
    assert err.code == "PipelineNameInUseException"
    got = server.aws("codepipeline", "get-pipeline", "--name", "p1")
    arn = got["metadata"]["pipelineArn"]
    assert arn == f"arn:aws:codepipeline:us-east-1:{ACCOUNT}:p1"
    d2 = copy.deepcopy(got["pipeline"])
    d2["stages"][1]["actions"][0]["runOrder"] = 2
    assert server.aws("codepipeline", "update-pipeline", "--pipeline", json.dumps(d2))["pipeline"]["version"] == 2
    assert server.aws("codepipeline", "get-pipeline", "--name", "p1", "--pipeline-version", "1")["pipeline"]["version"] == 1
    err = server.aws("codepipeline", "get-pipeline", "--name", "p1", "--pipeline-version", "7", check=False)
    assert err.code == "PipelineVersionNotFoundException"
    err = server.aws("codepipeline", "update-pipeline", "--pipeline", json.dumps(d2), check=False)
    assert err.code == "InvalidStructureException"  # version 2 is no longer current
    server.aws("codepipeline", "tag-resource", "--resource-arn", arn, "--tags", "key=tier,value=1")
    tags = server.aws("codepipeline", "list-tags-for-resource", "--resource-arn", arn)["tags"]
    assert {t["key"]: t["value"] for t in tags} == {"team": "web", "tier": "1"}
    server.aws("codepipeline", "untag-resource", "--resource-arn", arn, "--tag-keys", "team")
    assert server.aws("codepipeline", "list-tags-for-resource", "--resource-arn", arn)["tags"] == [{"key": "tier", "value": "1"}]
    err = server.aws("codepipeline", "list-tags-for-resource", "--resource-arn", arn + "x", check=False)
    assert err.code == "ResourceNotFoundException"
    names = [p["name"] for p in server.aws("codepipeline", "list-pipelines")["pipelines"]]
    assert names == ["p1"]
    # Another region has its own pipelines.
    assert server.aws("codepipeline", "list-pipelines", region="eu-west-1")["pipelines"] == []
    err = server.aws("codepipeline", "get-pipeline", "--name", "nope", check=False)
    assert (err.code, err.message) == ("PipelineNotFoundException", f"Account '{ACCOUNT}' does not have a pipeline with name 'nope'")
    types = server.aws("codepipeline", "list-action-types", "--action-owner-filter", "AWS")["actionTypes"]
    cc = next(t for t in types if t["id"]["provider"] == "CodeCommit")
    assert (cc["outputArtifactDetails"], cc["inputArtifactDetails"]) == ({"minimumCount": 1, "maximumCount": 1}, {"minimumCount": 0, "maximumCount": 0})
    server.aws("codepipeline", "delete-pipeline", "--name", "p1")
    assert server.aws("codepipeline", "list-pipelines")["pipelines"] == []
    server.aws("codepipeline", "delete-pipeline", "--name", "p1")  # no error, as in AWS


def bad(d, path, value):
    d = copy.deepcopy(d)
    target = d
    for p in path[:-1]:
        target = target[p]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


DELETE = object()

BASE = declaration("bad")

INVALID = [
    ("one stage", bad(BASE, ["stages"], BASE["stages"][:1]), "InvalidStructureException",
     "Pipeline has only 1 stage(s). There should be a minimum of 2 stages in a pipeline"),
    ("build in the first stage", bad(BASE, ["stages", 0, "actions"], BASE["stages"][1]["actions"]),
     "InvalidStructureException", None),
    ("source in a later stage", bad(BASE, ["stages", 1, "actions"], BASE["stages"][0]["actions"]),
     "InvalidStructureException", None),
    ("stage name twice", bad(BASE, ["stages", 2, "name"], "Build"), "InvalidStageDeclarationException", None),
    ("input nobody produces", bad(BASE, ["stages", 1, "actions", 0, "inputArtifacts"], [{"name": "Nope"}]),
     "InvalidStructureException", None),
    ("output name twice", bad(BASE, ["stages", 1, "actions", 0, "outputArtifacts"], [{"name": "SourceOutput"}]),
     "InvalidStructureException", None),
    ("missing required configuration", bad(BASE, ["stages", 0, "actions", 0, "configuration"], {"RepositoryName": "app"}),
     "InvalidActionDeclarationException", "Action configuration for action 'Source' is missing required configuration 'BranchName'"),
    ("unknown configuration key", bad(BASE, ["stages", 1, "actions", 0, "configuration", "Nope"], "x"),
     "InvalidActionDeclarationException", None),
    ("unknown provider", bad(BASE, ["stages", 1, "actions", 0, "actionTypeId", "provider"], "Jenkins"),
     "InvalidActionDeclarationException", None),
    ("too many outputs for a source", bad(BASE, ["stages", 0, "actions", 0, "outputArtifacts"], [{"name": "A"}, {"name": "B"}]),
     "InvalidActionDeclarationException", None),
    ("both artifact stores", bad(BASE, ["artifactStores"], {"us-east-1": {"type": "S3", "location": "artifacts"}}),
     "InvalidStructureException", None),
    ("no artifact store", bad(BASE, ["artifactStore"], DELETE), "InvalidStructureException", None),
    ("V2 mode on V1", bad(BASE, ["executionMode"], "QUEUED"), "InvalidStructureException", None),
    ("run order 0", bad(BASE, ["stages", 1, "actions", 0, "runOrder"], 0), "ValidationException", None),
    ("bad stage name", bad(BASE, ["stages", 1, "name"], "no spaces!"), "ValidationException", None),
]


def rule(name, provider, config):
    return {"name": name, "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": provider, "version": "1"},
            "configuration": config}


def is_prod(result="SKIP"):
    return {"conditions": [{"result": result, "rules": [
        rule("IsProd", "VariableCheck", {"Variable": "#{variables.target}", "Operator": "EQ", "Value": "prod"})]}]}


V2 = dict(BASE, pipelineType="V2")
INVALID += [
    ("conditions on V1", bad(BASE, ["stages", 3, "beforeEntry"], is_prod()), "InvalidStageDeclarationException", None),
    ("rollback on V1", bad(BASE, ["stages", 3, "onFailure"], {"result": "ROLLBACK"}), "InvalidStageDeclarationException", None),
    ("rollback before entry", bad(V2, ["stages", 3, "beforeEntry"], is_prod("ROLLBACK")), "InvalidStageDeclarationException",
     "Result ROLLBACK is not valid for the beforeEntry conditions of stage Deploy; use one of FAIL, SKIP"),
    ("unknown rule type", bad(V2, ["stages", 3, "beforeEntry"], {"conditions": [{"rules": [rule("L", "LambdaInvoke", {})]}]}),
     "InvalidStageDeclarationException", None),
    ("rule missing a key", bad(V2, ["stages", 3, "beforeEntry"], {"conditions": [{"rules": [
        rule("V", "VariableCheck", {"Variable": "x", "Value": "y"})]}]}),
     "InvalidStageDeclarationException", "Rule configuration for rule 'V' is missing required configuration 'Operator'"),
    ("bad cron", bad(V2, ["stages", 3, "beforeEntry"], {"conditions": [{"rules": [rule("W", "DeploymentWindow", {"Cron": "* *"})]}]}),
     "InvalidStageDeclarationException", None),
    ("conditions on the first stage", bad(V2, ["stages", 0, "beforeEntry"], is_prod()), "InvalidStageDeclarationException", None),
]


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_declarations(server, case):
    _, d, code, message = case
    # boto3 without its own parameter checks, so the server's are what answers.
    client = boto3.client(
        "codepipeline", endpoint_url=server.url, region_name="us-east-1",
        aws_access_key_id=server.root.key, aws_secret_access_key=server.root.secret,
        config=botocore.config.Config(parameter_validation=False, retries={"max_attempts": 1}),
    )
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.create_pipeline(pipeline=d)
    error = e.value.response["Error"]
    assert error["Code"] == code, error
    if message:
        assert error["Message"] == message
    # Nothing was created.
    assert server.aws("codepipeline", "list-pipelines")["pipelines"] == []


def test_kill9_mid_build_and_mid_approval(workdir):
    """The server is killed (-9) while a pipeline's build runs on a remote worker and again
    while it waits for approval: after each restart the execution goes on — the same build
    re-attached (never started twice), the same approval token accepted."""
    import os
    from conftest import BIN, REGION, Server
    env = {"SLIPWAY_BUILD_SLOTS": "0"}
    s = Server(workdir / "data", env=env).start()
    worker = None
    try:
        creds = s.user("builder", policy={"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "slipway:RunBuilds", "Resource": "*"}]})
        wenv = dict(os.environ, AWS_ACCESS_KEY_ID=creds.key, AWS_SECRET_ACCESS_KEY=creds.secret,
                    AWS_REGION=REGION, SLIPWAY_LOG="info")
        log = open(workdir / "worker.log", "ab")
        worker = subprocess.Popen([BIN, "worker", "--server", s.url, "--work-dir", str(workdir / "w"),
                                   "--slots", "1", "--id", "remote-1"], env=wenv, stdout=log, stderr=log)
        slow = BUILDSPEC.replace("      - test -f app.txt\n", "      - test -f app.txt\n      - sleep 8\n")
        setup(s, workdir, {"app.txt": "v1\n", "buildspec.yml": slow})
        create(s, declaration("release"))
        [first] = executions(s, "release")
        eid = first["pipelineExecutionId"]
        st = wait(s, lambda: state(s, "release"),
                  lambda x: stage(x, "Build")["actionStates"][0].get("latestExecution", {}).get("externalExecutionId"))
        build_id = stage(st, "Build")["actionStates"][0]["latestExecution"]["externalExecutionId"]
        wait(s, lambda: s.aws("codebuild", "batch-get-builds", "--ids", build_id)["builds"][0],
             lambda b: b.get("currentPhase") == "BUILD")
        s.kill9()
        s = Server(workdir / "data", port=s.port, env=env).start()
        token = approval_token(s, "release")
        assert s.aws("codebuild", "list-builds-for-project", "--project-name", "app-build")["ids"] == [build_id]
        s.kill9()
        s = Server(workdir / "data", port=s.port, env=env).start()
        approve(s, "release", token)
        assert wait_status(s, "release", eid, {"Succeeded", "Failed"})["status"] == "Succeeded"
        runs = s.aws("codepipeline", "list-action-executions", "--pipeline-name", "release")["actionExecutionDetails"]
        assert sorted(r["actionName"] for r in runs) == ["Approval", "Build", "Deploy", "Source"]
    finally:
        if worker:
            worker.kill()
            worker.wait()
        s.stop()


def test_custom_action_completed_by_a_job_worker(server, workdir):
    setup(server, workdir)
    cp = server.client("codepipeline")
    cp.create_custom_action_type(
        category="Build", provider="MyBuilder", version="1",
        configurationProperties=[{"name": "Target", "required": True, "key": True, "secret": False, "queryable": True},
                                 {"name": "Password", "required": False, "key": False, "secret": True}],
        inputArtifactDetails={"minimumCount": 1, "maximumCount": 1},
        outputArtifactDetails={"minimumCount": 1, "maximumCount": 1},
    )
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cp.create_custom_action_type(category="Build", provider="MyBuilder", version="1",
                                     inputArtifactDetails={"minimumCount": 0, "maximumCount": 1},
                                     outputArtifactDetails={"minimumCount": 0, "maximumCount": 1})
    assert e.value.response["Error"]["Code"] == "ActionTypeAlreadyExistsException"
    custom = {"category": "Build", "owner": "Custom", "provider": "MyBuilder", "version": "1"}
    d = declaration("custom", approval=False)
    d["stages"] = d["stages"][:1] + [{"name": "Build", "actions": [{
        "name": "Mine", "actionTypeId": custom, "configuration": {"Target": "prod", "Password": "hunter2-secret"},
        "inputArtifacts": [{"name": "SourceOutput"}], "outputArtifacts": [{"name": "Made"}], "namespace": "Mine"}]}]
    # A required key of the custom type is checked like a built-in one's.
    bad_d = copy.deepcopy(d)
    bad_d["stages"][1]["actions"][0]["configuration"] = {}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cp.create_pipeline(pipeline=bad_d)
    assert e.value.response["Error"]["Code"] == "InvalidActionDeclarationException"
    created = cp.create_pipeline(pipeline=d)["pipeline"]
    # A secret property is masked wherever the pipeline is shown, and sealed at rest.
    assert created["stages"][1]["actions"][0]["configuration"] == {"Target": "prod", "Password": "****"}
    got = cp.get_pipeline(name="custom")["pipeline"]
    assert got["stages"][1]["actions"][0]["configuration"]["Password"] == "****"
    assert b"hunter2-secret" not in (server.data_dir / "slipway.db").read_bytes()
    [first] = executions(server, "custom")

    def poll(query):
        return wait(server, lambda: cp.poll_for_jobs(actionTypeId=custom, maxBatchSize=5, queryParam=query)["jobs"], bool, 60)

    assert cp.poll_for_jobs(actionTypeId=custom, queryParam={"Target": "staging"})["jobs"] == []
    [job] = poll({"Target": "prod"})
    assert job["data"]["pipelineContext"]["pipelineExecutionId"] == first["pipelineExecutionId"]
    assert job["data"]["inputArtifacts"][0]["name"] == "SourceOutput"
    # Its job worker gets the secret itself.
    assert job["data"]["actionConfiguration"]["configuration"]["Password"] == "hunter2-secret"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cp.acknowledge_job(jobId=job["id"], nonce="wrong")
    assert e.value.response["Error"]["Code"] == "InvalidNonceException"
    assert cp.acknowledge_job(jobId=job["id"], nonce=job["nonce"])["status"] == "InProgress"
    # Not done yet: a continuation token makes a new job for the same run.
    cp.put_job_success_result(jobId=job["id"], continuationToken="step-2",
                              executionDetails={"summary": "half way", "percentComplete": 50})
    [job2] = poll({"Target": "prod"})
    assert job2["id"] != job["id"] and job2["data"]["continuationToken"] == "step-2"
    cp.acknowledge_job(jobId=job2["id"], nonce=job2["nonce"])
    out = job2["data"]["outputArtifacts"][0]["location"]["s3Location"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("made.txt", "by the worker\n")
    server.client("s3").put_object(Bucket=out["bucketName"], Key=out["objectKey"], Body=buf.getvalue())
    cp.put_job_success_result(jobId=job2["id"], outputVariables={"Result": "ok"},
                              executionDetails={"summary": "made it", "externalExecutionId": "worker-1"})
    done = wait_status(server, "custom", first["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert done["status"] == "Succeeded", done
    details = cp.list_action_executions(pipelineName="custom")["actionExecutionDetails"]
    mine = next(x for x in details if x["actionName"] == "Mine")
    assert mine["output"]["outputVariables"] == {"Result": "ok"}
    assert mine["output"]["executionResult"]["externalExecutionSummary"] == "made it"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cp.put_job_success_result(jobId=job2["id"])
    assert e.value.response["Error"]["Code"] == "InvalidJobStateException"
    types = cp.list_action_types(actionOwnerFilter="Custom")["actionTypes"]
    assert [t["id"]["provider"] for t in types] == ["MyBuilder"]
    assert mine["input"]["configuration"]["Password"] == "****"
    assert mine["input"]["resolvedConfiguration"]["Password"] == "****"
    # Updating with the masked value keeps the secret; the next run's worker gets it.
    got["stages"][1]["actions"][0]["configuration"]["Target"] = "prod"
    cp.update_pipeline(pipeline=got)
    e2 = cp.start_pipeline_execution(name="custom")["pipelineExecutionId"]
    [job3] = wait(server, lambda: [j for j in cp.poll_for_jobs(actionTypeId=custom, maxBatchSize=5, queryParam={"Target": "prod"})["jobs"]
                                   if j["data"]["pipelineContext"]["pipelineExecutionId"] == e2], bool, 60)
    assert job3["data"]["actionConfiguration"]["configuration"]["Password"] == "hunter2-secret"


def overlap(a, b):
    return a["startTime"] < b["lastUpdateTime"] and b["startTime"] < a["lastUpdateTime"]


def slow_declaration(name, mode, sleep=3):
    """Source → two builds side by side (one run order) → S3 deploy, in `mode`."""
    d = declaration(name, approval=False, mode=mode)
    build = d["stages"][1]["actions"][0]
    twin = copy.deepcopy(build)
    twin["name"], twin["outputArtifacts"], twin["namespace"] = "Twin", [{"name": "TwinOutput"}], "Twin"
    d["stages"][1]["actions"].append(twin)
    return d


def test_one_run_order_overlaps_and_queued_and_parallel_modes(server, workdir):
    slow = BUILDSPEC.replace("      - test -f app.txt\n", "      - test -f app.txt\n      - sleep 3\n")
    setup(server, workdir, {"app.txt": "v1\n", "buildspec.yml": slow})
    create(server, slow_declaration("queued", "QUEUED"))
    [first] = executions(server, "queued")
    # A second start while the first is in Build waits for the stage, and is not superseded.
    wait(server, lambda: state(server, "queued"), lambda s: stage(s, "Build").get("latestExecution", {}).get("status") == "InProgress")
    second = server.aws("codepipeline", "start-pipeline-execution", "--name", "queued")["pipelineExecutionId"]
    third = server.aws("codepipeline", "start-pipeline-execution", "--name", "queued")["pipelineExecutionId"]
    for eid in (first["pipelineExecutionId"], second, third):
        assert wait_status(server, "queued", eid, {"Succeeded", "Failed", "Superseded"})["status"] == "Succeeded"
    runs = server.aws("codepipeline", "list-action-executions", "--pipeline-name", "queued")["actionExecutionDetails"]
    builds = {(r["pipelineExecutionId"], r["actionName"]): r for r in runs if r["stageName"] == "Build"}
    e1 = first["pipelineExecutionId"]
    # Actions of one run order ran at the same time; executions took the stage one at a time.
    assert overlap(builds[(e1, "Build")], builds[(e1, "Twin")])
    assert not overlap(builds[(e1, "Build")], builds[(second, "Build")])
    assert builds[(second, "Build")]["startTime"] < builds[(third, "Build")]["startTime"]

    server.aws("codebuild", "create-project", "--name", "other", "--source", json.dumps({"type": "CODEPIPELINE"}),
               "--artifacts", json.dumps({"type": "CODEPIPELINE"}), "--environment",
               json.dumps({"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0", "computeType": "BUILD_GENERAL1_SMALL"}),
               "--service-role", "arn:aws:iam::000000000000:role/codebuild")
    d = declaration("parallel", approval=False, mode="PARALLEL")
    create(server, d)
    [p1] = executions(server, "parallel")
    wait(server, lambda: state(server, "parallel"), lambda s: stage(s, "Build").get("latestExecution", {}).get("status") == "InProgress")
    p2 = server.aws("codepipeline", "start-pipeline-execution", "--name", "parallel")["pipelineExecutionId"]
    for eid in (p1["pipelineExecutionId"], p2):
        assert wait_status(server, "parallel", eid, {"Succeeded", "Failed"})["status"] == "Succeeded"
    runs = server.aws("codepipeline", "list-action-executions", "--pipeline-name", "parallel")["actionExecutionDetails"]
    builds = {r["pipelineExecutionId"]: r for r in runs if r["stageName"] == "Build"}
    assert overlap(builds[p1["pipelineExecutionId"]], builds[p2])


def test_pipeline_variables_invoke_and_action_revisions(server, workdir):
    commit = setup(server, workdir)
    d = declaration("vars", approval=False)
    d["pipelineType"] = "V2"
    d["variables"] = [{"name": "stage", "defaultValue": "beta"}, {"name": "who"}]
    d["stages"][2]["actions"][0]["configuration"]["ObjectKey"] = "#{variables.stage}/#{variables.who}"
    create_out = server.client("codepipeline").create_pipeline(pipeline=d)
    # The run CreatePipeline starts has no value for `who`: none is started.
    first = server.aws("codepipeline", "list-pipeline-executions", "--pipeline-name", "vars")["pipelineExecutionSummaries"]
    assert first == [] and create_out["pipeline"]["version"] == 1
    err = server.aws("codepipeline", "start-pipeline-execution", "--name", "vars", check=False)
    assert err.code == "ValidationException"
    eid = server.aws("codepipeline", "start-pipeline-execution", "--name", "vars",
                     "--variables", "name=who,value=me", "name=stage,value=prod")["pipelineExecutionId"]
    e = wait_status(server, "vars", eid, {"Succeeded", "Failed"})
    assert e["status"] == "Succeeded", e
    assert {v["name"]: v["resolvedValue"] for v in e["variables"]} == {"stage": "prod", "who": "me"}
    assert server.client("s3").get_object(Bucket="site", Key="prod/me/app.txt")["Body"].read() == b"v1\n"
    # An unresolved reference fails the action with the reference named.
    d2 = server.aws("codepipeline", "get-pipeline", "--name", "vars")["pipeline"]
    d2["stages"][2]["actions"][0]["configuration"]["ObjectKey"] = "#{Nowhere.Thing}"
    server.aws("codepipeline", "update-pipeline", "--pipeline", json.dumps(d2))
    eid = server.aws("codepipeline", "start-pipeline-execution", "--name", "vars", "--variables", "name=who,value=x")["pipelineExecutionId"]
    e = wait_status(server, "vars", eid, {"Succeeded", "Failed"})
    assert e["status"] == "Failed" and "#{Nowhere.Thing}" in e["statusSummary"], e

    # An Invoke action starts another pipeline with variables.
    inv = {
        "name": "invoker", "roleArn": f"arn:aws:iam::{ACCOUNT}:role/pipeline", "pipelineType": "V2",
        "artifactStore": {"type": "S3", "location": "artifacts"},
        "stages": [d["stages"][0], {"name": "Invoke", "actions": [action("Go", "Invoke", "CodePipeline", {
            "PipelineName": "vars", "Variables": json.dumps([{"name": "who", "value": "#{SourceVariables.BranchName}"}])})]}],
    }
    before = len(executions(server, "vars"))
    create(server, inv)
    [ie] = executions(server, "invoker")
    assert wait_status(server, "invoker", ie["pipelineExecutionId"], {"Succeeded", "Failed"})["status"] == "Succeeded"
    started = wait(server, lambda: executions(server, "vars"), lambda x: len(x) == before + 1)[0]
    assert started["trigger"]["triggerDetail"] == f"arn:aws:codepipeline:us-east-1:{ACCOUNT}:invoker"
    vars_run = execution(server, "vars", started["pipelineExecutionId"])
    assert {"name": "who", "resolvedValue": "main"} in vars_run["variables"]

    # PutActionRevision: a revision the source last ran with starts nothing; another does.
    out = server.aws("codepipeline", "put-action-revision", "--pipeline-name", "invoker", "--stage-name", "Source",
                     "--action-name", "Source", "--action-revision",
                     json.dumps({"revisionId": commit, "revisionChangeId": commit, "created": 0}))
    assert out["newRevision"] is False
    older = push_change(server, workdir, "v2\n")
    # (the push starts `invoker` too; wait for it, then name the first commit again)
    wait(server, lambda: executions(server, "invoker"), lambda x: len(x) == 2)
    wait_status(server, "invoker", executions(server, "invoker")[0]["pipelineExecutionId"], {"Succeeded", "Failed"})
    out = server.aws("codepipeline", "put-action-revision", "--pipeline-name", "invoker", "--stage-name", "Source",
                     "--action-name", "Source", "--action-revision",
                     json.dumps({"revisionId": commit, "revisionChangeId": commit, "created": 0}))
    assert out["newRevision"] is True
    e = wait_status(server, "invoker", out["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert e["trigger"]["triggerType"] == "PutActionRevision" and e["artifactRevisions"][0]["revisionId"] == commit
    assert older != commit


def test_rollback_stage_redeploys_an_earlier_execution(server, workdir):
    commit = setup(server, workdir)
    create(server, declaration("release", approval=False))
    [first] = executions(server, "release")
    e1 = first["pipelineExecutionId"]
    assert wait_status(server, "release", e1, {"Succeeded", "Failed"})["status"] == "Succeeded"
    push_change(server, workdir, "v2\n")
    e2 = wait(server, lambda: executions(server, "release"), lambda x: len(x) == 2)[0]["pipelineExecutionId"]
    assert wait_status(server, "release", e2, {"Succeeded", "Failed"})["status"] == "Succeeded"
    s3 = server.client("s3")
    assert s3.get_object(Bucket="site", Key="web/app.txt")["Body"].read() == b"v2\n"
    out = server.aws("codepipeline", "rollback-stage", "--pipeline-name", "release", "--stage-name", "Deploy",
                     "--target-pipeline-execution-id", e1)
    rb = wait_status(server, "release", out["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert rb["status"] == "Succeeded", rb
    assert (rb["executionType"], rb["rollbackMetadata"]["rollbackTargetPipelineExecutionId"]) == ("ROLLBACK", e1)
    assert rb["trigger"]["triggerType"] == "ManualRollback" and rb["artifactRevisions"][0]["revisionId"] == commit
    assert s3.get_object(Bucket="site", Key="web/app.txt")["Body"].read() == b"v1\n"
    # Only the Deploy stage ran again.
    runs = server.aws("codepipeline", "list-action-executions", "--pipeline-name", "release", "--filter",
                      json.dumps({"pipelineExecutionId": out["pipelineExecutionId"]}))["actionExecutionDetails"]
    assert [r["actionName"] for r in runs] == ["Deploy"]
    err = server.aws("codepipeline", "rollback-stage", "--pipeline-name", "release", "--stage-name", "Deploy",
                     "--target-pipeline-execution-id", "00000000-0000-0000-0000-000000000000", check=False)
    assert err.code == "PipelineExecutionNotFoundException"


def test_clone_ref_source_gives_the_build_a_git_checkout(server, workdir):
    spec = """version: 0.2
phases:
  build:
    commands:
      - test "$(git rev-parse HEAD)" = "$COMMIT"
      - test "$(git rev-parse --abbrev-ref HEAD)" = main
      - test "$(git rev-list --count HEAD)" = 2
      - git remote get-url origin | grep -q /v1/repos/app
      - mkdir -p out && cp app.txt out/
artifacts:
  base-directory: out
  files: ['**/*']
"""
    setup(server, workdir, {"app.txt": "v1\n", "buildspec.yml": spec})
    push_change(server, workdir, "v2\n")
    d = declaration("clone", approval=False)
    d["stages"][0]["actions"][0]["configuration"]["OutputArtifactFormat"] = "CODEBUILD_CLONE_REF"
    create(server, d)
    [first] = executions(server, "clone")
    e = wait_status(server, "clone", first["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert e["status"] == "Succeeded", e
    assert server.client("s3").get_object(Bucket="site", Key="web/app.txt")["Body"].read() == b"v2\n"


def test_stage_conditions_skip_fail_and_roll_back(server, workdir):
    setup(server, workdir)
    s3 = server.client("s3")

    def pipeline(name, deploy, **extra):
        source = declaration(name)["stages"][0]
        return dict({
            "name": name, "roleArn": f"arn:aws:iam::{ACCOUNT}:role/pipeline", "pipelineType": "V2",
            "artifactStore": {"type": "S3", "location": "artifacts"},
            "stages": [source, dict({"name": "Deploy", "actions": [action("Deploy", "Deploy", "S3", {
                "BucketName": "site", "Extract": "true", "ObjectKey": name}, inputs=["SourceOutput"])]}, **deploy)],
        }, **extra)

    def body(key):
        try:
            return s3.get_object(Bucket="site", Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None

    # Entry condition with SKIP: the stage is skipped unless the variable says prod.
    create(server, pipeline("gated", {"beforeEntry": is_prod()}, variables=[{"name": "target", "defaultValue": "beta"}]))
    [first] = executions(server, "gated")
    assert wait_status(server, "gated", first["pipelineExecutionId"], {"Succeeded", "Failed"})["status"] == "Succeeded"
    deploy = stage(state(server, "gated"), "Deploy")
    assert deploy["latestExecution"]["status"] == "Skipped"
    cond = deploy["beforeEntryConditionState"]
    assert cond["latestExecution"]["status"] == "Failed"
    assert cond["conditionStates"][0]["ruleStates"][0]["ruleName"] == "IsProd"
    assert body("gated/app.txt") is None
    eid = server.aws("codepipeline", "start-pipeline-execution", "--name", "gated", "--variables",
                     "name=target,value=prod")["pipelineExecutionId"]
    assert wait_status(server, "gated", eid, {"Succeeded", "Failed"})["status"] == "Succeeded"
    assert body("gated/app.txt") == b"v1\n"
    deploy = stage(state(server, "gated"), "Deploy")
    assert (deploy["latestExecution"]["status"], deploy["beforeEntryConditionState"]["latestExecution"]["status"]) == ("Succeeded", "Succeeded")
    [r] = server.aws("codepipeline", "list-rule-executions", "--pipeline-name", "gated", "--filter",
                     json.dumps({"pipelineExecutionId": eid}))["ruleExecutionDetails"]
    assert (r["ruleName"], r["status"], r["stageName"]) == ("IsProd", "Succeeded", "Deploy")
    assert r["input"]["resolvedConfiguration"]["Variable"] == "prod"
    assert len(server.aws("codepipeline", "list-rule-executions", "--pipeline-name", "gated")["ruleExecutionDetails"]) == 2
    err = server.aws("codepipeline", "override-stage-condition", "--pipeline-name", "gated", "--stage-name", "Deploy",
                     "--pipeline-execution-id", eid, "--condition-type", "BEFORE_ENTRY", check=False)
    assert err.code == "ConditionNotOverridableException"
    err = server.aws("codepipeline", "override-stage-condition", "--pipeline-name", "gated", "--stage-name", "Nope",
                     "--pipeline-execution-id", eid, "--condition-type", "BEFORE_ENTRY", check=False)
    assert err.code == "StageNotFoundException"

    # A deployment window that never opens fails the stage.
    create(server, pipeline("frozen", {"beforeEntry": {"conditions": [{"result": "FAIL", "rules": [
        rule("Window", "DeploymentWindow", {"Cron": "* * * ? * * 2199", "TimeZone": "UTC"})]}]}}))
    [first] = executions(server, "frozen")
    e = wait_status(server, "frozen", first["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert e["status"] == "Failed" and "conditions were not met" in e["statusSummary"], e
    assert body("frozen/app.txt") is None

    # A success condition with ROLLBACK: the failed stage goes back to the last good run.
    guarded = pipeline("guarded", {"onSuccess": {"conditions": [{"result": "ROLLBACK", "rules": [
        rule("Healthy", "VariableCheck", {"Variable": "#{variables.ok}", "Operator": "EQ", "Value": "yes"})]}]}},
        variables=[{"name": "ok", "defaultValue": "yes"}],
        # Pushes to main start nothing here: only the runs this test starts.
        triggers=[{"providerType": "CodeStarSourceConnection", "gitConfiguration": {
            "sourceActionName": "Source", "push": [{"branches": {"includes": ["release"]}}]}}])
    create(server, guarded)
    [first] = executions(server, "guarded")
    e1 = first["pipelineExecutionId"]
    assert wait_status(server, "guarded", e1, {"Succeeded", "Failed"})["status"] == "Succeeded"
    assert body("guarded/app.txt") == b"v1\n"
    push_change(server, workdir, "v2\n")
    e2 = server.aws("codepipeline", "start-pipeline-execution", "--name", "guarded", "--variables",
                    "name=ok,value=no")["pipelineExecutionId"]
    e = wait_status(server, "guarded", e2, {"Succeeded", "Failed"})
    assert e["status"] == "Failed" and "success conditions were not met" in e["statusSummary"], e
    rolled = wait(server, lambda: executions(server, "guarded"),
                  lambda x: any(s["trigger"]["triggerType"] == "AutomatedRollback" for s in x))
    rb = next(s for s in rolled if s["trigger"]["triggerType"] == "AutomatedRollback")
    done = wait_status(server, "guarded", rb["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert done["status"] == "Succeeded", done
    assert (done["executionType"], done["rollbackMetadata"]["rollbackTargetPipelineExecutionId"]) == ("ROLLBACK", e1)
    assert body("guarded/app.txt") == b"v1\n"
    assert len(executions(server, "guarded")) == 3

    types = server.aws("codepipeline", "list-rule-types")["ruleTypes"]
    assert {t["id"]["provider"] for t in types} == {"VariableCheck", "DeploymentWindow"}


def test_webhooks_start_pipelines_when_authenticated_and_matched(server, workdir):
    import hashlib
    import hmac
    import urllib.error
    import urllib.request
    setup(server, workdir)
    create(server, declaration("hooked", approval=False))
    secret = "s3cr3t-webhook-token"

    def put(name, auth, config, filters=None, check=True, pipeline="hooked"):
        d = {"name": name, "targetPipeline": pipeline, "targetAction": "Source",
             "filters": filters if filters is not None else [{"jsonPath": "$.ref", "matchEquals": "refs/heads/{BranchName}"}],
             "authentication": auth, "authenticationConfiguration": config}
        return server.aws("codepipeline", "put-webhook", "--webhook", json.dumps(d), "--tags", "key=team,value=web", check=check)

    def post(url, payload, signature=None):
        body = json.dumps(payload).encode()
        req = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/json"})
        if signature is not None:
            req.add_header("X-Hub-Signature-256", "sha256=" + hmac.new(signature.encode(), body, hashlib.sha256).hexdigest())
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    hook = put("gh", "GITHUB_HMAC", {"SecretToken": secret})["webhook"]
    assert hook["arn"] == f"arn:aws:codepipeline:us-east-1:{ACCOUNT}:webhook:gh"
    assert hook["url"].startswith(server.url + "/-/webhooks/trigger?t=")
    [listed] = server.aws("codepipeline", "list-webhooks")["webhooks"]
    assert listed["definition"]["authenticationConfiguration"]["SecretToken"] == secret
    assert listed["url"] == hook["url"] and listed["tags"] == [{"key": "team", "value": "web"}]
    # The secret is sealed at rest.
    assert secret.encode() not in (server.data_dir / "slipway.db").read_bytes()
    before = len(executions(server, "hooked"))

    status, out = post(hook["url"], {"ref": "refs/heads/main"}, signature="wrong")
    assert status == 403, out
    status, out = post(hook["url"], {"ref": "refs/heads/main"})
    assert status == 403, out
    status, out = post(hook["url"], {"ref": "refs/heads/other"}, signature=secret)
    assert status == 200 and "pipelineExecutionId" not in out, out
    assert len(executions(server, "hooked")) == before
    status, out = post(hook["url"], {"ref": "refs/heads/main"}, signature=secret)
    assert status == 200, out
    e = execution(server, "hooked", out["pipelineExecutionId"])
    assert (e["trigger"]["triggerType"], e["trigger"]["triggerDetail"]) == ("Webhook", hook["arn"])
    assert server.aws("codepipeline", "list-webhooks")["webhooks"][0]["lastTriggered"]

    # IP authentication: loopback is outside 10.0.0.0/8 and inside 127.0.0.0/8.
    ip = put("ip", "IP", {"AllowedIPRange": "10.0.0.0/8"}, filters=[])["webhook"]
    assert post(ip["url"], {"any": "thing"})[0] == 403
    ip = put("ip", "IP", {"AllowedIPRange": "127.0.0.0/8"}, filters=[])["webhook"]
    status, out = post(ip["url"], {"any": "thing"})
    assert status == 200 and out["pipelineExecutionId"], out

    # Invalid definitions change nothing.
    for auth, config, filters, code in [
        ("GITHUB_HMAC", {}, None, "InvalidWebhookAuthenticationParametersException"),
        ("IP", {"AllowedIPRange": "not a range"}, None, "InvalidWebhookAuthenticationParametersException"),
        ("UNAUTHENTICATED", {}, [{"jsonPath": "$[?(", "matchEquals": "x"}], "InvalidWebhookFilterPatternException"),
    ]:
        assert put("bad", auth, config, filters, check=False).code == code
    assert put("bad", "UNAUTHENTICATED", {}, check=False, pipeline="nope").code == "PipelineNotFoundException"
    assert [w["definition"]["name"] for w in server.aws("codepipeline", "list-webhooks")["webhooks"]] == ["gh", "ip"]

    server.aws("codepipeline", "register-webhook-with-third-party", "--webhook-name", "gh")
    server.aws("codepipeline", "deregister-webhook-with-third-party", "--webhook-name", "gh")
    err = server.aws("codepipeline", "register-webhook-with-third-party", "--webhook-name", "nope", check=False)
    assert err.code == "WebhookNotFoundException"
    server.aws("codepipeline", "tag-resource", "--resource-arn", hook["arn"], "--tags", "key=tier,value=1")
    tags = server.aws("codepipeline", "list-tags-for-resource", "--resource-arn", hook["arn"])["tags"]
    assert {t["key"] for t in tags} == {"team", "tier"}
    server.aws("codepipeline", "delete-webhook", "--name", "gh")
    server.aws("codepipeline", "delete-webhook", "--name", "gh")
    assert [w["definition"]["name"] for w in server.aws("codepipeline", "list-webhooks")["webhooks"]] == ["ip"]
    assert post(hook["url"], {"ref": "refs/heads/main"}, signature=secret)[0] == 404


def test_action_type_declarations_and_deploy_targets(server, workdir):
    setup(server, workdir)
    got = server.aws("codepipeline", "get-action-type", "--category", "Build", "--owner", "AWS",
                     "--provider", "CodeBuild", "--action-version", "1")["actionType"]
    props = {p["name"]: p["optional"] for p in got["properties"]}
    assert props["ProjectName"] is False and props["PrimarySource"] is True
    assert got["inputArtifactDetails"] == {"minimumCount": 1, "maximumCount": 5}
    err = server.aws("codepipeline", "get-action-type", "--category", "Build", "--owner", "ThirdParty",
                     "--provider", "Jenkins", "--action-version", "1", check=False)
    assert err.code == "ActionTypeNotFoundException"
    err = server.aws("codepipeline", "update-action-type", "--action-type", json.dumps(got), check=False)
    assert err.code == "RequestFailedException"
    create(server, declaration("targets", approval=False))
    [first] = executions(server, "targets")
    wait_status(server, "targets", first["pipelineExecutionId"], {"Succeeded", "Failed"})
    runs = server.aws("codepipeline", "list-action-executions", "--pipeline-name", "targets")["actionExecutionDetails"]
    deploy = next(r for r in runs if r["stageName"] == "Deploy")
    out = server.aws("codepipeline", "list-deploy-action-execution-targets", "--pipeline-name", "targets",
                     "--action-execution-id", deploy["actionExecutionId"])
    assert out["targets"] == []
    err = server.aws("codepipeline", "list-deploy-action-execution-targets", "--pipeline-name", "targets",
                     "--action-execution-id", "nope", check=False)
    assert err.code == "ActionExecutionNotFoundException"


def test_commands_action_runs_in_a_build_sandbox(server, workdir):
    setup(server, workdir)
    d = declaration("cmds", approval=False, mode="QUEUED")
    d["stages"][1] = {"name": "Compute", "actions": [{
        "name": "Run", "actionTypeId": {"category": "Compute", "owner": "AWS", "provider": "Commands", "version": "1"},
        "runOrder": 1, "namespace": "Run",
        "inputArtifacts": [{"name": "SourceOutput"}],
        "outputArtifacts": [{"name": "BuildOutput", "files": ["dist/**/*"]}],
        "commands": ["mkdir -p dist", "tr a-z A-Z < app.txt > dist/app.txt", "echo \"$GREETING #{SourceVariables.BranchName}\" > dist/who.txt",
                     "export STAMP=built-$(cat app.txt)"],
        "outputVariables": ["STAMP"],
        "environmentVariables": [{"name": "GREETING", "value": "hi", "type": "PLAINTEXT"}],
    }]}
    d["stages"][2]["actions"][0]["configuration"]["ObjectKey"] = "#{Run.STAMP}"
    create(server, d)
    [first] = executions(server, "cmds")
    e = wait_status(server, "cmds", first["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert e["status"] == "Succeeded", e.get("statusSummary")
    s3 = server.client("s3")
    assert s3.get_object(Bucket="site", Key="built-v1/dist/app.txt")["Body"].read() == b"V1\n"
    assert s3.get_object(Bucket="site", Key="built-v1/dist/who.txt")["Body"].read() == b"hi main\n"
    # V1 pipelines have no Commands actions.
    d1 = copy.deepcopy(d)
    d1["name"] = "cmds-v1"
    del d1["pipelineType"], d1["executionMode"]
    err = server.aws("codepipeline", "create-pipeline", "--pipeline", json.dumps(d1), check=False)
    assert err.code == "InvalidActionDeclarationException"


def test_s3_source_starts_on_a_new_object_version(server, workdir):
    s3 = server.client("s3")
    for b in ("artifacts", "drops", "plain", "site"):
        s3.create_bucket(Bucket=b)
    for b in ("artifacts", "drops"):
        s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})

    def bundle(text):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("index.html", text)
        return buf.getvalue()

    first_version = s3.put_object(Bucket="drops", Key="app.zip", Body=bundle("one"))["VersionId"]

    def pipeline(name, bucket):
        return {
            "name": name, "roleArn": f"arn:aws:iam::{ACCOUNT}:role/pipeline",
            "artifactStore": {"type": "S3", "location": "artifacts"},
            "stages": [
                {"name": "Source", "actions": [action("Source", "Source", "S3", {
                    "S3Bucket": bucket, "S3ObjectKey": "app.zip", "PollForSourceChanges": "false"},
                    outputs=["Drop"], namespace="Drop")]},
                {"name": "Deploy", "actions": [action("Deploy", "Deploy", "S3", {
                    "BucketName": "site", "Extract": "true", "ObjectKey": name}, inputs=["Drop"])]},
            ],
        }

    create(server, pipeline("dropped", "drops"))
    [first] = executions(server, "dropped")
    e = wait_status(server, "dropped", first["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert e["status"] == "Succeeded", e.get("statusSummary")
    assert e["artifactRevisions"][0]["revisionId"] == first_version
    assert s3.get_object(Bucket="site", Key="dropped/index.html")["Body"].read() == b"one"
    # A new version of the object starts the pipeline with that version.
    second_version = s3.put_object(Bucket="drops", Key="app.zip", Body=bundle("two"))["VersionId"]
    runs = wait(server, lambda: executions(server, "dropped"), lambda x: len(x) == 2)
    second = runs[0]
    assert second["trigger"]["triggerType"] == "CloudWatchEvent"
    e = wait_status(server, "dropped", second["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert e["status"] == "Succeeded" and e["artifactRevisions"][0]["revisionId"] == second_version
    assert s3.get_object(Bucket="site", Key="dropped/index.html")["Body"].read() == b"two"
    details = server.aws("codepipeline", "list-action-executions", "--pipeline-name", "dropped", "--filter",
                         json.dumps({"pipelineExecutionId": second["pipelineExecutionId"]}))["actionExecutionDetails"]
    src = next(d for d in details if d["actionName"] == "Source")
    assert src["output"]["outputVariables"]["VersionId"] == second_version
    # A bucket without versioning cannot be a source.
    s3.put_object(Bucket="plain", Key="app.zip", Body=bundle("x"))
    create(server, pipeline("unversioned", "plain"))
    [u] = executions(server, "unversioned")
    e = wait_status(server, "unversioned", u["pipelineExecutionId"], {"Succeeded", "Failed"})
    assert e["status"] == "Failed" and "versioning" in e["statusSummary"], e
