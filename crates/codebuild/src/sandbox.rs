//! Sandboxes for builds, made by an OCI runtime (`runc`, or `crun` where the machine's
//! cgroups allow it) from a generated bundle — or plain host processes for the `host`
//! executor, which isolates nothing.
//!
//! The default image is the host's root filesystem: every top-level directory bound
//! read-only (symlinks such as `/bin -> usr/bin` recreated), with Slipway's data directory
//! and every other path in [`SandboxSpec::hide`] masked by an empty read-only tmpfs. A build
//! gets its own mount, pid, ipc and uts namespaces, writable `/tmp`, source directory and
//! HOME (an overlay on the image's `/root`, so tools installed there still work), cgroup
//! limits on memory, CPU and pids, and the host's network (as CodeBuild builds have one).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

/// What runs build processes.
#[derive(Debug, Clone)]
pub enum Runtime {
    /// An OCI runtime binary and the state directory its containers are kept in.
    Oci {
        binary: PathBuf,
        name: String,
        state: PathBuf,
    },
    /// Plain processes on the host, no isolation at all (trusted setups only).
    Host,
}

/// Resource limits of one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub vcpus: u32,
    pub pids: u64,
}

impl Limits {
    /// CodeBuild's compute types (Linux): memory and vCPUs as AWS documents them. CPUs are
    /// capped by what the machine has.
    pub fn for_compute_type(compute_type: &str) -> Limits {
        let gib = 1024 * 1024 * 1024;
        let (memory_bytes, vcpus) = match compute_type {
            "BUILD_GENERAL1_MEDIUM" => (7 * gib, 4),
            "BUILD_GENERAL1_LARGE" => (15 * gib, 8),
            "BUILD_GENERAL1_XLARGE" => (70 * gib, 36),
            "BUILD_GENERAL1_2XLARGE" => (145 * gib, 72),
            "BUILD_LAMBDA_1GB" => (gib, 2),
            "BUILD_LAMBDA_2GB" => (2 * gib, 2),
            "BUILD_LAMBDA_4GB" => (4 * gib, 2),
            "BUILD_LAMBDA_8GB" => (8 * gib, 4),
            "BUILD_LAMBDA_10GB" => (10 * gib, 8),
            // BUILD_GENERAL1_SMALL and anything unknown.
            _ => (3 * gib, 2),
        };
        Limits {
            memory_bytes,
            vcpus,
            pids: 16_384,
        }
    }
}

/// Everything needed to start one build's sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The container id (unique among running builds).
    pub id: String,
    /// The build's own directory on the host: the bundle, tmp, HOME's upper layer and the
    /// control files live under it.
    pub work: PathBuf,
    /// The source directory on the host, and where the build sees it.
    pub src_host: PathBuf,
    pub src_path: String,
    /// More writable source directories: (path in the sandbox, directory on the host).
    pub extra_sources: Vec<(String, PathBuf)>,
    /// An imported image's root filesystem; None: the host's (see the module's notes).
    pub image_root: Option<PathBuf>,
    /// Host paths the build must not see (the data directory, other builds).
    pub hide: Vec<PathBuf>,
    pub limits: Limits,
    pub env: Vec<(String, String)>,
    /// Extra capabilities for privileged mode (Docker-in-Docker needs them).
    pub privileged: bool,
}

/// Runs the rest of its arguments with stdout moved to descriptor 3 (and stdout itself
/// /dev/null): put before a command by [`Runtime::command`].
const MOVE_STDOUT_TO_3: &[&str] = &["/bin/sh", "-c", "exec \"$@\" 3>&1 >/dev/null", "sh"];

/// Where a build sees its control files (commands to run), read-only.
pub const CONTROL_PATH: &str = "/codebuild/control";
/// Where a build's shell writes what Slipway reads back (exported variables).
pub const OUTPUT_PATH: &str = "/codebuild/output/tmp";

impl SandboxSpec {
    pub fn control_dir(&self) -> PathBuf {
        self.work.join("control")
    }
    pub fn output_dir(&self) -> PathBuf {
        self.work.join("output")
    }
}

impl Runtime {
    /// Where the build's processes find the control files ([`CONTROL_PATH`] in a sandbox,
    /// the directory itself for the host executor).
    pub fn control_path(&self, spec: &SandboxSpec) -> String {
        match self {
            Runtime::Oci { .. } => CONTROL_PATH.into(),
            Runtime::Host => spec.control_dir().display().to_string(),
        }
    }

