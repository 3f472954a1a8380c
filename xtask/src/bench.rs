//! `cargo xtask bench`: Slipway against a peer or the physical limit, in the same run.
//!
//! - `api`: GetRepository requests/s and p99 (SigV4-signed, keep-alive, 32 connections,
//!   wrk) against Slipway and moto's server.
//! - `clone`: cloning a ~40 MB repository over Slipway's HTTP vs `git clone --no-local file://`.
//! - `push`: pushing a 300 MB commit over Slipway's HTTP vs to a bare repository via
//!   `file://`, and the server's peak resident memory meanwhile (the pack streams through).
//! - `idle`: resident memory with 100 repositories, and start to first answered request.
//! - `s3-small`: 4 KB object PUT and GET requests/s (SigV4, 32 connections, wrk) against
//!   Slipway and moto's S3. `s3-large`: a 1 GB object through `aws s3 cp` both ways against
//!   `cp` of the same file on the same disk. `s3` runs both.
//! - `build`: a `true` build against `runc run`, a build printing 100 MB of log (a
//!   compressible log and a random one) against the same build into /dev/null, the same
//!   build into `cat`, the command alone and the command into `cat`, 200 builds queued at
//!   once. `build-log`: the log builds alone, fifteen rounds each.
//!
//! Needs: a release build (made here), wrk, moto_server, python3 with botocore, git.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "AKIABENCHBENCHBENCH0";
const SECRET: &str = "benchsecretbenchsecretbenchsecretbenchse";

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_healthy(port: u16, path: &str, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            );
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200") {
                return Ok(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("server on port {port} did not become healthy")
}

