"""CodeBuild with the real aws-cli: projects, builds from a Slipway repository in runc
sandboxes through the built-in worker, phases as AWS reports them, exported variables,
artifacts zipped into the bucket, logs through CloudWatch Logs, StopBuild, timeouts,
secrets from Parameter Store masked, and a server killed mid-build."""

import io
import json
import subprocess
import time
import zipfile

import pytest

from conftest import AwsError, Server

BUILDSPEC = """version: 0.2
env:
  variables:
    GREETING: hello
  parameter-store:
    FROM_STORE: /ci/token
  exported-variables:
    - GREETING
    - COMMIT
phases:
  install:
    commands:
      - echo installing on $(hostname)
  pre_build:
    commands:
      - cd app
      - export COMMIT=$CODEBUILD_RESOLVED_SOURCE_VERSION
  build:
    commands:
      - echo "building in $PWD with $GREETING and secret $FROM_STORE"
      - mkdir -p ../dist/sub && cp main.txt ../dist/ && echo x > ../dist/sub/nested.txt && echo tmp > ../dist/skip.tmp
    finally:
      - echo finally ran
  post_build:
    commands:
      - echo "succeeding=$CODEBUILD_BUILD_SUCCEEDING"
artifacts:
  files:
    - "**/*"
  base-directory: dist
  s3-prefix: builds
  exclude-paths:
    - "*.tmp"
"""


def push_repo(server, workdir, name, files):
    server.aws("codecommit", "create-repository", "--repository-name", name)
    local = workdir / name
    local.mkdir()
    env = server.env()
    run = lambda *a: subprocess.run(["git", *a], cwd=local, check=True, capture_output=True, env=env)
    run("init", "-q", "-b", "main")
    for path, text in files.items():
        p = local / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    run("add", "-A")
    run("commit", "-q", "-m", "initial")
    server.git("push", "-q", server.repo_url(name), "main", cwd=local)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=local, capture_output=True, text=True).stdout.strip()


def create_project(server, name, source, artifacts=None, region=None, **extra):
    args = [
        "codebuild", "create-project", "--name", name,
        "--source", json.dumps(source),
        "--artifacts", json.dumps(artifacts or {"type": "NO_ARTIFACTS"}),
        "--environment", json.dumps({"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0", "computeType": "BUILD_GENERAL1_SMALL"}),
        "--service-role", "arn:aws:iam::000000000000:role/codebuild",
    ]
    for k, v in extra.items():
        # None: a flag without a value (`--badge-enabled`).
        args += [f"--{k.replace('_', '-')}"] + ([] if v is None else [str(v)])
    return server.aws(*args, region=region)["project"]


def wait_build(server, build_id, timeout=120, region=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = server.aws("codebuild", "batch-get-builds", "--ids", build_id, region=region)["builds"][0]
        if b["buildComplete"]:
            return b
        time.sleep(0.3)
    raise AssertionError(f"build {build_id} did not finish: {b}")


def phases(build):
    return [(p["phaseType"], p.get("phaseStatus")) for p in build["phases"]]


def test_build_from_codecommit_to_artifact_zip(server, workdir):
    commit = push_repo(server, workdir, "app", {"buildspec.yml": BUILDSPEC, "app/main.txt": "main\n"})
    server.aws("ssm", "put-parameter", "--name", "/ci/token", "--type", "SecureString", "--value", "t0ps3cret")
    server.aws("s3", "mb", "s3://artifacts")
    project = create_project(
        server, "app",
        {"type": "CODECOMMIT", "location": server.repo_url("app")},
        {"type": "S3", "location": "artifacts", "packaging": "ZIP", "name": "app.zip", "namespaceType": "BUILD_ID"},
    )
    assert project["arn"] == "arn:aws:codebuild:us-east-1:000000000000:project/app"
    assert project["timeoutInMinutes"] == 60 and project["cache"] == {"type": "NO_CACHE"}
    build = server.aws("codebuild", "start-build", "--project-name", "app")["build"]
    assert build["buildStatus"] == "IN_PROGRESS" and build["buildNumber"] == 1
    assert build["id"].startswith("app:")
    done = wait_build(server, build["id"])
    assert done["buildStatus"] == "SUCCEEDED", json.dumps(done, indent=1)
    assert phases(done) == [
        ("SUBMITTED", "SUCCEEDED"), ("QUEUED", "SUCCEEDED"), ("PROVISIONING", "SUCCEEDED"),
        ("DOWNLOAD_SOURCE", "SUCCEEDED"), ("INSTALL", "SUCCEEDED"), ("PRE_BUILD", "SUCCEEDED"),
        ("BUILD", "SUCCEEDED"), ("POST_BUILD", "SUCCEEDED"), ("UPLOAD_ARTIFACTS", "SUCCEEDED"),
        ("FINALIZING", "SUCCEEDED"), ("COMPLETED", None),
    ]
    assert done["resolvedSourceVersion"] == commit
    exported = {v["name"]: v["value"] for v in done["exportedEnvironmentVariables"]}
    assert exported == {"GREETING": "hello", "COMMIT": commit}
    uuid = done["id"].split(":", 1)[1]
    # The namespace is the build id, under the buildspec's s3-prefix.
    assert done["artifacts"]["location"] == f"arn:aws:s3:::artifacts/builds/{uuid}/app.zip"
    assert done["logs"]["groupName"] == "/aws/codebuild/app" and done["logs"]["streamName"] == uuid
    assert all("durationInSeconds" in p for p in done["phases"][:-1])

    # The artifact zip holds what base-directory and exclude-paths select.
    got = workdir / "out.zip"
    server.aws("s3", "cp", f"s3://artifacts/builds/{uuid}/app.zip", str(got))
    assert sorted(zipfile.ZipFile(got).namelist()) == ["main.txt", "sub/nested.txt"]

    # The log, through CloudWatch Logs, with the secret masked.
    events = server.aws("logs", "get-log-events", "--log-group-name", "/aws/codebuild/app",
                        "--log-stream-name", uuid, "--start-from-head")["events"]
    text = "\n".join(e["message"] for e in events)
    assert "building in /codebuild/output/src1/src/app with hello and secret ***" in text
    assert "t0ps3cret" not in text
    assert "finally ran" in text and "succeeding=1" in text
    assert "Phase complete: BUILD State: SUCCEEDED" in text

    # Within seconds of the end the log moves into the blob store (sealed), reading the same.
    archived = server.data_dir / "blobs" / "codebuild" / "logs" / "app" / uuid
    deadline = time.time() + 30
    while not archived.exists():
        assert time.time() < deadline, "the log was not archived"
        time.sleep(0.5)
    again = server.aws("logs", "get-log-events", "--log-group-name", "/aws/codebuild/app",
                       "--log-stream-name", uuid, "--start-from-head")["events"]
    assert [e["message"] for e in again] == [e["message"] for e in events]
    assert b"t0ps3cret" not in archived.read_bytes() and b"finally ran" not in archived.read_bytes()

    # logs.deepLink: a link, presigned for the caller, to a page of the log.
    import urllib.error
    import urllib.request
    link = done["logs"]["deepLink"]
    page = urllib.request.urlopen(link).read().decode()
    assert "Status: <b>SUCCEEDED</b>" in page and "finally ran" in page and "t0ps3cret" not in page
    for bad in (link[:-1] + ("0" if link[-1] != "0" else "1"), link.split("?")[0]):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad)
        assert e.value.code == 403
    # A caller who may read builds but not logs gets a link that is refused.
    reader = server.user("build-reader", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "codebuild:BatchGetBuilds", "Resource": "*"}]})
    theirs = server.aws("codebuild", "batch-get-builds", "--ids", done["id"], creds=reader)["builds"][0]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(theirs["logs"]["deepLink"])
    assert e.value.code == 403 and b"AccessDenied" in e.value.read()

    listed = server.aws("codebuild", "list-builds-for-project", "--project-name", "app")["ids"]
    assert listed == [done["id"]]
    kinds = [e["detail-type"] for e in server.events() if e["source"] == "aws.codebuild"]
    assert kinds.count("CodeBuild Build State Change") == 2
    assert "CodeBuild Build Phase Change" in kinds


