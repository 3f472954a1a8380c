"""CodeDeploy end to end: the API through boto3, and real `slipway agent` processes (each its
own root directory and IAM user, registered as an on-premises instance with tags) that run
revisions from Slipway's S3 in batches, fail, and roll back."""

import io
import json
import os
import subprocess
import time
import zipfile

import pytest
from botocore.exceptions import ClientError

from conftest import BIN, Server

AGENT_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["codedeploy-commands:*", "s3:GetObject", "s3:GetObjectVersion"], "Resource": "*"}],
}

HOOK = """#!/bin/sh
echo "$(date +%s.%N) start $LIFECYCLE_EVENT $DEPLOYMENT_ID" >> "$AGENT_OUT/events"
sleep 0.4
if [ -e "$AGENT_OUT/fail-$LIFECYCLE_EVENT" ]; then echo "failing on purpose" >&2; exit 3; fi
echo "$(date +%s.%N) end $LIFECYCLE_EVENT $DEPLOYMENT_ID" >> "$AGENT_OUT/events"
echo "hook output for $APPLICATION_NAME/$DEPLOYMENT_GROUP_NAME"
"""


def bundle(version, files=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        appspec = "version: 0.0\nos: linux\n"
        if files:
            appspec += f"files:\n  - source: /app\n    destination: {files}\n"
        appspec += "hooks:\n"
        for ev in ("ApplicationStart", "ValidateService"):
            appspec += f"  {ev}:\n    - location: hook.sh\n      timeout: 60\n"
        z.writestr("appspec.yml", appspec)
        info = zipfile.ZipInfo("hook.sh")
        info.external_attr = 0o755 << 16
        z.writestr(info, HOOK)
        z.writestr("app/VERSION", version)
    return buf.getvalue()


def agent_user(server, name, tags):
    """An IAM user for host `name`'s agent, registered as an on-premises instance with
    `tags`: its access key and user ARN."""
    server.admin("create-user", "--user-name", name)
    key = server.admin("create-access-key", "--user-name", name)["AccessKey"]
    server.admin("put-user-policy", "--user-name", name, "--policy-name", "agent", "--policy-document", json.dumps(AGENT_POLICY))
    arn = server.admin("get-user", "--user-name", name)["User"]["Arn"]
    cd = server.client("codedeploy")
    cd.register_on_premises_instance(instanceName=name, iamUserArn=arn)
    cd.add_tags_to_on_premises_instances(instanceNames=[name], tags=tags)
    return key, arn


class Fleet:
    def __init__(self, server, workdir, n, tag="web"):
        self.server = server
        self.agents = {}
        self.procs = {}
        for i in range(n):
            name = f"host{i}"
            key, arn = agent_user(server, name, [{"Key": "role", "Value": tag}])
            out = workdir / f"out-{name}"
            out.mkdir()
            self.agents[name] = dict(key=key, arn=arn, out=out, root=workdir / f"root-{name}")
            self.start(name)

    def start(self, name):
        a = self.agents[name]
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=a["key"]["AccessKeyId"],
            AWS_SECRET_ACCESS_KEY=a["key"]["SecretAccessKey"],
            AWS_HOST_IDENTIFIER=a["arn"],
            AWS_REGION="us-east-1",
            AGENT_OUT=str(a["out"]),
        )
        log = open(a["out"].parent / f"agent-{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [BIN, "agent", "--endpoint", self.server.url, "--instance-name", name, "--root-dir", str(a["root"]), "--heartbeat-secs", "1"],
            env=env,
            stdout=log,
            stderr=log,
        )

    def kill(self, name):
        self.procs[name].kill()
        self.procs[name].wait()

    def stop(self):
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def intervals(self, event, deployment):
        """(start, end) of `event` of `deployment` on each host."""
        out = {}
        for name, a in self.agents.items():
            path = a["out"] / "events"
            if not path.exists():
                continue
            start = end = None
            for line in path.read_text().splitlines():
                t, kind, ev, dep = line.split()
                if ev == event and dep == deployment:
                    if kind == "start":
                        start = float(t)
                    else:
                        end = float(t)
            if start is not None:
                out[name] = (start, end)
        return out


def peak(intervals):
    points = []
    for s, e in intervals.values():
        points += [(s, 1), (e or s + 0.4, -1)]
    cur = best = 0
    for _, d in sorted(points, key=lambda p: (p[0], p[1])):
        cur += d
        best = max(best, cur)
    return best


