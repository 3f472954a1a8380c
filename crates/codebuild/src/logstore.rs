//! Where build logs are kept: each upload from a worker is one chunk of lines (a binary
//! batch the worker compressed with LZ4), durable as soon as it is acknowledged and readable
//! live. A small chunk is sealed under the master key in its database row; when the build
//! ends the small chunks are archived as they are into one encrypted blob, each on its own
//! so a page of the log is read without the rest. A large chunk (a build printing fast) is
//! an encrypted blob of its own from the start, written once and left where it is.

use crate::service::{internal, lease_lost, CodeBuild};
use flate2::read::DeflateDecoder;
use futures_util::TryStreamExt as _;
use slipway_blobs::BlobInfo;
use slipway_store::ServiceError;
use sqlx::Row;
use std::io::Read as _;

type Result<T> = std::result::Result<T, ServiceError>;

/// A batch of log lines as a worker uploads it and as a chunk stores it: the lines joined
/// by newlines, and their times run-length encoded (`(timestamp ms, lines)`; most lines of
/// a busy build share their millisecond). One string and a short list instead of an object
/// per line keeps a build that prints a lot cheap to ship and store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogBatch {
    pub times: Vec<(i64, u32)>,
    pub text: String,
}

/// How much of a large batch [`LogBatch::pack`] tries to compress before it compresses all.
const PACK_PROBE: usize = 64 << 10;

/// The binary form of a [`LogBatch`] begins with this.
const BATCH_MAGIC: &[u8; 4] = b"SLB\x01";
/// The binary form a [`LogWriter`] builds begins with this, then the text; the time runs
/// (i64 milliseconds, u32 lines; little-endian) follow the text and the number of runs
/// (u32) ends it, so lines go straight into the form that is sent.
const WRITER_MAGIC: &[u8; 4] = b"SLB\x02";
/// The compressed form begins with this, then the binary form's length (u32, little-endian)
/// and the binary form (either) as one LZ4 block.
const PACKED_MAGIC: &[u8; 4] = b"SLZ\x01";

/// How many lines time runs count.
fn lines_in(times: &[(i64, u32)]) -> usize {
    times.iter().map(|(_, n)| *n as usize).sum()
}

fn add_time(times: &mut Vec<(i64, u32)>, ts: i64, n: u32) {
    match times.last_mut() {
        Some((t, k)) if *t == ts => *k += n,
        _ => times.push((ts, n)),
    }
}

/// A batch of log lines in the binary form a worker sends (`SLB\x02`, text before times),
/// kept as the pieces of text it was given: a large batch that does not compress is sent as
/// those pieces, its lines never copied on the worker.
#[derive(Debug, Default)]
pub struct LogWriter {
    /// Text handed over whole (large pieces), in order, after `small` has been closed.
    pieces: Vec<bytes::Bytes>,
    /// Small pieces gathered into one (a build printing a line at a time).
    small: Vec<u8>,
    text_len: usize,
    times: Vec<(i64, u32)>,
}

/// A piece of text at least this long is kept as it is; shorter ones are gathered.
const WRITER_PIECE: usize = 16 << 10;

