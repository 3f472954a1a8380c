//! Builds run for real in runc sandboxes: phase transitions as AWS documents them,
//! `finally`, `on-failure: CONTINUE`, timeouts and stops that leave no process behind, the
//! memory limit, isolation from the host, secret masking and exported variables.
//! Needs runc (the test script installs it).

use slipway_codebuild::execute::{self, Finished, Hooks, Job};
use slipway_codebuild::runner::{Progress, Report};
use slipway_codebuild::sandbox::{Limits, Runtime};
use slipway_codebuild::session::StopReason;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The source is already in place; artifacts stay where they are; caches are kept as files
/// in one directory.
struct NoHooks {
    caches: std::path::PathBuf,
}

impl Hooks for NoHooks {
    async fn restore_cache(
        &mut self,
        keys: &[String],
        dest: &std::path::Path,
        _: &mut Progress,
    ) -> Result<Option<String>, String> {
        for k in keys {
            let f = self.caches.join(format!("{k}.tar"));
            if f.is_file() {
                std::fs::copy(&f, dest).map_err(|e| e.to_string())?;
                return Ok(Some(k.clone()));
            }
        }
        Ok(None)
    }
    async fn save_cache(
        &mut self,
        key: &str,
        file: &std::path::Path,
        _: &mut Progress,
    ) -> Result<(), String> {
        std::fs::create_dir_all(&self.caches).map_err(|e| e.to_string())?;
        std::fs::copy(file, self.caches.join(format!("{key}.tar"))).map_err(|e| e.to_string())?;
        Ok(())
    }
    async fn fetch_source(&mut self, _: &mut Progress) -> Result<Option<String>, String> {
        Ok(Some("0123abcd".into()))
    }
    async fn parameters(
        &mut self,
        wanted: &[(String, String)],
    ) -> Result<Vec<(String, String)>, String> {
        wanted
            .iter()
            .map(|(v, p)| match p.as_str() {
                "/missing" => Err(format!("parameter does not exist: {p}")),
                _ => Ok((v.clone(), format!("value-of-{p}"))),
            })
            .collect()
    }
    async fn upload_reports(
        &mut self,
        _: &[slipway_codebuild::reports::Collected],
        _: &mut Progress,
    ) -> Result<(), String> {
        Ok(())
    }
    async fn upload_artifacts(
        &mut self,
        _: &slipway_codebuild::buildspec::BuildSpec,
        _: &[(Option<String>, slipway_codebuild::artifacts::Picked)],
        _: &mut Progress,
    ) -> Result<(), String> {
        Ok(())
    }
}

struct Env {
    dir: tempfile::TempDir,
    runtime: Runtime,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::detect(None, &dir.path().join("state"))
        .await
        .expect("an OCI runtime (runc) must be installed for these tests");
    Env { dir, runtime }
}

fn job(e: &Env, name: &str, buildspec: &str) -> Job {
    let uuid = uuid::Uuid::new_v4();
    let src = e.dir.path().join(name).join("src");
    std::fs::create_dir_all(&src).unwrap();
    Job {
        build_id: format!("{name}:{uuid}"),
        build_arn: format!("arn:aws:codebuild:us-east-1:000000000000:build/{name}:{uuid}"),
        build_number: 7,
        project: name.into(),
        buildspec: Some(buildspec.into()),
        buildspec_path: None,
        variables: vec![("FROM_PROJECT".into(), "p".into())],
        secrets: Vec::new(),
        image: "aws/codebuild/standard:7.0".into(),
        region: "us-east-1".into(),
        initiator: "tester".into(),
        source_version: None,
        resolved_source_version: None,
        source_repo_url: None,
        src_host: src,
        secondary_sources: Vec::new(),
        work: e.dir.path().join(name).join("work"),
        hide: Vec::new(),
        limits: Limits::for_compute_type("BUILD_GENERAL1_SMALL"),
        privileged: false,
        timeout: Duration::from_secs(120),
    }
}