fn slipway(bin: &Path, data: &Path, port: u16) -> Result<Proc> {
    let child = Command::new(bin)
        .args(["server", "--data-dir"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SLIPWAY_ROOT_ACCESS_KEY_ID", KEY)
        .env("SLIPWAY_ROOT_SECRET_ACCESS_KEY", SECRET)
        .env("SLIPWAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting slipway")?;
    Ok(Proc(child))
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn aws_env(cmd: &mut Command, port: u16) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
}

/// A wrk script that replays one SigV4-signed request (valid for 15 minutes). `request` is
/// Python that sets `method`, `path`, `body` (text), `headers` and `signer` (a botocore
/// signer over `creds`).
fn signed_wrk_script(port: u16, dir: &Path, name: &str, request: &str) -> Result<PathBuf> {
    let py = format!(
        r#"
import json
from botocore.auth import SigV4Auth, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
creds = Credentials("{KEY}", "{SECRET}")
{request}
r = AWSRequest(method=method, url="http://127.0.0.1:{port}" + path, data=body.encode(), headers=headers)
signer.add_auth(r)
lines = ['wrk.method = ' + json.dumps(method), 'wrk.path = ' + json.dumps(path), 'wrk.body = ' + json.dumps(body)]
for k, v in r.headers.items():
    lines.append('wrk.headers[%s] = %s' % (json.dumps(k), json.dumps(v)))
print("\n".join(lines))
"#
    );
    let script = sh(Command::new("python3").args(["-c", &py]))?;
    let path = dir.join(format!("{name}-{port}.lua"));
    std::fs::write(&path, script)?;
    Ok(path)
}

/// The Python for [`signed_wrk_script`] of CodeCommit's GetRepository on `bench`.
const GET_REPOSITORY: &str = r#"method, path = "POST", "/"
body = json.dumps({"repositoryName": "bench"})
headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "CodeCommit_20150413.GetRepository"}
signer = SigV4Auth(creds, "codecommit", "us-east-1")"#;

/// The Python for [`signed_wrk_script`] of an S3 request on `path` (a body of `body_len`
/// bytes).
fn s3_request(method: &str, path: &str, body_len: usize) -> String {
    format!(
        "method, path = {method:?}, {path:?}\nbody = \"x\" * {body_len}\nheaders = {{}}\nsigner = S3SigV4Auth(creds, \"s3\", \"us-east-1\")"
    )
}

fn moto(port: u16) -> Result<Proc> {
    let p = Proc(
        Command::new("moto_server")
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto_server (pip install 'moto[server]')")?,
    );
    wait_healthy(port, "/moto-api/", Duration::from_secs(60))?;
    Ok(p)
}

/// 4 KB PUT and GET requests per second, 32 connections, against Slipway and moto's S3.
fn bench_s3_small(bin: &Path, tmp: &Path, report: &mut String) -> Result<()> {
    let port = free_port()?;
    let _server = slipway(bin, &tmp.join("s3-small-data"), port)?;
    wait_healthy(port, "/-/health", Duration::from_secs(30))?;
    let mport = free_port()?;
    let _moto = moto(mport)?;
    let mut results = Vec::new();
    for p in [port, mport] {
        sh(aws_env(
            Command::new("aws").args(["s3", "mb", "s3://bench"]),
            p,
        ))?;
        let put = signed_wrk_script(p, tmp, "s3-put", &s3_request("PUT", "/bench/obj-4k", 4096))?;
        let get = signed_wrk_script(p, tmp, "s3-get", &s3_request("GET", "/bench/obj-4k", 0))?;
        wrk(p, &put, 2)?; // warm-up (and creates the object)
        let w = wrk(p, &put, 10)?;
        wrk(p, &get, 2)?;
        let r = wrk(p, &get, 10)?;
        if p == port && (w.non2xx > 0 || r.non2xx > 0) {
            bail!(
                "Slipway answered non-2xx during the S3 run ({} PUT, {} GET)",
                w.non2xx,
                r.non2xx
            );
        }
        results.push((w, r));
    }
    let (s, m) = (&results[0], &results[1]);
    for (name, a, b) in [("PUT", &s.0, &m.0), ("GET", &s.1, &m.1)] {
        let line = format!(
            "| S3 {name} 4 KB object, SigV4, 32 connections, 10 s | {:.0} req/s, p99 {:.2} ms | moto_server: {:.0} req/s, p99 {:.2} ms{} | **{:.1}×** throughput |\n",
            a.rps,
            a.p99_ms,
            b.rps,
            b.p99_ms,
            if b.non2xx > 0 {
                format!(" ({} errors)", b.non2xx)
            } else {
                String::new()
            },
            a.rps / b.rps.max(1e-9)
        );
        print!("{line}");
        report.push_str(&line);
    }
    Ok(())
}

/// Drives builds with boto3: `single N` runs N builds one after another, `burst N` starts
/// N at once; prints each build's server-side duration (startTime to endTime, seconds) and,
/// for a burst, the span from the first start to the last end.
const BUILD_DRIVER: &str = r#"
import sys, time, boto3
mode, n = sys.argv[1], int(sys.argv[2])
project = sys.argv[3] if len(sys.argv) > 3 else "bench"
cb = boto3.client("codebuild")
def wait(ids):
    done = {}
    while len(done) < len(ids):
        for i in range(0, len(ids), 100):
            for b in cb.batch_get_builds(ids=ids[i:i + 100])["builds"]:
                if b["buildComplete"]:
                    if b["buildStatus"] != "SUCCEEDED":
                        raise SystemExit("build %s ended %s" % (b["id"], b["buildStatus"]))
                    done[b["id"]] = b
        time.sleep(0.05)
    return list(done.values())
if mode == "single":
    for _ in range(n):
        b = wait([cb.start_build(projectName=project)["build"]["id"]])[0]
        print("%.4f" % (b["endTime"] - b["startTime"]).total_seconds())
else:
    ids = [cb.start_build(projectName=project)["build"]["id"] for _ in range(n)]
    bs = wait(ids)
    first = min(b["startTime"] for b in bs)
    last = max(b["endTime"] for b in bs)
    print("%.4f" % (last - first).total_seconds())
"#;

/// A build whose only command is `true` (StartBuild to SUCCEEDED, from the build's own
/// timestamps) against `runc run` of `true` in the same sandbox configuration; then 200
/// builds queued at once.
/// With `log_only`, only the 100 MB log builds (fifteen rounds each; five in the full run).
fn bench_build(bin: &Path, tmp: &Path, report: &mut String, log_only: bool) -> Result<()> {
    use slipway_codebuild::sandbox::{write_bundle, Limits, SandboxSpec};
    let port = free_port()?;
    let server = slipway(bin, &tmp.join("build-data"), port)?;
    wait_healthy(port, "/-/health", Duration::from_secs(30))?;
    let project = |name: &str, command: &str| {
        let source = serde_json::json!({
            "type": "NO_SOURCE",
            "buildspec": format!("version: 0.2\nphases:\n  build:\n    commands:\n      - {command}\n"),
        });
        sh(aws_env(
            Command::new("aws").args([
                "codebuild",
                "create-project",
                "--name",
                name,
                "--source",
                &source.to_string(),
                "--artifacts",
                r#"{"type":"NO_ARTIFACTS"}"#,
                "--environment",
                r#"{"type":"LINUX_CONTAINER","image":"aws/codebuild/standard:7.0","computeType":"BUILD_GENERAL1_SMALL"}"#,
                "--service-role",
                "bench",
            ]),
            port,
        ))
    };
    project("bench", "true")?;
    // 100 MB of log: 1,000,000 lines of 99 characters; and 100 MB that hardly compresses
    // (random bytes in base64, lines of 99).
    const NOISE: &str = "head -c 99000000 /dev/zero | tr '\\0' x | fold -w 99";
    const RANDOM: &str = "head -c 74250000 /dev/urandom | base64 -w 99";
    // Each log build has a twin whose command writes into /dev/null: the same sandbox,
    // phases and reports, no log.
    // And one whose output goes through a pipe into `cat`: the floor of capturing it at all.
    // And one whose output is only compressed (when it compresses, as Slipway's worker
    // does) and encrypted by the standard tools, into /dev/null: the floor of keeping it
    // secret at all, without a disk, lines or a server (measured when `openssl` and `lz4`
    // are installed).
    const SEAL: &str = "openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 000102030405060708090a0b0c0d0e0f";
    let sealing = ["openssl", "lz4"].iter().all(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    // (project, what it prints, the command, whether it compresses)
    let logs = [
        ("noisy", "1,000,000 lines of `x`", NOISE, true),
        ("random", "1,000,000 lines of random base64", RANDOM, false),
    ];
    for (name, _, command, compresses) in logs {
        project(name, command)?;
        project(&format!("{name}-null"), &format!("{command} > /dev/null"))?;
        project(
            &format!("{name}-cat"),
            &format!("{command} | cat > /dev/null"),
        )?;
        if sealing {
            let lz4 = if compresses { "lz4 -1 -q | " } else { "" };
            project(
                &format!("{name}-seal"),
                &format!("{command} | {lz4}{SEAL} > /dev/null"),
            )?;
        }
    }
    let driver = tmp.join("build-driver.py");
    std::fs::write(&driver, BUILD_DRIVER)?;
    let drive_project = |mode: &str, n: usize, project: &str| -> Result<Vec<f64>> {
        let out = sh(aws_env(
            Command::new("python3")
                .arg(&driver)
                .args([mode, &n.to_string(), project]),
            port,
        ))?;
        Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
    };
    let drive = |mode: &str, n: usize| drive_project(mode, n, "bench");
    drive("single", 2)?; // warm-up
    if log_only {
        for l in logs {
            bench_log(&server, &drive_project, l, 15, sealing, report)?;
        }
        return Ok(());
    }
    let builds = drive("single", 15)?;

    // The same sandbox, `true` run by runc directly (spawn to exit).
    let state = tmp.join("runc-state");
    let mut runs = Vec::new();
    for i in 0..15 {
        let spec = SandboxSpec {
            id: format!("bench-true-{i}"),
            work: tmp.join(format!("runc-true-{i}")),
            src_host: tmp.join(format!("runc-true-{i}/src")),
            src_path: "/codebuild/output/src1/src".into(),
            extra_sources: Vec::new(),
            image_root: None,
            hide: Vec::new(),
            limits: Limits::for_compute_type("BUILD_GENERAL1_SMALL"),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            privileged: false,
        };
        std::fs::create_dir_all(&spec.src_host)?;
        let bundle = write_bundle(&spec, &["/bin/true".to_owned()])?;
        let t = Instant::now();
        sh(Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&spec.id))?;
        runs.push(t.elapsed().as_secs_f64());
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["delete", "--force", &spec.id])
            .output();
    }
    let (b, r) = (median(builds), median(runs));
    let line = format!(
        "| build of `true`, StartBuild to SUCCEEDED (median of 15, server timestamps) | {:.0} ms | `runc run` of `true`, same sandbox config: {:.0} ms | **{:.0} ms** overhead |\n",
        b * 1000.0,
        r * 1000.0,
        (b - r) * 1000.0
    );
    print!("{line}");
    report.push_str(&line);

    for l in logs {
        bench_log(&server, &drive_project, l, 5, sealing, report)?;
    }

    let span = drive("burst", 200)?.first().copied().unwrap_or(f64::NAN);
    let line = format!(
        "| 200 trivial builds queued at once (built-in worker, 2 slots) | {:.1} s first start to last end | {:.0} ms of `runc run` each | **{:.0} builds/min**, {:.0} ms per build beyond the runtime |\n",
        span,
        r * 1000.0,
        200.0 * 60.0 / span,
        (span / 200.0 * 2.0 - r) * 1000.0
    );
    print!("{line}");
    report.push_str(&line);
    Ok(())
}