def test_failures_stop_and_missing_parameters(server, workdir):
    spec = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo start\n      - false\n    finally:\n      - echo cleanup\n  post_build:\n    commands:\n      - echo post $CODEBUILD_BUILD_SUCCEEDING\n"
    create_project(server, "fails", {"type": "NO_SOURCE", "buildspec": spec})
    b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "fails")["build"]["id"])
    assert b["buildStatus"] == "FAILED"
    by_type = {p["phaseType"]: p for p in b["phases"]}
    assert by_type["BUILD"]["phaseStatus"] == "FAILED"
    assert by_type["BUILD"]["contexts"][0]["statusCode"] == "COMMAND_EXECUTION_ERROR"
    assert by_type["POST_BUILD"]["phaseStatus"] == "SUCCEEDED"

    sleepy = "version: 0.2\nphases:\n  build:\n    commands:\n      - sleep 600\n"
    create_project(server, "sleepy", {"type": "NO_SOURCE", "buildspec": sleepy})
    started = server.aws("codebuild", "start-build", "--project-name", "sleepy")["build"]["id"]
    # Wait until it runs, then stop it.
    deadline = time.time() + 60
    while server.aws("codebuild", "batch-get-builds", "--ids", started)["builds"][0]["currentPhase"] != "BUILD":
        assert time.time() < deadline
        time.sleep(0.2)
    server.aws("codebuild", "stop-build", "--id", started)
    t = time.time()
    b = wait_build(server, started)
    assert b["buildStatus"] == "STOPPED"
    # Ended (every process killed, the end reported) within 2 s of StopBuild's answer, by
    # the server's own clock.
    assert b["endTime"] - t < 2, b["endTime"] - t
    leftover = subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True, text=True).stdout.split()
    assert leftover == [], "a process of the stopped build is still running"

    # A build whose buildspec names a parameter that does not exist fails in
    # DOWNLOAD_SOURCE, saying which.
    create_project(server, "noparam", {"type": "NO_SOURCE", "buildspec": "version: 0.2\nenv:\n  parameter-store:\n    X: /nope\nphases:\n  build:\n    commands: [echo never]\n"})
    b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "noparam")["build"]["id"])
    assert b["buildStatus"] == "FAILED"
    ds = [p for p in b["phases"] if p["phaseType"] == "DOWNLOAD_SOURCE"][0]
    assert ds["phaseStatus"] == "FAILED" and "/nope" in ds["contexts"][0]["message"]


