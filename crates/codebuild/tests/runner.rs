//! Builds run for real in runc sandboxes: phase transitions as AWS documents them,
//! `finally`, `on-failure: CONTINUE`, timeouts and stops that leave no process behind, the
//! memory limit, isolation from the host, secret masking and exported variables.
//! Needs runc (the test script installs it).

use slipway_codebuild::execute::{self, Finished, Hooks, Job};
use slipway_codebuild::images;
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
        images_dir: None,
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
            if let Report::Log(t) = r {
                sink.lock().unwrap().push_str(&t);
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

/// The host executor (no sandbox) runs the same buildspec: one shell, its output and
/// errors in the log, exported variables read back, a failing command failing its phase.
#[tokio::test]
async fn the_host_executor_runs_buildspecs_without_a_sandbox() {
    let mut e = env().await;
    e.runtime = Runtime::Host;
    let j = job(
        &e,
        "host",
        "version: 0.2\nenv:\n  exported-variables: [SEEN]\nphases:\n  build:\n    commands:\n      - export SEEN=yes; echo \"out $SEEN\"\n      - echo \"err $SEEN\" >&2\n      - printf 'no newline'\n  post_build:\n    commands:\n      - \"false\"\n",
    );
    let (done, log) = run(&e, &j).await;
    assert!(
        log.contains("\nout yes\n") && log.contains("\nerr yes\n"),
        "{log}"
    );
    assert!(log.contains("\nno newline\n"), "{log}");
    assert_eq!(done.exported, vec![("SEEN".into(), "yes".into())]);
    assert_eq!(done.status, "FAILED", "{log}");
    assert!(phases(&done).contains(&("POST_BUILD".into(), "FAILED".into())));
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
    let first = spec("      - mkdir -p /root/.m2 deps && echo jar > /root/.m2/lib.jar && echo dep > deps/d.txt && echo cached > deps/shared.txt\n");
    let (done, log) = run(&e, &job(&e, "cache1", &first)).await;
    assert_eq!(done.status, "SUCCEEDED", "{log}");
    assert!(log.contains("No cache saved yet"), "{log}");
    assert!(log.contains("Cache saved"), "{log}");

    // The second build's source has a file the cache also holds: the source's is kept.
    let second = spec("      - cat /root/.m2/lib.jar deps/d.txt deps/shared.txt\n      - echo changed > deps/d.txt\n      - false\n");
    let j = job(&e, "cache2", &second);
    std::fs::create_dir_all(j.src_host.join("deps")).unwrap();
    std::fs::write(j.src_host.join("deps/shared.txt"), "from the source\n").unwrap();
    let (done, log) = run(&e, &j).await;
    assert_eq!(done.status, "FAILED");
    assert!(log.contains("Cache restored"), "{log}");
    assert!(log.contains("jar\ndep\nfrom the source\n"), "{log}");
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

// ----- imported images -----

/// A tar header as image tools write them (owner root, a time).
fn header(mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// A layer tar: `(path in the image, contents or None for a directory, mode)`, plus
/// symlinks `(path, target)`.
fn layer(files: &[(&str, Option<Vec<u8>>, u32)], links: &[(&str, &str)], gzip: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut h = header(*mode);
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, path, &d[..]).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
    }
    for (path, target) in links {
        let mut h = header(0o777);
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, path, target).unwrap();
    }
    let raw = b.into_inner().unwrap();
    if !gzip {
        return raw;
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &raw).unwrap();
    enc.finish().unwrap()
}