/// Runs builds of a project (mode, count, project): each build's seconds.
type Drive<'a> = dyn Fn(&str, usize, &str) -> Result<Vec<f64>> + 'a;

/// A build of `project` printing 100 MB of log (`command`) through the worker protocol,
/// against three peers, round by round (`rounds` interleaved rounds, a pause after each
/// build so its log's archiving is not charged to the next; medians and ranges):
/// - the same build with the command's output into /dev/null (project `PROJECT-null`):
///   what the log itself costs, the sandbox and phases being the same; run beside the
///   logged build in each round (in turns, first or second), the headline the median of
///   the rounds' ratios;
/// - the same build with the command's output piped into `cat > /dev/null` (`PROJECT-cat`):
///   the floor of a build capturing its output at all (the command's writes into a pipe,
///   a reader on the same two cores);
/// - the same build with the output only compressed (if it compresses) and encrypted by
///   the standard tools into /dev/null (`PROJECT-seal`, when `openssl` and `lz4` are
///   installed): the floor of keeping the log secret at all, with no disk, no lines, no
///   server;
/// - the command alone into /dev/null (no build at all);
/// - the command piped into `cat > /dev/null`: the floor of capturing the output at all
///   (a pipe and a reader on the same two cores), whatever is done with it.
fn bench_log(
    server: &Proc,
    drive_project: &Drive,
    (project, what, command, compresses): (&str, &str, &str, bool),
    rounds: usize,
    sealing: bool,
    report: &mut String,
) -> Result<()> {
    let rss_before = proc_status_kb(server.0.id(), "VmRSS")?;
    let cpu = || proc_cpu_secs(server.0.id());
    let (mut logged, mut null_build, mut cat_build, mut plain, mut piped) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut during, mut after, mut seal_build) = (Vec::new(), Vec::new(), Vec::new());
    // A build, then a pause past the archive sweep: the server's CPU during the build and
    // in the pause (the log's archiving).
    let build = |project: &str| -> Result<(f64, f64, f64)> {
        let c0 = cpu()?;
        let t = drive_project("single", 1, project)?.first().copied();
        let c1 = cpu()?;
        std::thread::sleep(Duration::from_secs(6));
        Ok((t.unwrap_or(f64::NAN), c1 - c0, cpu()? - c1))
    };
    let timed = |script: &str| -> Result<f64> {
        let t = Instant::now();
        sh(Command::new("sh").args(["-c", script]))?;
        Ok(t.elapsed().as_secs_f64())
    };
    for round in 0..rounds {
        plain.push(timed(&format!("{command} > /dev/null"))?);
        piped.push(timed(&format!("{command} | cat > /dev/null"))?);
        // The two builds of a round in turns (the machine drifts within a round too).
        let null_first = round % 2 == 0;
        if null_first {
            null_build.push(build(&format!("{project}-null"))?.0);
        }
        let (t, d, a) = build(project)?;
        logged.push(t);
        during.push(d);
        after.push(a);
        if !null_first {
            null_build.push(build(&format!("{project}-null"))?.0);
        }
        cat_build.push(build(&format!("{project}-cat"))?.0);
        if sealing {
            seal_build.push(build(&format!("{project}-seal"))?.0);
        }
    }
    // Each round's builds ran side by side: their ratio is what this machine's drift
    // (±20 % between runs here) disturbs least.
    let paired = |peer: &[f64]| paired_ratio(&logged, peer);
    let rss_peak = proc_status_kb(server.0.id(), "VmHWM")?;
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{:.2} s ({lo:.2}–{hi:.2})", median(v.to_vec()))
    };
    // The sealing peer's own ratio to the build into /dev/null, paired round by round.
    let sealer = if compresses {
        "`lz4 | openssl enc -aes-128-ctr`"
    } else {
        "`openssl enc -aes-128-ctr`"
    };
    let (sealed, sealed_ratio) = if seal_build.is_empty() {
        ("not run (no `openssl` or `lz4`)".to_owned(), "—".to_owned())
    } else {
        let ratio = paired_ratio(&seal_build, &null_build);
        (range(&seal_build), format!("{ratio:.2}×"))
    };
    let (l, n, p, c) = (
        median(logged.clone()),
        median(null_build.clone()),
        median(plain.clone()),
        median(piped.clone()),
    );
    let line = format!(
        "| build printing 100 MB of log ({what}), StartBuild to SUCCEEDED, median of {rounds} | {}; server CPU {:.2} s during the build, {:.2} s archiving it after; server RSS {:.0} → peak {:.0} MB | the same build into /dev/null: {}; the same build into `cat`: {}; the same build through {}: {}; the command alone: {}; the command into `cat`: {} | **{:.2}×** the build into /dev/null (median of the rounds' ratios; {:.2}× of the medians); {:.2}× the build into `cat`; the build through the tools {} the build into /dev/null; {:.2}× the command alone ({:.2}× for `cat`); RSS growth {:.0} MB |\n",
        range(&logged),
        median(during),
        median(after),
        rss_before as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        range(&null_build),
        range(&cat_build),
        sealer,
        sealed,
        range(&plain),
        range(&piped),
        paired(&null_build),
        l / n,
        paired(&cat_build),
        sealed_ratio,
        l / p,
        c / p,
        (rss_peak as f64 - rss_before as f64) / 1024.0
    );
    print!("{line}");
    report.push_str(&line);
    Ok(())
}

