//! One shell session inside a build's sandbox: commands go in one at a time (each sourced
//! from a control file, with stdin from /dev/null so a command cannot swallow the ones after
//! it), output comes back in whole lines, and each command's exit status follows its output
//! behind a per-session random marker. Variables and `cd` hold from one command to the next,
//! as in buildspec version 0.2.

use crate::sandbox::{Runtime, SandboxSpec};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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
    /// Whole lines in the order printed, each ending with a newline (as many as were read
    /// at once).
    Text(String),
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
        let (mut child, output, capacity) = runtime
            .spawn_with_output(spec, &args, Stdio::piped())
            .await?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr"))?;
        let marker = format!("\u{1e}slipway-{}", uuid::Uuid::new_v4().simple());
        // At most 16 pieces of text (each at most one read, READ_SIZE) between the reader
        // and the build.
        let (tx, events) = mpsc::channel(16);
        {
            let (marker, tx) = (marker.clone(), tx.clone());
            std::thread::Builder::new()
                .name("build-output".into())
                .spawn(move || read_output(output, &marker, capacity >= GATHER_PIPE, tx))?;
        }
        // The runtime's own complaints (and anything the shell says before its output
        // moves to the direct pipe) go to the log too.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send(Event::Text(l + "\n")).await.is_err() {
                    break;
                }
            }
        });
        // Output and errors go to the pipe handed over as descriptor 3 (not through the
        // runtime's relay).
        stdin.write_all(b"exec 1>&3 2>&1 3>&-\n").await?;
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

    /// Runs one command; what it prints goes to `on_text` as it comes, in whole lines
    /// (each ending with a newline).
    pub async fn run(
        &mut self,
        command: &str,
        stop: &mut watch::Receiver<Option<StopReason>>,
        on_text: &mut (dyn FnMut(String) + Send),
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
            ". {}/{file} </dev/null\nprintf '%s %d\\n' '{}' \"$?\"\n",
            self.runtime.control_path(&self.spec),
            self.marker
        );
        if written.is_err() || self.stdin.write_all(line.as_bytes()).await.is_err() {
            return self.ended().await;
        }
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(Event::Text(t)) => {
                        on_text(t);
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
                        while let Ok(Event::Text(t)) = self.events.try_recv() {
                            on_text(t);
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

    /// Where the session's processes write what Slipway reads back (exported variables).
    pub fn output_path(&self) -> String {
        self.runtime.output_path(&self.spec)
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

/// Splits what a shell prints into log text and the status markers that end commands. Text
/// is handed on in whole lines, as much as has arrived at once (a build printing fast costs
/// one hand-off per read, not per line); a line longer than [`MAX_LINE`] is cut.
struct Splitter {
    marker: Vec<u8>,
    /// What has arrived and is not handed on yet (at most a partial line, or a marker line
    /// still arriving).
    buf: Vec<u8>,
}

enum Piece {
    /// Whole lines, each ending with a newline.
    Text(String),
    Status(i32),
}

impl Splitter {
    fn new(marker: &str) -> Splitter {
        Splitter {
            marker: marker.as_bytes().to_vec(),
            buf: Vec::new(),
        }
    }

    /// Hands on the whole lines of `data` (up to its last newline) as text and status
    /// markers; how many bytes that took.
    fn split(&self, data: &[u8], out: &mut Vec<Piece>) -> usize {
        let end = memchr::memrchr(b'\n', data).map_or(0, |i| i + 1);
        let region = &data[..end];
        let (mut from, mut at) = (0, 0);
        // The marker starts with a byte build output hardly ever holds (U+001E, a record
        // separator): only where that byte is, is the whole marker looked for.
        while let Some(i) = memchr::memchr(0x1e, &region[at..]) {
            let pos = at + i;
            if !region[pos..].starts_with(&self.marker) {
                at = pos + 1;
                continue;
            }
            let line_end = pos + memchr::memchr(b'\n', &region[pos..]).map_or(0, |i| i + 1);
            text(&region[from..pos], out);
            let status = String::from_utf8_lossy(&region[pos + self.marker.len()..line_end]);
            out.push(Piece::Status(status.trim().parse().unwrap_or(-1)));
            (from, at) = (line_end, line_end);
        }
        text(&region[from..end], out);
        end
    }

    /// Takes `data`; what is complete goes to `out`. At the end (`eof`) a last partial line
    /// is handed on too.
    fn feed(&mut self, data: &[u8], eof: bool, out: &mut Vec<Piece>) {
        if self.buf.is_empty() {
            // The common case, nothing left over from the last read: split the read where
            // it lies and keep only its unfinished last line.
            let end = self.split(data, out);
            self.buf.extend_from_slice(&data[end..]);
        } else if let Some(i) = memchr::memrchr(b'\n', data) {
            // The unfinished line from before, completed, and the whole lines after it: one
            // copy, handed on as it is unless a status marker is in it.
            let mut lines = std::mem::take(&mut self.buf);
            lines.extend_from_slice(&data[..=i]);
            if memchr::memchr(0x1e, &lines).is_some() {
                self.split(&lines, out);
            } else {
                out.push(Piece::Text(owned_text(lines)));
            }
            self.buf.extend_from_slice(&data[i + 1..]);
        } else {
            self.buf.extend_from_slice(data);
        }
        self.cut_long(eof, out);
    }

    /// Like [`Splitter::feed`], for a read that filled a buffer of its own: when nothing is
    /// left over from before and no status marker is in it, its whole lines are handed on in
    /// that buffer, not copied (a build printing fast fills one per read).
    fn feed_owned(&mut self, mut data: Vec<u8>, out: &mut Vec<Piece>) {
        let end = memchr::memrchr(b'\n', &data).map_or(0, |i| i + 1);
        if !self.buf.is_empty()
            || end == 0
            || memchr::memchr(0x1e, &data[..end]).is_some()
            || has_long_line(&data[..end])
        {
            self.feed(&data, false, out);
            return crate::readbufs::give(data);
        }
        self.buf.extend_from_slice(&data[end..]);
        data.truncate(end);
        out.push(Piece::Text(owned_text(data)));
        self.cut_long(false, out);
    }

    /// A line without its end yet: cut when longer than [`MAX_LINE`] (before a marker's
    /// first byte, so a marker is never cut), or at the end of the output.
    fn cut_long(&mut self, eof: bool, out: &mut Vec<Piece>) {
        if self.buf.len() > MAX_LINE || (eof && !self.buf.is_empty()) {
            let mut cut = self.buf.len().min(MAX_LINE);
            if let Some(i) = memchr::memchr(0x1e, &self.buf[..cut]).filter(|&i| i > 0) {
                cut = i;
            }
            let cut = char_boundary(&self.buf, cut).unwrap_or(self.buf.len().min(MAX_LINE));
            text(&self.buf[..cut], out);
            self.buf.drain(..cut);
        }
    }
}

/// `bytes` as log text: whole lines (a last line without its newline gets one), each cut
/// at [`MAX_LINE`] as an unfinished one is (so a line is cut alike however it arrived).
fn text(bytes: &[u8], out: &mut Vec<Piece>) {
    if bytes.is_empty() {
        return;
    }
    if has_long_line(bytes) {
        return out.push(Piece::Text(owned_text(cut_lines(bytes))));
    }
    let mut t = owned_text(bytes.to_vec());
    if !t.ends_with('\n') {
        t.push('\n');
    }
    out.push(Piece::Text(t));
}

/// Whether `bytes` may hold a line longer than [`MAX_LINE`]: such a line covers a whole
/// half-`MAX_LINE` block of it without a newline, and in ordinary output each block's first
/// newline is a few bytes in (a probe, not a pass over all of it).
fn has_long_line(bytes: &[u8]) -> bool {
    const HALF: usize = MAX_LINE / 2;
    bytes
        .chunks_exact(HALF)
        .any(|block| memchr::memchr(b'\n', block).is_none())
}

/// `bytes` with every line longer than [`MAX_LINE`] cut into lines of at most that many
/// bytes, on character boundaries.
fn cut_lines(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / MAX_LINE + 1);
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let mut rest = line.strip_suffix(b"\n").unwrap_or(line);
        while rest.len() > MAX_LINE {
            let cut = char_boundary(rest, MAX_LINE).unwrap_or(MAX_LINE);
            out.extend_from_slice(&rest[..cut]);
            out.push(b'\n');
            rest = &rest[cut..];
        }
        out.extend_from_slice(rest);
        out.push(b'\n');
    }
    out
}

/// `cut` moved back to the start of the character it falls in, if that leaves something
/// before it.
fn char_boundary(bytes: &[u8], mut cut: usize) -> Option<usize> {
    while cut > 0 && cut < bytes.len() && bytes[cut] & 0xc0 == 0x80 {
        cut -= 1;
    }
    (cut > 0).then_some(cut)
}

/// Output bytes as text, kept where they are when they are UTF-8 (checked whole first: the
/// common case, and much faster than the lossy walk); invalid sequences become U+FFFD.
fn owned_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The pipe capacity from which output is gathered (see [`read_output`]).
const GATHER_PIPE: usize = 512 * 1024;
/// The most read at once.
const READ_SIZE: usize = 256 * 1024;
/// The room of a read buffer: a read and the unfinished line before it (at most
/// [`MAX_LINE`]).
pub(crate) const READ_ROOM: usize = READ_SIZE + MAX_LINE;

/// Reads the shell's output into text and status events until it ends, on a thread of its
/// own with plain blocking reads. Not through the async runtime: once a pipe has been polled
/// (epoll), Linux wakes its pollers on every write into it, and a build printing fast in
/// 4 KB writes paid a wake-up of the runtime's driver for each (most of the CPU its output
/// cost); a pipe read this way wakes its reader only when it was empty. With `gather` (the
/// pipe holds at least [`GATHER_PIPE`]), a writer that keeps the reader busy — reads of 4 KB
/// or more coming back within a millisecond — gets 2 ms to fill the pipe before the next
/// read, so the reader takes large pieces and the writer rarely finds it waiting. Slow
/// output is read as it comes.
fn read_output(stdout: std::io::PipeReader, marker: &str, gather: bool, tx: mpsc::Sender<Event>) {
    let _reading = crate::readbufs::Reader::start();
    let mut splitter = Splitter::new(marker);
    let mut chunk = crate::readbufs::take();
    let mut pieces = Vec::new();
    let mut last = std::time::Instant::now();
    loop {
        // The unfinished line of the last read starts the buffer, the read goes on after it
        // into the spare room (nothing zeroed first): whole lines are then all in one piece
        // of memory, handed on as they lie.
        chunk.extend_from_slice(&splitter.buf);
        splitter.buf.clear();
        let n = loop {
            match rustix::io::read(&stdout, rustix::buffer::spare_capacity(&mut chunk)) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r.unwrap_or_default(),
            }
        };
        let now = std::time::Instant::now();
        let busy = now.duration_since(last) < std::time::Duration::from_millis(1);
        last = now;
        if n >= READ_SIZE / 2 {
            // A large read is handed on in its buffer (at most about half of it unused); a
            // small one is copied out of it.
            let full = std::mem::replace(&mut chunk, crate::readbufs::take());
            splitter.feed_owned(full, &mut pieces);
        } else {
            splitter.feed(&chunk, n == 0, &mut pieces);
            chunk.clear();
        }
        for p in pieces.drain(..) {
            let ev = match p {
                Piece::Text(t) => Event::Text(t),
                Piece::Status(s) => Event::Status(s),
            };
            if tx.blocking_send(ev).is_err() {
                return;
            }
        }
        if n == 0 {
            let _ = tx.blocking_send(Event::Eof);
            return;
        }
        // Small reads (a command's few lines, a status marker) never wait.
        if gather && busy && (4096..READ_SIZE).contains(&n) {
            std::thread::sleep(std::time::Duration::from_millis(2));
            last = std::time::Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "\u{1e}slipway-0123";

    /// What `feed` makes of `input` given in pieces of `step` bytes: the text, with each
    /// status as `<N>`.
    fn split(input: &[u8], step: usize) -> (String, usize) {
        split_as(input, step, false)
    }

    /// As [`split`], each piece handed over in a buffer of its own when `owned`.
    fn split_as(input: &[u8], step: usize, owned: bool) -> (String, usize) {
        let mut s = Splitter::new(M);
        let mut out = Vec::new();
        for c in input.chunks(step.max(1)) {
            if owned {
                s.feed_owned(c.to_vec(), &mut out);
            } else {
                s.feed(c, false, &mut out);
            }
        }
        s.feed(b"", true, &mut out);
        let mut text = String::new();
        let mut pieces = 0;
        for p in out {
            pieces += 1;
            match p {
                Piece::Text(t) => {
                    assert!(t.ends_with('\n'), "{t:?}");
                    text.push_str(&t)
                }
                Piece::Status(n) => text.push_str(&format!("<{n}>")),
            }
        }
        (text, pieces)
    }

    #[test]
    fn text_and_markers_split_alike_however_the_output_arrives() {
        let input = format!(
            "one\ntwo\n{M} 0\nno newline{M} 3\n\u{1e}not a marker\n\u{1e}{M} 1\nh\u{e9}llo\nlast"
        );
        let want = "one\ntwo\n<0>no newline\n<3>\u{1e}not a marker\n\u{1e}\n<1>h\u{e9}llo\nlast\n";
        for step in [1, 2, 3, 7, 64, 10_000] {
            for owned in [false, true] {
                let got = split_as(input.as_bytes(), step, owned).0;
                assert_eq!(got, want, "step {step}, owned {owned}");
            }
        }
        // Read at once, lines go on together: one piece of text before each marker.
        assert_eq!(split(b"a\nb\nc\n", 100), ("a\nb\nc\n".into(), 1));
    }

    #[test]
    fn long_lines_are_cut_on_character_boundaries_and_never_through_a_marker() {
        let long = "\u{e9}".repeat(MAX_LINE); // two bytes each
        for owned in [false, true] {
            let (text, _) = split_as(long.as_bytes(), 4096, owned);
            assert_eq!(text.replace('\n', ""), long, "nothing lost or broken");
            assert!(text.lines().all(|l| l.len() <= MAX_LINE));
            assert!(text.lines().count() >= 2);
        }
        // A long line with its newline: cut alike whether it came in one read or in many.
        let input = format!("{long}\nshort\n");
        for step in [4096, 1 << 20] {
            for owned in [false, true] {
                let (text, _) = split_as(input.as_bytes(), step, owned);
                assert_eq!(
                    text.replace('\n', ""),
                    format!("{long}short"),
                    "step {step}"
                );
                assert!(text.lines().all(|l| l.len() <= MAX_LINE), "step {step}");
                assert_eq!(text.lines().count(), 3, "step {step}, owned {owned}");
            }
        }
        // Whole lines and a long unfinished one in one buffer: the lines handed on in it,
        // the long one cut.
        let mut input = b"a\nb\n".to_vec();
        input.extend(std::iter::repeat_n(b'y', MAX_LINE + 10));
        let mut s = Splitter::new(M);
        let mut out = Vec::new();
        s.feed_owned(input, &mut out);
        let texts: Vec<_> = out
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.len(),
                Piece::Status(_) => 0,
            })
            .collect();
        assert_eq!(texts, [4, MAX_LINE + 1]);
        assert_eq!(s.buf.len(), 10);
        // Output without a newline, as long as a line may be, then the marker.
        let mut input = "x".repeat(MAX_LINE - 4).into_bytes();
        input.extend_from_slice(format!("{M} 7\n").as_bytes());
        let (text, _) = split(&input, 4096);
        assert!(text.ends_with("x\n<7>"), "{}", &text[text.len() - 20..]);
    }
}
