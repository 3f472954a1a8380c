"""Authentication (SigV4) and authorisation (IAM policies) on the API and on git."""

import datetime
import hashlib
import json
import urllib.error
import urllib.request

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from conftest import Creds, make_history


def signed(server, target, body, creds=None, when=None, service="codecommit", region="us-east-1"):
    """A raw JSON-1.1 request signed by botocore's own SigV4 signer."""
    creds = creds or server.root
    req = botocore.awsrequest.AWSRequest(
        method="POST", url=server.url + "/", data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target},
    )
    signer = botocore.auth.SigV4Auth(botocore.credentials.Credentials(creds.key, creds.secret), service, region)
    if when is None:
        signer.add_auth(req)
    else:
        orig = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: when
        try:
            signer.add_auth(req)
        finally:
            botocore.auth.get_current_datetime = orig
    return send(server, req.headers, body)


def send(server, headers, body):
    r = urllib.request.Request(server.url + "/", data=body if isinstance(body, bytes) else body.encode(),
                               headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw), {k.lower(): v for k, v in e.headers.items()}
        except ValueError:
            return e.code, {"raw": raw.decode(errors="replace")}, {k.lower(): v for k, v in e.headers.items()}


def test_signature_failures(server):
    server.aws("codecommit", "create-repository", "--repository-name", "r")
    wrong = Creds(server.root.key, "x" * 40)
    err = server.aws("codecommit", "get-repository", "--repository-name", "r", creds=wrong, check=False)
    assert err.code == "InvalidSignatureException"
    unknown = Creds("AKIAUNKNOWNUNKNOWN00", "x" * 40)
    assert server.aws("codecommit", "list-repositories", creds=unknown, check=False).code == "UnrecognizedClientException"

    status, body, headers = send(server, {"X-Amz-Target": "CodeCommit_20150413.ListRepositories",
                                          "Content-Type": "application/x-amz-json-1.1"}, "{}")
    assert (status, body["__type"]) == (403, "MissingAuthenticationTokenException")
    assert headers.get("x-amzn-requestid")

    skewed = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    status, body, _ = signed(server, "CodeCommit_20150413.ListRepositories", "{}", when=skewed)
    assert (status, body["__type"]) == (403, "InvalidSignatureException")
    assert "Signature expired" in body["message"]
    # Every region is served, each with its own repositories; a name that is no region is not.
    status, body, _ = signed(server, "CodeCommit_20150413.ListRepositories", "{}", region="eu-west-1")
    assert (status, body["repositories"]) == (200, [])
    status, body, _ = signed(server, "CodeCommit_20150413.ListRepositories", "{}", region="eu-west-99")
    assert (status, body["__type"]) == (403, "InvalidSignatureException")
    assert "Credential should be scoped to a valid region, not 'eu-west-99'." in body["message"]
    status, body, _ = signed(server, "CodeCommit_20150413.ListRepositories", "{}", service="codebuild")
    assert (status, body["__type"]) == (403, "InvalidSignatureException")
    status, body, _ = signed(server, "CodeCommit_20150413.ListRepositories", "{}")
    assert status == 200 and body["repositories"][0]["repositoryName"] == "r"

    # A body swapped under a signature made for another, with the old body's hash claimed
    # in x-amz-content-sha256, is refused; the same header with the body it names passes.
    target = "CodeCommit_20150413.GetRepository"
    original = json.dumps({"repositoryName": "r"})
    req = botocore.awsrequest.AWSRequest(
        method="POST", url=server.url + "/", data=original,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target},
    )
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(server.root.key, server.root.secret),
                            "codecommit", "us-east-1").add_auth(req)
    headers = dict(req.headers)
    headers["X-Amz-Content-Sha256"] = hashlib.sha256(original.encode()).hexdigest()
    status, body, _ = send(server, headers, json.dumps({"repositoryName": "other"}))
    assert (status, body["__type"]) == (403, "InvalidSignatureException"), body
    assert "x-amz-content-sha256" in body["message"]
    status, body, _ = send(server, headers, original)
    assert status == 200 and body["repositoryMetadata"]["repositoryName"] == "r", body