def wait(cd, deployment_id, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = cd.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
        if info["status"] in ("Succeeded", "Failed", "Stopped"):
            return info
        time.sleep(0.3)
    raise AssertionError(f"deployment {deployment_id} did not end: {info}")


@pytest.fixture
def fleet_server(workdir):
    s = Server(workdir / "data", env={"SLIPWAY_AGENT_TIMEOUT_SECS": "6"}).start()
    yield s
    s.stop()


def setup_app(s, config="CodeDeployDefault.AllAtOnce", rollback=True):
    cd = s.client("codedeploy")
    s3 = s.client("s3")
    s3.create_bucket(Bucket="revisions")
    s3.put_bucket_versioning(Bucket="revisions", VersioningConfiguration={"Status": "Enabled"})
    cd.create_application(applicationName="web", computePlatform="Server")
    cd.create_deployment_group(
        applicationName="web",
        deploymentGroupName="fleet",
        serviceRoleArn="arn:aws:iam::000000000000:role/codedeploy",
        deploymentConfigName=config,
        onPremisesInstanceTagFilters=[{"Key": "role", "Value": "web", "Type": "KEY_AND_VALUE"}],
        autoRollbackConfiguration={"enabled": rollback, "events": ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_REQUEST"]},
    )
    return cd, s3


def deploy(cd, s3, version, config=None, **kw):
    put = s3.put_object(Bucket="revisions", Key="web.zip", Body=bundle(version, **kw))
    args = dict(
        applicationName="web",
        deploymentGroupName="fleet",
        revision={"revisionType": "S3", "s3Location": {"bucket": "revisions", "key": "web.zip", "bundleType": "zip", "version": put["VersionId"]}},
    )
    if config:
        args["deploymentConfigName"] = config
    return cd.create_deployment(**args)["deploymentId"]


def test_api_shapes_and_errors(server):
    cd = server.client("codedeploy")
    assert cd.create_application(applicationName="a1")["applicationId"]
    with pytest.raises(ClientError) as e:
        cd.create_application(applicationName="a1")
    assert e.value.response["Error"]["Code"] == "ApplicationAlreadyExistsException"
    with pytest.raises(ClientError) as e:
        cd.create_application(applicationName="a2", computePlatform="Lambda")
    assert e.value.response["Error"]["Code"] == "InvalidComputePlatformException"
    assert "Server" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        cd.get_application(applicationName="nope")
    assert e.value.response["Error"]["Code"] == "ApplicationDoesNotExistException"
    one = cd.get_deployment_config(deploymentConfigName="CodeDeployDefault.OneAtATime")["deploymentConfigInfo"]
    assert one["minimumHealthyHosts"] == {"type": "MOST_CONCURRENCY", "value": 1}
    cd.create_deployment_config(deploymentConfigName="sixty", minimumHealthyHosts={"type": "FLEET_PERCENT", "value": 60})
    assert "sixty" in cd.list_deployment_configs()["deploymentConfigsList"]
    with pytest.raises(ClientError) as e:
        cd.create_deployment_config(deploymentConfigName="bad", minimumHealthyHosts={"type": "FLEET_PERCENT", "value": 100})
    assert e.value.response["Error"]["Code"] == "InvalidMinimumHealthyHostValueException"
    with pytest.raises(ClientError) as e:
        cd.create_deployment_group(applicationName="a1", deploymentGroupName="g", serviceRoleArn="arn:aws:iam::1:role/r", deploymentConfigName="nope")
    assert e.value.response["Error"]["Code"] == "DeploymentConfigDoesNotExistException"
    cd.create_deployment_group(
        applicationName="a1", deploymentGroupName="g", serviceRoleArn="arn:aws:iam::1:role/r", deploymentConfigName="sixty",
        onPremisesInstanceTagFilters=[{"Key": "k", "Value": "v", "Type": "KEY_AND_VALUE"}], tags=[{"Key": "team", "Value": "x"}],
    )
    with pytest.raises(ClientError) as e:
        cd.delete_deployment_config(deploymentConfigName="sixty")
    assert e.value.response["Error"]["Code"] == "DeploymentConfigInUseException"
    g = cd.get_deployment_group(applicationName="a1", deploymentGroupName="g")["deploymentGroupInfo"]
    assert g["deploymentStyle"] == {"deploymentType": "IN_PLACE", "deploymentOption": "WITHOUT_TRAFFIC_CONTROL"}
    arn = "arn:aws:codedeploy:us-east-1:000000000000:deploymentgroup:a1/g"
    assert cd.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "x"}]
    cd.update_deployment_group(applicationName="a1", currentDeploymentGroupName="g", newDeploymentGroupName="g2")
    assert cd.list_deployment_groups(applicationName="a1")["deploymentGroups"] == ["g2"]
    # No instance matches: the deployment fails with NO_INSTANCES.
    cd.register_application_revision(applicationName="a1", revision={"revisionType": "AppSpecContent", "appSpecContent": {"content": "version: 0.0\nos: linux\n"}}, description="empty")
    revs = cd.list_application_revisions(applicationName="a1")["revisions"]
    assert len(revs) == 1 and revs[0]["revisionType"] == "AppSpecContent"
    d = cd.create_deployment(applicationName="a1", deploymentGroupName="g2", revision=revs[0])["deploymentId"]
    info = wait(cd, d)
    assert info["status"] == "Failed" and info["errorInformation"]["code"] == "NO_INSTANCES"
    with pytest.raises(ClientError) as e:
        cd.register_on_premises_instance(instanceName="i", iamUserArn="not-an-arn")
    assert e.value.response["Error"]["Code"] == "InvalidIamUserArnException"