def test_continue_and_timeout(workdir):
    # A build minute lasts 2 s on this server, so the 5-minute minimum timeout is 10 s.
    s = Server(workdir / "data", env={"SLIPWAY_TIMEOUT_MINUTE_SECS": "2"}).start()
    try:
        spec = ("version: 0.2\nphases:\n  pre_build:\n    on-failure: CONTINUE\n    commands:\n      - exit 3\n"
                "  build:\n    commands:\n      - echo build ran\n")
        create_project(s, "cont", {"type": "NO_SOURCE", "buildspec": spec})
        b = wait_build(s, s.aws("codebuild", "start-build", "--project-name", "cont")["build"]["id"])
        by_type = {p["phaseType"]: p.get("phaseStatus") for p in b["phases"]}
        assert b["buildStatus"] == "FAILED"
        assert (by_type["PRE_BUILD"], by_type["BUILD"], by_type["POST_BUILD"]) == ("FAILED", "SUCCEEDED", "SUCCEEDED")
        assert "build ran" in build_log(s, b)

        create_project(s, "slow", {"type": "NO_SOURCE", "buildspec": "version: 0.2\nphases:\n  build:\n    commands:\n      - sleep 120\n"},
                       timeout_in_minutes=5)
        b = wait_build(s, s.aws("codebuild", "start-build", "--project-name", "slow")["build"]["id"], timeout=60)
        assert b["buildStatus"] == "TIMED_OUT"
        build = [p for p in b["phases"] if p["phaseType"] == "BUILD"][0]
        assert build["phaseStatus"] == "TIMED_OUT" and build["contexts"][0]["statusCode"] == "BUILD_TIMED_OUT"
        assert subprocess.run(["pgrep", "-f", "sleep 120"], capture_output=True).stdout == b""
    finally:
        s.stop()


def test_project_errors(server):
    err = server.aws("codebuild", "batch-get-projects", "--names", "nope")
    assert err == {"projects": [], "projectsNotFound": ["nope"]}
    err = server.aws("codebuild", "start-build", "--project-name", "nope", check=False)
    assert err.code == "ResourceNotFoundException"
    create_project(server, "dup", {"type": "NO_SOURCE", "buildspec": "version: 0.2"})
    err = server.aws("codebuild", "create-project", "--name", "dup", "--source", '{"type":"NO_SOURCE","buildspec":"version: 0.2"}',
                     "--artifacts", '{"type":"NO_ARTIFACTS"}', "--environment",
                     '{"type":"LINUX_CONTAINER","image":"x","computeType":"BUILD_GENERAL1_SMALL"}',
                     "--service-role", "r", check=False)
    assert err.code == "ResourceAlreadyExistsException"
    err = server.aws("codebuild", "create-project", "--name", "gh", "--source", '{"type":"GITHUB","location":"https://github.com/x/y"}',
                     "--artifacts", '{"type":"NO_ARTIFACTS"}', "--environment",
                     '{"type":"LINUX_CONTAINER","image":"x","computeType":"BUILD_GENERAL1_SMALL"}',
                     "--service-role", "r", check=False)
    assert err.code == "InvalidInputException"
    names = server.aws("codebuild", "list-projects")["projects"]
    assert names == ["dup"]
    images = server.aws("codebuild", "list-curated-environment-images")["platforms"]
    assert any(i["name"] == "aws/codebuild/standard:7.0" for l in images[0]["languages"] for i in l["images"])
    server.aws("codebuild", "delete-project", "--name", "dup")
    assert server.aws("codebuild", "list-projects")["projects"] == []


def test_server_killed_mid_build_ends_the_build(workdir):
    s = Server(workdir / "data").start()
    create_project(s, "long", {"type": "NO_SOURCE", "buildspec": "version: 0.2\nphases:\n  build:\n    commands:\n      - sleep 300\n"})
    bid = s.aws("codebuild", "start-build", "--project-name", "long")["build"]["id"]
    deadline = time.time() + 60
    while s.aws("codebuild", "batch-get-builds", "--ids", bid)["builds"][0]["currentPhase"] != "BUILD":
        assert time.time() < deadline
        time.sleep(0.2)
    s.kill9()
    s2 = Server(workdir / "data", port=s.port).start()
    try:
        b = wait_build(s2, bid, timeout=90)
        assert b["buildStatus"] == "FAILED"
        last = [p for p in b["phases"] if p.get("contexts")][-1]
        assert "stopped reporting" in last["contexts"][0]["message"]
        leftover = subprocess.run(["pgrep", "-f", "sleep 300"], capture_output=True, text=True).stdout.split()
        assert leftover == [], "the killed server's build is still running"
        assert all(x["buildComplete"] for x in s2.aws("codebuild", "batch-get-builds", "--ids", bid)["builds"])
    finally:
        s2.stop()


REPORTING = """version: 0.2
phases:
  build:
    commands:
      - mkdir -p reports deps
      - if [ -f deps/marker ]; then echo "cache hit $(cat deps/marker)"; else echo "cache miss"; fi
      - echo "$CODEBUILD_BUILD_NUMBER" > deps/marker
      - printf '<testsuites><testsuite name="unit"><testcase classname="calc.Add" name="adds" time="0.5"/><testcase classname="calc.Div" name="divides" time="0.25"><failure message="expected 2">got 3</failure></testcase></testsuite></testsuites>' > reports/junit.xml
      - printf '<coverage><packages><package><classes><class filename="src/a.py"><lines><line number="1" hits="1"/><line number="2" hits="0"/></lines></class></classes></package></packages></coverage>' > reports/cov.xml
reports:
  unit:
    files: ["junit.xml"]
    base-directory: reports
  coverage:
    files: ["reports/cov.xml"]
    file-format: COBERTURAXML
cache:
  paths:
    - deps/**/*
"""


