"""Concurrency and crashes: simultaneous pushes to one branch, and kill -9 during a push."""

import os
import subprocess
import threading
import time
from urllib.parse import quote

from conftest import Server


def git(cwd, *args, env=None, check=True):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=check)


def basic_url(server, name):
    """A clone URL carrying service-specific git credentials (no credential helper needed)."""
    server.user("pusher", {"Statement": [{"Effect": "Allow", "Action": "codecommit:Git*", "Resource": "*"}]})
    c = server.admin("create-service-specific-credential", "--user-name", "pusher",
                     "--service-name", "codecommit.amazonaws.com")["ServiceSpecificCredential"]
    user, pw = quote(c["ServiceUserName"], safe=""), quote(c["ServicePassword"], safe="")
    return server.repo_url(name).replace("http://", f"http://{user}:{pw}@")


def seed(path, url, env, name):
    """A new local repository with one commit of file `name`, pushed to `url`; returns its id."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main", env=env)
    (path / name).write_text(name)
    git(path, "add", "-A", env=env)
    git(path, "commit", "-qm", name, env=env)
    git(path, "push", "-q", url, "main", env=env)
    return git(path, "rev-parse", "HEAD").stdout.strip()


def test_simultaneous_pushes_to_one_branch(server, workdir):
    server.aws("codecommit", "create-repository", "--repository-name", "race")
    url = basic_url(server, "race")
    env = server.env()
    seed(workdir / "seed", url, env, "base")

    clones = []
    for i in range(12):
        d = workdir / f"c{i}"
        git(workdir, "clone", "-q", url, str(d), env=env)
        (d / f"f{i}").write_text(str(i))
        git(d, "add", "-A", env=env)
        git(d, "commit", "-qm", f"commit {i}", env=env)
        clones.append(d)

    results = {}
    start = threading.Barrier(len(clones))

    def push(i, d):
        start.wait()
        accepted = 0
        for _ in range(40):
            p = git(d, "push", "origin", "main", env=env, check=False)
            if p.returncode == 0:
                accepted += 1
                break
            assert "rejected" in p.stderr or "failed to update ref" in p.stderr or "cannot lock ref" in p.stderr, p.stderr
            git(d, "pull", "-q", "--rebase", "origin", "main", env=env)
        results[i] = accepted

    threads = [threading.Thread(target=push, args=(i, d)) for i, d in enumerate(clones)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i] == 1 for i in range(12)), results

    final = workdir / "final"
    git(workdir, "clone", "-q", url, str(final), env=env)
    log = git(final, "log", "--format=%s", env=env).stdout.split("\n")
    assert sorted(l for l in log if l.startswith("commit")) == sorted(f"commit {i}" for i in range(12))
    assert git(final, "rev-list", "--count", "--merges", "HEAD", env=env).stdout.strip() == "0"
    git(server.repo_dir("race"), "fsck", "--strict")
    updates = [e for e in server.events() if e["detail"]["repositoryName"] == "race"]
    # One event per accepted update: the seed push created main, then 12 fast-forwards.
    assert [e["detail"]["event"] for e in updates].count("referenceCreated") == 1
    assert [e["detail"]["event"] for e in updates].count("referenceUpdated") == 12
    chain = [(e["detail"].get("oldCommitId"), e["detail"]["commitId"]) for e in updates[1:]]
    for (_, new), (old, _) in zip(chain, chain[1:]):
        assert new == old, "events must describe one linear sequence of updates"


def test_kill9_during_large_push(workdir):
    server = Server(workdir / "data").start()
    server.aws("codecommit", "create-repository", "--repository-name", "big")
    url = basic_url(server, "big")
    env = server.env()
    local = workdir / "local"
    old = seed(local, url, env, "small")
    with open(local / "blob.bin", "wb") as f:
        f.write(os.urandom(150 * 1024 * 1024))
    git(local, "add", "-A", env=env)
    git(local, "commit", "-qm", "big", env=env)
    new = git(local, "rev-parse", "HEAD").stdout.strip()

    repo = server.repo_dir("big")
    push = subprocess.Popen(["git", "-c", "pack.threads=1", "push", "-q", url, "main"], cwd=local, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        incoming = [p for p in (repo / "objects").iterdir() if p.name.startswith("incoming-") or p.name.startswith("tmp_")]
        if incoming or push.poll() is not None:
            break
        time.sleep(0.01)
    time.sleep(0.2)
    server.kill9()
    push.wait(timeout=120)
    print("push during crash exited", push.returncode, push.stderr.read().decode()[-300:])

    server = Server(workdir / "data", port=server.port).start()
    tip = git(repo, "rev-parse", "refs/heads/main").stdout.strip()
    assert tip in (old, new)
    git(repo, "fsck", "--strict")
    git(local, "push", "-q", url, "main", env=env)
    assert git(repo, "rev-parse", "refs/heads/main").stdout.strip() == new
    git(repo, "fsck", "--strict")
    # Every ref change is on record, including any the crash interrupted before its event.
    events = [e["detail"] for e in server.events() if e["detail"]["repositoryName"] == "big"]
    assert events[-1]["commitId"] == new
    assert server.stop() == 0
