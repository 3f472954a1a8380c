"""CodeCommit's API through the real aws-cli and boto3: repositories, branches, files,
commits and differences, checked against what git itself says."""

import base64
import subprocess

import pytest
from conftest import AwsError, make_history


def git_out(path, *args):
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def test_repository_lifecycle(server):
    md = server.aws("codecommit", "create-repository", "--repository-name", "alpha", "--repository-description", "first",
                    "--tags", "team=core")["repositoryMetadata"]
    assert md["repositoryName"] == "alpha"
    assert md["Arn"] == "arn:aws:codecommit:us-east-1:000000000000:alpha"
    assert md["cloneUrlHttp"] == f"{server.url}/v1/repos/alpha"
    assert md["accountId"] == "000000000000"
    got = server.aws("codecommit", "get-repository", "--repository-name", "alpha")["repositoryMetadata"]
    assert got["repositoryId"] == md["repositoryId"] and got["repositoryDescription"] == "first"
    assert "defaultBranch" not in got

    with pytest.raises(AwsError) as e:
        server.aws("codecommit", "create-repository", "--repository-name", "alpha")
    assert e.value.code == "RepositoryNameExistsException"

    for name in ["beta", "gamma"]:
        server.aws("codecommit", "create-repository", "--repository-name", name)
    names = [r["repositoryName"] for r in server.aws("codecommit", "list-repositories")["repositories"]]
    assert names == ["alpha", "beta", "gamma"]
    desc = server.aws("codecommit", "list-repositories", "--sort-by", "repositoryName", "--order", "descending")
    assert [r["repositoryName"] for r in desc["repositories"]] == ["gamma", "beta", "alpha"]

    batch = server.aws("codecommit", "batch-get-repositories", "--repository-names", "alpha", "nope")
    assert [r["repositoryName"] for r in batch["repositories"]] == ["alpha"]
    assert batch["repositoriesNotFound"] == ["nope"]

    server.aws("codecommit", "update-repository-description", "--repository-name", "alpha", "--repository-description", "second")
    server.aws("codecommit", "update-repository-name", "--old-name", "alpha", "--new-name", "delta")
    got = server.aws("codecommit", "get-repository", "--repository-name", "delta")["repositoryMetadata"]
    assert got["repositoryDescription"] == "second" and got["repositoryId"] == md["repositoryId"]
    with pytest.raises(AwsError) as e:
        server.aws("codecommit", "update-repository-name", "--old-name", "beta", "--new-name", "gamma")
    assert e.value.code == "RepositoryNameExistsException"

    tags = server.aws("codecommit", "list-tags-for-resource", "--resource-arn", got["Arn"])["tags"]
    assert tags == {"team": "core"}
    server.aws("codecommit", "tag-resource", "--resource-arn", got["Arn"], "--tags", "env=prod")
    server.aws("codecommit", "untag-resource", "--resource-arn", got["Arn"], "--tag-keys", "team")
    assert server.aws("codecommit", "list-tags-for-resource", "--resource-arn", got["Arn"])["tags"] == {"env": "prod"}

    deleted = server.aws("codecommit", "delete-repository", "--repository-name", "delta")
    assert deleted["repositoryId"] == md["repositoryId"]
    assert "repositoryId" not in server.aws("codecommit", "delete-repository", "--repository-name", "delta")
    with pytest.raises(AwsError) as e:
        server.aws("codecommit", "get-repository", "--repository-name", "delta")
    assert e.value.code == "RepositoryDoesNotExistException"


def test_list_repositories_paginates(server):
    cc = server.client("codecommit")
    # ListRepositories pages hold 1,000 repositories.
    for i in range(1003):
        cc.create_repository(repositoryName=f"r{i:04d}")
    first = cc.list_repositories()
    assert len(first["repositories"]) == 1000 and "nextToken" in first
    names = []
    for page in cc.get_paginator("list_repositories").paginate():
        names += [r["repositoryName"] for r in page["repositories"]]
    assert names == sorted(f"r{i:04d}" for i in range(1003))
    with pytest.raises(cc.exceptions.InvalidContinuationTokenException):
        cc.list_repositories(nextToken="garbage")


