"""CodeDeploy to the server's own machine through its built-in agent: `aws deploy push`,
`create-deployment` and `aws deploy wait deployment-successful` with the real aws-cli,
`slipway deploy watch`, a pipeline whose last stage deploys with CodeDeploy after a push, and
a health check (alarm) that stops a deployment and rolls it back."""

import http.server
import json
import subprocess
import threading
import time

from conftest import BIN
from test_codebuild import push_repo
from test_codedeploy import wait
from test_codepipeline import action, execution, wait as wait_for


def group_on_self(s, app, group, **extra):
    s.aws("deploy", "add-tags-to-on-premises-instances", "--instance-names", "slipway-server", "--tags", "Key=role,Value=self")
    s.aws("deploy", "create-application", "--application-name", app)
    s.aws(
        "deploy", "create-deployment-group", "--application-name", app, "--deployment-group-name", group,
        "--service-role-arn", "arn:aws:iam::000000000000:role/cd",
        "--deployment-config-name", "CodeDeployDefault.AllAtOnce",
        "--on-premises-instance-tag-filters", "Key=role,Value=self,Type=KEY_AND_VALUE",
        *extra.get("args", ()),
    )


def appspec(dest, hook="echo started > \"$OUT\""):
    return (
        "version: 0.0\nos: linux\nfiles:\n  - source: /site\n"
        f"    destination: {dest}\n"
        "file_exists_behavior: OVERWRITE\n"
        "hooks:\n  ApplicationStart:\n    - location: start.sh\n      timeout: 30\n"
    )


def test_push_wait_and_watch_with_the_builtin_agent(server, workdir):
    s = server
    instances = s.aws("deploy", "list-on-premises-instances")["instanceNames"]
    assert "slipway-server" in instances
    group_on_self(s, "site", "self")
    s.aws("s3api", "create-bucket", "--bucket", "bundles")
    s.aws("s3api", "put-bucket-versioning", "--bucket", "bundles", "--versioning-configuration", "Status=Enabled")
    src = workdir / "src"
    (src / "site").mkdir(parents=True)
    (src / "site" / "index.html").write_text("hello v1")
    dest = workdir / "www"
    (src / "appspec.yml").write_text(appspec(dest))
    (src / "start.sh").write_text(f"#!/bin/sh\necho \"$DEPLOYMENT_ID $LIFECYCLE_EVENT $APPLICATION_NAME\" > {workdir}/started\n")
    (src / "start.sh").chmod(0o755)
    out = subprocess.run(
        ["aws", "deploy", "push", "--application-name", "site", "--s3-location", "s3://bundles/site.zip", "--source", str(src), "--description", "first"],
        env=s.env(), capture_output=True, text=True, check=True,
    ).stdout
    assert "create-deployment" in out
    revs = s.aws("deploy", "list-application-revisions", "--application-name", "site")["revisions"]
    assert revs and revs[0]["s3Location"]["key"] == "site.zip" and revs[0]["s3Location"]["bundleType"] == "zip"
    d = s.aws(
        "deploy", "create-deployment", "--application-name", "site", "--deployment-group-name", "self",
        "--s3-location", f"bucket=bundles,key=site.zip,bundleType=zip,eTag={revs[0]['s3Location']['eTag']}",
    )["deploymentId"]
    s.aws("deploy", "wait", "deployment-successful", "--deployment-id", d)
    assert (dest / "index.html").read_text() == "hello v1"
    assert (workdir / "started").read_text().split() == [d, "ApplicationStart", "site"]
    watch = subprocess.run([BIN, "deploy", "watch", d], env=s.env(), capture_output=True, text=True, timeout=60)
    assert watch.returncode == 0, watch.stderr
    assert "slipway-server" in watch.stdout and "Succeeded" in watch.stdout and "batch 1" in watch.stdout
    info = s.aws("deploy", "get-application-revision", "--application-name", "site",
                 "--s3-location", "bucket=bundles,key=site.zip,bundleType=zip,eTag=" + revs[0]["s3Location"]["eTag"])
    assert info["revisionInfo"]["deploymentGroups"] == ["self"]