/// The host's `sh` and `cat` with the libraries they load: enough of an image to run a
/// build's shell.
fn base_files() -> Vec<(String, Option<Vec<u8>>, u32)> {
    let mut paths = std::collections::BTreeSet::new();
    for bin in ["/bin/sh", "/bin/cat"] {
        let real = std::fs::canonicalize(bin).unwrap();
        paths.insert((bin.to_owned(), real.clone()));
        let out = std::process::Command::new("ldd")
            .arg(&real)
            .output()
            .unwrap();
        for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if word.starts_with('/') {
                paths.insert((word.to_owned(), std::fs::canonicalize(word).unwrap()));
            }
        }
    }
    paths
        .into_iter()
        .map(|(at, real)| {
            (
                at.trim_start_matches('/').to_owned(),
                Some(std::fs::read(real).unwrap()),
                0o755,
            )
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Two layers: the second deletes a file and empties a directory of the first.
fn layers() -> (Vec<u8>, Vec<u8>) {
    let mut files: Vec<(String, Option<Vec<u8>>, u32)> = base_files();
    files.push((
        "etc/image-release".into(),
        Some(b"slipway test image\n".to_vec()),
        0o644,
    ));
    files.push((
        "etc/gone.txt".into(),
        Some(b"deleted by layer 2\n".to_vec()),
        0o644,
    ));
    files.push(("data".into(), None, 0o755));
    files.push(("data/old.txt".into(), Some(b"old\n".to_vec()), 0o644));
    let refs: Vec<(&str, Option<Vec<u8>>, u32)> = files
        .iter()
        .map(|(p, d, m)| (p.as_str(), d.clone(), *m))
        .collect();
    let first = layer(&refs, &[], false);
    let second = layer(
        &[
            ("etc/.wh.gone.txt", Some(Vec::new()), 0o644),
            ("data/.wh..wh..opq", Some(Vec::new()), 0o644),
            ("data/new.txt", Some(b"new\n".to_vec()), 0o644),
        ],
        &[("etc/release-link", "image-release")],
        true,
    );
    (first, second)
}

/// An OCI image layout directory holding `layers`.
fn oci_layout(dir: &std::path::Path, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = sha(data);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
        d
    };
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "IMAGE_VAR=from-the-image"], "WorkingDir": "/"}});
    let config_digest = put(config.to_string().as_bytes());
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": put(l), "size": l.len()}))
        .collect();
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest}, "layers": layer_descs});
    let manifest_digest = put(manifest.to_string().as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "platform": {"os": "linux", "architecture": "amd64"}}]})
        .to_string(),
    )
    .unwrap();
}

/// A `docker save` archive holding `layers`.
fn docker_save(path: &std::path::Path, layers: &[Vec<u8>]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = header(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    let config = serde_json::json!({"config": {"Env": ["PATH=/usr/bin:/bin"]}});
    add("config.json", config.to_string().as_bytes());
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("layer{i}/layer.tar");
        add(&name, l);
        names.push(name);
    }
    add(
        "manifest.json",
        serde_json::json!([{"Config": "config.json", "RepoTags": ["test/img:1"], "Layers": names}])
            .to_string()
            .as_bytes(),
    );
    b.finish().unwrap();
}