def test_push_then_read_through_api(server, workdir):
    server.aws("codecommit", "create-repository", "--repository-name", "demo")
    local = make_history(workdir / "local", server.env())
    server.git("push", "--all", server.repo_url("demo"), cwd=local)
    server.git("push", "--tags", server.repo_url("demo"), cwd=local)
    cc = server.client("codecommit")
    repo = cc.get_repository(repositoryName="demo")["repositoryMetadata"]
    assert repo["defaultBranch"] == "main"
    assert sorted(cc.list_branches(repositoryName="demo")["branches"]) == ["feature", "main"]
    head = git_out(local, "rev-parse", "main").strip()
    assert cc.get_branch(repositoryName="demo", branchName="main")["branch"]["commitId"] == head

    # GetFolder agrees with git ls-tree, at the root and in a subfolder.
    for folder, treeish in [("/", "main"), ("src", "main:src")]:
        out = cc.get_folder(repositoryName="demo", folderPath=folder)
        entries = {}
        for line in git_out(local, "ls-tree", treeish).splitlines():
            meta, name = line.split("\t")
            mode, kind, oid = meta.split()
            entries[name] = (mode, kind, oid)
        got = {}
        for f in out["files"]:
            got[f["relativePath"]] = ({"NORMAL": "100644", "EXECUTABLE": "100755"}[f["fileMode"]], "blob", f["blobId"])
        for f in out["symbolicLinks"]:
            got[f["relativePath"]] = ("120000", "blob", f["blobId"])
        for f in out["subFolders"]:
            got[f["relativePath"]] = ("040000", "tree", f["treeId"])
        assert got == entries, folder
        assert out["commitId"] == head

    # GetFile agrees with git show, by branch, tag and commit id.
    for spec, path in [("main", "src/file0.txt"), ("v1", "src/file1.txt"), (head, "run.sh"), ("feature", "feature.txt")]:
        f = cc.get_file(repositoryName="demo", commitSpecifier=spec, filePath=path)
        assert f["fileContent"] == git_out(local, "show", f"{spec}:{path}").encode()
        assert f["blobId"] == git_out(local, "rev-parse", f"{spec}:{path}").strip()
    assert cc.get_file(repositoryName="demo", filePath="run.sh")["fileMode"] == "EXECUTABLE"
    blob = git_out(local, "rev-parse", "main:README.md").strip()
    assert cc.get_blob(repositoryName="demo", blobId=blob)["content"] == b"# demo\n"
    with pytest.raises(cc.exceptions.FileDoesNotExistException):
        cc.get_file(repositoryName="demo", filePath="missing.txt")
    with pytest.raises(cc.exceptions.FolderDoesNotExistException):
        cc.get_folder(repositoryName="demo", folderPath="README.md")
    with pytest.raises(cc.exceptions.CommitDoesNotExistException):
        cc.get_file(repositoryName="demo", commitSpecifier="no-such-branch", filePath="README.md")

    # GetCommit matches git's view of the commit.
    c = cc.get_commit(repositoryName="demo", commitId=head)["commit"]
    assert c["treeId"] == git_out(local, "rev-parse", "main^{tree}").strip()
    assert c["parents"] == [git_out(local, "rev-parse", "main~1").strip()]
    assert c["message"] == "second\n"
    assert c["author"]["name"] == "Test" and c["author"]["email"] == "test@example.com"
    batch = cc.batch_get_commits(repositoryName="demo", commitIds=[head, "0" * 40])
    assert [x["commitId"] for x in batch["commits"]] == [head]
    assert batch["errors"][0]["commitId"] == "0" * 40

    # GetDifferences agrees with git diff --name-status, whole tree and per path.
    first = git_out(local, "rev-parse", "main~1").strip()
    for kwargs, pathspec in [({}, []), ({"afterPath": "src", "beforePath": "src"}, ["src"])]:
        diffs = []
        for page in cc.get_paginator("get_differences").paginate(
            repositoryName="demo", beforeCommitSpecifier=first, afterCommitSpecifier="main", **kwargs
        ):
            diffs += page["differences"]
        got = sorted((d["changeType"], (d.get("afterBlob") or d.get("beforeBlob"))["path"]) for d in diffs)
        want = sorted(tuple(l.split("\t")) for l in git_out(local, "diff", "--name-status", "--no-renames", first, "main", "--", *pathspec).splitlines())
        assert got == want
    initial = cc.get_differences(repositoryName="demo", afterCommitSpecifier=first)["differences"]
    assert {d["afterBlob"]["path"] for d in initial} == set(git_out(local, "ls-tree", "-r", "--name-only", first).split())
    assert all(d["changeType"] == "A" and "beforeBlob" not in d for d in initial)


