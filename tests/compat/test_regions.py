"""Every region at once, with the real aws-cli, boto3 and git: the same repository, project
and parameter names in three regions are three resources each; ARNs, clone URLs and events
name their region; a push and a build in a region other than the server's default stay in
it; buckets live in the region they were created for; and a data directory written by the
release from before regions comes up with everything in the default region."""

import json
import pathlib
import shutil
import subprocess
import tarfile
import urllib.request

import botocore.exceptions
import pytest

from conftest import ACCOUNT, AwsError, Server
from test_codebuild import build_log, create_project, wait_build

REGIONS = ["us-east-1", "eu-central-1", "ap-southeast-2"]
FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "legacy-datadir.tar.gz"


def clone_path(server, region, name):
    # The default region's repositories keep CodeCommit's own path.
    if region == "us-east-1":
        return f"{server.url}/v1/repos/{name}"
    return f"{server.url}/-/regions/{region}/v1/repos/{name}"


def test_same_names_in_three_regions_are_three_resources(server):
    for r in REGIONS:
        meta = server.aws(
            "codecommit", "create-repository", "--repository-name", "shared",
            "--repository-description", f"in {r}", region=r,
        )["repositoryMetadata"]
        assert meta["Arn"] == f"arn:aws:codecommit:{r}:{ACCOUNT}:shared"
        assert meta["cloneUrlHttp"] == clone_path(server, r, "shared")
        server.aws("ssm", "put-parameter", "--name", "/shared/p", "--type", "String", "--value", f"value-{r}", region=r)
        server.aws("ssm", "put-parameter", "--name", "/shared/secret", "--type", "SecureString",
                   "--value", f"secret-{r}", region=r)
        project = create_project(server, "shared", {"type": "NO_SOURCE", "buildspec": "version: 0.2"},
                                 description=f"in {r}", region=r)
        assert project["arn"] == f"arn:aws:codebuild:{r}:{ACCOUNT}:project/shared"
        assert project["encryptionKey"] == f"arn:aws:kms:{r}:{ACCOUNT}:alias/aws/s3"
        group = server.aws("codebuild", "create-report-group", "--name", "shared", "--type", "TEST",
                           "--export-config", '{"exportConfigType":"NO_EXPORT"}', region=r)["reportGroup"]
        assert group["arn"] == f"arn:aws:codebuild:{r}:{ACCOUNT}:report-group/shared"
    # A second create in the same region is refused; the names are only taken per region.
    err = server.aws("codecommit", "create-repository", "--repository-name", "shared", region="eu-central-1",
                     check=False)
    assert isinstance(err, AwsError) and err.code == "RepositoryNameExistsException"
    only_here = server.aws("codecommit", "create-repository", "--repository-name", "only-eu", region="eu-central-1")
    assert only_here["repositoryMetadata"]["repositoryName"] == "only-eu"

    for r in REGIONS:
        meta = server.aws("codecommit", "get-repository", "--repository-name", "shared", region=r)["repositoryMetadata"]
        assert meta["repositoryDescription"] == f"in {r}"
        names = sorted(x["repositoryName"] for x in server.aws("codecommit", "list-repositories", region=r)["repositories"])
        assert names == (["only-eu", "shared"] if r == "eu-central-1" else ["shared"])
        p = server.aws("ssm", "get-parameter", "--name", "/shared/p", region=r)["Parameter"]
        assert p["Value"] == f"value-{r}"
        assert p["ARN"] == f"arn:aws:ssm:{r}:{ACCOUNT}:parameter/shared/p"
        s = server.aws("ssm", "get-parameter", "--name", "/shared/secret", "--with-decryption", region=r)
        assert s["Parameter"]["Value"] == f"secret-{r}"
        by_path = server.aws("ssm", "get-parameters-by-path", "--path", "/shared", region=r)["Parameters"]
        assert sorted(x["Name"] for x in by_path) == ["/shared/p", "/shared/secret"]
        [proj] = server.aws("codebuild", "batch-get-projects", "--names", "shared", region=r)["projects"]
        assert proj["description"] == f"in {r}"
        assert server.aws("codebuild", "list-projects", region=r)["projects"] == ["shared"]
        groups = server.aws("codebuild", "list-report-groups", region=r)["reportGroups"]
        assert groups == [f"arn:aws:codebuild:{r}:{ACCOUNT}:report-group/shared"]
    # Regions that were never used are empty, and deleting in one region leaves the others.
    assert server.aws("codecommit", "list-repositories", region="sa-east-1")["repositories"] == []
    assert server.aws("ssm", "describe-parameters", region="sa-east-1")["Parameters"] == []
    server.aws("codecommit", "delete-repository", "--repository-name", "shared", region="ap-southeast-2")
    server.aws("ssm", "delete-parameter", "--name", "/shared/p", region="ap-southeast-2")
    assert server.aws("codecommit", "get-repository", "--repository-name", "shared",
                      region="us-east-1")["repositoryMetadata"]["repositoryDescription"] == "in us-east-1"
    assert server.aws("ssm", "get-parameter", "--name", "/shared/p", region="eu-central-1")["Parameter"]["Value"] == "value-eu-central-1"
    err = server.aws("ssm", "get-parameter", "--name", "/shared/p", region="ap-southeast-2", check=False)
    assert isinstance(err, AwsError) and err.code == "ParameterNotFound"
    # An ARN of another region's resource is not found here (as at another region's endpoint).
    err = server.aws("codebuild", "batch-get-report-groups", "--report-group-arns",
                     f"arn:aws:codebuild:eu-central-1:{ACCOUNT}:report-group/shared", region="us-east-1")
    assert err["reportGroupsNotFound"] == [f"arn:aws:codebuild:eu-central-1:{ACCOUNT}:report-group/shared"]