impl LogWriter {
    /// Adds whole lines (each ending with a newline; a last one without gets one) printed
    /// at `ts`; owned text is kept, not copied.
    pub fn push_text(&mut self, ts: i64, text: impl Into<String>) {
        let mut text = text.into();
        if text.is_empty() {
            return;
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let n = memchr::memchr_iter(b'\n', text.as_bytes()).count() as u32;
        add_time(&mut self.times, ts, n);
        self.text_len += text.len();
        // The text's buffer (the one its output was read into, see `readbufs`) goes back for
        // another read once the text is copied, or once the batch holding it is stored.
        if text.len() < WRITER_PIECE {
            self.small.extend_from_slice(text.as_bytes());
            crate::readbufs::give(text.into_bytes());
        } else {
            self.close_small();
            let text = crate::readbufs::Text(text.into_bytes());
            self.pieces.push(bytes::Bytes::from_owner(text));
        }
    }

    fn close_small(&mut self) {
        if !self.small.is_empty() {
            self.pieces
                .push(bytes::Bytes::from(std::mem::take(&mut self.small)));
        }
    }

    /// How many lines.
    pub fn count(&self) -> usize {
        lines_in(&self.times)
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The magic, the text's pieces and the time runs; the writer starts a new batch.
    fn take_parts(&mut self) -> Vec<bytes::Bytes> {
        self.close_small();
        let mut runs = Vec::with_capacity(self.times.len() * 12 + 4);
        for (ts, n) in &self.times {
            runs.extend_from_slice(&ts.to_le_bytes());
            runs.extend_from_slice(&n.to_le_bytes());
        }
        runs.extend_from_slice(&(self.times.len() as u32).to_le_bytes());
        self.times.clear();
        self.text_len = 0;
        let mut parts = Vec::with_capacity(self.pieces.len() + 2);
        parts.push(bytes::Bytes::from_static(WRITER_MAGIC));
        parts.append(&mut self.pieces);
        parts.push(runs.into());
        parts
    }

    /// The batch in its binary form, in one buffer; the writer starts a new batch.
    pub fn take_plain(&mut self) -> Vec<u8> {
        self.take_parts().concat()
    }

    /// What a worker sends, in the order to send it: the binary form compressed when that
    /// pays (as [`LogBatch::pack`]), else as it is (a large batch in the pieces it came in);
    /// the writer starts a new batch.
    pub fn take(&mut self) -> Vec<bytes::Bytes> {
        if self.text_len > 2 * PACK_PROBE {
            self.close_small();
            let mut probe = Vec::with_capacity(PACK_PROBE);
            for p in &self.pieces {
                let want = PACK_PROBE - probe.len();
                probe.extend_from_slice(&p[..p.len().min(want)]);
                if probe.len() == PACK_PROBE {
                    break;
                }
            }
            if !lz4_pays(&probe) {
                return self.take_parts();
            }
        }
        // Probed already (or small enough to try whole).
        vec![compress_form(self.take_plain(), false).into()]
    }
}

impl LogBatch {
    /// Adds a line (without its newline; a newline inside it would split it).
    pub fn push(&mut self, ts: i64, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        self.add_time(ts, 1);
    }

    fn add_time(&mut self, ts: i64, n: u32) {
        add_time(&mut self.times, ts, n);
    }

    pub fn from_lines(lines: &[(i64, String)]) -> LogBatch {
        let mut b = LogBatch::default();
        for (ts, l) in lines {
            b.push(*ts, l);
        }
        b
    }

    /// Empties the batch, keeping its room (a worker fills one batch after another).
    pub fn clear(&mut self) {
        self.times.clear();
        self.text.clear();
    }

    /// How many lines.
    pub fn count(&self) -> usize {
        lines_in(&self.times)
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The lines with their times; an error when the text and the times disagree.
    pub fn lines(&self) -> std::result::Result<Vec<(i64, String)>, String> {
        let mut text = self.text.split_terminator('\n');
        let mut out = Vec::with_capacity(self.count());
        for (ts, n) in &self.times {
            for _ in 0..*n {
                let line = text
                    .next()
                    .ok_or("a log batch has fewer lines than times")?;
                out.push((*ts, line.to_owned()));
            }
        }
        if text.next().is_some() {
            return Err("a log batch has more lines than times".into());
        }
        Ok(out)
    }

    /// The batch as the worker protocol sends it and a chunk stores it: `SLB\x01`, the
    /// number of time runs (u32), each run (i64 milliseconds, u32 lines; little-endian),
    /// then the text. No escaping: the text is copied as it is.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.times.len() * 12 + self.text.len());
        out.extend_from_slice(BATCH_MAGIC);
        out.extend_from_slice(&(self.times.len() as u32).to_le_bytes());
        for (ts, n) in &self.times {
            out.extend_from_slice(&ts.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(self.text.as_bytes());
        out
    }

    /// What a worker sends: the binary form compressed ([`LogBatch::compress`]), or the
    /// binary form itself when compressing would save less than a sixteenth (random text:
    /// the server then checks it without inflating it first). Build logs repeat themselves
    /// a lot; compressing at the source makes every later step cheaper.
    pub fn pack(&self) -> Vec<u8> {
        self.pack_with(false)
    }

    /// The binary form compressed: [`LogBatch::encode`] as one LZ4 block, after the magic
    /// and the binary form's length.
    pub fn compress(&self) -> Vec<u8> {
        self.pack_with(true)
    }

    fn pack_with(&self, always: bool) -> Vec<u8> {
        let text = 8 + self.times.len() * 12;
        pack_form(self.encode(), text..text + self.text.len(), always)
    }

    /// A batch from its binary form, compressed ([`LogBatch::compress`]) or not
    /// ([`LogBatch::encode`]); checked (the text is UTF-8 and holds as many lines as the
    /// times count).
    pub fn decode(data: &[u8]) -> std::result::Result<LogBatch, String> {
        let mut buf = Vec::new();
        let (times, text) = parse(unpack_into(data, &mut buf)?)?;
        // Checked by `parse` already; checked again as it is copied (while in the cache).
        let text = String::from_utf8(text.to_vec()).map_err(|e| e.to_string())?;
        Ok(LogBatch { times, text })
    }

    /// The batch in the worker protocol's first shape (`times`, `text`): chunks stored by
    /// earlier versions are read in it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"times": self.times, "text": self.text})
    }

    /// A batch from the JSON shape; checked.
    pub fn from_json(v: &serde_json::Value) -> std::result::Result<LogBatch, String> {
        let times: Vec<(i64, u32)> =
            serde_json::from_value(v["times"].clone()).map_err(|e| format!("log times: {e}"))?;
        let text = v["text"].as_str().unwrap_or_default().to_owned();
        check_lines(&times, &text)?;
        Ok(LogBatch { times, text })
    }
}

/// A binary form as it is sent: compressed (`SLZ\x01`) unless that would save less than a
/// sixteenth (and `always` is not set). A large batch is tried on the first part of its
/// text (`text`, its place in the form) first: text LZ4 cannot shrink (random, already
/// compressed) goes as it is without a pass of LZ4 over all of it.
fn pack_form(plain: Vec<u8>, text: std::ops::Range<usize>, always: bool) -> Vec<u8> {
    if !always
        && text.len() > 2 * PACK_PROBE
        && !lz4_pays(&plain[text.start..text.start + PACK_PROBE])
    {
        return plain;
    }
    compress_form(plain, always)
}

/// A binary form compressed (`SLZ\x01`) unless that would save less than a sixteenth (and
/// `always` is not set). Compressed into room this thread keeps (zeroed once, not per
/// batch), then copied out at its compressed size: a log that compresses well is a few KB.
fn compress_form(plain: Vec<u8>, always: bool) -> Vec<u8> {
    let compressed = lz4_into_room(&plain, |packed| {
        (always || shrinks(packed.len(), plain.len())).then(|| {
            let mut out = Vec::with_capacity(8 + packed.len());
            out.extend_from_slice(PACKED_MAGIC);
            out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
            out.extend_from_slice(packed);
            out
        })
    });
    compressed.unwrap_or(plain)
}

/// Whether LZ4 saves at least a sixteenth of `data`.
fn lz4_pays(data: &[u8]) -> bool {
    lz4_into_room(data, |packed| shrinks(packed.len(), data.len()))
}

fn shrinks(packed: usize, of: usize) -> bool {
    packed < of - of / 16
}

/// `data` compressed as one LZ4 block into room this thread keeps, handed to `f`.
fn lz4_into_room<T>(data: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    PACK_ROOM.with_borrow_mut(|room| {
        let worst = lz4_flex::block::get_maximum_output_size(data.len());
        if room.len() < worst {
            room.resize(worst, 0);
        }
        let n = lz4_flex::block::compress_into(data, &mut room[..worst])
            .expect("the room holds the worst case");
        f(&room[..n])
    })
}

/// Whether `text` holds as many whole lines as `times` count.
fn check_lines(times: &[(i64, u32)], text: &str) -> std::result::Result<(), String> {
    let newlines = memchr::memchr_iter(b'\n', text.as_bytes()).count();
    lines_match(times, newlines, text.as_bytes())
}

fn lines_match(
    times: &[(i64, u32)],
    newlines: usize,
    text: &[u8],
) -> std::result::Result<(), String> {
    let count: u64 = times.iter().map(|(_, n)| u64::from(*n)).sum();
    if newlines as u64 != count || !(text.is_empty() || text.ends_with(b"\n")) {
        return Err(format!(
            "a log batch of {count} times holds {newlines} lines"
        ));
    }
    Ok(())
}

/// The lines in `text` if it is UTF-8, found in one pass over it: each 64 KiB block is
/// counted while it is still in the cache from being checked. (Over a 4 MB batch just
/// received, checking all of it and then counting all of it read it from memory twice:
/// 8 % of the server's CPU under a build printing fast, against 5 % this way.)
fn utf8_lines(text: &[u8]) -> Option<usize> {
    const BLOCK: usize = 64 << 10;
    let (mut at, mut newlines) = (0, 0);
    while at < text.len() {
        let end = (at + BLOCK).min(text.len());
        let valid = match std::str::from_utf8(&text[at..end]) {
            Ok(_) => end,
            // A character the block's end cuts is checked with the next block.
            Err(e) if e.error_len().is_none() && end < text.len() => at + e.valid_up_to(),
            Err(_) => return None,
        };
        newlines += memchr::memchr_iter(b'\n', &text[at..valid]).count();
        at = valid;
    }
    Some(newlines)
}

/// Time runs of a batch: (milliseconds, lines).
type Times = Vec<(i64, u32)>;

/// A batch's binary form read and checked (the text is UTF-8 and holds as many lines as
/// the times count), without copying its text: the time runs and the text.
fn parse(data: &[u8]) -> std::result::Result<(Times, &[u8]), String> {
    let bad = |why: &str| format!("not a log batch: {why}");
    let read_runs = |mut runs: &[u8]| {
        let mut times = Vec::with_capacity(runs.len() / 12);
        while let Some((run, after)) = runs.split_at_checked(12) {
            times.push((
                i64::from_le_bytes(run[..8].try_into().expect("8 bytes")),
                u32::from_le_bytes(run[8..].try_into().expect("4 bytes")),
            ));
            runs = after;
        }
        times
    };
    let (times, text) = if let Some(rest) = data.strip_prefix(BATCH_MAGIC) {
        let (runs, rest) = rest.split_at_checked(4).ok_or_else(|| bad("cut short"))?;
        let runs = u32::from_le_bytes(runs.try_into().expect("4 bytes")) as usize;
        if runs > rest.len() / 12 {
            return Err(bad("more time runs than bytes"));
        }
        let (runs, text) = rest.split_at(runs * 12);
        (read_runs(runs), text)
    } else if let Some(rest) = data.strip_prefix(WRITER_MAGIC) {
        let (rest, runs) = rest
            .split_last_chunk::<4>()
            .ok_or_else(|| bad("cut short"))?;
        let runs = u32::from_le_bytes(*runs) as usize;
        if runs > rest.len() / 12 {
            return Err(bad("more time runs than bytes"));
        }
        let (text, runs) = rest.split_at(rest.len() - runs * 12);
        (read_runs(runs), text)
    } else {
        return Err(bad("no header"));
    };
    let newlines = utf8_lines(text).ok_or_else(|| bad("the text is not UTF-8"))?;
    lines_match(&times, newlines, text)?;
    Ok((times, text))
}

thread_local! {
    /// A buffer each thread reuses for batches in their binary form (inflated to check them):
    /// a megabyte allocated and freed per batch costs page faults on every use.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Where [`LogBatch::pack`] compresses to (the worst case for the largest batch yet).
    static PACK_ROOM: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The binary form of a batch that may be compressed ([`LogBatch::pack`]), inflated into
/// `buf` if it is; at most [`MAX_CHUNK`] bytes are inflated.
fn unpack_into<'a>(data: &'a [u8], buf: &'a mut Vec<u8>) -> std::result::Result<&'a [u8], String> {
    let Some(rest) = data.strip_prefix(PACKED_MAGIC) else {
        return Ok(data);
    };
    let (len, block) = rest
        .split_at_checked(4)
        .ok_or("not a log batch: cut short")?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if len as u64 > MAX_CHUNK {
        return Err(format!("a log batch of {len} bytes is too large"));
    }
    // LZ4 inflates at most about 255 times: a length beyond that is a lie, and is refused
    // before room for it is made.
    if len > block.len().saturating_mul(255).saturating_add(16) {
        return Err("not a log batch: its length is wrong".into());
    }
    // The buffer only grows: zeroing a megabyte for every batch cost more than inflating it.
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let n = lz4_flex::block::decompress_into(block, &mut buf[..len])
        .map_err(|e| format!("not a log batch: {e}"))?;
    if n != len {
        return Err("not a log batch: its length is wrong".into());
    }
    Ok(&buf[..len])
}

/// A chunk's batch from its binary form (compressed or not), or the JSON form earlier
/// versions stored.
fn decode(data: &[u8]) -> Result<Vec<(i64, String)>> {
    let batch = if [BATCH_MAGIC, WRITER_MAGIC, PACKED_MAGIC]
        .iter()
        .any(|m| data.starts_with(*m))
    {
        LogBatch::decode(data)
    } else {
        let v: serde_json::Value = serde_json::from_slice(data).map_err(internal)?;
        LogBatch::from_json(&v)
    };
    batch.and_then(|b| b.lines()).map_err(internal)
}

/// The largest chunk inflated (a worker uploads at most about 1 MB of lines at once).
const MAX_CHUNK: u64 = 64 << 20;

/// How archives written before `log_blob_format` 1 held a chunk: deflated.
fn inflate(packed: &[u8]) -> Result<Vec<u8>> {
    let mut json = Vec::new();
    DeflateDecoder::new(packed)
        .take(MAX_CHUNK)
        .read_to_end(&mut json)
        .map_err(internal)?;
    Ok(json)
}

/// A finished build's archived log: its blob, and whether its chunks are deflated (archives
/// of `log_blob_format` 0) or stored as the live chunks were.
struct Archive {
    path: String,
    info: BlobInfo,
    deflated: bool,
}

/// A build id's project and uuid, as its log blobs are named.
fn project_and_uuid(id: &str) -> (&str, &str) {
    id.rsplit_once(':').unwrap_or(("build", id))
}

/// The blob a finished build's log was archived into.
fn blob_path(id: &str) -> String {
    let (project, uuid) = project_and_uuid(id);
    format!("codebuild/logs/{project}/{uuid}")
}

/// From this size (packed, as uploaded) a chunk is a blob of its own rather than a value in
/// its row: the database would write its bytes twice (WAL, then checkpoint) and the archive
/// a third time, where the blob store writes them once.
const CHUNK_BLOB_MIN: usize = 64 << 10;

/// A blob name for one large chunk of build `id` (named before its sequence number is
/// known, so by a fresh random part).
fn chunk_blob_path(id: &str) -> String {
    format!("{}/{}", chunk_dir(id), uuid::Uuid::new_v4().simple())
}

/// Where build `id`'s large chunks are.
fn chunk_dir(id: &str) -> String {
    let (project, uuid) = project_and_uuid(id);
    format!("codebuild/log-chunks/{project}/{uuid}")
}

/// Where a batch of `count` lines goes in build `id`'s log (inside the write that stores
/// it, holding the lease): the number of its first line (`first`, or after the last stored
/// line), or `None` when exactly this batch is stored already (sent again after an answer
/// that was lost); an error when its lines overlap stored ones. Moves the build's
/// `log_seq` (the end of its log with no gap before it) over the batch and any chunks
/// stored after it, which the caller then inserts.
async fn place_batch(
    conn: &mut slipway_store::Conn,
    id: &str,
    token: &str,
    first: Option<i64>,
    count: i64,
) -> Result<Option<i64>> {
    let seen: i64 = sqlx::query_scalar(
        "SELECT log_seq FROM cb_builds WHERE id = $1 AND lease_token = $2 AND status = 'IN_PROGRESS'",
    )
    .bind(id)
    .bind(token)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| lease_lost(id))?;
    let (first, next) = match first {
        // The chunk before it and the one after it, in one query.
        Some(first) => {
            let near: Vec<(i64, i64)> = sqlx::query_as("SELECT first_seq, count FROM (SELECT first_seq, count FROM cb_log_chunks WHERE build_id = $1 AND first_seq <= $2 ORDER BY first_seq DESC LIMIT 1) UNION ALL SELECT first_seq, count FROM (SELECT first_seq, count FROM cb_log_chunks WHERE build_id = $1 AND first_seq > $2 ORDER BY first_seq LIMIT 1)")
                .bind(id)
                .bind(first)
                .fetch_all(&mut *conn)
                .await?;
            let mut next = None;
            for (f, n) in near {
                if f == first && n == count {
                    return Ok(None);
                }
                if (f <= first && f + n > first) || (f > first && f < first + count) {
                    return Err(slipway_store::service_err(
                        "InvalidInputException",
                        format!(
                            "log lines {first} to {} overlap lines already stored",
                            first + count - 1
                        ),
                    ));
                }
                if f > first {
                    next = Some(f);
                }
            }
            (first, next)
        }
        // After the last stored line (a worker of an earlier version: one upload at a time).
        None => {
            let end: Option<i64> = sqlx::query_scalar("SELECT first_seq + count FROM cb_log_chunks WHERE build_id = $1 ORDER BY first_seq DESC LIMIT 1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            (end.unwrap_or(1), None)
        }
    };
    if first == seen + 1 {
        // The gap before it closes: on over what follows without a gap.
        let mut end = first + count - 1;
        let mut follows = next == Some(end + 1);
        while follows {
            match sqlx::query_scalar::<_, i64>(
                "SELECT count FROM cb_log_chunks WHERE build_id = $1 AND first_seq = $2",
            )
            .bind(id)
            .bind(end + 1)
            .fetch_optional(&mut *conn)
            .await?
            {
                Some(n) => end += n,
                None => follows = false,
            }
        }
        sqlx::query("UPDATE cb_builds SET log_seq = $1 WHERE id = $2")
            .bind(end)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Some(first))
}

impl CodeBuild {
    /// Appends a batch of log lines (already masked by the worker) in its binary form
    /// ([`LogBatch::pack`] or [`LogBatch::encode`]), checked here and stored as it came.
    /// `first_seq` is the number the worker gave the batch's first line (a worker numbers
    /// its lines from 1 and may have several uploads in flight, so batches can arrive out of
    /// order); a batch sent again with the same number and count is stored once. Without
    /// it (workers of earlier versions, one upload at a time) the batch follows the last.
    pub async fn append_logs(
        &self,
        id: &str,
        token: &str,
        first_seq: Option<i64>,
        batch: impl Into<slipway_blobs::ValueBuf>,
    ) -> Result<()> {
        let batch = batch.into();
        // Checked whole (inflated into a buffer this thread keeps for it), stored as it came
        // (a large one sealed where it lies).
        let (first_ts, last_ts, count, bytes) = SCRATCH
            .with_borrow_mut(|scratch| {
                let (times, text) = parse(unpack_into(batch.plaintext(), scratch)?)?;
                let count: i64 = times.iter().map(|t| i64::from(t.1)).sum();
                Ok::<_, String>((
                    times.iter().map(|t| t.0).min(),
                    times.iter().map(|t| t.0).max().unwrap_or(0),
                    count,
                    text.len() as i64 - count,
                ))
            })
            .map_err(|e| slipway_store::service_err("InvalidInputException", e))?;
        let Some(first_ts) = first_ts.filter(|_| count > 0) else {
            return Ok(());
        };
        if let Some(n) = first_seq.filter(|n| !(1..=i64::MAX / 2).contains(n)) {
            return Err(slipway_store::service_err(
                "InvalidInputException",
                format!("a log batch cannot start at line {n}"),
            ));
        }
        let (id, token) = (id.to_owned(), token.to_owned());
        // A large chunk is written to the blob store first (durable when `put` returns); a
        // small one is sealed before the write is queued (the writer only writes).
        let (packed, blob) = if batch.len() >= CHUNK_BLOB_MIN {
            let path = chunk_blob_path(&id);
            let key = self.blobs.put_value(&path, batch).await.map_err(internal)?;
            (None, Some((path, key)))
        } else {
            (Some(self.blobs.seal_small(batch.plaintext())), None)
        };
        let row_blob = blob.clone();
        let stored = self
            .store
            .grouped(move |conn| {
                Box::pin(async move {
                    let Some(first) = place_batch(conn, &id, &token, first_seq, count).await?
                    else {
                        return Ok(false);
                    };
                    let (path, key) = row_blob.unzip();
                    sqlx::query("INSERT INTO cb_log_chunks (build_id, first_seq, count, first_ts, last_ts, bytes, data, packed, chunk_blob, chunk_blob_key) VALUES ($1, $2, $3, $4, $5, $6, '', $7, $8, $9)")
                        .bind(&id)
                        .bind(first)
                        .bind(count)
                        .bind(first_ts)
                        .bind(last_ts)
                        .bind(bytes)
                        .bind(packed)
                        .bind(path)
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                    Ok::<bool, ServiceError>(true)
                })
            })
            .await;
        if let (Err(_) | Ok(false), Some((path, _))) = (&stored, &blob) {
            // Refused (the lease is gone), not written, or already there (a batch sent
            // again): the blob belongs to no chunk.
            let _ = self.blobs.delete(path).await;
        }
        stored.map(|_| ())
    }

    /// The chunks of build `id` that hold lines in range (sequence numbers in
    /// `(after, before)`, times in `[start, end)`), in the order asked, streamed to `f` until
    /// it says it has enough.
    pub(crate) async fn read_chunks(
        &self,
        id: &str,
        (after, before): (i64, i64),
        (start, end): (i64, i64),
        backwards: bool,
        mut f: impl FnMut(i64, Vec<(i64, String)>) -> bool,
    ) -> Result<()> {
        let order = if backwards { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT first_seq FROM cb_log_chunks WHERE build_id = $1 AND first_seq + count - 1 > $2 AND first_seq < $3 AND last_ts >= $4 AND first_ts < $5 ORDER BY first_seq {order}"
        );
        let chunks: Vec<i64> = sqlx::query_scalar(&sql)
            .bind(id)
            .bind(after)
            .bind(before)
            .bind(start)
            .bind(end)
            .fetch_all(self.store.pool())
            .await?;
        // Each chunk is read when it is needed (so a long log is read only as far as the
        // page needs, and only one chunk's bytes are held at a time), as it is then: one
        // the archive has moved meanwhile is read from the archive.
        let mut blob = None;
        for first_seq in chunks {
            let Some(r) = sqlx::query(
                "SELECT data, packed, blob_offset, blob_len, chunk_blob, chunk_blob_key FROM cb_log_chunks WHERE build_id = $1 AND first_seq = $2",
            )
            .bind(id)
            .bind(first_seq)
            .fetch_optional(self.store.pool())
            .await?
            else {
                continue;
            };
            // A chunk's lines are a blob of their own, archived (in the build's log blob),
            // sealed in the row (a batch), or from before any of these (JSON text in `data`).
            let own_blob = r.get::<Option<String>, _>(4);
            let lines = match (r.get::<Option<Vec<u8>>, _>(1), r.get::<Option<i64>, _>(2)) {
                _ if own_blob.is_some() => {
                    let key = r.get::<Option<Vec<u8>>, _>(5).unwrap_or_default();
                    let path = own_blob.unwrap_or_default();
                    decode(&self.blobs.get_value(&path, &key).await.map_err(internal)?)?
                }
                (_, Some(offset)) => {
                    let len = r.get::<Option<i64>, _>(3).unwrap_or(0) as u64;
                    // Looked up once archived chunks show up: the archive records the blob
                    // and moves the chunks in one transaction, so it is there by now.
                    if blob.is_none() {
                        blob = Some(self.log_blob(id).await?);
                    }
                    let archive = blob.as_ref().ok_or_else(|| internal("no log blob"))?;
                    self.archived_lines(archive, offset as u64, len).await?
                }
                (Some(sealed), None) => decode(&self.blobs.open_small(&sealed).map_err(internal)?)?,
                (None, None) => serde_json::from_str(&r.get::<String, _>(0)).map_err(internal)?,
            };
            if !f(first_seq, lines) {
                break;
            }
        }
        Ok(())
    }

    /// The blob a build's log was archived into, and what reading it needs.
    async fn log_blob(&self, id: &str) -> Result<Archive> {
        let r = sqlx::query(
            "SELECT log_blob, log_blob_size, log_blob_sha, log_blob_key, log_blob_format FROM cb_builds WHERE id = $1 AND log_blob IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?
        .ok_or_else(|| internal("an archived log has no blob"))?;
        Ok(Archive {
            path: r.get(0),
            info: BlobInfo {
                size: r.get::<i64, _>(1) as u64,
                sha256: r.get(2),
                wrapped_key: r.get(3),
            },
            deflated: r.get::<i64, _>(4) == 0,
        })
    }

    /// The lines of an archived chunk: `len` bytes at `offset` of the blob.
    async fn archived_lines(
        &self,
        archive: &Archive,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(i64, String)>> {
        let parts: Vec<bytes::Bytes> = self
            .blobs
            .get(&archive.path, &archive.info, Some(offset..offset + len))
            .try_collect()
            .await
            .map_err(internal)?;
        let chunk = parts.concat();
        if archive.deflated {
            decode(&inflate(&chunk)?)
        } else {
            decode(&chunk)
        }
    }

    /// Moves a finished build's log chunks into one blob (each chunk as it was stored, in
    /// its compressed binary form) and clears them from the database. Safe to repeat: an
    /// interrupted archive is redone.
    pub async fn archive_log(&self, id: &str) -> Result<()> {
        if let Err(e) = self.remove_orphan_chunks(id).await {
            tracing::warn!(build = %id, error = %e, "looking for log chunk blobs no chunk names");
        }
        let (pending, archived): (i64, i64) = {
            // Chunks that are blobs of their own stay as they are.
            let r = sqlx::query("SELECT COALESCE(SUM(blob_offset IS NULL), 0), COALESCE(SUM(blob_offset IS NOT NULL), 0) FROM cb_log_chunks WHERE build_id = $1 AND chunk_blob IS NULL")
                .bind(id)
                .fetch_one(self.store.pool())
                .await?;
            (r.get(0), r.get(1))
        };
        if pending == 0 || archived > 0 {
            // Nothing to do, or archived already (a build's log is archived once, whole).
            sqlx::query("UPDATE cb_builds SET logs_archived = 1 WHERE id = $1")
                .bind(id)
                .execute(self.store.pool())
                .await?;
            return Ok(());
        }
        // Chunk by chunk, streamed into the blob.
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
        let producer = {
            let (this, id) = (self.clone(), id.to_owned());
            tokio::spawn(async move {
                let firsts: Vec<i64> = sqlx::query_scalar("SELECT first_seq FROM cb_log_chunks WHERE build_id = $1 AND blob_offset IS NULL AND chunk_blob IS NULL ORDER BY first_seq")
                    .bind(&id)
                    .fetch_all(this.store.pool())
                    .await?;
                let (mut places, mut offset) = (Vec::new(), 0i64);
                // One chunk read at a time: a long log is never all in memory (a streamed
                // query would read dozens of rows ahead).
                for first in firsts {
                    let r = sqlx::query("SELECT data, packed FROM cb_log_chunks WHERE build_id = $1 AND first_seq = $2")
                        .bind(&id)
                        .bind(first)
                        .fetch_one(this.store.pool())
                        .await?;
                    let (legacy, sealed): (String, Option<Vec<u8>>) = (r.get(0), r.get(1));
                    // Opening (and compressing what came in an older form) is CPU work: off
                    // the async threads.
                    let blobs = this.blobs.clone();
                    let packed = tokio::task::spawn_blocking(move || {
                        let lines = match sealed {
                            Some(sealed) => {
                                let chunk = blobs.open_small(&sealed).map_err(internal)?;
                                // The binary forms are archived as they came.
                                if chunk.starts_with(PACKED_MAGIC) || chunk.starts_with(BATCH_MAGIC)
                                {
                                    return Ok(chunk);
                                }
                                decode(&chunk)?
                            }
                            None => serde_json::from_str(&legacy).map_err(internal)?,
                        };
                        Ok::<_, ServiceError>(LogBatch::from_lines(&lines).pack())
                    })
                    .await
                    .map_err(internal)??;
                    places.push((first, offset, packed.len() as i64));
                    offset += packed.len() as i64;
                    if tx.send(Ok(bytes::Bytes::from(packed))).await.is_err() {
                        return Err(internal("the log blob stopped taking chunks"));
                    }
                }
                Ok::<_, ServiceError>(places)
            })
        };
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let path = blob_path(id);
        let stored = self.blobs.put(&path, stream).await.map_err(internal);
        // A blob cut short by a failed read is never recorded (the next sweep redoes it).
        let places = producer.await.map_err(internal)??;
        let info = stored?;
        let mut tx = self.store.begin_write().await?;
        for (first, offset, len) in places {
            sqlx::query("UPDATE cb_log_chunks SET blob_offset = $1, blob_len = $2, packed = NULL, data = '' WHERE build_id = $3 AND first_seq = $4")
                .bind(offset)
                .bind(len)
                .bind(id)
                .bind(first)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE cb_builds SET logs_archived = 1, log_blob = $1, log_blob_size = $2, log_blob_sha = $3, log_blob_key = $4, log_blob_format = 1 WHERE id = $5")
            .bind(&path)
            .bind(info.size as i64)
            .bind(&info.sha256)
            .bind(&info.wrapped_key)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes the blobs in finished build `id`'s chunk directory that no chunk names: left
    /// by a server that stopped between writing a large chunk's blob and committing its row
    /// (an upload refused in the ordinary way removes its own). Listed before the rows are
    /// read, and no row can be added to a finished build, so a blob with a row is never
    /// taken for one without. How many.
    async fn remove_orphan_chunks(&self, id: &str) -> Result<usize> {
        let listed = self.blobs.list(&chunk_dir(id)).await.map_err(internal)?;
        if listed.is_empty() {
            return Ok(0);
        }
        let mut conn = self.store.pool().acquire().await?;
        let named: std::collections::HashSet<String> = CodeBuild::chunk_blobs(&mut conn, id)
            .await?
            .into_iter()
            .collect();
        drop(conn);
        let mut removed = 0;
        for path in listed.iter().filter(|p| !named.contains(*p)) {
            self.blobs.delete(path).await.map_err(internal)?;
            removed += 1;
        }
        if removed > 0 {
            tracing::info!(build = %id, removed, "removed log chunk blobs that no chunk names (a write cut short)");
        }
        Ok(removed)
    }

    /// Archives the logs of every finished build not archived yet (after a restart, or
    /// when an archive failed); how many.
    pub async fn archive_pending(&self) -> Result<usize> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM cb_builds WHERE logs_archived = 0 AND status <> 'IN_PROGRESS' ORDER BY seq LIMIT 100",
        )
        .fetch_all(self.store.pool())
        .await?;
        for id in &ids {
            if let Err(e) = self.archive_log(id).await {
                tracing::warn!(build = %id, error = %e, "archiving a build's log");
            }
        }
        Ok(ids.len())
    }

    /// The blobs of a build's large chunks (read before its rows are deleted).
    pub(crate) async fn chunk_blobs(
        conn: &mut slipway_store::Conn,
        id: &str,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT chunk_blob FROM cb_log_chunks WHERE build_id = $1 AND chunk_blob IS NOT NULL",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?)
    }

    /// Removes a deleted build's archived log and the blobs of its large chunks.
    pub(crate) async fn delete_log_blob(&self, id: &str, chunks: &[String]) {
        if let Err(e) = self.blobs.delete(&blob_path(id)).await {
            tracing::debug!(build = %id, error = %e, "no log blob to delete");
        }
        for path in chunks {
            if let Err(e) = self.blobs.delete(path).await {
                tracing::warn!(build = %id, error = %e, "deleting a log chunk's blob");
            }
        }
    }
}

/// Re-wraps the data keys of build logs under the master key's new primary (after a
/// rotation): the sealed chunks of running builds, the blob keys of large chunks and the
/// archived logs' blob keys.
pub async fn rewrap_logs(
    store: &slipway_store::Store,
    key: &slipway_iam::crypto::MasterKey,
) -> Result<usize> {
    let mut tx = store.begin_write().await?;
    let chunks = sqlx::query(
        "SELECT build_id, first_seq, packed, chunk_blob_key FROM cb_log_chunks WHERE packed IS NOT NULL OR chunk_blob_key IS NOT NULL",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut keys = 0;
    for r in &chunks {
        // A small chunk's envelope (its data key inside) or a large chunk's blob key.
        let packed = r.get::<Option<Vec<u8>>, _>(2);
        let packed = packed.map(|p| key.rewrap(&p)).transpose();
        let blob_key = r.get::<Option<Vec<u8>>, _>(3);
        let blob_key = blob_key.map(|k| key.reencrypt(&k)).transpose();
        let (packed, blob_key) = (packed.map_err(internal)?, blob_key.map_err(internal)?);
        keys += usize::from(packed.is_some()) + usize::from(blob_key.is_some());
        sqlx::query("UPDATE cb_log_chunks SET packed = COALESCE($1, packed), chunk_blob_key = COALESCE($2, chunk_blob_key) WHERE build_id = $3 AND first_seq = $4")
            .bind(packed)
            .bind(blob_key)
            .bind(r.get::<String, _>(0))
            .bind(r.get::<i64, _>(1))
            .execute(&mut *tx)
            .await?;
    }
    let blobs =
        sqlx::query("SELECT id, log_blob_key FROM cb_builds WHERE log_blob_key IS NOT NULL")
            .fetch_all(&mut *tx)
            .await?;
    for r in &blobs {
        let fresh = key.reencrypt(&r.get::<Vec<u8>, _>(1)).map_err(internal)?;
        sqlx::query("UPDATE cb_builds SET log_blob_key = $1 WHERE id = $2")
            .bind(fresh)
            .bind(r.get::<String, _>(0))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(keys + blobs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts with characters of every width placed across the 64 KiB blocks' ends, and
    /// bad bytes there: the blockwise pass agrees with checking and counting the whole.
    #[test]
    fn utf8_lines_agrees_with_the_whole_text_whatever_the_block_ends_cut() {
        let block = 64 << 10;
        for ch in ["a", "\n", "é", "€", "𝄞"] {
            for shift in 0..5 {
                let mut text = "x\n".repeat((block - shift) / 2).into_bytes();
                text.truncate(block - shift);
                text.extend_from_slice(ch.as_bytes());
                text.extend_from_slice("line\n".repeat(block / 5).as_bytes());
                let whole = std::str::from_utf8(&text)
                    .ok()
                    .map(|t| t.matches('\n').count());
                assert_eq!(utf8_lines(&text), whole, "{ch:?} at {shift}");
                assert!(whole.is_some());
                // A character cut short at the very end, or a bad byte at the boundary.
                for bad in [&ch.as_bytes()[..ch.len() - 1], &[0xff][..]] {
                    if bad.is_empty() {
                        continue;
                    }
                    let mut cut = text[..block - shift].to_vec();
                    cut.extend_from_slice(bad);
                    assert_eq!(utf8_lines(&cut), None, "{bad:?} at {shift}");
                    cut.extend_from_slice(b"more\n");
                    assert_eq!(utf8_lines(&cut), None, "{bad:?} then more at {shift}");
                }
            }
        }
        assert_eq!(utf8_lines(b""), Some(0));
    }
}