def build_log(server, build, region=None):
    events = server.aws("logs", "get-log-events", "--log-group-name", build["logs"]["groupName"],
                        "--log-stream-name", build["logs"]["streamName"], "--start-from-head",
                        region=region)["events"]
    return "\n".join(e["message"] for e in events)


def test_reports_and_caches(server, workdir):
    server.aws("s3", "mb", "s3://caches")
    create_project(server, "rep", {"type": "NO_SOURCE", "buildspec": REPORTING},
                   cache=json.dumps({"type": "S3", "location": "caches/ci"}))

    def build():
        b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "rep")["build"]["id"])
        assert b["buildStatus"] == "SUCCEEDED", json.dumps(b, indent=1)
        return b, build_log(server, b)

    # First build: no cache yet; its JUnit and Cobertura files become reports.
    first, log = build()
    assert "cache miss" in log, log
    assert len(first["reportArns"]) == 2
    reports = server.aws("codebuild", "batch-get-reports", "--report-arns", *first["reportArns"])["reports"]
    by_type = {r["type"]: r for r in reports}
    unit, cov = by_type["TEST"], by_type["CODE_COVERAGE"]
    assert unit["name"] == "rep-unit" and unit["status"] == "FAILED"
    assert unit["testSummary"]["total"] == 2 and unit["testSummary"]["statusCounts"]["FAILED"] == 1
    assert unit["testSummary"]["durationInNanoSeconds"] == 750_000_000
    assert unit["executionId"] == first["arn"]
    cases = server.aws("codebuild", "describe-test-cases", "--report-arn", unit["arn"])["testCases"]
    assert sorted((c["prefix"], c["name"], c["status"]) for c in cases) == [
        ("calc.Add", "adds", "SUCCEEDED"), ("calc.Div", "divides", "FAILED")]
    failed = server.aws("codebuild", "describe-test-cases", "--report-arn", unit["arn"],
                        "--filter", "status=FAILED")["testCases"]
    assert len(failed) == 1 and "expected 2" in failed[0]["message"]
    assert failed[0]["testRawDataPath"] == "reports/junit.xml"
    assert cov["codeCoverageSummary"]["lineCoveragePercentage"] == 50.0
    files = server.aws("codebuild", "describe-code-coverages", "--report-arn", cov["arn"])["codeCoverages"]
    assert [(f["filePath"], f["linesCovered"], f["linesMissed"]) for f in files] == [("src/a.py", 1, 1)]

    # Second build: the cache saved by the first is restored from the bucket.
    second, log = build()
    assert "cache hit 1" in log, log
    listed = server.aws("s3api", "list-objects-v2", "--bucket", "caches")["Contents"]
    assert [o["Key"] for o in listed] == ["ci/rep/default.tar"]

    # Report groups and trends over both builds.
    groups = server.aws("codebuild", "list-report-groups", "--sort-by", "NAME", "--sort-order", "ASCENDING")["reportGroups"]
    assert [g.rsplit("/", 1)[1] for g in groups] == ["rep-coverage", "rep-unit"]
    trend = server.aws("codebuild", "get-report-group-trend", "--report-group-arn", unit["reportGroupArn"],
                       "--trend-field", "PASS_RATE")
    assert trend["stats"] == {"average": "50", "max": "50", "min": "50"} and len(trend["rawData"]) == 2
    of_group = server.aws("codebuild", "list-reports-for-report-group", "--report-group-arn", unit["reportGroupArn"])["reports"]
    assert len(of_group) == 2 and of_group[1] == unit["arn"], "newest first"
    assert of_group[0] in second["reportArns"]
    err = server.aws("codebuild", "delete-report-group", "--arn", unit["reportGroupArn"], check=False)
    assert err.code == "InvalidInputException"
    err = server.aws("codebuild", "create-report-group", "--name", "exports", "--type", "TEST",
                     "--export-config", '{"exportConfigType":"S3","s3Destination":{}}', check=False)
    assert err.code == "InvalidInputException", err.stderr

    # InvalidateProjectCache: the next build starts cold.
    server.aws("codebuild", "invalidate-project-cache", "--project-name", "rep")
    _, log = build()
    assert "cache miss" in log, log
    _, log = build()
    assert "cache hit 3" in log, log

    # A LOCAL custom cache lives on the worker.
    server.aws("codebuild", "update-project", "--name", "rep",
               "--cache", '{"type":"LOCAL","modes":["LOCAL_CUSTOM_CACHE"]}')
    _, log = build()
    assert "cache miss" in log and "Cache kept on this worker" in log, log
    _, log = build()
    assert "cache hit 5" in log, log
    err = server.aws("codebuild", "update-project", "--name", "rep", "--cache", '{"type":"LOCAL"}', check=False)
    assert err.code == "InvalidInputException"


