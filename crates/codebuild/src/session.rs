//! One shell session inside a build's sandbox: commands go in one at a time (each sourced
//! from a control file, with stdin from /dev/null so a command cannot swallow the ones after
//! it), output comes back line by line, and each command's exit status follows its output
//! behind a per-session random marker. Variables and `cd` hold from one command to the next,
//! as in buildspec version 0.2.

use crate::sandbox::{Runtime, SandboxSpec, CONTROL_PATH};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, watch};

/// Lines longer than this are cut into pieces (a build printing megabytes without a
/// newline must not grow one buffer without bound).
const MAX_LINE: usize = 64 * 1024;

/// Why a build is being stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Stopped,
    TimedOut,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ran; its exit status, and whether the kernel killed a process of it for memory.
    Exit { status: i32, oom: bool },
    /// The shell itself ended (an `exit` in the command, or the sandbox died): its status,
    /// and whether the kernel killed it for memory.
    SessionEnded { status: Option<i32>, oom: bool },
    /// Stopped from outside (StopBuild or the build timeout); every process was killed.
    Stopped(StopReason),
}

enum Event {
    /// Lines in the order printed (as many as were read at once, so a build printing fast
    /// costs one hand-off per batch, not per line).
    Lines(Vec<String>),
    Status(i32),
    Eof,
}

pub struct Session {
    runtime: Runtime,
    spec: SandboxSpec,
    child: Child,
    stdin: ChildStdin,
    events: mpsc::Receiver<Event>,
    marker: String,
    count: usize,
    ended: bool,
    /// Out-of-memory kills seen so far in this sandbox.
    oom_seen: u64,
}

impl Session {
    /// Starts `shell` (a path inside the sandbox) reading commands from its stdin.
    pub async fn start(
        runtime: &Runtime,
        spec: &SandboxSpec,
        shell: &str,
    ) -> std::io::Result<Session> {
        let args = vec![shell.to_owned(), "-s".to_owned()];
        let mut child = runtime.spawn(spec, &args, Stdio::piped()).await?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr"))?;
        let marker = format!("\u{1e}slipway-{}", uuid::Uuid::new_v4().simple());
        // At most 16 batches (each about 64 KB of lines) between the reader and the build.
        let (tx, events) = mpsc::channel(16);
        tokio::spawn(read_output(stdout, marker.clone(), tx.clone()));
        // The runtime's own complaints (and anything before `exec 2>&1`) go to the log too.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send(Event::Lines(vec![l])).await.is_err() {
                    break;
                }
            }
        });
        stdin.write_all(b"exec 2>&1\n").await?;
        Ok(Session {
            runtime: runtime.clone(),
            spec: spec.clone(),
            child,
            stdin,
            events,
            marker,
            count: 0,
            ended: false,
            oom_seen: 0,
        })
    }

    /// Runs one command; every line it prints goes to `on_line` as it comes.
    pub async fn run(
        &mut self,
        command: &str,
        stop: &mut watch::Receiver<Option<StopReason>>,
        on_line: &mut (dyn FnMut(String) + Send),
        gate: Option<&crate::runner::Gate>,
    ) -> Outcome {
        if self.ended {
            return Outcome::SessionEnded {
                status: None,
                oom: false,
            };
        }
        let pending = *stop.borrow();
        if let Some(reason) = pending {
            self.kill().await;
            return Outcome::Stopped(reason);
        }
        self.count += 1;
        let file = format!("{}.sh", self.count);
        let written = std::fs::write(self.spec.control_dir().join(&file), command);
        let line = format!(
            ". {CONTROL_PATH}/{file} </dev/null\nprintf '%s %d\\n' '{}' \"$?\"\n",
            self.marker
        );
        if written.is_err() || self.stdin.write_all(line.as_bytes()).await.is_err() {
            return self.ended().await;
        }
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(Event::Lines(lines)) => {
                        for l in lines {
                            on_line(l);
                        }
                        if let Some(g) = gate {
                            g.wait().await;
                        }
                    }
                    Some(Event::Status(status)) => {
                        let oom = status != 0 && self.new_oom_kills();
                        return Outcome::Exit { status, oom };
                    }
                    Some(Event::Eof) | None => return self.ended().await,
                },
                changed = stop.changed() => {
                    let reason = if changed.is_ok() { *stop.borrow() } else { None };
                    if let Some(reason) = reason {
                        self.kill().await;
                        // Drain what was printed before the kill.
                        while let Ok(Event::Lines(lines)) = self.events.try_recv() {
                            lines.into_iter().for_each(&mut *on_line);
                        }
                        return Outcome::Stopped(reason);
                    }
                }
            }
        }
    }

    async fn ended(&mut self) -> Outcome {
        self.ended = true;
        let status = self.child.wait().await.ok().and_then(|s| s.code());
        let oom = self.new_oom_kills();
        Outcome::SessionEnded { status, oom }
    }

    fn new_oom_kills(&mut self) -> bool {
        let now = self.runtime.oom_kills(&self.spec.id);
        let new = now > self.oom_seen;
        self.oom_seen = now;
        new
    }

    /// Kills every process of the sandbox.
    pub async fn kill(&mut self) {
        self.ended = true;
        self.runtime.kill(&self.spec.id, &mut self.child).await;
        let _ = self.child.wait().await;
    }

    /// Ends the session: the shell exits, the sandbox is removed.
    pub async fn close(mut self) {
        if !self.ended {
            let _ = self.stdin.write_all(b"exit 0\n").await;
            let _ = self.stdin.shutdown().await;
            let waited =
                tokio::time::timeout(std::time::Duration::from_secs(5), self.child.wait()).await;
            if waited.is_err() {
                self.kill().await;
            }
        }
        self.runtime.remove(&self.spec.id).await;
    }
}

/// Most lines handed on at once.
const BATCH: usize = 512;

/// Splits the shell's output into lines and status markers. Lines already read are handed
/// on together: a batch ends when no complete line is left in the buffer (so nothing waits
/// for output that has not come), at [`BATCH`] lines, or at a status marker.
async fn read_output(stdout: tokio::process::ChildStdout, marker: String, tx: mpsc::Sender<Event>) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut buf = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
            .unwrap_or_default();
        if n == 0 {
            if !batch.is_empty() {
                let _ = tx.send(Event::Lines(std::mem::take(&mut batch))).await;
            }
            let _ = tx.send(Event::Eof).await;
            return;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        let text = String::from_utf8_lossy(&buf);
        // The marker starts with a byte build output hardly ever holds (U+001E, a record
        // separator): only a line with that byte is searched for the whole marker.
        let found = if buf.contains(&0x1e) {
            text.find(&marker)
        } else {
            None
        };
        let status = match found {
            Some(at) => {
                // Output without a final newline ends where the marker begins.
                if at > 0 {
                    batch.push(text[..at].to_owned());
                }
                Some(text[at + marker.len()..].trim().parse().unwrap_or(-1))
            }
            None => {
                batch.push(text.into_owned());
                None
            }
        };
        let more_ready = reader.buffer().contains(&b'\n');
        if status.is_some() || !more_ready || batch.len() >= BATCH {
            if !batch.is_empty()
                && tx
                    .send(Event::Lines(std::mem::take(&mut batch)))
                    .await
                    .is_err()
            {
                return;
            }
            if let Some(s) = status {
                if tx.send(Event::Status(s)).await.is_err() {
                    return;
                }
            }
        }
    }
}