async fn run_with(
    e: &Env,
    job: &Job,
    stop: watch::Receiver<Option<StopReason>>,
) -> (Finished, String) {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let mut progress = Progress::new(
        job.secrets.clone(),
        Box::new(move |r| {
            if let Report::Log(l) = r {
                let mut s = sink.lock().unwrap();
                s.push_str(l);
                s.push('\n');
            }
        }),
    );
    let mut hooks = NoHooks {
        caches: e.dir.path().join("caches"),
    };
    let done = execute::run(&e.runtime, job, &mut hooks, &mut progress, stop).await;
    let text = log.lock().unwrap().clone();
    (done, text)
}

async fn run(e: &Env, job: &Job) -> (Finished, String) {
    let (_tx, rx) = watch::channel(None);
    run_with(e, job, rx).await
}

fn phases(f: &Finished) -> Vec<(String, String)> {
    f.phases
        .iter()
        .map(|p| (p.phase_type.clone(), p.status.clone().unwrap_or_default()))
        .collect()
}

fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Processes on the host whose command line contains `needle`.
fn host_processes(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|d| d.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|d| {
            std::fs::read(d.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test]
async fn a_successful_build_shares_one_shell_and_exports_variables() {
    let e = env().await;
    let mut j = job(
        &e,
        "ok",
        "version: 0.2\nenv:\n  variables:\n    GREETING: hi\n  exported-variables: [GREETING, LATER, NEVER_SET]\nphases:\n  install:\n    commands:\n      - mkdir -p out && cd out\n      - export LATER=$(pwd)\n  build:\n    commands:\n      - echo \"pwd=$PWD greeting=$GREETING project=$FROM_PROJECT n=$CODEBUILD_BUILD_NUMBER rv=$CODEBUILD_RESOLVED_SOURCE_VERSION\"\n      - echo content > file.txt\n      - exit 0\n  post_build:\n    commands:\n      - echo after-exit pwd=$PWD\nartifacts:\n  files: ['**/*']\n  base-directory: out\n",
    );
    j.secrets = vec![];
    let (done, log) = run(&e, &j).await;
    assert_eq!(done.status, "SUCCEEDED", "{log}");
    assert_eq!(
        phases(&done),
        p(&[
            ("SUBMITTED", "SUCCEEDED"),
            ("QUEUED", "SUCCEEDED"),
            ("PROVISIONING", "SUCCEEDED"),
            ("DOWNLOAD_SOURCE", "SUCCEEDED"),
            ("INSTALL", "SUCCEEDED"),
            ("PRE_BUILD", "SUCCEEDED"),
            ("BUILD", "SUCCEEDED"),
            ("POST_BUILD", "SUCCEEDED"),
            ("UPLOAD_ARTIFACTS", "SUCCEEDED"),
            ("FINALIZING", "SUCCEEDED"),
            ("COMPLETED", ""),
        ])
    );
    assert!(
        log.contains("pwd=/codebuild/output/src1/src/out greeting=hi project=p n=7 rv=0123abcd"),
        "{log}"
    );
    // `exit 0` ended the shell; the next phase got a new one (back in the source dir).
    assert!(
        log.contains("after-exit pwd=/codebuild/output/src1/src\n"),
        "{log}"
    );
    assert_eq!(
        done.exported,
        vec![
            ("GREETING".into(), "hi".into()),
            ("LATER".into(), String::new()),
            ("NEVER_SET".into(), String::new()),
        ],
        "variables set in the shell that ended are gone, as in a new CodeBuild shell"
    );
    let files: Vec<_> = done
        .artifacts
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.name)
        .collect();
    assert_eq!(files, vec!["file.txt"]);
}

#[tokio::test]
async fn a_failing_build_command_goes_to_post_build_and_runs_finally() {
    let e = env().await;
    let j = job(
        &e,
        "fail",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo before\n      - false\n      - echo never\n    finally:\n      - echo finally-ran\n  post_build:\n    commands:\n      - echo succeeding=$CODEBUILD_BUILD_SUCCEEDING\n",
    );
    let (done, log) = run(&e, &j).await;
    assert_eq!(done.status, "FAILED");
    let got = phases(&done);
    assert_eq!(got[6], ("BUILD".into(), "FAILED".into()));
    assert_eq!(got[7], ("POST_BUILD".into(), "SUCCEEDED".into()));
    assert_eq!(got[8], ("UPLOAD_ARTIFACTS".into(), "SUCCEEDED".into()));
    let build = &done.phases[6];
    assert_eq!(build.contexts[0].0, "COMMAND_EXECUTION_ERROR");
    assert_eq!(
        build.contexts[0].1,
        "Error while executing command: false. Reason: exit status 1"
    );
    assert!(
        log.contains("finally-ran") && !log.contains("never\n"),
        "{log}"
    );
    assert!(log.contains("succeeding=0"), "{log}");
}

#[tokio::test]
async fn an_install_failure_goes_to_finalizing_unless_continue() {
    let e = env().await;
    let j = job(
        &e,
        "inst",
        "version: 0.2\nphases:\n  install:\n    commands: [exit 3]\n  build:\n    commands: [echo built]\n",
    );
    let (done, log) = run(&e, &j).await;
    assert_eq!(done.status, "FAILED");
    assert_eq!(
        phases(&done)[4..],
        p(&[
            ("INSTALL", "FAILED"),
            ("FINALIZING", "SUCCEEDED"),
            ("COMPLETED", "")
        ])
    );
    assert!(!log.contains("built"));
    assert!(done.phases[4].contexts[0].1.contains("exit status 3"));

    let j = job(
        &e,
        "cont",
        "version: 0.2\nphases:\n  pre_build:\n    on-failure: CONTINUE\n    commands: [false]\n  build:\n    commands: [echo built]\n",
    );
    let (done, log) = run(&e, &j).await;
    assert_eq!(
        done.status, "FAILED",
        "a CONTINUE'd phase still fails the build"
    );
    let got = phases(&done);
    assert_eq!(got[5], ("PRE_BUILD".into(), "FAILED".into()));
    assert_eq!(got[6], ("BUILD".into(), "SUCCEEDED".into()));
    assert!(log.contains("built"));
}

#[tokio::test]
async fn a_malformed_buildspec_fails_download_source_naming_the_line() {
    let e = env().await;
    let j = job(
        &e,
        "yaml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - ok: no\n",
    );
    let (done, _) = run(&e, &j).await;
    assert_eq!(done.status, "FAILED");
    assert_eq!(
        phases(&done)[3],
        ("DOWNLOAD_SOURCE".into(), "FAILED".into())
    );
    let (code, msg) = &done.phases[3].contexts[0];
    assert_eq!(code, "YAML_FILE_ERROR");
    assert!(
        msg.contains("phases.build.commands[0]") && msg.ends_with("at line 5"),
        "{msg}"
    );
    // No buildspec in the source at all.
    let mut j = job(&e, "nofile", "");
    j.buildspec = None;
    let (done, _) = run(&e, &j).await;
    assert!(done.phases[3].contexts[0].1.contains("buildspec.yml"));
}

#[tokio::test]
async fn timeout_and_stop_end_every_process() {
    let e = env().await;
    let marker = format!("sleep 3{}", std::process::id() % 1000 + 1000);
    let spec = format!(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - ({marker} &) ; {marker}\n"
    );
    let mut j = job(&e, "timeout", &spec);
    j.timeout = Duration::from_secs(2);
    let t = Instant::now();
    let (done, _) = run(&e, &j).await;
    assert_eq!(done.status, "TIMED_OUT");
    assert_eq!(phases(&done)[6], ("BUILD".into(), "TIMED_OUT".into()));
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(
        host_processes(&marker),
        0,
        "a process of the build outlived it"
    );

    let j = job(&e, "stop", &spec);
    let (tx, rx) = watch::channel(None);
    let started = Instant::now();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let at = Instant::now();
        tx.send(Some(StopReason::Stopped)).unwrap();
        (at, tx)
    });
    let (done, _) = run_with(&e, &j, rx).await;
    let ended = Instant::now();
    let (stopped_at, _tx) = stopper.await.unwrap();
    assert_eq!(done.status, "STOPPED");
    assert!(
        ended - stopped_at < Duration::from_secs(2),
        "took {:?}",
        ended - stopped_at
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        host_processes(&marker),
        0,
        "a process of the build outlived it"
    );
}

