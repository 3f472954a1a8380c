"""git over smart HTTP with the aws-cli credential helper and service-specific credentials."""

import subprocess

from conftest import make_history


def git_out(path, *args):
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def refs(path):
    return git_out(path, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags")


def test_push_and_clone_identical(server, workdir):
    server.aws("codecommit", "create-repository", "--repository-name", "mirror")
    local = make_history(workdir / "local", server.env())
    server.git("push", "--mirror", server.repo_url("mirror"), cwd=local)
    for proto in ("version=0", "version=2"):
        clone = workdir / f"clone-{proto}"
        server.git("-c", f"protocol.{proto.split('=')[0]}={proto.split('=')[1]}", "clone", "-q", "--mirror",
                   server.repo_url("mirror"), str(clone))
        assert refs(clone) == refs(local)
        subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=clone, check=True, capture_output=True)
    work = workdir / "work"
    server.git("clone", "-q", server.repo_url("mirror"), str(work))
    assert (work / "run.sh").stat().st_mode & 0o111
    assert (work / "link").is_symlink()
    assert git_out(work, "rev-parse", "HEAD") == git_out(local, "rev-parse", "main")
    subprocess.run(["git", "fsck"], cwd=server.repo_dir("mirror"), check=True, capture_output=True)


def test_incremental_fetch_and_push(server, workdir):
    server.aws("codecommit", "create-repository", "--repository-name", "inc")
    local = make_history(workdir / "local", server.env())
    server.git("push", "-q", server.repo_url("inc"), "main", cwd=local)
    other = workdir / "other"
    server.git("clone", "-q", server.repo_url("inc"), str(other))
    for i in range(3):
        (local / f"n{i}").write_text(str(i))
        subprocess.run(["git", "add", "-A"], cwd=local, check=True)
        subprocess.run(["git", "commit", "-qm", f"n{i}"], cwd=local, check=True, env=server.env())
        server.git("push", "-q", server.repo_url("inc"), "main", cwd=local)
        server.git("pull", "-q", "--ff-only", cwd=other)
        assert git_out(other, "rev-parse", "HEAD") == git_out(local, "rev-parse", "HEAD")
    # A non-fast-forward push is refused without --force.
    (other / "x").write_text("x")
    subprocess.run(["git", "add", "-A"], cwd=other, check=True)
    subprocess.run(["git", "commit", "-qm", "diverge"], cwd=other, check=True, env=server.env())
    (local / "y").write_text("y")
    subprocess.run(["git", "add", "-A"], cwd=local, check=True)
    subprocess.run(["git", "commit", "-qm", "first"], cwd=local, check=True, env=server.env())
    server.git("push", "-q", "origin", "main", cwd=other) if False else None
    server.git("push", "-q", server.repo_url("inc"), "main", cwd=local)
    rejected = server.git("push", "origin", "main", cwd=other, check=False)
    assert rejected.returncode != 0 and "rejected" in rejected.stderr


def test_service_specific_credentials(server, workdir):
    server.aws("codecommit", "create-repository", "--repository-name", "basic")
    server.user("gitter", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["codecommit:GitPull", "codecommit:GitPush"], "Resource": "*"}]})
    cred = server.admin("create-service-specific-credential", "--user-name", "gitter",
                        "--service-name", "codecommit.amazonaws.com")["ServiceSpecificCredential"]
    from urllib.parse import quote

    url = server.repo_url("basic").replace("http://", f"http://{quote(cred['ServiceUserName'], safe='')}:{quote(cred['ServicePassword'], safe='')}@")
    local = make_history(workdir / "local", server.env())
    server.git("push", "-q", url, "main", cwd=local, helper="")
    clone = workdir / "clone"
    server.git("clone", "-q", url, str(clone), helper="")
    assert git_out(clone, "rev-parse", "HEAD") == git_out(local, "rev-parse", "main")
    bad = url.replace(quote(cred["ServicePassword"], safe=""), "wrong")
    p = server.git("clone", "-q", bad, str(workdir / "nope"), helper="", check=False)
    assert p.returncode != 0 and "Authentication failed" in p.stderr
    events = [e for e in server.events() if e["detail"]["repositoryName"] == "basic"]
    assert events and all(e["detail"]["callerUserArn"] == "arn:aws:iam::000000000000:user/gitter" for e in events)


def test_unauthenticated_git_is_challenged(server):
    import urllib.error
    import urllib.request

    server.aws("codecommit", "create-repository", "--repository-name", "sec")
    try:
        urllib.request.urlopen(server.repo_url("sec") + "/info/refs?service=git-upload-pack")
        raise AssertionError("expected 401")
    except urllib.error.HTTPError as e:
        assert e.code == 401
        assert e.headers["WWW-Authenticate"].startswith("Basic")


def test_gzip_upload_pack_request(server, workdir):
    """A gzip-encoded upload-pack request (as git sends large ones) is decoded and answered."""
    import base64
    import gzip
    import urllib.request

    cc = server.client("codecommit")
    cc.create_repository(repositoryName="gz")
    commit = cc.put_file(repositoryName="gz", branchName="main", filePath="a", fileContent=b"hello")["commitId"]
    server.user("puller", {"Statement": [{"Effect": "Allow", "Action": "codecommit:GitPull", "Resource": "*"}]})
    cred = server.admin("create-service-specific-credential", "--user-name", "puller",
                        "--service-name", "codecommit.amazonaws.com")["ServiceSpecificCredential"]
    auth = base64.b64encode(f"{cred['ServiceUserName']}:{cred['ServicePassword']}".encode()).decode()
    want = f"want {commit}\n"
    body = f"{len(want) + 4:04x}{want}0000" + "0009done\n"
    req = urllib.request.Request(
        server.repo_url("gz") + "/git-upload-pack", data=gzip.compress(body.encode()), method="POST",
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/x-git-upload-pack-request",
                 "Content-Encoding": "gzip", "Accept": "application/x-git-upload-pack-result"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-git-upload-pack-result"
        data = resp.read()
    assert data.startswith(b"0008NAK\n") and b"PACK" in data