/// A 1 GB object through `aws s3 cp` (PUT and GET) against `cp` of the same file on the same
/// disk, medians of 3 interleaved runs.
fn bench_s3_large(bin: &Path, tmp: &Path, report: &mut String) -> Result<()> {
    let port = free_port()?;
    let _server = slipway(bin, &tmp.join("s3-large-data"), port)?;
    wait_healthy(port, "/-/health", Duration::from_secs(30))?;
    sh(aws_env(
        Command::new("aws").args(["s3", "mb", "s3://bench"]),
        port,
    ))?;
    let src = tmp.join("1g.bin");
    sh(Command::new("dd").args([
        "if=/dev/urandom",
        &format!("of={}", src.display()),
        "bs=1M",
        "count=1024",
        "status=none",
    ]))?;
    let (mut cps, mut puts, mut gets) = (Vec::new(), Vec::new(), Vec::new());
    let (mut put_cpu, mut get_cpu) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let copy = tmp.join("1g.copy");
        cps.push(time(Command::new("cp").arg(&src).arg(&copy))?);
        std::fs::remove_file(&copy)?;
        let (t, cpu) = time_cpu(aws_env(
            Command::new("aws")
                .args(["s3", "cp", "--only-show-errors"])
                .arg(&src)
                .arg("s3://bench/1g.bin"),
            port,
        ))?;
        puts.push(t);
        put_cpu.push(cpu);
        let out = tmp.join("1g.out");
        let (t, cpu) = time_cpu(aws_env(
            Command::new("aws")
                .args(["s3", "cp", "--only-show-errors", "s3://bench/1g.bin"])
                .arg(&out),
            port,
        ))?;
        gets.push(t);
        get_cpu.push(cpu);
        std::fs::remove_file(&out)?;
    }
    let (cp, put, get) = (median(cps), median(puts), median(gets));
    let mbps = |secs: f64| 1024.0 / secs;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for (name, t, cpu) in [("PUT", put, median(put_cpu)), ("GET", get, median(get_cpu))] {
        // However fast the server, aws-cli needs `cpu` seconds of CPU for the gigabyte: on
        // this many cores it cannot finish sooner than cpu / cores.
        let floor = cpu / cores;
        let line = format!(
            "| S3 {name} 1 GB via `aws s3 cp` (encrypted at rest) | {:.2} s, {:.0} MB/s | `cp` same file, same disk: {:.2} s, {:.0} MB/s; aws-cli's own CPU {:.1} s, so ≤ {:.0} MB/s ({:.0}% of `cp`) with a free server | **{:.0}%** of disk copy speed, {:.0}% of the client's ceiling |\n",
            t,
            mbps(t),
            cp,
            mbps(cp),
            cpu,
            mbps(floor),
            100.0 * cp / floor,
            100.0 * cp / t,
            100.0 * floor / t
        );
        print!("{line}");
        report.push_str(&line);
    }
    std::fs::remove_file(&src)?;
    Ok(())
}

struct WrkResult {
    rps: f64,
    p99_ms: f64,
    non2xx: u64,
}

fn parse_ms(s: &str) -> f64 {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().unwrap_or(0.0) / 1000.0
    } else if let Some(v) = s.strip_suffix("ms") {
        v.parse().unwrap_or(0.0)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().unwrap_or(0.0) * 1000.0
    } else {
        0.0
    }
}

fn wrk(port: u16, script: &Path, secs: u32) -> Result<WrkResult> {
    let out = sh(Command::new("wrk").args([
        "-t2",
        "-c32",
        &format!("-d{secs}s"),
        "--latency",
        "-s",
        &script.to_string_lossy(),
        &format!("http://127.0.0.1:{port}/"),
    ]))?;
    let mut r = WrkResult {
        rps: 0.0,
        p99_ms: 0.0,
        non2xx: 0,
    };
    for line in out.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("99%") {
            r.p99_ms = parse_ms(v);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            r.non2xx = v.trim().parse().unwrap_or(0);
        }
    }
    Ok(r)
}