def test_putfile_createcommit_then_fetch(server, workdir):
    cc = server.client("codecommit")
    cc.create_repository(repositoryName="files")
    first = cc.put_file(repositoryName="files", branchName="main", filePath="/docs/a.txt", fileContent=b"alpha\n",
                        commitMessage="add a", name="Ann", email="ann@example.com")
    assert cc.get_repository(repositoryName="files")["repositoryMetadata"]["defaultBranch"] == "main"
    with pytest.raises(cc.exceptions.ParentCommitIdRequiredException):
        cc.put_file(repositoryName="files", branchName="main", filePath="b.txt", fileContent=b"b")
    with pytest.raises(cc.exceptions.SameFileContentException):
        cc.put_file(repositoryName="files", branchName="main", filePath="docs/a.txt", fileContent=b"alpha\n",
                    parentCommitId=first["commitId"])
    with pytest.raises(cc.exceptions.FileContentRequiredException):
        cc.put_file(repositoryName="files", branchName="main", filePath="e.txt", fileContent=b"",
                    parentCommitId=first["commitId"])
    second = cc.put_file(repositoryName="files", branchName="main", filePath="tool.sh", fileContent=b"#!/bin/sh\n",
                         fileMode="EXECUTABLE", parentCommitId=first["commitId"])
    with pytest.raises(cc.exceptions.ParentCommitIdOutdatedException):
        cc.put_file(repositoryName="files", branchName="main", filePath="c.txt", fileContent=b"c",
                    parentCommitId=first["commitId"])
    third = cc.create_commit(
        repositoryName="files", branchName="main", parentCommitId=second["commitId"], authorName="Bob",
        email="bob@example.com", commitMessage="batch",
        putFiles=[{"filePath": "x/y/z.txt", "fileContent": b"zed"},
                  {"filePath": "docs/copy.txt", "sourceFile": {"filePath": "docs/a.txt"}}],
        deleteFiles=[{"filePath": "tool.sh"}],
    )
    assert sorted(f["absolutePath"] for f in third["filesAdded"]) == ["docs/copy.txt", "x/y/z.txt"]
    assert [f["absolutePath"] for f in third["filesDeleted"]] == ["tool.sh"]
    modes = cc.create_commit(repositoryName="files", branchName="main", parentCommitId=third["commitId"],
                             setFileModes=[{"filePath": "x/y/z.txt", "fileMode": "EXECUTABLE"}])
    with pytest.raises(cc.exceptions.NoChangeException):
        cc.create_commit(repositoryName="files", branchName="main", parentCommitId=modes["commitId"],
                         putFiles=[{"filePath": "x/y/z.txt", "fileContent": b"zed", "fileMode": "EXECUTABLE"}])
    with pytest.raises(cc.exceptions.FileDoesNotExistException):
        cc.delete_file(repositoryName="files", branchName="main", filePath="nope", parentCommitId=modes["commitId"])
    with pytest.raises(cc.exceptions.InvalidPathException):
        cc.put_file(repositoryName="files", branchName="main", filePath="../escape", fileContent=b"x",
                    parentCommitId=modes["commitId"])
    deleted = cc.delete_file(repositoryName="files", branchName="main", filePath="docs/copy.txt",
                             parentCommitId=modes["commitId"])

    clone = workdir / "clone"
    server.git("clone", "-q", server.repo_url("files"), str(clone))
    assert git_out(clone, "rev-parse", "HEAD").strip() == deleted["commitId"]
    assert git_out(clone, "log", "--format=%an <%ae> %s", "-1", third["commitId"]).strip() == "Bob <bob@example.com> batch"
    assert (clone / "x/y/z.txt").read_text() == "zed"
    assert (clone / "x/y/z.txt").stat().st_mode & 0o111
    assert not (clone / "tool.sh").exists() and not (clone / "docs/copy.txt").exists()
    assert git_out(clone, "rev-list", "--count", "HEAD").strip() == "5"
    subprocess.run(["git", "fsck", "--strict"], cwd=clone, check=True, capture_output=True)
    history = cc.list_file_commit_history(repositoryName="files", filePath="docs/a.txt")["revisionDag"]
    assert [v["commit"]["commitId"] for v in history] == [first["commitId"]]
    assert history[0]["revisionChildren"] == [] and history[0]["path"] == "docs/a.txt"
    z = cc.list_file_commit_history(repositoryName="files", filePath="x/y/z.txt")["revisionDag"]
    assert [v["commit"]["commitId"] for v in z] == [modes["commitId"], third["commitId"]]
    assert z[1]["revisionChildren"] == [modes["commitId"]] and z[0]["revisionChildren"] == []
    assert z[1]["blobId"] == z[0]["blobId"]