#[test]
fn images_import_from_oci_layouts_and_docker_save_with_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let (l1, l2) = layers();
    let layout = dir.path().join("layout");
    oci_layout(&layout, &[l1.clone(), l2.clone()]);
    let saved = dir.path().join("saved.tar");
    docker_save(&saved, &[l1, l2]);
    let mut said = Vec::new();
    for (name, source) in [("team/oci:1", &layout), ("team/docker:1", &saved)] {
        let img = images::import(&images, name, source, &mut |m| said.push(m.to_owned())).unwrap();
        assert_eq!(img.layers, 2);
        let root = &img.rootfs;
        assert_eq!(
            std::fs::read_to_string(root.join("etc/image-release")).unwrap(),
            "slipway test image\n"
        );
        assert!(
            !root.join("etc/gone.txt").exists(),
            "a whiteout removes the file"
        );
        let data: Vec<String> = std::fs::read_dir(root.join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            data,
            ["new.txt"],
            "an opaque whiteout empties the directory"
        );
        assert_eq!(
            std::fs::read_link(root.join("etc/release-link")).unwrap(),
            std::path::Path::new("image-release")
        );
        assert_eq!(images::lookup(&images, name).unwrap(), img);
    }
    assert!(said.iter().any(|m| m.contains("layer 2/2")));
    assert_eq!(images::list(&images), ["team/docker:1", "team/oci:1"]);
    assert!(images::lookup(&images, "team/none:1").is_none());

    // Layers that reach outside the image are refused, and write nothing outside it.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let mut raw = tar::Builder::new(Vec::new());
    let mut h = header(0o644);
    h.set_size(4);
    // `append_data` refuses `..`; the header's name is written directly, as a hostile
    // archive would have it.
    h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../evil\0\0");
    h.set_cksum();
    raw.append(&h, &b"evil"[..]).unwrap();
    let dotdot = raw.into_inner().unwrap();
    let bad = dir.path().join("bad");
    oci_layout(&bad, &[dotdot]);
    let e = images::import(&images, "team/bad:1", &bad, &mut |_| {}).unwrap_err();
    assert!(e.contains("leaves"), "{e}");

    // Links are resolved as the image sees them, `/` being the image's root: a link out of
    // the image in one layer, then a file written and one whited out through it in the
    // next, land inside the image, and nothing outside it is written or removed.
    std::fs::write(outside.join("keep"), "host file").unwrap();
    let out = outside.to_str().unwrap().trim_start_matches('/').to_owned();
    let escapes = [
        layer(
            &[],
            &[
                ("escape", outside.to_str().unwrap()),
                ("up", "../../../../../../../../.."),
            ],
            false,
        ),
        layer(
            &[
                ("escape/pwned", Some(b"x".to_vec()), 0o644),
                (&format!("up/{out}/pwned2"), Some(b"y".to_vec()), 0o644),
                ("escape/.wh.keep", Some(Vec::new()), 0o644),
                (&format!("up/{out}/.wh..wh..opq"), Some(Vec::new()), 0o644),
                ("escape/after-opq", Some(b"z".to_vec()), 0o644),
            ],
            &[],
            false,
        ),
    ];
    let linked = dir.path().join("linked");
    oci_layout(&linked, &escapes);
    let img = images::import(&images, "team/linked:1", &linked, &mut |_| {}).unwrap();
    let landed: Vec<String> = std::fs::read_dir(img.rootfs.join(&out))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        landed,
        ["after-opq"],
        "written inside the image, then emptied"
    );
    assert_eq!(
        std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        ["keep"],
        "nothing was written or removed outside the image"
    );

    // Merged /usr (`bin -> usr/bin`, relative): an upper layer rewriting, whiting out and
    // hard-linking `bin/…` changes `usr/bin/…`.
    let merged = [
        layer(
            &[
                ("usr", None, 0o755),
                ("usr/bin", None, 0o755),
                ("usr/bin/tool", Some(b"v1".to_vec()), 0o755),
                ("usr/bin/gone", Some(b"old".to_vec()), 0o755),
            ],
            &[("bin", "usr/bin")],
            true,
        ),
        {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = header(0o755);
            h.set_size(2);
            b.append_data(&mut h, "bin/tool", &b"v2"[..]).unwrap();
            let mut h = header(0o644);
            h.set_size(0);
            b.append_data(&mut h, "bin/.wh.gone", &[][..]).unwrap();
            let mut h = header(0o755);
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, "bin/tool-again", "bin/tool").unwrap();
            b.into_inner().unwrap()
        },
    ];
    let usr = dir.path().join("merged-usr");
    oci_layout(&usr, &merged);
    let img = images::import(&images, "team/usr:1", &usr, &mut |_| {}).unwrap();
    let root = &img.rootfs;
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        std::path::Path::new("usr/bin")
    );
    assert_eq!(std::fs::read(root.join("usr/bin/tool")).unwrap(), b"v2");
    assert_eq!(
        std::fs::read(root.join("usr/bin/tool-again")).unwrap(),
        b"v2"
    );
    assert!(!root.join("usr/bin/gone").exists());
    // A hard link may not point out of the image either.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(0o644);
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.as_gnu_mut().unwrap().linkname[..22].copy_from_slice(b"../../../../etc/passwd");
    h.set_path("stolen").unwrap();
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let hard = dir.path().join("hard");
    oci_layout(&hard, &[b.into_inner().unwrap()]);
    let e = images::import(&images, "team/hard:1", &hard, &mut |_| {}).unwrap_err();
    assert!(e.contains("bad target"), "{e}");
    assert!(!dir.path().join("evil").exists());
    assert!(images::lookup(&images, "team/bad:1").is_none());
    let e = images::import(&images, "x", &dir.path().join("missing"), &mut |_| {}).unwrap_err();
    assert!(
        e.contains("not a tar archive") || e.contains("missing"),
        "{e}"
    );
}

