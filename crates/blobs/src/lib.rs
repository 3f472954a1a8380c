//! The blob store: large immutable byte streams (artifacts, objects, logs) kept through
//! `object_store` — the local filesystem by default — encrypted at rest and checked on read.
//!
//! Each blob is sealed with its own AES-256 data key in 64 KiB chunks (AES-256-GCM; the
//! nonce is a random prefix and the chunk's index, and the last chunk is marked, so chunks
//! cannot be reordered, dropped or truncated unnoticed). The data key, wrapped by the master
//! key, is returned to the caller to keep in its database row: rotating the master key
//! re-wraps those keys and never rewrites blobs. The SHA-256 of the plaintext is recorded at
//! write time and verified when a blob is read whole. Writes are atomic: a blob is visible
//! only once complete.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use slipway_iam::crypto::{random_bytes, Gcm, MasterKey};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// Plaintext bytes per sealed chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
/// Chunks fetched from the backend per read request (about 1 MiB).
const WINDOW: u64 = 16;
/// Magic and version at the start of every blob.
const MAGIC: &[u8; 4] = b"SWB1";
/// Magic and version at the start of a value sealed whole ([`BlobStore::put_value`]).
const VALUE_MAGIC: &[u8; 4] = b"SWV1";
/// MAGIC + the 8-byte nonce prefix.
const HEADER: usize = 12;
/// Bytes gathered before a multipart part is sent to the backend.
const PART: usize = 8 * 1024 * 1024;

/// A value sealed whole starts with its magic and nonce.
const VALUE_HEAD: usize = VALUE_MAGIC.len() + 12;

/// Values from this size on are laid out for a direct write (see [`ValueBuf`]).
const DIRECT_MIN: usize = 256 << 10;
/// The alignment in memory, in the file and of the length that a direct write (`O_DIRECT`)
/// asks for: the largest logical block size of common disks.
const DIRECT_ALIGN: usize = 4096;

/// The plaintext of a value for [`BlobStore::put_value`], gathered behind room for the
/// seal's header, so that it is encrypted where it lies: a request body collected into one
/// is not copied again to be sealed. A large one starts at a page boundary, so that the
/// local filesystem writes it to disk from where it lies too, not copied into the page
/// cache first (the largest cost of storing a fast build's log, measured).
#[derive(Debug)]
pub struct ValueBuf {
    buf: Vec<u8>,
    /// Where the sealed value (header, plaintext, tag) starts in `buf`.
    start: usize,
}

impl ValueBuf {
    /// An empty value with room for `n` bytes.
    pub fn with_capacity(n: usize) -> ValueBuf {
        let room = if n >= DIRECT_MIN { DIRECT_ALIGN } else { 0 };
        let need = room + VALUE_HEAD + n + TAG;
        let mut buf: Vec<u8> = if room > 0 {
            spare_buf(need)
        } else {
            Vec::with_capacity(need)
        };
        let start = match room {
            0 => 0,
            _ => buf.as_ptr().align_offset(DIRECT_ALIGN).min(room),
        };
        buf.resize(start + VALUE_HEAD, 0);
        ValueBuf { buf, start }
    }

    /// Appends to the plaintext (a value that outgrows its room is moved, and written the
    /// ordinary way).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.start - VALUE_HEAD
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn plaintext(&self) -> &[u8] {
        &self.buf[self.start + VALUE_HEAD..]
    }
}

/// Large value buffers whose value has been written, kept a little while for the next one:
/// a build printing fast stores a value of a few megabytes every few milliseconds, and a
/// fresh buffer for each had its pages faulted in anew (a third of gathering a batch,
/// measured). At most [`SPARES`], each given up once [`SPARE_FOR`] has passed unused (when
/// the next value is made).
static SPARE: std::sync::Mutex<Vec<(std::time::Instant, Vec<u8>)>> =
    std::sync::Mutex::new(Vec::new());
const SPARES: usize = 2;
const SPARE_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// An empty buffer with room for `need` bytes: a spare one when one fits (not more than
/// twice the room), else a new one with its room rounded up to a mebibyte (so that values
/// of about the same size fit each other's buffers).
fn spare_buf(need: usize) -> Vec<u8> {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    spare.retain(|(at, _)| at.elapsed() < SPARE_FOR);
    let fits = |b: &Vec<u8>| (need..=2 * need).contains(&b.capacity());
    match spare.iter().position(|(_, b)| fits(b)) {
        Some(i) => {
            let mut buf = spare.swap_remove(i).1;
            buf.clear();
            buf
        }
        None => Vec::with_capacity(need.next_multiple_of(1 << 20)),
    }
}