def test_branches(server):
    cc = server.client("codecommit")
    cc.create_repository(repositoryName="br")
    c1 = cc.put_file(repositoryName="br", branchName="main", filePath="a", fileContent=b"1")["commitId"]
    cc.create_branch(repositoryName="br", branchName="release/1.0", commitId=c1)
    with pytest.raises(cc.exceptions.BranchNameExistsException):
        cc.create_branch(repositoryName="br", branchName="release/1.0", commitId=c1)
    with pytest.raises(cc.exceptions.CommitDoesNotExistException):
        cc.create_branch(repositoryName="br", branchName="x", commitId="1" * 40)
    with pytest.raises(cc.exceptions.InvalidBranchNameException):
        cc.create_branch(repositoryName="br", branchName="bad..name", commitId=c1)
    assert cc.get_branch(repositoryName="br", branchName="release/1.0")["branch"]["commitId"] == c1
    with pytest.raises(cc.exceptions.BranchDoesNotExistException):
        cc.get_branch(repositoryName="br", branchName="nope")
    with pytest.raises(cc.exceptions.DefaultBranchCannotBeDeletedException):
        cc.delete_branch(repositoryName="br", branchName="main")
    cc.update_default_branch(repositoryName="br", defaultBranchName="release/1.0")
    assert cc.get_repository(repositoryName="br")["repositoryMetadata"]["defaultBranch"] == "release/1.0"
    gone = cc.delete_branch(repositoryName="br", branchName="main")["deletedBranch"]
    assert gone == {"branchName": "main", "commitId": c1}
    assert cc.list_branches(repositoryName="br")["branches"] == ["release/1.0"]


def test_ref_changes_become_events(server, workdir):
    cc = server.client("codecommit")
    cc.create_repository(repositoryName="ev")
    c1 = cc.put_file(repositoryName="ev", branchName="main", filePath="a", fileContent=b"1")["commitId"]
    local = workdir / "ev"
    server.git("clone", "-q", server.repo_url("ev"), str(local))
    (local / "b").write_text("2")
    subprocess.run(["git", "add", "b"], cwd=local, check=True)
    subprocess.run(["git", "commit", "-qm", "b"], cwd=local, check=True, env=server.env())
    server.git("push", "-q", "origin", "main", "main:topic", cwd=local)
    c2 = git_out(local, "rev-parse", "HEAD").strip()
    server.git("push", "-q", "origin", ":topic", cwd=local)
    events = [e for e in server.events() if e["detail"]["repositoryName"] == "ev"]
    assert all(e["source"] == "aws.codecommit" and e["detail-type"] == "CodeCommit Repository State Change" for e in events)
    got = [(e["detail"]["event"], e["detail"]["referenceName"], e["detail"].get("oldCommitId"), e["detail"].get("commitId")) for e in events]
    assert sorted(got, key=str) == sorted([
        ("referenceCreated", "main", None, c1),
        ("referenceUpdated", "main", c1, c2),
        ("referenceCreated", "topic", None, c2),
        ("referenceDeleted", "topic", c2, None),
    ], key=str)
    assert all(e["detail"]["callerUserArn"] == "arn:aws:iam::000000000000:root" for e in events)
    assert all(e["resources"] == ["arn:aws:codecommit:us-east-1:000000000000:ev"] for e in events)
