"""Fixtures for the compatibility suite: the real `slipway` binary, driven by the real
aws-cli, boto3 and git, exactly as users drive it."""

import json
import os
import pathlib
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time

import boto3
import botocore.config
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("SLIPWAY_BIN", str(ROOT / "target" / "debug" / "slipway"))
REGION = "us-east-1"
ACCOUNT = "000000000000"
ROOT_KEY = "AKIAROOTROOTROOTROOT"
ROOT_SECRET = "rootsecretrootsecretrootsecretrootsecret"
HELPER = "!aws codecommit credential-helper --ignore-host-check $@"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AwsError(Exception):
    def __init__(self, code, message, stderr):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.stderr = stderr


class Creds:
    def __init__(self, key, secret):
        self.key = key
        self.secret = secret


class Server:
    """One `slipway server` process with its own data directory and port."""

    def __init__(self, data_dir, port=None, env=None):
        self.extra_env = env or {}
        self.data_dir = pathlib.Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.root = Creds(ROOT_KEY, ROOT_SECRET)
        self.log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")

    def start(self):
        env = dict(os.environ)
        env.update(
            SLIPWAY_ROOT_ACCESS_KEY_ID=ROOT_KEY,
            SLIPWAY_ROOT_SECRET_ACCESS_KEY=ROOT_SECRET,
            SLIPWAY_LOG="info,slipway_api=debug",
        )
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            [BIN, "server", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.log,
            stderr=self.log,
            env=env,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                import urllib.request

                with urllib.request.urlopen(self.url + "/-/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not become healthy")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None

    def kill9(self):
        return self.stop(signal.SIGKILL)

    # --- clients -----------------------------------------------------------------------

    def env(self, creds=None, region=None):
        creds = creds or self.root
        env = dict(os.environ)
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.pop(k, None)
        env.update(
            AWS_ACCESS_KEY_ID=creds.key,
            AWS_SECRET_ACCESS_KEY=creds.secret,
            AWS_DEFAULT_REGION=region or REGION,
            AWS_ENDPOINT_URL=self.url,
            AWS_CONFIG_FILE="/dev/null",
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
            AWS_MAX_ATTEMPTS="1",
            AWS_RETRY_MODE="standard",
            AWS_PAGER="",
            GIT_TERMINAL_PROMPT="0",
            GIT_CONFIG_NOSYSTEM="1",
            GIT_AUTHOR_NAME="Test",
            GIT_AUTHOR_EMAIL="test@example.com",
            GIT_COMMITTER_NAME="Test",
            GIT_COMMITTER_EMAIL="test@example.com",
        )
        return env

    def aws(self, *args, creds=None, check=True, region=None):
        """Runs the aws-cli (in `region`, default us-east-1); returns parsed JSON output (or
        text) or raises AwsError."""
        p = subprocess.run(
            ["aws", *args, "--output", "json"], capture_output=True, text=True, env=self.env(creds, region), timeout=120
        )
        if p.returncode != 0:
            import re

            m = re.search(r"An error occurred \(([^)]+)\) when calling the \w+ operation(?: \([^)]*\))?: (.*)", p.stderr)
            err = AwsError(m.group(1) if m else "CliError", m.group(2) if m else p.stderr, p.stderr)
            if check:
                raise err
            return err
        if not p.stdout.strip():
            return {}
        try:
            return json.loads(p.stdout)
        except ValueError:
            return p.stdout  # the text `aws s3 …` commands print

    def client(self, service, creds=None, region=None):
        creds = creds or self.root
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region or REGION,
            aws_access_key_id=creds.key,
            aws_secret_access_key=creds.secret,
            config=botocore.config.Config(retries={"max_attempts": 1}),
        )

    def git(self, *args, cwd=None, creds=None, check=True, helper=HELPER, region=None):
        cmd = ["git", "-c", f"credential.helper={helper}", "-c", "credential.UseHttpPath=true", *args]
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=self.env(creds, region), timeout=600)
        if check and p.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def repo_url(self, name):
        return f"{self.url}/v1/repos/{name}"

    def admin(self, *args, check=True):
        p = subprocess.run(
            [BIN, "admin", "--data-dir", str(self.data_dir), *args], capture_output=True, text=True, timeout=60
        )
        if check and p.returncode != 0:
            raise AssertionError(f"slipway admin {' '.join(args)} failed: {p.stderr}")
        return json.loads(p.stdout) if p.stdout.strip() else p

    def user(self, name, policy=None):
        """Creates an IAM user with an access key (and an inline policy); returns Creds."""
        self.admin("create-user", "--user-name", name)
        key = self.admin("create-access-key", "--user-name", name)["AccessKey"]
        if policy is not None:
            self.admin(
                "put-user-policy", "--user-name", name, "--policy-name", "p", "--policy-document", json.dumps(policy)
            )
        return Creds(key["AccessKeyId"], key["SecretAccessKey"])

    def events(self):
        db = sqlite3.connect(self.data_dir / "slipway.db")
        try:
            rows = db.execute("SELECT body FROM event_outbox ORDER BY seq").fetchall()
        finally:
            db.close()
        return [json.loads(r[0]) for r in rows]

    def repo_dir(self, name):
        repo_id = self.aws("codecommit", "get-repository", "--repository-name", name)["repositoryMetadata"]["repositoryId"]
        return self.data_dir / "repos" / f"{repo_id}.git"


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="slipway-test-")
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(workdir):
    data = workdir / "data"
    s = Server(data).start()
    yield s
    rc = s.stop()
    assert rc in (0, -9, None), f"server exited with {rc}"


def make_history(path, env, branches=("main", "feature"), files=5):
    """A local repository with several branches, a tag, nested folders and an executable."""
    run = lambda *a: subprocess.run(["git", *a], cwd=path, check=True, capture_output=True, env=env)
    path.mkdir(parents=True, exist_ok=True)
    run("init", "-q", "-b", branches[0])
    (path / "src").mkdir()
    (path / "src" / "nested").mkdir()
    for i in range(files):
        (path / "src" / f"file{i}.txt").write_text(f"content {i}\n" * (i + 1))
    (path / "src" / "nested" / "deep.txt").write_text("deep\n")
    (path / "README.md").write_text("# demo\n")
    (path / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(path / "run.sh", 0o755)
    os.symlink("README.md", path / "link")
    run("add", "-A")
    run("commit", "-q", "-m", "initial")
    run("tag", "-a", "v1", "-m", "release 1")
    for b in branches[1:]:
        run("checkout", "-q", "-b", b)
        (path / f"{b}.txt").write_text(f"{b}\n")
        run("add", "-A")
        run("commit", "-q", "-m", f"work on {b}")
        run("checkout", "-q", branches[0])
    (path / "src" / "file0.txt").write_text("changed\n")
    run("rm", "-q", "src/file1.txt")
    run("commit", "-q", "-am", "second")
    return path