def test_s3_and_secondary_sources_and_artifacts(server, workdir):
    lib_commit = push_repo(server, workdir, "lib", {"lib.txt": "from the library\n"})
    spec = """version: 0.2
phases:
  build:
    commands:
      - cat main.txt "$CODEBUILD_SRC_DIR_lib/lib.txt"
      - mkdir -p out/deep second && cp main.txt out/deep/ && cp "$CODEBUILD_SRC_DIR_lib/lib.txt" second/
artifacts:
  files: ["**/*"]
  base-directory: out
  secondary-artifacts:
    report:
      files: ["**/*"]
      base-directory: second
"""
    src = workdir / "app.zip"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("buildspec.yml", spec)
        z.writestr("main.txt", "from the zip\n")
    server.aws("s3", "mb", "s3://srcs")
    server.aws("s3", "mb", "s3://outs")
    server.aws("s3", "cp", str(src), "s3://srcs/app.zip")
    create_project(
        server, "multi",
        {"type": "S3", "location": "srcs/app.zip"},
        {"type": "S3", "location": "outs", "packaging": "NONE", "name": "primary"},
        secondary_sources=json.dumps([{"type": "CODECOMMIT", "location": server.repo_url("lib"), "sourceIdentifier": "lib"}]),
        secondary_artifacts=json.dumps([{"type": "S3", "location": "outs", "artifactIdentifier": "report",
                                         "packaging": "ZIP", "name": "second.zip"}]),
    )
    b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "multi")["build"]["id"])
    assert b["buildStatus"] == "SUCCEEDED", json.dumps(b, indent=1)
    log = build_log(server, b)
    assert "from the zip\nfrom the library" in log, log
    assert b["secondarySourceVersions"] == [{"sourceIdentifier": "lib", "sourceVersion": lib_commit}]
    assert b["artifacts"]["location"] == "arn:aws:s3:::outs/primary"
    assert b["secondaryArtifacts"][0]["artifactIdentifier"] == "report"
    assert b["secondaryArtifacts"][0]["location"] == "arn:aws:s3:::outs/second.zip"
    keys = sorted(o["Key"] for o in server.aws("s3api", "list-objects-v2", "--bucket", "outs")["Contents"])
    assert keys == ["primary/deep/main.txt", "second.zip"]
    got = workdir / "second.zip"
    server.aws("s3", "cp", "s3://outs/second.zip", str(got))
    assert zipfile.ZipFile(got).namelist() == ["lib.txt"]

    # A secondary source that cannot be fetched fails DOWNLOAD_SOURCE, naming it.
    b = wait_build(server, server.aws(
        "codebuild", "start-build", "--project-name", "multi", "--secondary-sources-version-override",
        "sourceIdentifier=lib,sourceVersion=no-such-branch")["build"]["id"])
    ds = [p for p in b["phases"] if p["phaseType"] == "DOWNLOAD_SOURCE"][0]
    assert b["buildStatus"] == "FAILED" and ds["phaseStatus"] == "FAILED", json.dumps(b, indent=1)
    assert "no-such-branch" in ds["contexts"][0]["message"]

    # An S3 source's sourceVersion is the object's version id: one that does not exist
    # fails DOWNLOAD_SOURCE, naming it.
    b = wait_build(server, server.aws(
        "codebuild", "start-build", "--project-name", "multi", "--source-version", "no-such-version")["build"]["id"])
    ds = [p for p in b["phases"] if p["phaseType"] == "DOWNLOAD_SOURCE"][0]
    assert b["buildStatus"] == "FAILED" and "no-such-version" in ds["contexts"][0]["message"], json.dumps(b, indent=1)

    # A build reads its sources and writes its artifacts as the principal that started
    # it: one that may not read the zip fails DOWNLOAD_SOURCE, one that may not write the
    # artifacts fails UPLOAD_ARTIFACTS, one that may do both succeeds.
    def user(name, *extra):
        return server.user(name, policy={"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["codebuild:*", "logs:*"], "Resource": "*"}, *extra]})
    read = {"Effect": "Allow", "Action": ["s3:GetObject", "codecommit:GitPull"], "Resource": "*"}
    write = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::outs/*"}
    for who, failed_in, action in [(user("no-read"), "DOWNLOAD_SOURCE", "s3:GetObject"),
                                   (user("no-write", read), "UPLOAD_ARTIFACTS", "s3:PutObject"),
                                   (user("both", read, write), None, None)]:
        b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "multi", creds=who)["build"]["id"])
        failed = [p for p in b["phases"] if p.get("phaseStatus") == "FAILED"]
        if failed_in is None:
            assert b["buildStatus"] == "SUCCEEDED", json.dumps(b, indent=1)
            continue
        assert b["buildStatus"] == "FAILED" and failed[0]["phaseType"] == failed_in, json.dumps(b, indent=1)
        message = failed[0]["contexts"][0]["message"]
        assert "AccessDenied" in message and action in message, message


def test_pipeline_builds_take_input_and_give_output_artifacts(server, workdir):
    """A CODEPIPELINE project builds what a pipeline's action hands it: the input artifact
    (a zip, named by sourceVersion as an S3 object ARN, as CodePipeline's builds show it)
    and the output artifact (zipped to exactly the object its location names); S3 objects
    beyond the first input are secondary sources. Started by hand it names neither and
    fails saying so."""
    spec = """version: 0.2
env:
  exported-variables: [INPUT]
phases:
  build:
    commands:
      - export INPUT="$CODEBUILD_SOURCE_VERSION"
      - cat main.txt "$CODEBUILD_SRC_DIR_Extra/extra.txt"
      - mkdir -p out && cp main.txt out/ && cp "$CODEBUILD_SRC_DIR_Extra/extra.txt" out/
artifacts:
  files: ["**/*"]
  base-directory: out
"""
    server.aws("s3", "mb", "s3://pipeline-store")
    for name, files in {"SourceArti.zip": {"buildspec.yml": spec, "main.txt": "from the pipeline\n"},
                        "ExtraArti.zip": {"extra.txt": "second input\n"}}.items():
        z = workdir / name
        with zipfile.ZipFile(z, "w") as out:
            for path, text in files.items():
                out.writestr(path, text)
        server.aws("s3", "cp", str(z), f"s3://pipeline-store/app/{name}")
    p = create_project(server, "piped", {"type": "CODEPIPELINE"}, {"type": "CODEPIPELINE"})
    assert p["source"]["type"] == "CODEPIPELINE" and p["artifacts"]["type"] == "CODEPIPELINE"

    source = "arn:aws:s3:::pipeline-store/app/SourceArti.zip"
    output = "arn:aws:s3:::pipeline-store/app/BuildArtif.zip"
    b = wait_build(server, server.aws(
        "codebuild", "start-build", "--project-name", "piped", "--source-version", source,
        "--artifacts-override", json.dumps({"type": "CODEPIPELINE", "location": output}),
        "--secondary-sources-override", json.dumps([{"type": "S3", "location": "pipeline-store/app/ExtraArti.zip",
                                                     "sourceIdentifier": "Extra"}]))["build"]["id"])
    assert b["buildStatus"] == "SUCCEEDED", json.dumps(b, indent=1)
    assert b["sourceVersion"] == source
    assert b["exportedEnvironmentVariables"] == [{"name": "INPUT", "value": source}]
    assert "from the pipeline\nsecond input" in build_log(server, b)
    assert b["artifacts"]["location"] == output
    got = workdir / "BuildArtif.zip"
    server.aws("s3", "cp", "s3://pipeline-store/app/BuildArtif.zip", str(got))
    assert sorted(zipfile.ZipFile(got).namelist()) == ["extra.txt", "main.txt"]

    # Started by hand: no input artifact to build.
    b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "piped")["build"]["id"])
    ds = [p for p in b["phases"] if p["phaseType"] == "DOWNLOAD_SOURCE"][0]
    assert b["buildStatus"] == "FAILED" and ds["phaseStatus"] == "FAILED", json.dumps(b, indent=1)
    assert "input artifact" in ds["contexts"][0]["message"], ds

    # CODEPIPELINE goes with CODEPIPELINE, primary only, and without a badge.
    for source, artifacts, extra in [
        ({"type": "CODEPIPELINE"}, {"type": "NO_ARTIFACTS"}, {}),
        ({"type": "NO_SOURCE", "buildspec": spec}, {"type": "CODEPIPELINE"}, {}),
        ({"type": "CODEPIPELINE"}, {"type": "CODEPIPELINE"}, {"badge_enabled": None}),
        ({"type": "CODEPIPELINE"}, {"type": "CODEPIPELINE"},
         {"secondary_sources": json.dumps([{"type": "CODEPIPELINE", "sourceIdentifier": "x"}])}),
    ]:
        with pytest.raises(AwsError) as e:
            create_project(server, "bad-piped", source, artifacts, **extra)
        assert e.value.code == "InvalidInputException", e.value
    # Other sources may have a badge.
    badged = create_project(server, "badged", {"type": "NO_SOURCE", "buildspec": spec}, badge_enabled=None)
    assert badged["badge"]["badgeEnabled"] is True and "badgeEnabled" not in badged, badged


def oci_image(path, files):
    """An OCI image layout at `path` with one layer: `files` (image path -> host file or bytes)."""
    import hashlib
    import tarfile
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return "sha256:" + digest

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for at, src in files.items():
            data = src if isinstance(src, bytes) else open(src, "rb").read()
            info = tarfile.TarInfo(at)
            info.size, info.mode = len(data), 0o755
            t.addfile(info, io.BytesIO(data))
    config = put(json.dumps({"config": {"Env": ["PATH=/usr/bin:/bin"]}}).encode())
    layer = put(buf.getvalue())
    manifest = put(json.dumps({"schemaVersion": 2, "config": {"digest": config}, "layers": [{"digest": layer}]}).encode())
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{"digest": manifest}]}))


def test_builds_on_an_imported_image(server, workdir):
    # The image: the host's sh and its libraries, and a file of its own.
    files = {"etc/image-release": b"imported image\n"}
    for binary in ["/bin/sh"]:
        real = subprocess.run(["readlink", "-f", binary], capture_output=True, text=True).stdout.strip()
        files[binary.lstrip("/")] = real
        for word in subprocess.run(["ldd", real], capture_output=True, text=True).stdout.split():
            if word.startswith("/"):
                files[word.lstrip("/")] = subprocess.run(["readlink", "-f", word], capture_output=True, text=True).stdout.strip()
    oci_image(workdir / "layout", files)
    assert server.admin("import-image", "team/img:1", str(workdir / "layout"))["Layers"] == 1
    assert server.admin("list-images")["Images"] == ["team/img:1"]
    spec = "version: 0.2\nphases:\n  build:\n    commands:\n      - read line < /etc/image-release; echo \"got $line\"\n      - test ! -e /etc/debian_version\n"
    project = create_project(server, "img", {"type": "NO_SOURCE", "buildspec": spec})
    server.aws("codebuild", "update-project", "--name", "img", "--environment", json.dumps(
        {"type": "LINUX_CONTAINER", "image": "team/img:1", "computeType": "BUILD_GENERAL1_SMALL"}))
    b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "img")["build"]["id"])
    assert b["buildStatus"] == "SUCCEEDED", build_log(server, b)
    assert "got imported image" in build_log(server, b)
    b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "img",
                                      "--image-override", "team/missing:1")["build"]["id"])
    prov = [p for p in b["phases"] if p["phaseType"] == "PROVISIONING"][0]
    assert b["buildStatus"] == "FAILED" and "import-image" in prov["contexts"][0]["message"]
    assert project["environment"]["image"] == "aws/codebuild/standard:7.0"


def test_builds_pull_their_image_from_a_registry(server, workdir):
    # A real registry (Docker's distribution, from Debian) on loopback, the image pushed to
    # it with skopeo.
    from conftest import free_port
    port = free_port()
    (workdir / "registry.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {workdir / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    registry = subprocess.Popen(["docker-registry", "serve", str(workdir / "registry.yml")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        files = {"etc/image-release": b"pulled from the registry\n"}
        real = subprocess.run(["readlink", "-f", "/bin/sh"], capture_output=True, text=True).stdout.strip()
        files["bin/sh"] = real
        for word in subprocess.run(["ldd", real], capture_output=True, text=True).stdout.split():
            if word.startswith("/"):
                files[word.lstrip("/")] = subprocess.run(["readlink", "-f", word], capture_output=True, text=True).stdout.strip()
        oci_image(workdir / "layout", files)
        deadline = time.time() + 20
        while True:
            pushed = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{workdir / 'layout'}",
                                     f"docker://127.0.0.1:{port}/team/app:1"], capture_output=True, text=True)
            if pushed.returncode == 0:
                break
            assert time.time() < deadline, pushed.stderr
            time.sleep(0.5)
        image = f"127.0.0.1:{port}/team/app:1"
        spec = "version: 0.2\nphases:\n  build:\n    commands:\n      - read line < /etc/image-release; echo \"got $line\"\n"
        create_project(server, "pulled", {"type": "NO_SOURCE", "buildspec": spec})
        server.aws("codebuild", "update-project", "--name", "pulled", "--environment", json.dumps(
            {"type": "LINUX_CONTAINER", "image": image, "computeType": "BUILD_GENERAL1_SMALL"}))
        b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "pulled")["build"]["id"])
        log = build_log(server, b)
        assert b["buildStatus"] == "SUCCEEDED", log
        assert "got pulled from the registry" in log and f"Image {image} pulled" in log, log
        assert image in server.admin("list-images")["Images"]
        # The same tag again: the copy pulled before serves.
        b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "pulled")["build"]["id"])
        log = build_log(server, b)
        assert b["buildStatus"] == "SUCCEEDED" and "got pulled from the registry" in log, log
        assert f"Image {image} pulled" not in log, log
        # The tag moved to another image: the next build pulls it.
        files["etc/image-release"] = b"moved tag\n"
        oci_image(workdir / "layout2", files)
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{workdir / 'layout2'}",
                        f"docker://{image}"], capture_output=True, check=True)
        b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "pulled")["build"]["id"])
        log = build_log(server, b)
        assert b["buildStatus"] == "SUCCEEDED" and "got moved tag" in log, log
        assert "the registry has sha256:" in log and f"Image {image} pulled" in log, log
        # Pinned by digest: the manifest fetched is checked against it.
        import hashlib
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image}"],
                             capture_output=True, check=True).stdout
        pinned = f"127.0.0.1:{port}/team/app@sha256:{hashlib.sha256(raw).hexdigest()}"
        b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "pulled",
                                          "--image-override", pinned)["build"]["id"])
        assert b["buildStatus"] == "SUCCEEDED" and f"Image {pinned} pulled" in build_log(server, b)
        # A tag the registry does not have fails PROVISIONING, naming the image.
        missing = f"127.0.0.1:{port}/team/app:nope"
        b = wait_build(server, server.aws("codebuild", "start-build", "--project-name", "pulled",
                                          "--image-override", missing)["build"]["id"])
        prov = [p for p in b["phases"] if p["phaseType"] == "PROVISIONING"][0]
        assert b["buildStatus"] == "FAILED" and missing in prov["contexts"][0]["message"], json.dumps(b, indent=1)
    finally:
        registry.terminate()
        registry.wait()


GIT_BUILD = """version: 0.2
env:
  git-credential-helper: {helper}
phases:
  build:
    commands:
      - export GIT_TERMINAL_PROMPT=0
      - git clone -q {url}/v1/repos/shared s
      - cat s/lib.txt
      - echo "helper=$GIT_CONFIG_VALUE_0"
      - cd s
      - git checkout -q -b from-build-$CODEBUILD_BUILD_NUMBER
      - git -c user.email=b@example.com -c user.name=b commit -q --allow-empty -m built
      - {push}
"""


def test_git_credential_helper_acts_as_the_initiator(server, workdir):
    push_repo(server, workdir, "shared", {"lib.txt": "shared library\n"})
    arn = server.aws("codecommit", "get-repository", "--repository-name", "shared")["repositoryMetadata"]["Arn"]
    builder = server.user("builder", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "codebuild:*", "Resource": "*"},
        {"Effect": "Allow", "Action": "logs:*", "Resource": "*"},
        {"Effect": "Allow", "Action": "codecommit:GitPull", "Resource": arn},
    ]})

    def build(name, helper, push, creds=None):
        spec = GIT_BUILD.format(helper=helper, url=server.url, push=push)
        create_project(server, name, {"type": "NO_SOURCE", "buildspec": spec})
        b = server.aws("codebuild", "start-build", "--project-name", name, creds=creds)["build"]
        return wait_build(server, b["id"])

    # Started by `builder`: git pulls as builder, and builder may not push.
    b = build("git-builder", "yes", "if git push -q origin HEAD; then exit 1; fi", creds=builder)
    log = build_log(server, b)
    assert b["buildStatus"] == "SUCCEEDED", log
    assert "shared library" in log
    # The credential is masked wherever the build prints it.
    helper_line = next(l for l in log.splitlines() if l.startswith("helper="))
    assert "***" in helper_line and "password=" in helper_line, helper_line
    assert b["initiator"] == "builder"

    # Started by the account: the push goes through.
    b = build("git-root", "yes", "git push -q origin HEAD")
    assert b["buildStatus"] == "SUCCEEDED", build_log(server, b)
    branches = server.aws("codecommit", "list-branches", "--repository-name", "shared")["branches"]
    assert f"from-build-{b['buildNumber']}" in branches

    # Without the helper the build's git has no credentials.
    b = build("git-none", "no", "true")
    assert b["buildStatus"] == "FAILED"
    assert "Authentication failed" in build_log(server, b) or "could not read Username" in build_log(server, b)


def test_a_remote_worker_runs_builds_and_its_death_fails_them(workdir):
    """`slipway worker --server URL` on its own (the server's built-in worker off) takes a
    build over HTTP — a log large and random enough to go up in uncompressed batches,
    exported variables — and when it is killed mid-build, the build ends FAILED once its
    lease expires, with a phase context that says so."""
    import os
    import signal
    from conftest import BIN, REGION
    s = Server(workdir / "data", env={"SLIPWAY_BUILD_SLOTS": "0"}).start()
    worker = None
    try:
        creds = s.user("builder", policy={"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "slipway:RunBuilds", "Resource": "*"}]})
        env = dict(os.environ, AWS_ACCESS_KEY_ID=creds.key, AWS_SECRET_ACCESS_KEY=creds.secret,
                   AWS_REGION=REGION, SLIPWAY_LOG="info")
        log = open(workdir / "worker.log", "ab")
        worker = subprocess.Popen([BIN, "worker", "--server", s.url, "--work-dir", str(workdir / "w"),
                                   "--slots", "1", "--id", "remote-1"], env=env, stdout=log, stderr=log)
        spec = ("version: 0.2\nenv:\n  exported-variables: [WHO]\nphases:\n  build:\n    commands:\n"
                "      - export WHO=remote\n"
                "      - head -c 3000000 /dev/urandom | base64 -w 76\n"
                "      - echo done printing\n")
        create_project(s, "far", {"type": "NO_SOURCE", "buildspec": spec})
        b = wait_build(s, s.aws("codebuild", "start-build", "--project-name", "far")["build"]["id"])
        assert b["buildStatus"] == "SUCCEEDED", phases(b)
        assert {v["name"]: v["value"] for v in b["exportedEnvironmentVariables"]} == {"WHO": "remote"}
        logs = s.client("logs")
        kw = dict(logGroupName=b["logs"]["groupName"], logStreamName=b["logs"]["streamName"], startFromHead=True)
        messages = []
        while True:
            page = logs.get_log_events(**kw)
            messages += [e["message"] for e in page["events"]]
            if not page["events"] or page["nextForwardToken"] == kw.get("nextToken"):
                break
            kw["nextToken"] = page["nextForwardToken"]
        printed = [m for m in messages if len(m) in (76, 77) and not m.startswith("[Container]")]
        assert len(printed) == 3000000 * 4 // 3 // 76, len(printed)
        assert messages.index("done printing") > messages.index(printed[-1])

        create_project(s, "doomed", {"type": "NO_SOURCE", "buildspec":
                                     "version: 0.2\nphases:\n  build:\n    commands:\n      - sleep 45 # doomed-build\n"})
        bid = s.aws("codebuild", "start-build", "--project-name", "doomed")["build"]["id"]
        deadline = time.time() + 60
        while time.time() < deadline:
            cur = s.aws("codebuild", "batch-get-builds", "--ids", bid)["builds"][0]
            if cur.get("currentPhase") == "BUILD":
                break
            time.sleep(0.2)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        b = wait_build(s, bid, timeout=90)
        assert b["buildStatus"] == "FAILED"
        failed = [p for p in b["phases"] if p.get("phaseStatus") == "FAILED"][0]
        assert failed["phaseType"] == "BUILD"
        assert "remote-1" in failed["contexts"][0]["message"] and "lease expired" in failed["contexts"][0]["message"]
    finally:
        if worker and worker.poll() is None:
            worker.kill()
        subprocess.run(["pkill", "-f", "doomed-build"], capture_output=True)
        s.stop()


def test_start_build_idempotency_token(server):
    create_project(server, "idem", {"type": "NO_SOURCE", "buildspec": "version: 0.2\nphases:\n  build:\n    commands: [echo once]\n"})
    first = server.aws("codebuild", "start-build", "--project-name", "idem", "--idempotency-token", "tok-1")["build"]
    again = server.aws("codebuild", "start-build", "--project-name", "idem", "--idempotency-token", "tok-1")["build"]
    assert again["id"] == first["id"]
    err = server.aws("codebuild", "start-build", "--project-name", "idem", "--idempotency-token", "tok-1",
                     "--timeout-in-minutes-override", "9", check=False)
    assert err.code == "InvalidInputException"
    other = server.aws("codebuild", "start-build", "--project-name", "idem", "--idempotency-token", "tok-2")["build"]
    assert other["id"] != first["id"] and other["buildNumber"] == first["buildNumber"] + 1
    wait_build(server, first["id"])
    wait_build(server, other["id"])
    ids = server.aws("codebuild", "list-builds-for-project", "--project-name", "idem")["ids"]
    assert sorted(ids) == sorted([first["id"], other["id"]])