fn bench_api(bin: &Path, tmp: &Path, report: &mut String) -> Result<()> {
    let port = free_port()?;
    let _server = slipway(bin, &tmp.join("api-data"), port)?;
    wait_healthy(port, "/-/health", Duration::from_secs(30))?;
    sh(aws_env(
        Command::new("aws").args([
            "codecommit",
            "create-repository",
            "--repository-name",
            "bench",
        ]),
        port,
    ))?;
    let script = signed_wrk_script(port, tmp, "getrepository", GET_REPOSITORY)?;
    wrk(port, &script, 2)?; // warm-up
    let s = wrk(port, &script, 10)?;

    let mport = free_port()?;
    let _moto = moto(mport)?;
    sh(aws_env(
        Command::new("aws").args([
            "codecommit",
            "create-repository",
            "--repository-name",
            "bench",
        ]),
        mport,
    ))?;
    let mscript = signed_wrk_script(mport, tmp, "getrepository", GET_REPOSITORY)?;
    wrk(mport, &mscript, 2)?;
    let m = wrk(mport, &mscript, 10)?;
    if s.non2xx > 0 || m.non2xx > 0 {
        bail!(
            "non-2xx responses during the run (slipway {}, moto {})",
            s.non2xx,
            m.non2xx
        );
    }
    let line = format!(
        "| GetRepository, SigV4, keep-alive, 32 connections, 10 s | {:.0} req/s, p99 {:.2} ms | moto_server: {:.0} req/s, p99 {:.2} ms | **{:.1}×** throughput |\n",
        s.rps,
        s.p99_ms,
        m.rps,
        m.p99_ms,
        s.rps / m.rps.max(1e-9)
    );
    print!("{line}");
    report.push_str(&line);
    Ok(())
}

/// GetRepository in us-east-1 on a server whose repositories are all in that region, beside
/// one holding as many in each of ten regions (the same names in every one): rounds
/// alternate between the two servers, and the ratio is the median of the paired rounds.
fn bench_regions(bin: &Path, tmp: &Path, report: &mut String) -> Result<()> {
    const REGIONS: &[&str] = &[
        "us-east-1",
        "us-west-2",
        "eu-central-1",
        "eu-west-1",
        "ap-southeast-2",
        "ap-northeast-1",
        "sa-east-1",
        "ca-central-1",
        "ap-south-1",
        "eu-north-1",
    ];
    const PER_REGION: usize = 50;
    let mut servers = Vec::new();
    for (label, regions) in [("1 region", &REGIONS[..1]), ("10 regions", REGIONS)] {
        let port = free_port()?;
        let proc = slipway(bin, &tmp.join(format!("regions-{}", regions.len())), port)?;
        wait_healthy(port, "/-/health", Duration::from_secs(30))?;
        // boto3 in one process: the aws-cli's start-up would dominate the set-up.
        let py = format!(
            r#"
import boto3
for region in {regions:?}:
    c = boto3.client("codecommit", region_name=region, endpoint_url="http://127.0.0.1:{port}",
                     aws_access_key_id="{KEY}", aws_secret_access_key="{SECRET}")
    c.create_repository(repositoryName="bench")
    for i in range({PER_REGION}):
        c.create_repository(repositoryName="repo-%d" % i)
"#
        );
        sh(Command::new("python3").args(["-c", &py]))?;
        let script = signed_wrk_script(port, tmp, "getrepository", GET_REPOSITORY)?;
        wrk(port, &script, 2)?; // warm-up
        servers.push((label, regions.len(), port, script, proc));
    }
    let (mut one, mut ten) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        for (_, n, port, script, _) in &servers {
            let r = wrk(*port, script, 5)?;
            if r.non2xx > 0 {
                bail!("non-2xx responses during the run ({} regions)", n);
            }
            if *n == 1 { &mut one } else { &mut ten }.push(r.rps);
        }
    }
    let line = format!(
        "| GetRepository, SigV4, 32 connections, 3 × 5 s alternating; {PER_REGION}+1 repositories in each region | 10 regions: {:.0} req/s (median) | the same in 1 region: {:.0} req/s | **{:.2}×** throughput |\n",
        median(ten.clone()),
        median(one.clone()),
        paired_ratio(&ten, &one)
    );
    print!("{line}");
    report.push_str(&line);
    Ok(())
}

/// Starts a fresh server on `data` and runs a Python driver against it with `args` (then the
/// root key and secret); the server, and the JSON object the driver printed.
fn drive(
    bin: &Path,
    data: &Path,
    script: &str,
    args: impl FnOnce(&Proc, u16, &Path) -> Vec<String>,
) -> Result<(Proc, serde_json::Value)> {
    let port = free_port()?;
    let proc = slipway(bin, data, port)?;
    wait_healthy(port, "/-/health", Duration::from_secs(30))?;
    let out = sh(Command::new("python3")
        .args(["-c", script])
        .args(args(&proc, port, data))
        .args([KEY, SECRET]))?;
    Ok((proc, serde_json::from_str(out.trim())?))
}

/// CodePipeline: push → execution latency, a 3-stage pipeline beside its parts run
/// directly, 100 PARALLEL executions at once (`bench_pipeline.py` drives the server).
fn bench_pipeline(bin: &Path, tmp: &Path, report: &mut String) -> Result<()> {
    let (proc, v) = drive(
        bin,
        &tmp.join("pipeline"),
        include_str!("bench_pipeline.py"),
        |p, port, data| {
            vec![
                port.to_string(),
                p.0.id().to_string(),
                data.display().to_string(),
            ]
        },
    )?;
    let nums = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_f64())
            .collect()
    };
    let lat = nums("push_latency_ms");
    let (piped, direct) = (nums("three_stage_s"), nums("direct_s"));
    let p = &v["parallel"];
    let f = |k: &str| p[k].as_f64().unwrap_or_default();
    let rows = [
        format!(
            "| `git push` returned → execution InProgress (its startTime), 20 pushes | median {:+.1} ms, max {:+.1} ms (negative: started before git returned) | the push itself: median {:.0} ms | target < 100 ms: **{}** |\n",
            median(lat.clone()),
            lat.iter().cloned().fold(f64::MIN, f64::max),
            median(nums("push_ms")),
            if median(lat.clone()) < 100.0 { "met" } else { "not met" }
        ),
        format!(
            "| 3-stage pipeline (CodeCommit source, CodeBuild `true`, S3 deploy), 5 rounds | median {:.2} s | the same build started directly + the S3 upload: {:.2} s | overhead **{:.2} s** ({:.2}×) |\n",
            median(piped.clone()),
            median(direct.clone()),
            median(piped.clone()) - median(direct.clone()),
            paired_ratio(&piped, &direct)
        ),
        format!(
            "| 100 executions of a PARALLEL pipeline (source, S3 deploy) started at once | {:.0} succeeded in {:.1} s; {:.0} action runs, {:.0} doubled, {:.0} objects deployed | server CPU {:.2} s for {:.0} state changes | **{:.2} ms** CPU per state change; RSS {:.0} → {:.0} MB |\n",
            f("succeeded"),
            f("wall_s"),
            f("action_runs"),
            f("doubled"),
            f("deployed_objects"),
            f("cpu_s"),
            f("transitions"),
            f("cpu_s") * 1000.0 / f("transitions").max(1.0),
            p["rss_mb"][0].as_f64().unwrap_or_default(),
            p["rss_mb"][1].as_f64().unwrap_or_default(),
        ),
    ];
    for line in rows {
        print!("{line}");
        report.push_str(&line);
    }
    drop(proc);
    Ok(())
}