    /// Where the build's processes write what Slipway reads back ([`OUTPUT_PATH`] in a
    /// sandbox, the directory itself for the host executor).
    pub fn output_path(&self, spec: &SandboxSpec) -> String {
        match self {
            Runtime::Oci { .. } => OUTPUT_PATH.into(),
            Runtime::Host => spec.output_dir().display().to_string(),
        }
    }
}

/// The top-level entries of the host's root never bound into the image.
const NOT_IMAGE: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "tmp",
    "run",
    "root",
    "lost+found",
    "old_root",
];

impl Runtime {
    /// Finds a working OCI runtime (`SLIPWAY_RUNTIME` names one: `runc`, `crun`, a path, or
    /// `host`), trying each by running `true` in a sandbox. Says why none works.
    pub async fn detect(preferred: Option<&str>, state: &Path) -> Result<Runtime, String> {
        let candidates: Vec<String> = match preferred {
            Some("host") => return Ok(Runtime::Host),
            Some(p) => vec![p.to_owned()],
            None => vec!["runc".into(), "crun".into()],
        };
        let mut why = Vec::new();
        for c in candidates {
            let Some(binary) = which(&c) else {
                why.push(format!("{c}: not installed"));
                continue;
            };
            let rt = Runtime::Oci {
                name: binary
                    .file_name()
                    .map_or(c.clone(), |n| n.to_string_lossy().into_owned()),
                binary,
                state: state.to_owned(),
            };
            match rt.probe().await {
                Ok(()) => return Ok(rt),
                Err(e) => why.push(format!("{c}: {e}")),
            }
        }
        Err(format!(
            "no usable container runtime ({}); install runc (Debian package `runc`), or run builds with SLIPWAY_RUNTIME=host (no isolation)",
            why.join("; ")
        ))
    }

    pub fn name(&self) -> &str {
        match self {
            Runtime::Oci { name, .. } => name,
            Runtime::Host => "host",
        }
    }

    /// Runs `true` in a throw-away sandbox.
    async fn probe(&self) -> Result<(), String> {
        let dir = std::env::temp_dir().join(format!("slipway-probe-{}", uuid::Uuid::new_v4()));
        let spec = SandboxSpec {
            id: format!("slipway-probe-{}", uuid::Uuid::new_v4().simple()),
            work: dir.clone(),
            src_host: dir.join("src"),
            src_path: "/codebuild/output/src/src".into(),
            extra_sources: Vec::new(),
            image_root: None,
            hide: Vec::new(),
            limits: Limits {
                memory_bytes: 256 * 1024 * 1024,
                vcpus: 1,
                pids: 64,
            },
            env: Vec::new(),
            privileged: false,
        };
        let result = async {
            std::fs::create_dir_all(&spec.src_host).map_err(|e| e.to_string())?;
            let child = self
                .spawn(&spec, &["/bin/true".to_owned()], Stdio::null())
                .await
                .map_err(|e| e.to_string())?;
            let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
            }
        }
        .await;
        self.remove(&spec.id).await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// Starts `args` in the sandbox described by `spec`, stdin as given, stdout and stderr
    /// piped. The caller waits for it; [`Runtime::kill`] ends it and everything it started.
    pub async fn spawn(
        &self,
        spec: &SandboxSpec,
        args: &[String],
        stdin: Stdio,
    ) -> std::io::Result<Child> {
        self.command(spec, args, false)?
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
    }

    /// Like [`Runtime::spawn`], with one more pipe handed to the process as file descriptor
    /// 3, whose read end is returned with the pipe's capacity; stdout is discarded. An OCI
    /// runtime relays a container's stdio through itself (every byte copied twice more, in a
    /// process of its own); a descriptor passed with `--preserve-fds` reaches the container
    /// as it is, so output written there comes straight to the reader. (`/bin/sh` puts the pipe at 3
    /// before it runs the runtime: no unsafe `pre_exec` here.)
    pub async fn spawn_with_output(
        &self,
        spec: &SandboxSpec,
        args: &[String],
        stdin: Stdio,
    ) -> std::io::Result<(Child, std::io::PipeReader, usize)> {
        let (reader, writer) = std::io::pipe()?;
        // A megabyte of room lets a fast writer run on while the reader waits to take its
        // output in large pieces (the kernel may allow less: the default stays).
        let capacity = rustix::pipe::fcntl_setpipe_size(&writer, 1 << 20)
            .or_else(|_| rustix::pipe::fcntl_getpipe_size(&writer))
            .unwrap_or(64 * 1024);
        let mut cmd = self.command(spec, args, true)?;
        // Descriptors beyond stdio that the runtime passes on are counted after
        // LISTEN_FDS (socket activation) ones.
        cmd.env_remove("LISTEN_FDS");
        let child = cmd
            .stdin(stdin)
            .stdout(writer)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        // `cmd` held the last write end on this side: dropped with it, so the reader sees
        // the end of the output when every process of the sandbox is gone.
        drop(cmd);
        // The read end stays a plain blocking descriptor, never polled (see
        // `session::read_output`).
        Ok((child, reader, capacity))
    }