/// A build on an imported image sees the image's files, not the host's, with the image's
/// environment; its shell is /bin/sh when the image has no bash. An image that was never
/// imported fails the build in PROVISIONING; curated names run on the host.
#[tokio::test]
async fn builds_run_on_imported_images() {
    let e = env().await;
    let images = e.dir.path().join("images");
    let (l1, l2) = layers();
    let layout = e.dir.path().join("layout");
    oci_layout(&layout, &[l1, l2]);
    images::import(&images, "team/img:1", &layout, &mut |_| {}).unwrap();

    let spec = "version: 0.2\nphases:\n  build:\n    commands:\n      - cat /etc/image-release\n      - if [ -e /etc/debian_version ]; then echo host files vis''ible; fi\n      - echo \"var=$IMAGE_VAR path=$PATH\"\n      - echo hello > /root/home-is-writable && cat /root/home-is-writable\n";
    let mut j = job(&e, "onimage", spec);
    j.image = "team/img:1".into();
    j.images_dir = Some(images.clone());
    let (done, log) = run(&e, &j).await;
    assert_eq!(done.status, "SUCCEEDED", "{log}");
    assert!(log.contains("slipway test image"), "{log}");
    assert!(!log.contains("host files visible"), "{log}");
    assert!(
        log.contains("var=from-the-image path=/usr/local/bin:/usr/bin:/bin"),
        "{log}"
    );
    assert!(log.contains("\nhello\n"), "{log}");

    let mut j = job(&e, "noimage", spec);
    j.image = "team/never-imported:1".into();
    j.images_dir = Some(images.clone());
    let (done, log) = run(&e, &j).await;
    assert_eq!(done.status, "FAILED");
    let prov = done
        .phases
        .iter()
        .find(|p| p.phase_type == "PROVISIONING")
        .unwrap();
    assert_eq!(prov.status.as_deref(), Some("FAILED"));
    assert!(prov.contexts[0].1.contains("import-image"), "{log}");

    let mut j = job(
        &e,
        "curated",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - test -e /etc/debian_version\n",
    );
    j.images_dir = Some(images);
    let (done, log) = run(&e, &j).await;
    assert_eq!(done.status, "SUCCEEDED", "{log}");
}

/// `run-as` runs the commands as that user (the whole buildspec's, or one phase's).
#[tokio::test]
async fn run_as_runs_commands_as_that_user() {
    let e = env().await;
    let spec = "version: 0.2\nrun-as: nobody\nphases:\n  install:\n    run-as: root\n    commands:\n      - echo \"install as $(id -un)\"\n  build:\n    commands:\n      - echo \"build as $(id -un)\"\n      - touch /root/not-allowed 2>/dev/null || echo \"nobody cannot write root's home\"\n";
    let (done, log) = run(&e, &job(&e, "runas", spec)).await;
    assert_eq!(done.status, "SUCCEEDED", "{log}");
    assert!(log.contains("install as root"), "{log}");
    assert!(log.contains("build as nobody"), "{log}");
    assert!(log.contains("nobody cannot write root's home"), "{log}");
}

/// Mutated layers (an image is untrusted input) never panic the importer, and nothing is
/// written or removed outside the image whatever the mutation made of paths and links.
#[test]
fn mutated_image_layers_never_panic_or_escape() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), "host file").unwrap();
    let base = {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
            let mut h = header(0o755);
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            match link {
                Some(l) => b.append_link(&mut h, path, l).unwrap(),
                None => b.append_data(&mut h, path, data).unwrap(),
            }
        };
        add("usr", tar::EntryType::Directory, None, b"");
        add("usr/bin", tar::EntryType::Directory, None, b"");
        add("usr/bin/tool", tar::EntryType::Regular, None, b"tool");
        add("bin", tar::EntryType::Symlink, Some("usr/bin"), b"");
        add("up", tar::EntryType::Symlink, Some("../../../../.."), b"");
        add(
            "abs",
            tar::EntryType::Symlink,
            Some(outside.to_str().unwrap()),
            b"",
        );
        add("bin/again", tar::EntryType::Link, Some("usr/bin/tool"), b"");
        add("abs/.wh.keep", tar::EntryType::Regular, None, b"");
        add("up/x/.wh..wh..opq", tar::EntryType::Regular, None, b"");
        add("abs/new", tar::EntryType::Regular, None, b"new");
        b.into_inner().unwrap()
    };
    let mut next = slipway_codebuild::fuzz::xorshift(0x853c_49e6_748f_ea9b);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..300 {
        let mut layer = base.clone();
        for _ in 0..(1 + next() % 3) {
            // Mostly within the headers (names, link names, types), where the paths are.
            let block = (next() as usize % (layer.len() / 512)) * 512;
            let at = block + (next() as usize % 200);
            if at < layer.len() {
                layer[at] = b"./\0abx.-"[(next() as usize) % 8];
            }
        }
        let layout = dir.path().join(format!("layout{i}"));
        oci_layout(&layout, &[layer]);
        match images::import(&images, "fuzz/img:1", &layout, &mut |_| {}) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.is_empty());
                refused += 1;
            }
        }
        let _ = std::fs::remove_dir_all(&layout);
        let left: Vec<String> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["keep"], "mutation {i} reached outside the image");
        assert_eq!(
            std::fs::read_to_string(outside.join("keep")).unwrap(),
            "host file"
        );
    }
    assert!(ok > 30 && refused > 10, "ok {ok}, refused {refused}");
}