def test_unknown_region_names_are_refused(server):
    for bad in ["moon-base-1", "us-east-99"]:
        err = server.aws("codecommit", "list-repositories", region=bad, check=False)
        assert isinstance(err, AwsError)
        assert err.code == "InvalidSignatureException"
        assert f"Credential should be scoped to a valid region, not '{bad}'" in err.message
    # Other partitions' regions are regions too, with their own ARN partition.
    meta = server.aws("codecommit", "create-repository", "--repository-name", "cn", region="cn-north-1")
    assert meta["repositoryMetadata"]["Arn"] == f"arn:aws-cn:codecommit:cn-north-1:{ACCOUNT}:cn"


def test_push_and_build_in_a_non_default_region(server, workdir):
    region = "eu-central-1"
    # The same repository name in the default region, with other contents.
    server.aws("codecommit", "create-repository", "--repository-name", "app")
    url = server.aws("codecommit", "create-repository", "--repository-name", "app",
                     region=region)["repositoryMetadata"]["cloneUrlHttp"]
    assert url == clone_path(server, region, "app")
    server.aws("ssm", "put-parameter", "--name", "/ci/where", "--type", "SecureString", "--value", "frankfurt-secret",
               region=region)
    server.aws("ssm", "put-parameter", "--name", "/ci/where", "--type", "SecureString", "--value", "virginia-secret")
    local = workdir / "app"
    local.mkdir()
    env = server.env()
    run = lambda *a: subprocess.run(["git", *a], cwd=local, check=True, capture_output=True, env=env)
    run("init", "-q", "-b", "main")
    (local / "buildspec.yml").write_text(
        "version: 0.2\nenv:\n  parameter-store:\n    WHERE: /ci/where\nphases:\n  build:\n    commands:\n"
        "      - echo \"region=$AWS_REGION default=$AWS_DEFAULT_REGION\"\n"
        "      - test \"$WHERE\" = frankfurt-secret && echo the parameter is from Frankfurt\n"
        "      - cat marker.txt\n"
    )
    (local / "marker.txt").write_text("the eu-central-1 source\n")
    run("add", "-A")
    run("commit", "-q", "-m", "eu")
    # The credential helper signs for the region it is configured with: either works.
    server.git("push", "-q", url, "main", cwd=local, region=region)
    (local / "more.txt").write_text("more\n")
    run("add", "-A")
    run("commit", "-q", "-m", "more")
    server.git("push", "-q", url, "main", cwd=local, region="us-east-1")
    clone = workdir / "clone"
    server.git("clone", "-q", url, str(clone), region=region)
    assert (clone / "marker.txt").read_text() == "the eu-central-1 source\n"
    # The default region's repository of the same name is untouched.
    branches = server.aws("codecommit", "list-branches", "--repository-name", "app")["branches"]
    assert branches == []
    assert server.aws("codecommit", "list-branches", "--repository-name", "app", region=region)["branches"] == ["main"]
    events = [e for e in server.events() if e["source"] == "aws.codecommit"]
    assert events and all(e["region"] == region for e in events)
    assert all(e["resources"] == [f"arn:aws:codecommit:{region}:{ACCOUNT}:app"] for e in events)

    create_project(server, "app", {"type": "CODECOMMIT", "location": url}, region=region)
    build = server.aws("codebuild", "start-build", "--project-name", "app", region=region)["build"]
    assert build["arn"] == f"arn:aws:codebuild:{region}:{ACCOUNT}:build/{build['id']}"
    assert server.aws("codebuild", "list-builds")["ids"] == []
    done = wait_build(server, build["id"], region=region)
    log = build_log(server, done, region=region)
    assert done["buildStatus"] == "SUCCEEDED", log
    assert f"region={region} default={region}" in log
    assert "the parameter is from Frankfurt" in log
    assert "the eu-central-1 source" in log
    assert "frankfurt-secret" not in log  # masked
    # The build is not seen from the default region, nor its log group.
    assert server.aws("codebuild", "batch-get-builds", "--ids", build["id"])["buildsNotFound"] == [build["id"]]
    groups = server.aws("logs", "describe-log-groups", region=region)["logGroups"]
    assert [g["logGroupName"] for g in groups] == ["/aws/codebuild/app"]
    assert groups[0]["arn"] == f"arn:aws:logs:{region}:{ACCOUNT}:log-group:/aws/codebuild/app:*"
    assert server.aws("logs", "describe-log-groups")["logGroups"] == []
    # Its deep link is presigned for its region and opens its log page.
    link = done["logs"]["deepLink"]
    assert f"%2F{region}%2Flogs%2F" in link
    with urllib.request.urlopen(link) as r:
        assert "the eu-central-1 source" in r.read().decode()
    states = [e for e in server.events() if e["detail-type"] == "CodeBuild Build State Change"]
    assert states and all(e["region"] == region for e in states)