def test_fleet_batches_failure_rollback_and_a_killed_agent(fleet_server, workdir):
    s = fleet_server
    cd, s3 = setup_app(s)
    fleet = Fleet(s, workdir, 5)
    try:
        # AllAtOnce: every host at once.
        d1 = deploy(cd, s3, "v1")
        info = wait(cd, d1)
        assert info["status"] == "Succeeded", info
        assert info["deploymentOverview"]["Succeeded"] == 5
        assert peak(fleet.intervals("ApplicationStart", d1)) == 5
        inst = cd.get_deployment_instance(deploymentId=d1, instanceId="host0")["instanceSummary"]
        events = [e["lifecycleEventName"] for e in inst["lifecycleEvents"]]
        assert events == ["ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall", "ApplicationStart", "ValidateService"]
        assert all(e["status"] == "Succeeded" for e in inst["lifecycleEvents"])
        start = next(e for e in inst["lifecycleEvents"] if e["lifecycleEventName"] == "ApplicationStart")
        assert "hook output for web/fleet" in start["diagnostics"]["logTail"]
        # HalfAtATime on five: two at a time.
        d2 = deploy(cd, s3, "v2", config="CodeDeployDefault.HalfAtATime")
        assert wait(cd, d2)["status"] == "Succeeded"
        assert peak(fleet.intervals("ApplicationStart", d2)) == 2
        # A custom FLEET_PERCENT of 40 on five: two must stay healthy, three at a time.
        cd.create_deployment_config(deploymentConfigName="forty", minimumHealthyHosts={"type": "FLEET_PERCENT", "value": 40})
        d3 = deploy(cd, s3, "v3", config="forty")
        assert wait(cd, d3)["status"] == "Succeeded"
        assert peak(fleet.intervals("ApplicationStart", d3)) == 3
        # OneAtATime with ValidateService failing on one host: the deployment fails when
        # that host does, and a rollback deployment of v3 follows to the touched hosts.
        (fleet.agents["host1"]["out"] / "fail-ValidateService").touch()
        d4 = deploy(cd, s3, "v4", config="CodeDeployDefault.OneAtATime")
        info = wait(cd, d4)
        assert info["status"] == "Failed", info
        assert info["errorInformation"]["code"] == "HEALTH_CONSTRAINTS"
        assert peak(fleet.intervals("ApplicationStart", d4)) == 1
        failed = cd.get_deployment_instance(deploymentId=d4, instanceId="host1")["instanceSummary"]
        assert failed["status"] == "Failed"
        vs = next(e for e in failed["lifecycleEvents"] if e["lifecycleEventName"] == "ValidateService")
        assert vs["diagnostics"]["errorCode"] == "ScriptFailed"
        assert "failing on purpose" in vs["diagnostics"]["logTail"]
        statuses = cd.list_deployment_instances(deploymentId=d4, instanceStatusFilter=["Skipped"])["instancesList"]
        assert set(statuses) == {"host2", "host3", "host4"}  # host0 first, host1 failed
        rb = info["rollbackInfo"]["rollbackDeploymentId"]
        (fleet.agents["host1"]["out"] / "fail-ValidateService").unlink()
        rbinfo = wait(cd, rb)
        assert rbinfo["creator"] == "codeDeployRollback"
        assert rbinfo["rollbackInfo"]["rollbackTriggeringDeploymentId"] == d4
        assert rbinfo["status"] == "Succeeded", rbinfo
        assert rbinfo["revision"]["s3Location"]["version"] == cd.get_deployment(deploymentId=d3)["deploymentInfo"]["revision"]["s3Location"]["version"]
        assert sorted(cd.list_deployment_instances(deploymentId=rb)["instancesList"]) == ["host0", "host1"]
        # An agent killed mid-deployment (inside a hook): its host fails after the agent
        # timeout, and the others finish.
        d5 = deploy(cd, s3, "v5")
        events = fleet.agents["host3"]["out"] / "events"
        deadline = time.time() + 60
        while f"start ApplicationStart {d5}" not in events.read_text():
            assert time.time() < deadline, "host3 never started ApplicationStart"
            time.sleep(0.05)
        fleet.kill("host3")
        info = wait(cd, d5, timeout=60)
        assert info["status"] == "Succeeded"  # AllAtOnce: four of five suffice
        lost = cd.get_deployment_instance(deploymentId=d5, instanceId="host3")["instanceSummary"]
        assert lost["status"] == "Failed"
        assert "stopped answering" in json.dumps(lost["lifecycleEvents"], default=str)
        # Restarted, the agent reports the command it was killed in as failed (AWS's code 7,
        # ignored: the host had already failed), and takes the next deployment.
        fleet.start("host3")
        d6 = deploy(cd, s3, "v6")
        info = wait(cd, d6, timeout=60)
        assert info["status"] == "Succeeded" and info["deploymentOverview"]["Succeeded"] == 5, info
        # The events of every deployment are in the outbox.
        kinds = {e["detail-type"] for e in s.events() if e["source"] == "aws.codedeploy"}
        assert kinds == {"CodeDeploy Deployment State-change Notification", "CodeDeploy Instance State-change Notification"}
    finally:
        fleet.stop()