/// CodeDeploy: AllAtOnce to 50 agents beside the same work done directly on the hosts,
/// OneAtATime to 10 agents (time per host beyond its hooks), an idle agent's CPU and RSS
/// (`bench_deploy.py` drives the server and the agents).
fn bench_deploy(bin: &Path, tmp: &Path, report: &mut String) -> Result<()> {
    let (proc, v) = drive(
        bin,
        &tmp.join("deploy"),
        include_str!("bench_deploy.py"),
        |_, port, _| vec![port.to_string(), bin.display().to_string()],
    )?;
    let nums = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_f64())
            .collect()
    };
    let (all, direct) = (nums("all_at_once_s"), nums("direct_s"));
    let (one, hooks) = (nums("one_at_a_time_s"), nums("one_host_direct_s"));
    let per_host_ms = (median(one.clone()) / 10.0 - median(hooks.clone())) * 1000.0;
    let idle_cpu = v["idle_cpu_pct"].as_f64().unwrap_or_default();
    let idle_rss = v["idle_rss_mb"].as_f64().unwrap_or_default();
    let rows = [
        format!(
            "| AllAtOnce to 50 agents, 1 MB revision, 4 no-op hooks, 3 rounds | median {:.2} s | the same unpack, copy and scripts run directly on 50 hosts at once: {:.2} s ({:.1}×) | target < 3 s: **{}** |\n",
            median(all.clone()),
            median(direct.clone()),
            paired_ratio(&all, &direct),
            if median(all.clone()) < 3.0 { "met" } else { "not met" }
        ),
        format!(
            "| OneAtATime to 10 agents, 3 rounds | median {:.2} s | one host's work done directly: {:.3} s | **{:.0} ms** per host beyond its hooks; target < 150 ms: **{}** |\n",
            median(one.clone()),
            median(hooks.clone()),
            per_host_ms,
            if per_host_ms < 150.0 { "met" } else { "not met" }
        ),
        format!(
            "| an idle agent polling, 10 s | CPU {idle_cpu:.2} % of a core, RSS {idle_rss:.1} MB | — | RSS target < 15 MB: **{}** |\n",
            if idle_rss < 15.0 { "met" } else { "not met" }
        ),
    ];
    for line in rows {
        print!("{line}");
        report.push_str(&line);
    }
    drop(proc);
    Ok(())
}

/// The median of the ratios of runs side by side (`a[i] / b[i]`, one pair per round).
fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| x / y).collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn time(cmd: &mut Command) -> Result<f64> {
    Ok(time_cpu(cmd)?.0)
}

/// CPU seconds (user + system) used so far by this process's waited-for children:
/// `cutime` + `cstime` of /proc/self/stat, in the kernel's 100 Hz clock ticks.
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): state is field 3,
    // cutime and cstime are fields 16 and 17.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(13).unwrap_or(&0.0) + f.get(14).unwrap_or(&0.0)) / 100.0
}

/// Wall-clock and CPU seconds of a command (the CPU it and its children used).
fn time_cpu(cmd: &mut Command) -> Result<(f64, f64)> {
    let cpu = children_cpu();
    let start = Instant::now();
    sh(cmd)?;
    Ok((start.elapsed().as_secs_f64(), children_cpu() - cpu))
}

fn bench_clone(bin: &Path, tmp: &Path, report: &mut String) -> Result<()> {
    let src = tmp.join("clone-src");
    std::fs::create_dir_all(&src)?;
    let git = git_cmd;
    git(&["init", "-q", "-b", "main"], &src)?;
    // ~40 MB of incompressible content: 200 commits of 4 files of 50 KB.
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for c in 0..200 {
        for f in 0..4 {
            let mut data = vec![0u8; 50 * 1024];
            for b in data.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            std::fs::write(src.join(format!("f{f}-{c}.bin")), data)?;
        }
        git(&["add", "-A"], &src)?;
        git(&["commit", "-qm", &format!("c{c}")], &src)?;
    }
    git(&["gc", "-q"], &src)?;
    let size = sh(Command::new("du")
        .args(["-sm", "--apparent-size"])
        .arg(src.join(".git")))?;

    let port = free_port()?;
    let data = tmp.join("clone-data");
    let _server = slipway(bin, &data, port)?;
    wait_healthy(port, "/-/health", Duration::from_secs(30))?;
    let url = repo_with_git_credentials(bin, &data, port, "big")?;
    git(&["push", "-q", &url, "main"], &src)?;

    let (mut http, mut file) = (vec![], vec![]);
    // The baseline clones the very repository the server serves, so only the transport differs.
    let meta = sh(aws_env(
        Command::new("aws").args(["codecommit", "get-repository", "--repository-name", "big"]),
        port,
    ))?;
    let meta: serde_json::Value = serde_json::from_str(&meta)?;
    let id = meta["repositoryMetadata"]["repositoryId"]
        .as_str()
        .unwrap_or_default();
    let served = data.join("repos").join(format!("{id}.git"));
    for i in 0..15 {
        let h = tmp.join(format!("h{i}"));
        let f = tmp.join(format!("f{i}"));
        http.push(time(
            Command::new("git")
                .args(["clone", "-q", "--bare", &url])
                .arg(&h),
        )?);
        file.push(time(
            Command::new("git")
                .args(["clone", "-q", "--bare", "--no-local"])
                .arg(format!("file://{}", served.display()))
                .arg(&f),
        )?);
        std::fs::remove_dir_all(&h)?;
        std::fs::remove_dir_all(&f)?;
    }
    let (h, f) = (median(http), median(file));
    let line = format!(
        "| clone of a {} MB repository (median of 15, interleaved) | {:.3} s over Slipway HTTP | {:.3} s `git clone --no-local file://` | **{:.2}** ratio |\n",
        size.split_whitespace().next().unwrap_or("?"),
        h,
        f,
        h / f
    );
    print!("{line}");
    report.push_str(&line);
    Ok(())
}