    /// The command that starts `args` in the sandbox (an OCI runtime's `run`, or the
    /// process itself for the host executor). With `output_on_3`, the command's stdout
    /// becomes the process's descriptor 3 (passed through with `--preserve-fds`) and its
    /// own stdout /dev/null.
    fn command(
        &self,
        spec: &SandboxSpec,
        args: &[String],
        output_on_3: bool,
    ) -> std::io::Result<Command> {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if output_on_3 {
            argv.extend(MOVE_STDOUT_TO_3.iter().map(Into::into));
        }
        match self {
            Runtime::Host => {
                for d in ["control", "output", "tmp", "cache"] {
                    std::fs::create_dir_all(spec.work.join(d))?;
                }
                argv.extend(args.iter().map(Into::into));
            }
            Runtime::Oci { binary, state, .. } => {
                let bundle = write_bundle(spec, args)?;
                argv.extend([
                    binary.into(),
                    "--root".into(),
                    state.into(),
                    "run".into(),
                    "--bundle".into(),
                    bundle.into(),
                ]);
                if output_on_3 {
                    argv.extend(["--preserve-fds".into(), "1".into()]);
                }
                argv.push(spec.id.clone().into());
            }
        }
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        if let Runtime::Host = self {
            c.current_dir(&spec.src_host)
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)));
        }
        Ok(c)
    }

    /// Kills every process of the sandbox `id` (SIGKILL) and removes it.
    pub async fn kill(&self, id: &str, child: &mut Child) {
        if let Runtime::Oci { .. } = self {
            let _ = self.runtime_cmd(&["kill", "--all", id, "KILL"]).await;
            let _ = self.runtime_cmd(&["kill", id, "KILL"]).await;
        }
        let _ = child.start_kill();
    }

    /// Kills and removes every sandbox in this runtime's state directory: what a worker
    /// that died (or a server killed with its built-in worker) left running.
    pub async fn cleanup_all(&self) -> usize {
        let Runtime::Oci { state, .. } = self else {
            return 0;
        };
        let ids: Vec<String> = std::fs::read_dir(state)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for id in &ids {
            self.remove(id).await;
        }
        ids.len()
    }

    /// Removes the sandbox `id`, killing every process still in it first (`delete
    /// --force` alone has been seen to leave a killed server's build running).
    pub async fn remove(&self, id: &str) {
        if let Runtime::Oci { .. } = self {
            let _ = self.runtime_cmd(&["kill", "--all", id, "KILL"]).await;
            let _ = self.runtime_cmd(&["delete", "--force", id]).await;
        }
    }

    async fn runtime_cmd(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        match self {
            Runtime::Oci { binary, state, .. } => {
                Command::new(binary)
                    .arg("--root")
                    .arg(state)
                    .args(args)
                    .stdin(Stdio::null())
                    .output()
                    .await
            }
            Runtime::Host => Err(std::io::Error::other("no runtime")),
        }
    }

    /// How many processes of the sandbox `id` the kernel has killed for running out of
    /// memory (from its memory cgroup, v1 or v2).
    pub fn oom_kills(&self, id: &str) -> u64 {
        let v1 = format!("/sys/fs/cgroup/memory/slipway/{id}/memory.oom_control");
        let v2 = format!("/sys/fs/cgroup/slipway/{id}/memory.events");
        [v1, v2]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

/// Writes the OCI bundle (config and root) of a sandbox running `args`; returns its path.
pub fn write_bundle(spec: &SandboxSpec, args: &[String]) -> std::io::Result<PathBuf> {
    for d in [
        "control",
        "output",
        "tmp",
        "home-upper",
        "home-work",
        "cache",
    ] {
        std::fs::create_dir_all(spec.work.join(d))?;
    }
    let bundle = spec.work.join("bundle");
    if spec.image_root.is_none() {
        std::fs::create_dir_all(bundle.join("rootfs"))?;
        image_links(&bundle.join("rootfs"))?;
    } else {
        std::fs::create_dir_all(&bundle)?;
        std::fs::create_dir_all(spec.work.join("home-lower"))?;
    }
    let config = oci_config(spec, args);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    Ok(bundle)
}

/// The host's top-level symlinks (`/bin -> usr/bin` on merged-/usr systems), recreated in
/// the bundle's otherwise empty root.
fn image_links(rootfs: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir("/")? {
        let entry = entry?;
        let target = rootfs.join(entry.file_name());
        if entry.file_type()?.is_symlink() && std::fs::symlink_metadata(&target).is_err() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        }
    }
    Ok(())
}