def test_buckets_live_in_the_region_they_were_created_for(server, workdir):
    eu = server.client("s3", region="eu-west-1")
    us = server.client("s3")
    eu.create_bucket(Bucket="in-ireland", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    us.create_bucket(Bucket="in-virginia")
    assert eu.get_bucket_location(Bucket="in-ireland")["LocationConstraint"] == "eu-west-1"
    assert us.get_bucket_location(Bucket="in-ireland")["LocationConstraint"] == "eu-west-1"
    assert us.get_bucket_location(Bucket="in-virginia")["LocationConstraint"] is None
    # A constraint that does not match the endpoint's region, or none outside us-east-1.
    for client, kwargs in [
        (us, {"CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}}),
        (eu, {}),
        (eu, {"CreateBucketConfiguration": {"LocationConstraint": "ap-south-1"}}),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client.create_bucket(Bucket="nowhere", **kwargs)
        assert e.value.response["Error"]["Code"] == "IllegalLocationConstraintException"
    # The global namespace: the name is taken whatever the region.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        eu.create_bucket(Bucket="in-virginia", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert e.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    eu.put_object(Bucket="in-ireland", Key="k", Body=b"craic")
    assert us.head_bucket(Bucket="in-ireland")["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "eu-west-1"
    # A client of another region is sent to the bucket's (the SDK signs again for it).
    assert us.get_object(Bucket="in-ireland", Key="k")["Body"].read() == b"craic"
    names = [b["Name"] for b in us.list_buckets()["Buckets"]]
    assert names == ["in-ireland", "in-virginia"]
    # Without the SDK's redirect: S3's answer for the wrong region's endpoint.
    raw = subprocess.run(
        ["aws", "s3api", "get-object", "--bucket", "in-ireland", "--key", "k", str(workdir / "out"),
         "--debug"],
        capture_output=True, text=True, env=server.env(),
    )
    assert raw.returncode == 0, raw.stderr[-2000:]
    assert "PermanentRedirect" in raw.stderr or "301" in raw.stderr
    assert (workdir / "out").read_bytes() == b"craic"
    events = [e for e in server.events() if e["source"] == "aws.s3"]
    assert events and all(e["region"] == "eu-west-1" for e in events)


def test_a_data_directory_from_before_regions_is_migrated(workdir):
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(workdir, filter="data")
    data = workdir / "data"
    srv = Server(data).start()
    try:
        meta = srv.aws("codecommit", "get-repository", "--repository-name", "legacy")["repositoryMetadata"]
        assert meta["Arn"] == f"arn:aws:codecommit:us-east-1:{ACCOUNT}:legacy"
        assert meta["cloneUrlHttp"] == f"{srv.url}/v1/repos/legacy"
        assert meta["defaultBranch"] == "main"
        tags = srv.aws("codecommit", "list-tags-for-resource", "--resource-arn", meta["Arn"])["tags"]
        assert tags == {"team": "old"}
        assert sorted(srv.aws("codecommit", "list-branches", "--repository-name", "legacy")["branches"]) == ["feature", "main"]
        clone = workdir / "clone"
        srv.git("clone", "-q", meta["cloneUrlHttp"], str(clone))
        assert (clone / "README").read_text() == "from before regions\n"
        [build_id] = srv.aws("codebuild", "list-builds-for-project", "--project-name", "legacy-build")["ids"]
        [build] = srv.aws("codebuild", "batch-get-builds", "--ids", build_id)["builds"]
        assert build["buildStatus"] == "SUCCEEDED"
        assert "legacy build says hello" in build_log(srv, build)
        assert srv.aws("codebuild", "list-report-groups")["reportGroups"] == [
            f"arn:aws:codebuild:us-east-1:{ACCOUNT}:report-group/legacy-reports"
        ]
        p = srv.aws("ssm", "get-parameter", "--name", "/legacy/secret", "--with-decryption")["Parameter"]
        assert (p["Value"], p["Version"]) == ("s3cr3t-value-2", 2)
        history = srv.aws("ssm", "get-parameter-history", "--name", "/legacy/secret", "--with-decryption")["Parameters"]
        assert [h["Value"] for h in history] == ["s3cr3t-value", "s3cr3t-value-2"]
        assert srv.aws("ssm", "get-parameter", "--name", "/legacy/plain")["Parameter"]["Value"] == "plain-value"
        s3 = srv.client("s3")
        assert s3.get_object(Bucket="legacy-bucket", Key="a/obj.txt")["Body"].read() == b"legacy object\n"
        assert s3.get_bucket_versioning(Bucket="legacy-bucket")["Status"] == "Enabled"
        # Nothing of it is in another region, where the same names are free.
        other = "eu-west-1"
        assert srv.aws("codecommit", "list-repositories", region=other)["repositories"] == []
        assert srv.aws("codebuild", "list-projects", region=other)["projects"] == []
        assert srv.aws("ssm", "describe-parameters", region=other)["Parameters"] == []
        srv.aws("codecommit", "create-repository", "--repository-name", "legacy", region=other)
        srv.aws("ssm", "put-parameter", "--name", "/legacy/plain", "--type", "String", "--value", "new", region=other)
        assert srv.aws("ssm", "get-parameter", "--name", "/legacy/plain")["Parameter"]["Value"] == "plain-value"
    finally:
        assert srv.stop() == 0
    # And it opens again (the migration ran once).
    srv = Server(data).start()
    try:
        assert srv.aws("codecommit", "get-repository", "--repository-name", "legacy", region="eu-west-1")
    finally:
        srv.stop()
    shutil.rmtree(data, ignore_errors=True)