/// Creates repository `name` and a user with git credentials; returns a clone URL carrying them.
fn repo_with_git_credentials(bin: &Path, data: &Path, port: u16, name: &str) -> Result<String> {
    sh(aws_env(
        Command::new("aws").args(["codecommit", "create-repository", "--repository-name", name]),
        port,
    ))?;
    sh(aws_env(
        Command::new(bin)
            .args(["admin", "--data-dir"])
            .arg(data)
            .args(["create-user", "--user-name", name]),
        port,
    ))?;
    sh(Command::new(bin)
        .args(["admin", "--data-dir"])
        .arg(data)
        .args([
            "put-user-policy",
            "--user-name",
            name,
            "--policy-name",
            "p",
            "--policy-document",
            r#"{"Statement":[{"Effect":"Allow","Action":"codecommit:Git*","Resource":"*"}]}"#,
        ]))?;
    let cred = sh(Command::new(bin)
        .args(["admin", "--data-dir"])
        .arg(data)
        .args([
            "create-service-specific-credential",
            "--user-name",
            name,
            "--service-name",
            "codecommit.amazonaws.com",
        ]))?;
    let v: serde_json::Value = serde_json::from_str(&cred)?;
    let user = v["ServiceSpecificCredential"]["ServiceUserName"]
        .as_str()
        .unwrap_or_default();
    let pass = v["ServiceSpecificCredential"]["ServicePassword"]
        .as_str()
        .unwrap_or_default();
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let url = format!(
        "http://{}:{}@127.0.0.1:{port}/v1/repos/{name}",
        enc(user),
        enc(pass)
    );
    Ok(url)
}

fn git_cmd(args: &[&str], dir: &Path) -> Result<String> {
    sh(Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "b")
        .env("GIT_AUTHOR_EMAIL", "b@b")
        .env("GIT_COMMITTER_NAME", "b")
        .env("GIT_COMMITTER_EMAIL", "b@b"))
}

/// A kB figure from `/proc/PID/status` (`VmRSS`, `VmHWM`, …).
/// CPU time (user and system) a process has used so far, its own threads only. `/proc`
/// counts it in USER_HZ ticks, which Linux fixes at 100 a second for user space.
fn proc_cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| -> Result<f64> {
        let v: u64 = fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("field {i} of /proc/{pid}/stat"))?;
        Ok(v as f64 / 100.0)
    };
    // utime and stime: fields 14 and 15, counted from 1 with the pid and name before ')'.
    Ok(tick(11)? + tick(12)?)
}

fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{field} of process {pid}"))
}

fn bench_push(bin: &Path, tmp: &Path, report: &mut String) -> Result<()> {
    let src = tmp.join("push-src");
    std::fs::create_dir_all(&src)?;
    git_cmd(&["init", "-q", "-b", "main"], &src)?;
    let mut f = std::fs::File::create(src.join("big.bin"))?;
    let mut seed: u64 = 0x2545f4914f6cdd1d;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..300 {
        for chunk in buf.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        f.write_all(&buf)?;
    }
    drop(f);
    git_cmd(&["add", "-A"], &src)?;
    git_cmd(&["commit", "-qm", "big"], &src)?;
    // Pack once up front so both pushes send an existing pack rather than compressing anew.
    git_cmd(&["gc", "-q"], &src)?;

    let port = free_port()?;
    let data = tmp.join("push-data");
    let server = slipway(bin, &data, port)?;
    wait_healthy(port, "/-/health", Duration::from_secs(30))?;
    let (mut http, mut file) = (vec![], vec![]);
    for i in 0..3 {
        let url = repo_with_git_credentials(bin, &data, port, &format!("push{i}"))?;
        http.push(time(
            Command::new("git")
                .args(["push", "-q", &url, "main"])
                .current_dir(&src),
        )?);
        let bare = tmp.join(format!("bare{i}.git"));
        sh(Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&bare))?;
        file.push(time(
            Command::new("git")
                .args(["push", "-q"])
                .arg(format!("file://{}", bare.display()))
                .arg("main")
                .current_dir(&src),
        )?);
        std::fs::remove_dir_all(&bare)?;
    }
    let peak = proc_status_kb(server.0.id(), "VmHWM")?;
    let (h, f) = (median(http), median(file));
    let line = format!(
        "| push of a 300 MB commit (median of 3) | {:.2} s over Slipway HTTP, server peak RSS {:.1} MB | {:.2} s `git push file://` | **{:.2}** ratio |\n",
        h,
        peak as f64 / 1024.0,
        f,
        h / f
    );
    print!("{line}");
    report.push_str(&line);
    Ok(())
}