fn host_dirs() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if NOT_IMAGE.contains(&name.as_str()) {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(format!("/{name}"));
            }
        }
    }
    out.sort();
    out
}

fn bind(dest: &str, source: &Path, writable: bool) -> Value {
    let mode = if writable { "rw" } else { "rro" };
    json!({"destination": dest, "type": "bind", "source": source, "options": ["rbind", mode, "nosuid"]})
}

/// The OCI runtime configuration of a build's sandbox.
fn oci_config(spec: &SandboxSpec, args: &[String]) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]}),
    ];
    // HOME is an overlay on the image's /root (an empty one when the image has none).
    let home_lower = match &spec.image_root {
        None => {
            for d in host_dirs() {
                mounts.push(bind(&d, Path::new(&d), false));
            }
            PathBuf::from("/root")
        }
        Some(root) => {
            // The host's name resolution, so the network works as it does on the host.
            for f in ["/etc/resolv.conf", "/etc/hosts"] {
                if Path::new(f).exists() {
                    mounts.push(bind(f, Path::new(f), false));
                }
            }
            let lower = root.join("root");
            let real_dir = std::fs::symlink_metadata(&lower).is_ok_and(|m| m.is_dir());
            if real_dir {
                lower
            } else {
                spec.work.join("home-lower")
            }
        }
    };
    mounts.push(json!({
        "destination": "/root", "type": "overlay", "source": "overlay",
        "options": [
            format!("lowerdir={}", home_lower.display()),
            format!("upperdir={}", spec.work.join("home-upper").display()),
            format!("workdir={}", spec.work.join("home-work").display()),
        ]
    }));
    mounts.push(bind("/tmp", &spec.work.join("tmp"), true));
    mounts.push(bind(CONTROL_PATH, &spec.control_dir(), false));
    mounts.push(bind(OUTPUT_PATH, &spec.output_dir(), true));
    mounts.push(bind(
        crate::cache::CACHE_PATH,
        &spec.work.join("cache"),
        true,
    ));
    mounts.push(bind(&spec.src_path, &spec.src_host, true));
    for (path, host) in &spec.extra_sources {
        mounts.push(bind(path, host, true));
    }

    let mut caps = vec![
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_SETPCAP",
        "CAP_SETFCAP",
        "CAP_NET_RAW",
        "CAP_SYS_CHROOT",
        "CAP_MKNOD",
    ];
    if spec.privileged {
        caps.extend(["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_PTRACE"]);
    }
    let mut masked: Vec<String> = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/sys/firmware",
        "/proc/scsi",
    ]
    .map(str::to_owned)
    .to_vec();
    masked.extend(spec.hide.iter().map(|p| p.display().to_string()));
    let period = 100_000u64;
    let cpus = u64::from(spec.limits.vcpus.max(1))
        .min(std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "cwd": spec.src_path,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": !spec.privileged,
        },
        "root": {
            "path": spec.image_root.as_ref().map_or_else(|| "rootfs".to_owned(), |r| r.display().to_string()),
            "readonly": true,
        },
        "hostname": "codebuild",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "cgroupsPath": format!("/slipway/{}", spec.id),
            "resources": {
                "memory": {"limit": spec.limits.memory_bytes, "swap": spec.limits.memory_bytes},
                "cpu": {"quota": cpus * period, "period": period},
                "pids": {"limit": spec.limits.pids},
            },
            "maskedPaths": masked,
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

/// The first `name` on PATH (or `name` itself when it is a path).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