def test_files_and_stop_with_rollback(fleet_server, workdir):
    s = fleet_server
    cd, s3 = setup_app(s)
    fleet = Fleet(s, workdir, 1)
    dest = workdir / "installed"
    try:
        d1 = deploy(cd, s3, "v1", files=str(dest))
        assert wait(cd, d1)["status"] == "Succeeded"
        assert (dest / "VERSION").read_text() == "v1"
        d2 = deploy(cd, s3, "v2", files=str(dest))
        assert wait(cd, d2)["status"] == "Succeeded"
        assert (dest / "VERSION").read_text() == "v2"  # the previous install's files were cleaned up
        # A file no deployment installed is in the way: DISALLOW fails Install, and the
        # rollback reinstalls v2.
        other = workdir / "other"
        other.mkdir()
        (other / "VERSION").write_text("mine")
        d3 = deploy(cd, s3, "v3", files=str(other))
        info = wait(cd, d3)
        assert info["status"] == "Failed"
        inst = cd.get_deployment_instance(deploymentId=d3, instanceId="host0")["instanceSummary"]
        install = next(e for e in inst["lifecycleEvents"] if e["lifecycleEventName"] == "Install")
        assert "already exists" in install["diagnostics"]["message"]
        assert (other / "VERSION").read_text() == "mine"
        assert wait(cd, info["rollbackInfo"]["rollbackDeploymentId"])["status"] == "Succeeded"
        assert (dest / "VERSION").read_text() == "v2"
        # StopDeployment with rollback while a hook sleeps.
        d4 = deploy(cd, s3, "v4", files=str(dest))
        time.sleep(1.0)
        try:
            out = cd.stop_deployment(deploymentId=d4, autoRollbackEnabled=True)
            assert out["status"] == "Succeeded"
            info = wait(cd, d4)
            assert info["status"] == "Stopped"
            assert info["errorInformation"]["code"] == "MANUAL_STOP"
            assert wait(cd, info["rollbackInfo"]["rollbackDeploymentId"])["status"] == "Succeeded"
        except ClientError as e:
            assert e.response["Error"]["Code"] == "DeploymentAlreadyCompletedException"
        with pytest.raises(ClientError) as e:
            cd.stop_deployment(deploymentId=d1)
        assert e.value.response["Error"]["Code"] == "DeploymentAlreadyCompletedException"
    finally:
        fleet.stop()