fn bench_idle(bin: &Path, tmp: &Path, report: &mut String) -> Result<()> {
    let data = tmp.join("idle-data");
    let port = free_port()?;
    {
        let _server = slipway(bin, &data, port)?;
        wait_healthy(port, "/-/health", Duration::from_secs(30))?;
        let py = format!(
            "import boto3\nc=boto3.client('codecommit',endpoint_url='http://127.0.0.1:{port}',region_name='us-east-1',aws_access_key_id='{KEY}',aws_secret_access_key='{SECRET}')\nfor i in range(100):\n    c.create_repository(repositoryName='r%d'%i)\n    c.put_file(repositoryName='r%d'%i,branchName='main',filePath='README.md',fileContent=b'hello')\n"
        );
        sh(Command::new("python3").args(["-c", &py]))?;
    }
    let mut starts = vec![];
    let mut rss = 0;
    for _ in 0..5 {
        let port = free_port()?;
        let started = Instant::now();
        let server = slipway(bin, &data, port)?;
        wait_healthy(port, "/-/health", Duration::from_secs(30))?;
        starts.push(started.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_secs(2));
        rss = proc_status_kb(server.0.id(), "VmRSS")?;
    }
    let line = format!(
        "| idle with 100 repositories | RSS {:.1} MB | start to first answered request: {:.0} ms (median of 5) | target < 40 MB, < 300 ms |\n",
        rss as f64 / 1024.0,
        median(starts)
    );
    print!("{line}");
    report.push_str(&line);
    Ok(())
}

/// The console: the pipeline page with 1,000 executions and the build page with a
/// 10,000-line log beside the API calls each is drawn from, and a state change → the
/// browser showing it (`bench_console.py` drives the server and Chromium).
fn bench_console(bin: &Path, tmp: &Path, report: &mut String) -> Result<()> {
    let (proc, v) = drive(
        bin,
        &tmp.join("console"),
        include_str!("bench_console.py"),
        |_, port, _| vec![port.to_string()],
    )?;
    let f = |k: &str| v[k].as_f64().unwrap_or_default();
    let verdict = |ms: f64, target: f64| if ms < target { "met" } else { "not met" };
    let mut rows = vec![
        format!(
            "| console pipeline page, {:.0} executions in its history (median of 27, loopback) | {:.1} ms | its GetPipeline + GetPipelineState + ListPipelineExecutions over the API: {:.1} ms | target < 50 ms: **{}** ({:.2}×) |\n",
            f("executions"),
            f("pipeline_page_ms"),
            f("pipeline_api_ms"),
            verdict(f("pipeline_page_ms"), 50.0),
            f("pipeline_page_ms") / f("pipeline_api_ms").max(0.001)
        ),
        format!(
            "| console build page, a {:.0}-line log | {:.1} ms | its BatchGetBuilds + GetLogEvents over the API: {:.1} ms | target < 50 ms: **{}** ({:.2}×) |\n",
            f("log_lines"),
            f("build_page_ms"),
            f("build_api_ms"),
            verdict(f("build_page_ms"), 50.0),
            f("build_page_ms") / f("build_api_ms").max(0.001)
        ),
    ];
    match v["live_ms"].as_f64() {
        Some(ms) => rows.push(format!(
            "| PutApprovalResult → Chromium shows the stage Succeeded (median of 5) | {ms:.0} ms | the live stream reads the outbox every 200 ms | target < 1 s: **{}** |\n",
            verdict(ms, 1000.0)
        )),
        None => rows.push("| state change → browser | not run (Playwright or Chromium missing) | | |\n".into()),
    }
    for line in rows {
        print!("{line}");
        report.push_str(&line);
    }
    drop(proc);
    Ok(())
}

pub fn run_all(root: &Path, which: &str) -> Result<()> {
    println!("building the release binary…");
    sh(Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "slipway"])
        .current_dir(root))?;
    let bin = root.join("target/release/slipway");
    let tmp = tempfile_dir()?;
    let mut report =
        String::from("| benchmark | Slipway | peer / limit | result |\n|---|---|---|---|\n");
    println!("{}", report.trim_end());
    if which == "all" || which == "api" {
        bench_api(&bin, &tmp, &mut report)?;
    }
    if which == "all" || which == "regions" {
        bench_regions(&bin, &tmp, &mut report)?;
    }
    if which == "all" || which == "clone" {
        bench_clone(&bin, &tmp, &mut report)?;
    }
    if which == "all" || which == "push" {
        bench_push(&bin, &tmp, &mut report)?;
    }
    if which == "all" || which == "idle" {
        bench_idle(&bin, &tmp, &mut report)?;
    }
    if which == "all" || which == "s3" || which == "s3-small" {
        bench_s3_small(&bin, &tmp, &mut report)?;
    }
    if which == "all" || which == "s3" || which == "s3-large" {
        bench_s3_large(&bin, &tmp, &mut report)?;
    }
    if which == "all" || which == "build" || which == "build-log" {
        bench_build(&bin, &tmp, &mut report, which == "build-log")?;
    }
    if which == "all" || which == "pipeline" {
        bench_pipeline(&bin, &tmp, &mut report)?;
    }
    if which == "all" || which == "deploy" {
        bench_deploy(&bin, &tmp, &mut report)?;
    }
    if which == "all" || which == "console" {
        bench_console(&bin, &tmp, &mut report)?;
    }
    std::fs::write(root.join("target/bench-results.md"), &report)?;
    let _ = std::fs::remove_dir_all(&tmp);
    println!("\n(written to target/bench-results.md)");
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("slipway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let which = args.first().map(String::as_str).unwrap_or("all");
    const KINDS: &[&str] = &[
        "all",
        "api",
        "regions",
        "clone",
        "push",
        "idle",
        "s3",
        "s3-small",
        "s3-large",
        "build",
        "build-log",
        "pipeline",
        "deploy",
        "console",
    ];
    if !KINDS.contains(&which) {
        bail!("unknown benchmark {which}: use one of {}", KINDS.join(", "));
    }
    run_all(root, which)
}