/// Keeps `buf` (its value written) for a later value, if it is a large one and there is room.
fn give_back(buf: Vec<u8>) {
    if buf.capacity() >= DIRECT_MIN {
        let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARES {
            spare.push((std::time::Instant::now(), buf));
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> From<&T> for ValueBuf {
    fn from(data: &T) -> ValueBuf {
        let data = data.as_ref();
        let mut v = ValueBuf::with_capacity(data.len());
        v.extend_from_slice(data);
        v
    }
}

impl From<Vec<u8>> for ValueBuf {
    fn from(data: Vec<u8>) -> ValueBuf {
        ValueBuf::from(&data)
    }
}

impl From<Bytes> for ValueBuf {
    fn from(data: Bytes) -> ValueBuf {
        ValueBuf::from(&data)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} does not exist")]
    NotFound(String),
    #[error("blob {0} is corrupt or was tampered with")]
    Corrupt(String),
    #[error("invalid blob path {0}")]
    BadPath(String),
    #[error("range {0:?} is outside the blob")]
    BadRange(Range<u64>),
    #[error("blob storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("reading the source: {0}")]
    Source(#[from] std::io::Error),
    #[error("making the blob durable: {0}")]
    Durable(std::io::Error),
    #[error("{0}")]
    Key(String),
}

pub type Result<T> = std::result::Result<T, BlobError>;

/// What a write recorded: keep it with the blob's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Plaintext size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
    /// The blob's data key, encrypted under the master key.
    pub wrapped_key: Vec<u8>,
}

/// A blob store over an `object_store` backend.
#[derive(Clone, Debug)]
pub struct BlobStore {
    backend: Arc<dyn ObjectStore>,
    key: MasterKey,
    /// The local-filesystem backend, whose writes are made durable here (`object_store`
    /// renames a finished file into place without `fsync`), and its directory.
    local: Option<(Arc<LocalFileSystem>, std::path::PathBuf)>,
    /// Directories of the local backend whose own entries (in their parents, up to the
    /// root) are known durable: a later write into one syncs only the file and it (a log
    /// chunk synced six inodes before). Sound because nothing removes a directory of the
    /// store (`object_store` deletes files only), so a known one cannot come back new.
    durable_dirs: Arc<std::sync::Mutex<std::collections::HashSet<std::path::PathBuf>>>,
}

fn nonce(prefix: &[u8], index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(prefix);
    n[8..].copy_from_slice(&(index as u32).to_be_bytes());
    n
}

/// Associated data binding a chunk to its position and to whether it is the last one.
fn aad(index: u64, last: bool) -> [u8; 9] {
    let mut a = [0u8; 9];
    a[..8].copy_from_slice(&index.to_be_bytes());
    a[8] = u8::from(last);
    a
}

/// Sealed size of a blob of `size` plaintext bytes (an empty blob still has one chunk).
pub fn sealed_len(size: u64) -> u64 {
    let chunks = size.div_ceil(CHUNK as u64).max(1);
    HEADER as u64 + size + chunks * TAG as u64
}

fn check_path(path: &str) -> Result<StorePath> {
    let ok = !path.is_empty()
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !ok {
        return Err(BlobError::BadPath(path.into()));
    }
    StorePath::parse(path).map_err(|_| BlobError::BadPath(path.into()))
}

impl BlobStore {
    /// The embedded default: blobs under `dir` on the local filesystem.
    pub fn local(dir: &Path, key: MasterKey) -> Result<BlobStore> {
        std::fs::create_dir_all(dir)?;
        let fs = Arc::new(LocalFileSystem::new_with_prefix(dir)?);
        Ok(BlobStore {
            backend: fs.clone(),
            key,
            local: Some((fs, std::fs::canonicalize(dir)?)),
            durable_dirs: Arc::default(),
        })
    }

    /// The backend a URL names: `file:///dir` (or a plain path), or `s3://bucket/prefix` on
    /// AWS S3 or any S3-compatible store. The S3 endpoint, credentials and region come from
    /// `SLIPWAY_BLOB_ENDPOINT`, `SLIPWAY_BLOB_ACCESS_KEY_ID`, `SLIPWAY_BLOB_SECRET_ACCESS_KEY`
    /// and `SLIPWAY_BLOB_REGION`, else from the standard `AWS_*` variables.
    pub fn from_url(url: &str, key: MasterKey) -> Result<BlobStore> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BlobError::Key(format!("{url}: no bucket named")));
            }
            let env = |name: &str| std::env::var(format!("SLIPWAY_BLOB_{name}")).ok();
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = env("ENDPOINT") {
                b = b
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_endpoint(endpoint);
            }
            if let Some(v) = env("ACCESS_KEY_ID") {
                b = b.with_access_key_id(v);
            }
            if let Some(v) = env("SECRET_ACCESS_KEY") {
                b = b.with_secret_access_key(v);
            }
            if let Some(v) = env("REGION") {
                b = b.with_region(v);
            }
            let s3: Arc<dyn ObjectStore> = Arc::new(b.build()?);
            let backend: Arc<dyn ObjectStore> = match prefix.trim_matches('/') {
                "" => s3,
                p => Arc::new(object_store::prefix::PrefixStore::new(s3, p)),
            };
            return Ok(BlobStore::with_backend(backend, key));
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        if dir.contains("://") {
            return Err(BlobError::Key(format!(
                "{url}: unsupported blob store URL (use file:///dir or s3://bucket/prefix)"
            )));
        }
        BlobStore::local(Path::new(dir), key)
    }

    /// Seals a small value to keep inline (in a database row) instead of as a blob: the
    /// same envelope encryption, one data key per value.
    pub fn seal_small(&self, plaintext: &[u8]) -> Vec<u8> {
        self.key.seal(plaintext)
    }

    /// Opens a value sealed by [`BlobStore::seal_small`].
    pub fn open_small(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        self.key
            .open(sealed)
            .map_err(|_| BlobError::Corrupt("inline value".into()))
    }

    /// Any `object_store` backend (S3-compatible stores at scale).
    pub fn with_backend(backend: Arc<dyn ObjectStore>, key: MasterKey) -> BlobStore {
        BlobStore {
            backend,
            key,
            local: None,
            durable_dirs: Arc::default(),
        }
    }

    /// Writes a blob from a stream of plaintext chunks; visible only once complete.
    pub async fn put<S>(&self, path: &str, source: S) -> Result<BlobInfo>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send,
    {
        // The work happens in one non-generic function, so that it is compiled (and
        // optimised) in this crate rather than in every caller's.
        self.put_boxed(path, source.boxed()).await
    }

    fn put_boxed<'a>(
        &'a self,
        path: &'a str,
        source: futures_util::stream::BoxStream<'a, std::io::Result<Bytes>>,
    ) -> futures_util::future::BoxFuture<'a, Result<BlobInfo>> {
        Box::pin(self.put_stream(path, source))
    }

    async fn put_stream(
        &self,
        path: &str,
        mut source: futures_util::stream::BoxStream<'_, std::io::Result<Bytes>>,
    ) -> Result<BlobInfo> {
        let location = check_path(path)?;
        let data_key = random_bytes::<32>();
        let cipher = Gcm::new(&data_key).map_err(|e| BlobError::Key(e.to_string()))?;
        let prefix = random_bytes::<8>();
        let mut upload = self.backend.put_multipart(&location).await?;
        let mut out = BytesMut::with_capacity(PART + CHUNK);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&prefix);
        let mut pending = BytesMut::new();
        let mut hasher = Sha256::new();
        let (mut size, mut index) = (0u64, 0u64);
        let result: Result<()> = async {
            loop {
                let next = source.next().await.transpose()?;
                if let Some(bytes) = &next {
                    hasher.update(bytes);
                    size += bytes.len() as u64;
                    pending.extend_from_slice(bytes);
                }
                let done = next.is_none();
                // Seal full chunks; the final (possibly short or empty) chunk once input ends.
                while pending.len() > CHUNK
                    || (done && (pending.len() == CHUNK || index == 0 || !pending.is_empty()))
                {
                    let take = pending.len().min(CHUNK);
                    let last = done && pending.len() <= CHUNK;
                    let chunk = pending.split_to(take);
                    let sealed = cipher.seal(&nonce(&prefix, index), &aad(index, last), &chunk);
                    out.extend_from_slice(&sealed);
                    index += 1;
                    if last {
                        break;
                    }
                }
                if out.len() >= PART || done {
                    upload
                        .put_part(PutPayload::from(out.split().freeze()))
                        .await?;
                }
                if done {
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(e) = result {
            let _ = upload.abort().await;
            return Err(e);
        }
        upload.complete().await?;
        self.make_durable(&location).await?;
        Ok(BlobInfo {
            size,
            sha256: hex::encode(hasher.finalize()),
            wrapped_key: self.key.encrypt(&data_key),
        })
    }

    /// Makes a blob just written durable before it is acknowledged: on the local filesystem
    /// the file, then every directory from its own up to the store's root (new directories
    /// included). Other backends are durable when their write returns.
    async fn make_durable(&self, location: &StorePath) -> Result<()> {
        let Some((fs, root)) = &self.local else {
            return Ok(());
        };
        let (root, file) = (root.clone(), fs.path_to_filesystem(location)?);
        let known = self.durable_dirs.clone();
        blocking(move || {
            std::fs::File::open(&file)?.sync_all()?;
            sync_dirs(&root, &file, &known)
        })
        .await
    }

    /// Writes a value of a few megabytes at most as one blob, sealed whole: a fresh data key,
    /// one AES-256-GCM seal bound to the blob's path, one write, durable when this returns.
    /// What [`BlobStore::put`] adds for large objects (chunked sealing for ranged reads, a
    /// SHA-256 of the plaintext) a value read whole does not need: its tag authenticates all
    /// of it. The answer is the wrapped data key, to keep where the value is recorded.
    ///
    /// Values are written once and read rarely (a build's log, chunk by chunk), so on the
    /// local filesystem a value stays out of the page cache: see [`write_new_file`].
    pub async fn put_value(&self, path: &str, plaintext: impl Into<ValueBuf>) -> Result<Vec<u8>> {
        let location = check_path(path)?;
        let data_key = random_bytes::<32>();
        let cipher = Gcm::new(&data_key).map_err(|e| BlobError::Key(e.to_string()))?;
        let nonce = random_bytes::<12>();
        let ValueBuf { mut buf, start } = plaintext.into();
        let head = start..start + VALUE_HEAD;
        buf[head.start..head.start + VALUE_MAGIC.len()].copy_from_slice(VALUE_MAGIC);
        buf[head.start + VALUE_MAGIC.len()..head.end].copy_from_slice(&nonce);
        cipher.seal_in_place(&nonce, path.as_bytes(), &mut buf, head.end);
        match &self.local {
            Some((fs, root)) => {
                let (root, file) = (root.clone(), fs.path_to_filesystem(&location)?);
                let known = self.durable_dirs.clone();
                blocking(move || {
                    write_new_file(&file, &buf[start..])?;
                    give_back(buf);
                    sync_dirs(&root, &file, &known)
                })
                .await?;
            }
            None => {
                let sealed = Bytes::from(buf).slice(start..);
                self.backend
                    .put(&location, PutPayload::from(sealed))
                    .await?;
            }
        }
        Ok(self.key.encrypt(&data_key))
    }

    /// A value written by [`BlobStore::put_value`], checked whole.
    pub async fn get_value(&self, path: &str, wrapped_key: &[u8]) -> Result<Vec<u8>> {
        let location = check_path(path)?;
        let corrupt = || BlobError::Corrupt(path.into());
        let key = self.key.decrypt(wrapped_key).map_err(|_| corrupt())?;
        let cipher = Gcm::new(&key).map_err(|_| corrupt())?;
        let sealed = match self.backend.get(&location).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BlobError::NotFound(path.into()))
            }
            Err(e) => return Err(e.into()),
        };
        let rest = sealed.strip_prefix(VALUE_MAGIC).ok_or_else(corrupt)?;
        let (nonce, body) = rest.split_at_checked(12).ok_or_else(corrupt)?;
        cipher
            .open(nonce, path.as_bytes(), body)
            .map_err(|_| corrupt())
    }

    fn cipher(&self, info: &BlobInfo, path: &str) -> Result<Gcm> {
        let key = self
            .key
            .decrypt(&info.wrapped_key)
            .map_err(|_| BlobError::Corrupt(path.into()))?;
        Gcm::new(&key).map_err(|_| BlobError::Corrupt(path.into()))
    }

    async fn read_sealed(
        &self,
        location: &StorePath,
        path: &str,
        range: Range<u64>,
    ) -> Result<Bytes> {
        match self.backend.get_range(location, range).await {
            Ok(b) => Ok(b),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(path.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads plaintext bytes `range` (all when `None`) as a stream of chunks. A whole read is
    /// checked against the recorded SHA-256; any tampering fails the stream with `Corrupt`.
    pub fn get(
        &self,
        path: &str,
        info: &BlobInfo,
        range: Option<Range<u64>>,
    ) -> futures_util::stream::BoxStream<'static, Result<Bytes>> {
        let this = self.clone();
        let path = path.to_owned();
        let info = info.clone();
        futures_util::stream::once(async move { this.read_stream(path, info, range).await })
            .flat_map(|r| match r {
                Ok(s) => s.boxed(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }

    async fn read_stream(
        &self,
        path: String,
        info: BlobInfo,
        range: Option<Range<u64>>,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static> {
        let location = check_path(&path)?;
        let whole = range.is_none();
        let range = range.unwrap_or(0..info.size);
        if range.start > range.end || range.end > info.size {
            return Err(BlobError::BadRange(range));
        }
        let cipher = self.cipher(&info, &path)?;
        let header = self.read_sealed(&location, &path, 0..HEADER as u64).await?;
        if &header[..4] != MAGIC {
            return Err(BlobError::Corrupt(path));
        }
        let prefix: [u8; 8] = header[4..12]
            .try_into()
            .map_err(|_| BlobError::Corrupt(path.clone()))?;
        let chunks = info.size.div_ceil(CHUNK as u64).max(1);
        let first = range.start / CHUNK as u64;
        let end_chunk = if range.is_empty() {
            first
        } else {
            (range.end - 1) / CHUNK as u64 + 1
        };
        let this = self.clone();
        // State: the next chunk to yield, the hash so far, and a window of sealed bytes
        // fetched ahead (one backend request per WINDOW chunks, not per chunk).
        let state = (first, Sha256::new(), Bytes::new(), first);
        Ok(futures_util::stream::try_unfold(
            state,
            move |(index, mut hasher, mut window, mut window_first)| {
                let (this, path, location, cipher, info, range) = (
                    this.clone(),
                    path.clone(),
                    location.clone(),
                    cipher.clone(),
                    info.clone(),
                    range.clone(),
                );
                async move {
                    if index >= end_chunk.max(first + u64::from(whole && info.size == 0)) {
                        if whole && hex::encode(hasher.finalize()) != info.sha256 {
                            return Err(BlobError::Corrupt(path));
                        }
                        return Ok(None);
                    }
                    let sealed_at = |chunk: u64| HEADER as u64 + chunk * (CHUNK + TAG) as u64;
                    let plain_start = index * CHUNK as u64;
                    let plain_len = (info.size - plain_start).min(CHUNK as u64);
                    let offset = sealed_at(index) - sealed_at(window_first);
                    if index < window_first || offset + plain_len + TAG as u64 > window.len() as u64
                    {
                        // Fetch the next window: up to WINDOW chunks, never past the range.
                        let last = (index + WINDOW).min(end_chunk.max(index + 1));
                        let end = (sealed_at(last - 1)
                            + ((info.size - (last - 1) * CHUNK as u64).min(CHUNK as u64))
                            + TAG as u64)
                            .min(sealed_len(info.size));
                        window = this
                            .read_sealed(&location, &path, sealed_at(index)..end)
                            .await?;
                        window_first = index;
                    }
                    let at = (sealed_at(index) - sealed_at(window_first)) as usize;
                    let take = plain_len as usize + TAG;
                    if window.len() < at + take {
                        return Err(BlobError::Corrupt(path));
                    }
                    let sealed = window.slice(at..at + take);
                    let last = index + 1 == chunks;
                    let plain = cipher
                        .open(&nonce(&prefix, index), &aad(index, last), &sealed)
                        .map_err(|_| BlobError::Corrupt(path.clone()))?;
                    if whole {
                        hasher.update(&plain);
                    }
                    let from = range.start.saturating_sub(plain_start) as usize;
                    let to = (range.end - plain_start).min(plain_len) as usize;
                    Ok(Some((
                        Bytes::from(plain).slice(from..to.max(from)),
                        (index + 1, hasher, window, window_first),
                    )))
                }
            },
        ))
    }

    /// The blobs under `prefix` (a directory of paths), by path.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = check_path(prefix)?;
        let mut found = Vec::new();
        let mut listing = self.backend.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            found.push(meta?.location.to_string());
        }
        Ok(found)
    }

    /// Deletes a blob (absent is fine).
    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.backend.delete(&check_path(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs blocking file work off the async threads.
async fn blocking(f: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Durable(std::io::Error::other(e)))?
        .map_err(BlobError::Durable)
}

/// Syncs the directories that hold the entry of `file` (just written under `root`): its
/// own, and each one above that may be new — until one whose entry is known durable.
fn sync_dirs(
    root: &Path,
    file: &Path,
    known: &std::sync::Mutex<std::collections::HashSet<std::path::PathBuf>>,
) -> std::io::Result<()> {
    let mut synced = Vec::new();
    let mut dir = file.parent();
    while let Some(d) = dir {
        std::fs::File::open(d)?.sync_all()?;
        synced.push(d.to_path_buf());
        if d == root || known.lock().is_ok_and(|k| k.contains(d)) {
            break;
        }
        dir = d.parent();
    }
    if let Ok(mut k) = known.lock() {
        // A bound on what is remembered (one entry per build's log directory).
        if k.len() > 100_000 {
            k.clear();
        }
        k.extend(synced);
    }
    Ok(())
}

/// Writes `data` as the new file `dest`, complete and synced before it appears: into a
/// staging file beside it (named as `object_store` names its own, so that listings skip
/// it), renamed into place.
///
/// The file's pages do not stay in the page cache: written once and read rarely, a value
/// left there makes the cache grow into memory not touched before — a fault of the host's
/// per page in a virtual machine (measured there, 100 MB in 1 MiB files: 0.28–0.38 s of
/// system time kept, 0.08–0.12 s let go). From memory aligned for it, the whole blocks are
/// written straight to disk (`O_DIRECT`: not copied at all, the largest saving) and only
/// the tail through the cache; where the filesystem does not take direct writes, all of it
/// goes through the cache and is let go once on disk.
fn write_new_file(dest: &Path, data: &[u8]) -> std::io::Result<()> {
    use rustix::fs::OFlags;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let aligned = data.as_ptr().align_offset(DIRECT_ALIGN) == 0;
    let direct_len = if aligned {
        data.len() / DIRECT_ALIGN * DIRECT_ALIGN
    } else {
        0
    };
    let open = |staging: &Path, direct: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        if direct {
            if refused(Refuse::Open) {
                return Err(std::io::Error::from_raw_os_error(einval_code()));
            }
            o.custom_flags(OFlags::DIRECT.bits() as i32);
        }
        o.open(staging)
    };
    let einval = |e: &std::io::Error| e.raw_os_error() == Some(einval_code());
    let (staging, mut file, opened_direct) = loop {
        let mut staging = dest.as_os_str().to_owned();
        staging.push(format!("#{}", u64::from_le_bytes(random_bytes::<8>())));
        let staging = std::path::PathBuf::from(staging);
        let opened = match open(&staging, direct_len > 0) {
            Err(e) if einval(&e) => open(&staging, false).map(|f| (f, false)),
            r => r.map(|f| (f, direct_len > 0)),
        };
        match opened {
            Ok((f, direct)) => break (staging, f, direct),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match dest.parent() {
                Some(parent) if !parent.exists() => std::fs::create_dir_all(parent)?,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        }
    };
    let written = (|| {
        let (mut done, mut direct) = (0, opened_direct);
        while direct && done < direct_len {
            let wrote = if refused(Refuse::Write) {
                Err(std::io::Error::from_raw_os_error(einval_code()))
            } else {
                file.write(&data[done..direct_len])
            };
            match wrote {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // A device asking for larger blocks: the rest goes through the cache.
                Err(e) if einval(&e) => direct = false,
                Err(e) => return Err(e),
            }
        }
        if done < data.len() {
            if opened_direct {
                let flags = rustix::fs::fcntl_getfl(&file)?;
                rustix::fs::fcntl_setfl(&file, flags - OFlags::DIRECT)?;
            }
            file.write_all(&data[done..])?;
        }
        file.sync_all()?;
        // Advice: a failure changes nothing but memory use.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        std::fs::rename(&staging, dest)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written
}

fn einval_code() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

/// Where a filesystem that does not take direct writes says so (`EINVAL`): at the open, or
/// at a write (a device whose blocks are larger than [`DIRECT_ALIGN`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Refuse {
    Open,
    Write,
}

#[cfg(test)]
thread_local! {
    /// Tests: the refusal this thread's direct writes meet, as such a filesystem's would.
    static REFUSE_DIRECT: std::cell::Cell<Option<Refuse>> = const { std::cell::Cell::new(None) };
}

/// Whether a direct open or write is refused here (only ever in tests: the filesystems of
/// the machines they run on all take direct writes).
fn refused(at: Refuse) -> bool {
    #[cfg(test)]
    return REFUSE_DIRECT.get() == Some(at);
    #[cfg(not(test))]
    {
        let _ = at;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(data: &[u8], piece: usize) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin {
        let pieces: Vec<std::io::Result<Bytes>> = data
            .chunks(piece.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(pieces)
    }

    async fn collect(s: impl Stream<Item = Result<Bytes>>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        futures_util::pin_mut!(s);
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    }

    /// The names of the files in `dir`.
    fn file_names(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    fn store(dir: &Path) -> BlobStore {
        BlobStore::local(
            &dir.join("blobs"),
            MasterKey::from_hex(&"ab".repeat(32)).unwrap(),
        )
        .unwrap()
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn round_trips_every_size_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let d = data(size);
            let info = blobs
                .put(&format!("t/{size}"), source(&d, 7000))
                .await
                .unwrap();
            assert_eq!(info.size, size as u64);
            let on_disk = std::fs::read(dir.path().join(format!("blobs/t/{size}"))).unwrap();
            assert_eq!(on_disk.len() as u64, sealed_len(size as u64));
            if size > 16 {
                assert!(
                    !on_disk.windows(16).any(|w| w == &d[..16]),
                    "plaintext on disk"
                );
            }
            assert_eq!(
                collect(blobs.get(&format!("t/{size}"), &info, None))
                    .await
                    .unwrap(),
                d
            );
            for (a, b) in [
                (0, size),
                (size / 3, size / 2),
                (size.saturating_sub(1), size),
                (0, 0),
            ] {
                let r = a as u64..b as u64;
                assert_eq!(
                    collect(blobs.get(&format!("t/{size}"), &info, Some(r)))
                        .await
                        .unwrap(),
                    &d[a..b],
                    "{size} {a}..{b}"
                );
            }
            assert!(matches!(
                collect(blobs.get(&format!("t/{size}"), &info, Some(0..size as u64 + 1))).await,
                Err(BlobError::BadRange(_))
            ));
        }
    }

    #[tokio::test]
    async fn tampering_and_truncation_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let d = data(2 * CHUNK + 5);
        let info = blobs.put("x/y", source(&d, CHUNK)).await.unwrap();
        let file = dir.path().join("blobs/x/y");
        let good = std::fs::read(&file).unwrap();
        let mut flipped = good.clone();
        flipped[HEADER + CHUNK + 3] ^= 1;
        std::fs::write(&file, &flipped).unwrap();
        assert!(matches!(
            collect(blobs.get("x/y", &info, None)).await,
            Err(BlobError::Corrupt(_))
        ));
        // Dropping the last chunk and claiming a shorter size fails: the last-chunk mark.
        std::fs::write(&file, &good[..HEADER + 2 * (CHUNK + TAG)]).unwrap();
        let short = BlobInfo {
            size: 2 * CHUNK as u64,
            ..info.clone()
        };
        assert!(matches!(
            collect(blobs.get("x/y", &short, None)).await,
            Err(BlobError::Corrupt(_))
        ));
        std::fs::write(&file, &good).unwrap();
        let wrong_hash = BlobInfo {
            sha256: "00".repeat(32),
            ..info.clone()
        };
        assert!(matches!(
            collect(blobs.get("x/y", &wrong_hash, None)).await,
            Err(BlobError::Corrupt(_))
        ));
        assert_eq!(collect(blobs.get("x/y", &info, None)).await.unwrap(), d);
        blobs.delete("x/y").await.unwrap();
        assert!(matches!(
            collect(blobs.get("x/y", &info, None)).await,
            Err(BlobError::NotFound(_))
        ));
        for bad in ["", "../etc", "a//b", "a/./b"] {
            assert!(
                matches!(
                    blobs.put(bad, source(b"x", 1)).await,
                    Err(BlobError::BadPath(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn large_value_buffers_are_kept_for_the_next_value_within_bounds() {
        let need = (4 << 20) + 100;
        let a = spare_buf(need);
        assert!(a.is_empty() && a.capacity() >= need);
        assert_eq!(a.capacity() % (1 << 20), 0, "rounded up to a mebibyte");
        for _ in 0..SPARES + 2 {
            give_back(Vec::with_capacity(need));
        }
        give_back(Vec::with_capacity(10)); // small: never kept
        assert!(SPARE.lock().unwrap().len() <= SPARES);
        assert!(SPARE
            .lock()
            .unwrap()
            .iter()
            .all(|(_, b)| b.capacity() >= DIRECT_MIN));
        // What comes back is empty, whatever it held, and has the room asked for.
        let mut b = spare_buf(need);
        assert!(b.is_empty() && b.capacity() >= need);
        b.extend_from_slice(b"held");
        give_back(b);
        let c = spare_buf(need);
        assert!(
            c.is_empty()
                && c.capacity() >= need
                && c.capacity() <= 2 * need.next_multiple_of(1 << 20)
        );
    }

    #[tokio::test]
    async fn values_round_trip_sealed_and_are_checked_whole() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let d = data(3 * CHUNK + 7);
        let key = blobs.put_value("v/one", &d).await.unwrap();
        assert_eq!(blobs.get_value("v/one", &key).await.unwrap(), d);
        let file = dir.path().join("blobs/v/one");
        let good = std::fs::read(&file).unwrap();
        assert_eq!(good.len(), 4 + 12 + d.len() + TAG);
        assert!(!good.windows(64).any(|w| w == &d[..64]), "sealed on disk");
        let corrupt = |r: Result<Vec<u8>>| matches!(r, Err(BlobError::Corrupt(_)));
        // A flipped bit, a cut, another value's key, the same bytes under another name.
        let mut flipped = good.clone();
        flipped[100] ^= 1;
        std::fs::write(&file, &flipped).unwrap();
        assert!(corrupt(blobs.get_value("v/one", &key).await));
        std::fs::write(&file, &good[..good.len() - 1]).unwrap();
        assert!(corrupt(blobs.get_value("v/one", &key).await));
        std::fs::write(&file, &good).unwrap();
        let other = blobs.put_value("v/two", b"another").await.unwrap();
        assert!(corrupt(blobs.get_value("v/one", &other).await));
        std::fs::write(dir.path().join("blobs/v/two"), &good).unwrap();
        assert!(
            corrupt(blobs.get_value("v/two", &key).await),
            "bound to its name"
        );
        assert_eq!(blobs.get_value("v/one", &key).await.unwrap(), d);
        // Large values, laid out for a direct write (whole blocks and a tail) or grown out
        // of their room (written the ordinary way): whole, exact, nothing staged left over.
        for (i, size) in [DIRECT_MIN + 123, 4 * DIRECT_MIN].into_iter().enumerate() {
            let big = data(size);
            let mut aligned = ValueBuf::with_capacity(size);
            aligned.extend_from_slice(&big);
            assert_eq!(aligned.plaintext(), &big[..]);
            let mut grown = ValueBuf::with_capacity(10);
            grown.extend_from_slice(&big);
            for (name, value) in [("aligned", aligned), ("grown", grown)] {
                let path = format!("big/{i}/{name}");
                let key = blobs.put_value(&path, value).await.unwrap();
                assert_eq!(blobs.get_value(&path, &key).await.unwrap(), big, "{path}");
                let on_disk = std::fs::metadata(dir.path().join("blobs").join(&path)).unwrap();
                assert_eq!(on_disk.len() as usize, VALUE_HEAD + size + TAG);
            }
            let names = file_names(&dir.path().join(format!("blobs/big/{i}")));
            assert_eq!(names.len(), 2, "{names:?}");
            assert_eq!(blobs.list(&format!("big/{i}")).await.unwrap().len(), 2);
        }
        // Empty values too; gone once deleted; names checked.
        let empty = blobs.put_value("v/empty", b"").await.unwrap();
        assert!(blobs.get_value("v/empty", &empty).await.unwrap().is_empty());
        blobs.delete("v/one").await.unwrap();
        assert!(matches!(
            blobs.get_value("v/one", &key).await,
            Err(BlobError::NotFound(_))
        ));
        assert!(matches!(
            blobs.put_value("../x", b"x").await,
            Err(BlobError::BadPath(_))
        ));
    }

    /// A filesystem refusing direct writes, at the open or at the first write: the value is
    /// written through the cache instead, whole, and nothing staged is left beside it.
    #[test]
    fn a_refused_direct_write_goes_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        // Page-aligned data, some whole blocks and a tail.
        let size = 3 * DIRECT_ALIGN + 777;
        let mut room = vec![0u8; size + DIRECT_ALIGN];
        let start = room.as_ptr().align_offset(DIRECT_ALIGN);
        let data = &mut room[start..start + size];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        for refuse in [None, Some(Refuse::Open), Some(Refuse::Write)] {
            REFUSE_DIRECT.set(refuse);
            let dest = dir.path().join(format!("{refuse:?}"));
            let written = write_new_file(&dest, data);
            REFUSE_DIRECT.set(None);
            written.unwrap();
            assert_eq!(std::fs::read(&dest).unwrap(), data, "{refuse:?}");
        }
        let names = file_names(dir.path());
        assert_eq!(names.len(), 3, "nothing staged left: {names:?}");
    }

    #[tokio::test]
    async fn failed_writes_leave_nothing_visible() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let failing = futures_util::stream::iter(vec![
            Ok(Bytes::from(vec![1u8; 3 * CHUNK])),
            Err(std::io::Error::other("client went away")),
        ]);
        assert!(matches!(
            blobs.put("half/written", failing).await,
            Err(BlobError::Source(_))
        ));
        assert!(!dir.path().join("blobs/half/written").exists());
    }
}
