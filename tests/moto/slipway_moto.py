"""Our conftest for running moto's own tests against Slipway, loaded as a pytest plugin.

`tests/moto/run.sh` extracts moto 5.2.1's tests for CodeCommit, CodeBuild, CodeDeploy and
CodePipeline from its sdist into a cache directory and runs pytest there with
`-p slipway_moto` (this file is on PYTHONPATH). It is a plugin rather than a conftest.py
because the tests live outside this tree, and fixtures of a plugin apply to every test.

What it does:

* Puts moto in server mode before moto is imported: `TEST_SERVER_MODE=true`, and
  `TEST_SERVER_MODE_ENDPOINT` pointing at one loopback port chosen for the whole session.
  The port is fixed because `@mock_aws` builds its `ServerModeMockAWS` when the test module
  is imported, and that object reads the endpoint once, in its constructor.
* Starts a fresh `slipway server` (`SLIPWAY_BIN`, default `target/debug/slipway`) on that
  port with a fresh data directory for every test (autouse fixture), and stops it with
  SIGTERM after the test; a server that does not exit 0 fails the test. Its root
  credentials are the ones `mock_aws` puts into the environment during a test
  (`AWS_ACCESS_KEY_ID=FOOBARKEY`, `AWS_SECRET_ACCESS_KEY=FOOBARSECRET`, from
  moto/core/models.py), and its account id is moto's `DEFAULT_ACCOUNT_ID`, 123456789012.
  `--builtin-worker-slots 0`: no moto test needs a build to run (a start-build only has to
  be answered), and without a worker the server starts in ~30 ms instead of ~250 ms.
  `SLIPWAY_REGION` and the other `SLIPWAY_*` settings pass through from the environment.
* Sets `MOTO_CALL_RESET_API=false`: in server mode `mock_aws` POSTs `/moto-api/reset` to the
  endpoint when a test starts and ends (and ignores the answer; Slipway answers 501). A
  fresh server per test makes the reset pointless.
* Compares the outcomes with `tests/moto/expected_failures.txt` (`test id<TAB>reason`): a
  listed test that fails in its call is reported as xfailed with the reason; a listed test
  that passes fails ("now passes: remove it from expected_failures.txt"); a test not listed
  that fails fails; a listed id that was not collected, or was skipped, fails the session.
  `SLIPWAY_MOTO_IGNORE_EXPECTED=1` ignores the list (plain outcomes, for investigating).
  The summary line goes to the terminal and, when `SLIPWAY_MOTO_SUMMARY` names a file, into
  that file (run.sh prints it last).
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = os.environ.get("SLIPWAY_BIN", str(ROOT / "target" / "debug" / "slipway"))
EXPECTED_FILE = HERE / "expected_failures.txt"
MOTO_VERSION = "5.2.1"

# What moto's mock_aws puts into os.environ for the duration of a test (moto/core/models.py),
# and moto's default account (moto/core/models.py DEFAULT_ACCOUNT_ID).
MOTO_ACCESS_KEY = "FOOBARKEY"
MOTO_SECRET_KEY = "FOOBARSECRET"
MOTO_ACCOUNT_ID = "123456789012"
# A fixed master key: generating one costs ~0.3 s per server, and these data dirs are thrown away.
MASTER_KEY = "00" * 31 + "01"
LOG_TAIL_LINES = 40


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = _free_port()
ENDPOINT = f"http://127.0.0.1:{PORT}"

# Before moto (moto.settings reads TEST_SERVER_MODE at import) or any test module is imported.
os.environ["TEST_SERVER_MODE"] = "true"
os.environ["TEST_SERVER_MODE_ENDPOINT"] = ENDPOINT
os.environ["MOTO_CALL_RESET_API"] = "false"
# Nothing but mock_aws's keys: no profile, no session token, no config or credentials files.
for _k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_k, None)
for _k in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
    del os.environ[_k]
os.environ.update(
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    AWS_DEFAULT_REGION="us-east-1",
    # One attempt: an error is the answer to judge, and retries only make a run slower.
    AWS_MAX_ATTEMPTS="1",
    AWS_RETRY_MODE="standard",
    AWS_EC2_METADATA_DISABLED="true",
)


class SlipwayServer:
    """One `slipway server` process on PORT with its own data directory."""

    def __init__(self, workdir):
        self.workdir = pathlib.Path(workdir)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self.proc = None

    def start(self, timeout=30):
        env = dict(os.environ)
        env.update(
            SLIPWAY_ROOT_ACCESS_KEY_ID=MOTO_ACCESS_KEY,
            SLIPWAY_ROOT_SECRET_ACCESS_KEY=MOTO_SECRET_KEY,
            SLIPWAY_ACCOUNT_ID=MOTO_ACCOUNT_ID,
            SLIPWAY_MASTER_KEY=MASTER_KEY,
        )
        env.setdefault("SLIPWAY_LOG", "info,slipway_api=debug")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    BIN, "server",
                    "--data-dir", str(self.data_dir),
                    "--listen", f"127.0.0.1:{PORT}",
                    "--builtin-worker-slots", "0",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slipway server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(ENDPOINT + "/-/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"slipway server not healthy after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout=20):
        """SIGTERM, then waits; returns the exit status (SIGKILL after `timeout`: -9)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines=LOG_TAIL_LINES):
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


_server_key = pytest.StashKey[SlipwayServer]()


