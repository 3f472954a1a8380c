"""Bad input gets AWS's error and changes nothing; every operation of every service is routed."""

import gzip
import json
import os

import botocore.session
import pytest
from test_auth import send, signed


def repo_count(server):
    return len(server.aws("codecommit", "list-repositories")["repositories"])


def test_malformed_requests(server):
    server.aws("codecommit", "create-repository", "--repository-name", "keep")
    cases = [
        ("CodeCommit_20150413.CreateRepository", "{not json", 400, "SerializationException"),
        ("CodeCommit_20150413.CreateRepository", "[1,2]", 400, "SerializationException"),
        ("CodeCommit_20150413.CreateRepository", '{"repositoryName": 42}', 400, "SerializationException"),
        ("CodeCommit_20150413.CreateRepository", '{"repositoryName": "x", "tags": "no"}', 400, "SerializationException"),
        ("CodeCommit_20150413.CreateRepository", "{}", 400, "RepositoryNameRequiredException"),
        ("CodeCommit_20150413.CreateRepository", '{"repositoryName": ""}', 400, "InvalidRepositoryNameException"),
        ("CodeCommit_20150413.CreateRepository", '{"repositoryName": "a/b"}', 400, "InvalidRepositoryNameException"),
        ("CodeCommit_20150413.CreateRepository", '{"repositoryName": ".."}', 400, "InvalidRepositoryNameException"),
        ("CodeCommit_20150413.CreateRepository", '{"repositoryName": "x.git"}', 400, "InvalidRepositoryNameException"),
        ("CodeCommit_20150413.CreateRepository", json.dumps({"repositoryName": "y" * 101}), 400, "InvalidRepositoryNameException"),
        ("CodeCommit_20150413.GetRepository", '{"repositoryName": "../keep"}', 400, "InvalidRepositoryNameException"),
        ("CodeCommit_20150413.CreateBranch", '{"repositoryName": "keep"}', 400, "BranchNameRequiredException"),
        ("CodeCommit_20150413.BatchGetRepositories", json.dumps({"repositoryNames": ["a"] * 101}), 400, "MaximumRepositoryNamesExceededException"),
        ("CodeCommit_20150413.ListRepositories", '{"sortBy": "size"}', 400, "InvalidSortByException"),
        ("CodeCommit_20150413.GetBlob", '{"repositoryName": "keep", "blobId": "../../etc/passwd"}', 400, "InvalidBlobIdException"),
        ("CodeCommit_20150413.GetFile", '{"repositoryName": "keep", "filePath": "../../etc/passwd"}', 400, "InvalidPathException"),
        ("CodeCommit_20150413.NoSuchOperation", "{}", 400, "UnknownOperationException"),
        ("NoSuchService_20200101.Anything", "{}", 400, "UnknownOperationException"),
    ]
    for target, body, status, code in cases:
        got_status, got, headers = signed(server, target, body)
        assert (got_status, got.get("__type")) == (status, code), (target, body, got)
        assert headers.get("content-type") == "application/x-amz-json-1.1"
        assert got.get("message"), got
    assert repo_count(server) == 1

    # Oversized bodies are refused before they are read whole.
    big = json.dumps({"repositoryName": "big", "repositoryDescription": "x" * (11 * 1024 * 1024)})
    status, body, _ = signed(server, "CodeCommit_20150413.CreateRepository", big)
    assert status == 413
    assert repo_count(server) == 1

    # Still serving.
    assert server.aws("codecommit", "get-repository", "--repository-name", "keep")


def test_every_operation_is_routed(server):
    """All 229 operations of the four services (and every SSM operation) answer AWS-shaped
    JSON: never 404, HTML or 5xx other than 501 for operations not built yet."""
    session = botocore.session.get_session()
    total = 0
    for service in ["codecommit", "codepipeline", "codebuild", "codedeploy"]:
        model = session.get_service_model(service)
        for op in model.operation_names:
            total += 1
            status, body, headers = signed(server, f"{model.metadata['targetPrefix']}.{op}", "{}", service=service)
            assert status != 404, (service, op)
            assert "__type" in body or status == 200, (service, op, body)
            assert status < 500 or (status == 501 and body["__type"] == "NotImplementedException"), (service, op, body)
            assert headers.get("x-amzn-requestid")
    assert total == 229
    ssm = session.get_service_model("ssm")
    for op in ssm.operation_names:
        status, body, _ = signed(server, f"AmazonSSM.{op}", "{}", service="ssm")
        assert status != 404 and "__type" in body or status == 200, (op, body)
        assert status < 500 or (status == 501 and body["__type"] == "NotImplementedException"), (op, body)


def test_unbuilt_operation_answers_501_through_sdk(server):
    cb = server.client("codebuild")
    with pytest.raises(cb.exceptions.ClientError) as e:
        cb.list_source_credentials()
    assert e.value.response["Error"]["Code"] == "NotImplementedException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


def worker_post(server, path, query, body, creds=None, declared=None):
    """A worker-protocol request signed as `slipway worker` signs it (service codebuild)."""
    import urllib.request
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    creds = creds or server.root
    url = f"{server.url}{path}?{query}"
    req = botocore.awsrequest.AWSRequest(method="POST", url=url, data=body,
                                         headers={"Content-Type": "application/octet-stream"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(creds.key, creds.secret),
                            "codebuild", "us-east-1").add_auth(req)
    headers = dict(req.headers)
    if declared is not None:
        headers["Content-Length"] = str(declared)
    r = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_worker_log_uploads_check_their_line_number_and_signer(server):
    """A log upload's `firstSeq` must be a line number; uploads are signed by a principal
    allowed to run builds; a batch that is not one is refused whole."""
    status, body = worker_post(server, "/-/worker/builds/p:1/logs", "leaseToken=t&firstSeq=abc", b"SLB\x02")
    assert (status, body.get("__type")) == (400, "InvalidInputException"), body
    assert "firstSeq must be a line number" in body["message"]
    status, body = worker_post(server, "/-/worker/builds/p:1/logs", "leaseToken=t&firstSeq=1", b"not a batch")
    assert (status, body.get("__type")) == (400, "InvalidInputException"), body
    # A batch declared larger than any a worker sends is refused before it is read.
    status, body = worker_post(server, "/-/worker/builds/p:1/logs", "leaseToken=t&firstSeq=1", b"SLB\x02",
                               declared=64 << 20)
    assert (status, body.get("__type")) == (413, "RequestEntityTooLargeException"), body
    user = server.user("no-builds")
    status, body = worker_post(server, "/-/worker/builds/p:1/logs", "leaseToken=t&firstSeq=1", b"SLB\x02", creds=user)
    assert body.get("__type") == "AccessDeniedException" and "slipway:RunBuilds" in body["message"], (status, body)