#[tokio::test]
async fn isolation_memory_limit_and_masking() {
    let e = env().await;
    let secret_dir = e.dir.path().join("server-data");
    std::fs::create_dir_all(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("root-credentials"), "top secret").unwrap();
    let my_pid = std::process::id();
    let spec = format!(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - cat {}/root-credentials || echo data-hidden\n      - kill -0 {my_pid} 2>/dev/null && echo host-visible || echo host-hidden\n      - echo procs=$(ls /proc | grep -c '^[0-9]')\n      - touch /usr/x 2>/dev/null && echo image-writable || echo image-readonly\n      - echo the token is $TOKEN\n",
        secret_dir.display()
    );
    let mut j = job(&e, "iso", &spec);
    j.hide = vec![secret_dir.clone()];
    j.variables.push(("TOKEN".into(), "s3cr3t-value".into()));
    j.secrets = vec!["s3cr3t-value".into()];
    let (done, log) = run(&e, &j).await;
    assert_eq!(done.status, "SUCCEEDED", "{log}");
    assert!(
        log.contains("data-hidden") && !log.contains("top secret"),
        "{log}"
    );
    assert!(log.contains("host-hidden"), "{log}");
    let procs: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(procs < 10, "the build sees {procs} processes");
    assert!(log.contains("image-readonly"), "{log}");
    assert!(
        log.contains("the token is ***") && !log.contains("s3cr3t-value"),
        "{log}"
    );

    let mut j = job(
        &e,
        "oom",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - python3 -c 'x = bytearray(400 * 1024 * 1024); print(len(x))'\n",
    );
    j.limits.memory_bytes = 128 * 1024 * 1024;
    let (done, log) = run(&e, &j).await;
    assert_eq!(done.status, "FAILED", "{log}");
    let (code, msg) = &done.phases[6].contexts[0];
    assert_eq!(code, "OUT_OF_MEMORY", "{msg}");
    assert!(msg.contains("ran out of memory (128 MB)"), "{msg}");
}