@pytest.fixture(autouse=True)
def slipway_server(request):
    """A fresh Slipway server at TEST_SERVER_MODE_ENDPOINT for this test alone."""
    workdir = tempfile.mkdtemp(prefix="slipway-moto-")
    server = SlipwayServer(workdir)
    request.node.stash[_server_key] = server
    try:
        server.start()
        os.environ["TEST_SERVER_MODE_ENDPOINT"] = ENDPOINT
        yield server
        rc = server.stop()
        assert rc == 0, f"slipway server exited with {rc}:\n{server.log_tail()}"
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- expected failures ------------------------------------------------------------------


def _load_expected(path):
    expected = {}
    if os.environ.get("SLIPWAY_MOTO_IGNORE_EXPECTED") == "1" or not path.exists():
        return expected
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        test_id, tab, reason = line.partition("\t")
        if not tab or not reason.strip():
            raise pytest.UsageError(f"{path}:{n}: expected `test id<TAB>reason`, got {line!r}")
        if test_id in expected:
            raise pytest.UsageError(f"{path}:{n}: {test_id} is listed twice")
        expected[test_id] = reason.strip()
    return expected


class Outcomes:
    """What happened to each test, against what expected_failures.txt says."""

    def __init__(self, expected):
        self.expected = expected
        self.collected = set()
        self.results = {}  # nodeid -> passed | xfailed | failed | skipped
        self.unexpected = {}  # nodeid -> first line of the failure
        self.now_passing = []

    def record(self, report):
        nodeid = report.nodeid
        previous = self.results.get(nodeid)
        if report.failed:
            self.results[nodeid] = "failed"
            if nodeid not in self.unexpected and nodeid not in self.now_passing:
                self.unexpected[nodeid] = _first_line(report)
        elif previous == "failed":
            return
        elif hasattr(report, "wasxfail"):
            self.results[nodeid] = "xfailed"
        elif report.skipped:
            self.results[nodeid] = "skipped"
        elif report.when == "call":
            self.results[nodeid] = "passed"

    def problems(self):
        out = []
        for nodeid, line in self.unexpected.items():
            out.append(f"FAILED (not in expected_failures.txt) {nodeid}: {line}")
        for nodeid in self.now_passing:
            out.append(f"{nodeid} now passes: remove it from expected_failures.txt")
        files = {nodeid.split("::")[0] for nodeid in self.collected}
        for nodeid, reason in self.expected.items():
            if nodeid.split("::")[0] in files and nodeid not in self.collected:
                out.append(f"{nodeid} is in expected_failures.txt but no such test was collected")
            elif self.results.get(nodeid) == "skipped":
                out.append(f"{nodeid} is in expected_failures.txt but was skipped")
        return out

    def summary(self):
        counts = {k: 0 for k in ("passed", "xfailed", "failed", "skipped")}
        for v in self.results.values():
            counts[v] += 1
        passed = counts["passed"] + len(self.now_passing)
        line = (
            f"moto {MOTO_VERSION} server mode: {passed} passed, "
            f"{counts['xfailed']} expected failures, of {len(self.results)}"
        )
        if counts["skipped"]:
            line += f" ({counts['skipped']} skipped)"
        # A listed test that passed is reported failed (so the run fails) but is a pass here.
        now_passing = len(self.now_passing)
        if now_passing:
            line += f"; {now_passing} listed but now passing"
        if counts["failed"] - now_passing:
            line += f"; {counts['failed'] - now_passing} FAILED"
        return line


def _first_line(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return (text.strip().splitlines() or [""])[0][:300]


# One session per process; pytest_runtest_logreport is not handed the config.
OUTCOMES = None


def pytest_configure(config):
    global OUTCOMES
    OUTCOMES = Outcomes(_load_expected(EXPECTED_FILE))
    # The markers moto's own configuration (pyproject.toml) declares.
    for marker in (
        "network: requires network connection",
        "requires_docker: requires running docker",
        "aws_verified: Verified against AWS, and should be able to run against AWS",
        "requires_clean_slate: requires a clean slate, so no parallel testing",
    ):
        config.addinivalue_line("markers", marker)


def pytest_report_header(config):
    return f"slipway: {BIN} at {ENDPOINT} (a fresh server per test)"


def pytest_itemcollected(item):
    OUTCOMES.collected.add(item.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    reason = OUTCOMES.expected.get(item.nodeid)
    if report.when == "call" and reason is not None:
        if report.failed:
            report.outcome = "skipped"
            report.wasxfail = reason
        elif report.passed:
            report.outcome = "failed"
            report.longrepr = f"now passes: remove it from expected_failures.txt (listed as: {reason})"
            OUTCOMES.now_passing.append(item.nodeid)
    elif report.failed:
        server = item.stash.get(_server_key, None)
        if server is not None:
            report.sections.append(("slipway server log (last lines)", server.log_tail()))
    return report


def pytest_runtest_logreport(report):
    OUTCOMES.record(report)


def pytest_sessionfinish(session):
    if OUTCOMES.problems() and session.exitstatus == 0:
        session.exitstatus = 1
    path = os.environ.get("SLIPWAY_MOTO_SUMMARY")
    if path:
        pathlib.Path(path).write_text(OUTCOMES.summary() + "\n")


def pytest_terminal_summary(terminalreporter):
    problems = OUTCOMES.problems()
    if problems:
        terminalreporter.section("against expected_failures.txt", sep="=", red=True)
        for line in problems:
            terminalreporter.write_line(line)
    terminalreporter.write_line(OUTCOMES.summary(), bold=True)