def test_policies_on_api_and_git(server, workdir):
    server.aws("codecommit", "create-repository", "--repository-name", "guarded")
    server.aws("codecommit", "create-repository", "--repository-name", "other")
    local = make_history(workdir / "local", server.env())
    server.git("push", "-q", server.repo_url("guarded"), "main", cwd=local)

    nobody = server.user("nobody")
    err = server.aws("codecommit", "get-repository", "--repository-name", "guarded", creds=nobody, check=False)
    assert err.code == "AccessDeniedException"
    assert "arn:aws:iam::000000000000:user/nobody is not authorized to perform: codecommit:GetRepository" in err.message
    p = server.git("clone", "-q", server.repo_url("guarded"), str(workdir / "n"), creds=nobody, check=False)
    assert p.returncode != 0 and "403" in p.stderr

    reader = server.user("reader", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["codecommit:GitPull", "codecommit:Get*"],
         "Resource": "arn:aws:codecommit:us-east-1:000000000000:guarded"}]})
    clone = workdir / "r"
    server.git("clone", "-q", server.repo_url("guarded"), str(clone), creds=reader)
    assert server.aws("codecommit", "get-repository", "--repository-name", "guarded", creds=reader)
    assert server.aws("codecommit", "get-repository", "--repository-name", "other", creds=reader, check=False).code == "AccessDeniedException"
    assert server.aws("codecommit", "delete-repository", "--repository-name", "guarded", creds=reader, check=False).code == "AccessDeniedException"
    (clone / "new.txt").write_text("x")
    import subprocess

    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=clone, check=True, env=server.env())
    p = server.git("push", "origin", "main", cwd=clone, creds=reader, check=False)
    assert p.returncode != 0 and "403" in p.stderr

    writer = server.user("writer", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "codecommit:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "codecommit:DeleteRepository", "Resource": "*"}]})
    server.git("push", "-q", "origin", "main", cwd=clone, creds=writer)
    assert server.aws("codecommit", "delete-repository", "--repository-name", "other", creds=writer, check=False).code == "AccessDeniedException"

    # A key made inactive stops working at once, even for a running server.
    key = server.admin("list-access-keys", "--user-name", "writer")["AccessKeyMetadata"][0]["AccessKeyId"]
    server.admin("update-access-key", "--user-name", "writer", "--access-key-id", key, "--status", "Inactive")
    assert server.aws("codecommit", "list-repositories", creds=writer, check=False).code == "UnrecognizedClientException"


def test_admin_mirrors_iam(server):
    out = server.admin("create-user", "--user-name", "ann")
    assert out["User"]["Arn"] == "arn:aws:iam::000000000000:user/ann"
    dup = server.admin("create-user", "--user-name", "ann", check=False)
    assert dup.returncode == 254 and "(EntityAlreadyExists)" in dup.stderr
    key = server.admin("create-access-key", "--user-name", "ann")["AccessKey"]
    assert set(key) == {"UserName", "AccessKeyId", "Status", "SecretAccessKey", "CreateDate"}
    assert key["Status"] == "Active" and len(key["SecretAccessKey"]) == 40
    listed = server.admin("list-access-keys", "--user-name", "ann")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in listed] == [key["AccessKeyId"]] and "SecretAccessKey" not in listed[0]
    bad = server.admin("put-user-policy", "--user-name", "ann", "--policy-name", "p", "--policy-document", "{nope", check=False)
    assert bad.returncode == 254 and "(MalformedPolicyDocument)" in bad.stderr
    conflict = server.admin("delete-user", "--user-name", "ann", check=False)
    assert conflict.returncode == 254 and "(DeleteConflict)" in conflict.stderr
    server.admin("delete-access-key", "--user-name", "ann", "--access-key-id", key["AccessKeyId"])
    server.admin("delete-user", "--user-name", "ann")
    assert server.admin("list-users")["Users"] == []