/// The cache paths a build wrote come back in the next build (HOME and source paths), and
/// a failed build saves nothing.
#[tokio::test]
async fn cache_paths_are_restored_in_the_next_build() {
    let e = env().await;
    let spec = |body: &str| {
        format!(
            "version: 0.2\nphases:\n  build:\n    commands:\n{body}cache:\n  paths:\n    - /root/.m2/**/*\n    - deps/**/*\n    - /nonexistent/**/*\n"
        )
    };
    let first = spec("      - mkdir -p /root/.m2 deps && echo jar > /root/.m2/lib.jar && echo dep > deps/d.txt\n");
    let (done, log) = run(&e, &job(&e, "cache1", &first)).await;
    assert_eq!(done.status, "SUCCEEDED", "{log}");
    assert!(log.contains("No cache saved yet"), "{log}");
    assert!(log.contains("Cache saved"), "{log}");

    let second = spec("      - cat /root/.m2/lib.jar deps/d.txt\n      - echo changed > deps/d.txt\n      - false\n");
    let (done, log) = run(&e, &job(&e, "cache2", &second)).await;
    assert_eq!(done.status, "FAILED");
    assert!(log.contains("Cache restored"), "{log}");
    assert!(log.contains("jar\ndep\n"), "{log}");
    assert!(
        !log.contains("Cache saved"),
        "a failed build saves no cache: {log}"
    );

    let third = spec("      - cat deps/d.txt\n");
    let (done, log) = run(&e, &job(&e, "cache3", &third)).await;
    assert_eq!(done.status, "SUCCEEDED");
    assert!(
        log.contains("\ndep\n"),
        "the failed build's change was not cached: {log}"
    );
}