def test_pipeline_deploys_with_codedeploy_after_a_push(server, workdir):
    s = server
    group_on_self(s, "web", "self")
    dest = workdir / "pipeline-www"
    files = {
        "appspec.yml": appspec(dest),
        "start.sh": "#!/bin/sh\nexit 0\n",
        "site/index.html": "pipeline v1\n",
    }
    push_repo(s, workdir, "web", files)
    s.aws("s3api", "create-bucket", "--bucket", "artifacts")
    s.aws("s3api", "put-bucket-versioning", "--bucket", "artifacts", "--versioning-configuration", "Status=Enabled")
    d = {
        "name": "ship",
        "roleArn": "arn:aws:iam::000000000000:role/pipeline",
        "artifactStore": {"type": "S3", "location": "artifacts"},
        "stages": [
            {"name": "Source", "actions": [action("Source", "Source", "CodeCommit", {"RepositoryName": "web", "BranchName": "main", "PollForSourceChanges": "false"}, outputs=["Src"])]},
            {"name": "Deploy", "actions": [action("Deploy", "Deploy", "CodeDeploy", {"ApplicationName": "web", "DeploymentGroupName": "self"}, inputs=["Src"])]},
        ],
    }
    s.aws("codepipeline", "create-pipeline", "--pipeline", json.dumps(d))
    first = s.aws("codepipeline", "list-pipeline-executions", "--pipeline-name", "ship")["pipelineExecutionSummaries"][0]
    wait_for(s, lambda: execution(s, "ship", first["pipelineExecutionId"]), lambda e: e["status"] in ("Succeeded", "Failed"))
    assert execution(s, "ship", first["pipelineExecutionId"])["status"] == "Succeeded"
    assert (dest / "index.html").read_text() == "pipeline v1\n"
    # A push starts the pipeline again, and the new commit reaches the host.
    local = workdir / "web"
    (local / "site" / "index.html").write_text("pipeline v2\n")
    subprocess.run(["git", "commit", "-qam", "v2"], cwd=local, check=True, env=s.env())
    s.git("push", "-q", s.repo_url("web"), "main", cwd=local)
    ex = wait_for(s, lambda: s.aws("codepipeline", "list-pipeline-executions", "--pipeline-name", "ship")["pipelineExecutionSummaries"],
                  lambda l: len(l) >= 2 and l[0]["status"] in ("Succeeded", "Failed"))
    assert ex[0]["status"] == "Succeeded", ex[0]
    assert (dest / "index.html").read_text() == "pipeline v2\n"
    actions = s.aws("codepipeline", "list-action-executions", "--pipeline-name", "ship")["actionExecutionDetails"]
    dep = next(a for a in actions if a["actionName"] == "Deploy" and a["pipelineExecutionId"] == ex[0]["pipelineExecutionId"])
    deployment_id = dep["output"]["executionResult"]["externalExecutionId"]
    info = s.aws("deploy", "get-deployment", "--deployment-id", deployment_id)["deploymentInfo"]
    assert info["creator"] == "CodeDeploy" and info["externalId"]


class Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_a_failing_health_check_stops_the_deployment_and_rolls_back(server, workdir):
    s = server
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/health"
    group_on_self(s, "checked", "self", args=(
        "--alarm-configuration", json.dumps({"enabled": True, "alarms": [{"name": url}]}),
        "--auto-rollback-configuration", "enabled=true,events=DEPLOYMENT_STOP_ON_ALARM",
    ))
    s.aws("s3api", "create-bucket", "--bucket", "hc-bundles")
    s.aws("s3api", "put-bucket-versioning", "--bucket", "hc-bundles", "--versioning-configuration", "Status=Enabled")
    cd = s.client("codedeploy")
    dest = workdir / "checked"

    def revision(version, sleep):
        src = workdir / f"src-{version}"
        (src / "site").mkdir(parents=True)
        (src / "site" / "v").write_text(version)
        (src / "appspec.yml").write_text(appspec(dest))
        (src / "start.sh").write_text(f"#!/bin/sh\nsleep {sleep}\n")
        (src / "start.sh").chmod(0o755)
        subprocess.run(["aws", "deploy", "push", "--application-name", "checked", "--s3-location", f"s3://hc-bundles/{version}.zip", "--source", str(src)],
                       env=s.env(), capture_output=True, check=True)
        return cd.create_deployment(applicationName="checked", deploymentGroupName="self",
                                    revision={"revisionType": "S3", "s3Location": {"bucket": "hc-bundles", "key": f"{version}.zip", "bundleType": "zip"}})["deploymentId"]

    assert wait(cd, revision("v1", 0))["status"] == "Succeeded"
    d2 = revision("v2", 5)
    time.sleep(1)
    Health.status = 500
    info = wait(cd, d2)
    Health.status = 200
    httpd.shutdown()
    assert info["status"] == "Stopped", info
    assert info["errorInformation"]["code"] == "ALARM_ACTIVE"
    rb = wait(cd, info["rollbackInfo"]["rollbackDeploymentId"])
    assert rb["status"] == "Succeeded" and rb["creator"] == "codeDeployRollback"
    assert (dest / "v").read_text() == "v1"
