//! S3: buckets, versioned objects and multipart uploads kept in the database (rows) and the
//! blob store (bytes, encrypted), served over the S3 REST protocol by `s3s` ([`service`]).
//!
//! An object version is a row in `s3_objects` plus its segments: the blobs its bytes are in,
//! in order (one for a plain PUT, one per part of a multipart upload, so completing an upload
//! never copies bytes). A row is committed only after its blobs are complete, so a crash
//! leaves an object either absent or whole. Blobs that no row refers to any more go to
//! `blob_trash` in the same transaction and are deleted once it commits.

pub mod service;

use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use s3s::{s3_error, S3Error, S3Result};
use serde::{Deserialize, Serialize};
use slipway_blobs::{BlobInfo, BlobStore};
use slipway_iam::crypto::MasterKey;
use slipway_store::events::{self, Event};
use slipway_store::{Conn, Store, StoreError};
use sqlx::Row;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The largest object a single PUT (or copy) may create: 5 GiB, as in AWS.
pub const MAX_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// The smallest part, except the last, of a multipart upload.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
pub const MAX_PART_NUMBER: i32 = 10_000;

/// Object headers kept with a version and returned on GET/HEAD.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cache_control: Option<String>,
    /// RFC 7231 date, as the client sent it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub storage_class: Option<String>,
    /// `x-amz-meta-*` headers, names lower-cased without the prefix.
    #[serde(default)]
    pub user: BTreeMap<String, String>,
    /// The full-object checksum the client sent and Slipway verified: (algorithm, base64).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub checksum: Option<(String, String)>,
}

pub type Tags = Vec<(String, String)>;

#[derive(Debug, Clone)]
pub struct Bucket {
    pub name: String,
    pub region: String,
    pub created: f64,
    /// `None` when versioning was never configured; `Enabled` or `Suspended`.
    pub versioning: Option<String>,
}

/// One version of an object (or a delete marker).
#[derive(Debug, Clone)]
pub struct ObjectVersion {
    pub id: i64,
    pub bucket: String,
    pub key: String,
    pub version_id: String,
    pub latest: bool,
    pub delete_marker: bool,
    pub size: u64,
    /// Without quotes: MD5 hex, or `hex-N` for multipart objects.
    pub etag: String,
    pub meta: Meta,
    pub tags: Tags,
    pub parts: Option<i64>,
    pub modified: f64,
}

/// Where a stretch of an object's bytes lives: a blob, or inline (sealed) in its row.
#[derive(Debug, Clone)]
pub struct Segment {
    pub start: u64,
    pub blob: Option<String>,
    pub info: BlobInfo,
    pub inline: Option<Vec<u8>>,
}

/// Bytes received but not yet part of any object: a blob, or (small) sealed inline bytes.
#[derive(Debug)]
pub struct Staged {
    pub blob: Option<String>,
    pub info: BlobInfo,
    pub inline: Option<Vec<u8>>,
    pub md5: [u8; 16],
}

/// Objects up to this size live inline in their database row: one transaction to write,
/// one query to read, no blob files.
pub const INLINE_MAX: usize = 32 * 1024;

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub struct Upload {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated: f64,
    pub meta: Meta,
    pub tags: Tags,
    pub initiator: String,
}

#[derive(Debug, Clone)]
pub struct PartRow {
    pub part_number: i32,
    pub size: u64,
    pub etag: String,
    pub modified: f64,
}

/// One entry of a listing: an object version, or a common prefix rolled up by a delimiter.
#[derive(Debug, Clone)]
pub enum Entry {
    Object(Box<ObjectVersion>),
    Prefix(String),
}

/// A page of a listing; `next` resumes after its last entry.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub truncated: bool,
    /// (key, version row id) of the last entry; the key alone for prefixes.
    pub next: Option<(String, Option<i64>)>,
}

/// How a write happens: only if the key is free (`If-None-Match: *`), and the operation
/// named in its event.
#[derive(Debug, Clone, Copy)]
pub struct How<'a> {
    pub if_none_match: bool,
    pub reason: &'a str,
}

/// What a delete did.
#[derive(Debug, Clone, Default)]
pub struct Deleted {
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

/// The result of a write: the version written.
#[derive(Debug, Clone)]
pub struct Written {
    pub version_id: Option<String>,
    pub etag: String,
    pub size: u64,
    pub modified: f64,
}

/// An S3 error crossing the store's group commit (which needs `From<StoreError>`).
struct Failed(S3Error);

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Failed(internal(e))
    }
}

fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!(error = %e, "s3 internal error");
    s3_error!(
        InternalError,
        "We encountered an internal error. Please try again."
    )
}

fn new_blob_path() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("s3/{}/{}", &id[..2], id)
}

fn new_version_id() -> String {
    // 32 hex digits. Version ids sort by nothing (AWS's are opaque too); ordering uses the
    // row id.
    uuid::Uuid::new_v4().simple().to_string()
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Names Slipway's other routes use: never bucket names (S3's naming rules already exclude
/// them; this keeps it so should the rules be relaxed).
pub const RESERVED_BUCKETS: &[&str] = &["-", "v1"];

const OBJECT_COLUMNS: &str =
    "id, bucket, key, version_id, latest, delete_marker, size, etag, meta, tags, parts, modified";

/// The object lookups joined to their bucket: (by version id, current version).
static OBJECT_LOOKUP: std::sync::LazyLock<(String, String)> = std::sync::LazyLock::new(|| {
    let columns = OBJECT_COLUMNS
        .split(", ")
        .map(|c| format!("o.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let lookup = |which: &str| {
        format!("SELECT {columns} FROM s3_buckets b LEFT JOIN s3_objects o ON o.bucket = b.name AND o.key = $2 AND {which} WHERE b.name = $1")
    };
    (lookup("o.version_id = $3"), lookup("o.latest = 1"))
});

fn object_from_row(r: &sqlx::sqlite::SqliteRow) -> S3Result<ObjectVersion> {
    Ok(ObjectVersion {
        id: r.get(0),
        bucket: r.get(1),
        key: r.get(2),
        version_id: r.get(3),
        latest: r.get::<i64, _>(4) != 0,
        delete_marker: r.get::<i64, _>(5) != 0,
        size: r.get::<i64, _>(6) as u64,
        etag: r.get(7),
        meta: serde_json::from_str(r.get::<&str, _>(8)).map_err(internal)?,
        tags: serde_json::from_str(r.get::<&str, _>(9)).map_err(internal)?,
        parts: r.get(10),
        modified: r.get(11),
    })
}

/// The S3 data plane: buckets, objects, uploads.
#[derive(Clone, Debug)]
pub struct S3Store {
    store: Store,
    blobs: BlobStore,
    region: String,
    account_id: String,
    /// Set when a write may have queued blobs in `blob_trash`, so that writes that did not
    /// spare [`S3Store::purge_trash`] its query (true at start: a crash may have left some).
    trash_pending: Arc<AtomicBool>,
}

impl S3Store {
    pub fn new(store: Store, blobs: BlobStore, region: &str, account_id: &str) -> S3Store {
        S3Store {
            store,
            blobs,
            region: region.into(),
            account_id: account_id.into(),
            trash_pending: Arc::new(AtomicBool::new(true)),
        }
    }

    fn trash_queued(&self, queued: bool) {
        if queued {
            self.trash_pending.store(true, Ordering::Release);
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    // ----- buckets -----

    /// CreateBucket as `region`'s endpoint answers it: a location constraint must name
    /// that region (and none is given for us-east-1). Bucket names are global.
    pub async fn create_bucket(
        &self,
        name: &str,
        location: Option<&str>,
        region: &str,
    ) -> S3Result<()> {
        if RESERVED_BUCKETS.contains(&name) {
            return Err(s3_error!(
                InvalidBucketName,
                "The bucket name {name} is reserved."
            ));
        }
        match location {
            Some(l) if l != region || l == "us-east-1" => {
                return Err(s3_error!(
                    IllegalLocationConstraintException,
                    "The {l} location constraint is incompatible for the region specific endpoint this request was sent to."
                ));
            }
            None if region != "us-east-1" => {
                return Err(s3_error!(
                    IllegalLocationConstraintException,
                    "The unspecified location constraint is incompatible for the region specific endpoint this request was sent to."
                ));
            }
            _ => {}
        }
        let mut tx = self.store.begin_write().await.map_err(internal)?;
        let exists = sqlx::query("SELECT 1 FROM s3_buckets WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(internal)?
            .is_some();
        if exists {
            // us-east-1 answers 200 to re-creating a bucket one owns; other regions refuse.
            if region == "us-east-1" {
                return Ok(());
            }
            return Err(s3_error!(
                BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it."
            ));
        }
        sqlx::query("INSERT INTO s3_buckets (name, region, created) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(region)
            .bind(slipway_store::now())
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        tracing::info!(bucket = name, region, "bucket created");
        Ok(())
    }

    pub async fn bucket(&self, name: &str) -> S3Result<Bucket> {
        fetch_bucket(self.store.pool(), name).await
    }

    pub async fn list_buckets(&self) -> S3Result<Vec<Bucket>> {
        let rows = sqlx::query(&format!(
            "SELECT {BUCKET_COLUMNS} FROM s3_buckets ORDER BY name"
        ))
        .fetch_all(self.store.pool())
        .await
        .map_err(internal)?;
        Ok(rows.iter().map(bucket_from_row).collect())
    }

    pub async fn delete_bucket(&self, name: &str) -> S3Result<()> {
        let mut tx = self.store.begin_write().await.map_err(internal)?;
        bucket_in(&mut tx, name).await?;
        let used = sqlx::query("SELECT 1 FROM s3_objects WHERE bucket = $1 LIMIT 1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(internal)?
            .is_some();
        if used {
            return Err(s3_error!(
                BucketNotEmpty,
                "The bucket you tried to delete is not empty"
            ));
        }
        // Uploads in progress go with the bucket.
        sqlx::query("INSERT OR IGNORE INTO blob_trash (blob, queued) SELECT p.blob, $2 FROM s3_parts p JOIN s3_uploads u ON u.upload_id = p.upload_id WHERE u.bucket = $1")
            .bind(name)
            .bind(slipway_store::now())
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        sqlx::query("DELETE FROM s3_uploads WHERE bucket = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        sqlx::query("DELETE FROM s3_buckets WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        self.trash_queued(true);
        self.purge_trash().await;
        tracing::info!(bucket = name, "bucket deleted");
        Ok(())
    }

    pub async fn set_versioning(&self, name: &str, status: &str) -> S3Result<()> {
        if status != "Enabled" && status != "Suspended" {
            return Err(malformed_xml());
        }
        let mut tx = self.store.begin_write().await.map_err(internal)?;
        bucket_in(&mut tx, name).await?;
        sqlx::query("UPDATE s3_buckets SET versioning = $2 WHERE name = $1")
            .bind(name)
            .bind(status)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)
    }

    // ----- writing bytes -----

    /// Receives `body` (a new blob, or inline when it is small and `inline` allows),
    /// hashing it with `hashers` on the way; the bytes belong to nothing until
    /// [`S3Store::commit_object`] or [`S3Store::commit_part`] takes them.
    pub async fn stage<S>(
        &self,
        body: S,
        limit: u64,
        inline: bool,
        hashers: &mut s3s::checksum::ChecksumHasher,
    ) -> S3Result<Staged>
    where
        S: Stream<Item = std::io::Result<bytes::Bytes>> + Send,
    {
        use s3s::crypto::Checksum as _;
        let mut md5 = s3s::crypto::Md5::new();
        let mut seen = 0u64;
        let result = {
            let body = body.map(|chunk| {
                let chunk = chunk?;
                seen += chunk.len() as u64;
                if seen > limit {
                    return Err(std::io::Error::other(TooLarge));
                }
                md5.update(&chunk);
                hashers.update(&chunk);
                Ok(chunk)
            });
            let mut body = std::pin::pin!(body);
            // Read ahead up to INLINE_MAX: a body that ends by then stays inline.
            let mut head = Vec::new();
            let mut head_len = 0;
            while inline && head_len <= INLINE_MAX {
                match body.next().await {
                    Some(Ok(b)) => {
                        head_len += b.len();
                        head.push(b);
                    }
                    Some(Err(e)) => return Err(source_error(e)),
                    None => break,
                }
            }
            if inline && head_len <= INLINE_MAX {
                let data: Vec<u8> = head.concat();
                let sha256 = {
                    use sha2::Digest as _;
                    hex::encode(sha2::Sha256::digest(&data))
                };
                Ok((
                    None,
                    BlobInfo {
                        size: data.len() as u64,
                        sha256,
                        wrapped_key: Vec::new(),
                    },
                    Some(self.blobs.seal_small(&data)),
                ))
            } else {
                let blob = new_blob_path();
                let rest = futures_util::stream::iter(head.into_iter().map(Ok)).chain(body);
                match self.blobs.put(&blob, rest).await {
                    Ok(info) => Ok((Some(blob), info, None)),
                    Err(slipway_blobs::BlobError::Source(e)) => Err(source_error(e)),
                    Err(e) => Err(internal(e)),
                }
            }
        };
        let (blob, info, inline) = result?;
        Ok(Staged {
            blob,
            info,
            inline,
            md5: md5.finalize(),
        })
    }

    /// Deletes a staged blob that will not be committed.
    pub async fn discard(&self, staged: Staged) {
        if let Some(blob) = &staged.blob {
            if let Err(e) = self.blobs.delete(blob).await {
                tracing::warn!(error = %e, blob, "discarding a staged blob");
            }
        }
    }

    /// Makes staged bytes the new current version of `key`.
    pub async fn commit_object(
        &self,
        bucket: &str,
        key: &str,
        staged: Staged,
        meta: Meta,
        tags: Tags,
        how: How<'_>,
    ) -> S3Result<Written> {
        let etag = hex::encode(staged.md5);
        let size = staged.info.size;
        let segments = vec![Segment {
            start: 0,
            blob: staged.blob.clone(),
            info: staged.info.clone(),
            inline: staged.inline.clone(),
        }];
        let result = self
            .insert_version(
                bucket,
                key,
                NewVersion {
                    etag,
                    size,
                    meta,
                    tags,
                    parts: None,
                    segments,
                },
                how.if_none_match,
                how.reason,
            )
            .await;
        if result.is_err() {
            self.discard(staged).await;
        }
        result
    }

    async fn insert_version(
        &self,
        bucket: &str,
        key: &str,
        new: NewVersion,
        if_none_match: bool,
        reason: &str,
    ) -> S3Result<Written> {
        let (bucket, key, reason) = (bucket.to_owned(), key.to_owned(), reason.to_owned());
        self.grouped(move |this, conn| {
            Box::pin(async move {
                this.insert_in(conn, &bucket, &key, new, if_none_match, &reason)
                    .await
            })
        })
        .await
    }

    async fn insert_in(
        &self,
        conn: &mut Conn,
        bucket: &str,
        key: &str,
        new: NewVersion,
        if_none_match: bool,
        reason: &str,
    ) -> S3Result<Written> {
        let b = bucket_in(conn, bucket).await?;
        if if_none_match {
            let exists = sqlx::query("SELECT 1 FROM s3_objects WHERE bucket = $1 AND key = $2 AND latest = 1 AND delete_marker = 0")
                .bind(bucket)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(internal)?
                .is_some();
            if exists {
                return Err(precondition_failed());
            }
        }
        let (version_id, queued) = make_room(conn, &b, key).await?;
        self.trash_queued(queued);
        let now = slipway_store::now();
        let id: i64 = sqlx::query("INSERT INTO s3_objects (bucket, key, version_id, latest, delete_marker, size, etag, meta, tags, parts, modified) VALUES ($1, $2, $3, 1, 0, $4, $5, $6, $7, $8, $9) RETURNING id")
            .bind(bucket)
            .bind(key)
            .bind(&version_id)
            .bind(new.size as i64)
            .bind(&new.etag)
            .bind(to_json(&new.meta))
            .bind(to_json(&new.tags))
            .bind(new.parts)
            .bind(now)
            .fetch_one(&mut *conn)
            .await
            .map_err(internal)?
            .get(0);
        for (i, s) in new.segments.iter().enumerate() {
            sqlx::query("INSERT INTO s3_segments (object_id, idx, start, size, blob, sha256, wrapped_key, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(id)
                .bind(i as i64)
                .bind(s.start as i64)
                .bind(s.info.size as i64)
                .bind(&s.blob)
                .bind(&s.info.sha256)
                .bind(&s.info.wrapped_key)
                .bind(&s.inline)
                .execute(&mut *conn)
                .await
                .map_err(internal)?;
        }
        let versioned = b.versioning.is_some();
        self.event(
            conn,
            "Object Created",
            bucket,
            serde_json::json!({
                "version": "0",
                "bucket": {"name": bucket},
                "object": {
                    "key": key,
                    "size": new.size,
                    "etag": new.etag,
                    "version-id": if versioned { Some(&version_id) } else { None },
                    "sequencer": format!("{id:016X}"),
                },
                "reason": reason,
            }),
        )
        .await?;
        Ok(Written {
            version_id: versioned.then_some(version_id),
            etag: new.etag,
            size: new.size,
            modified: now,
        })
    }

    /// Runs a write through the store's group commit (see `slipway_store::group`).
    /// `f` gets the store and the connection; once the write is committed, blobs it
    /// queued for deletion are deleted.
    async fn grouped<T, F>(&self, f: F) -> S3Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(S3Store, &'c mut Conn) -> BoxFuture<'c, S3Result<T>> + Send + 'static,
    {
        let this = self.clone();
        let done = self
            .store
            .grouped(move |conn| Box::pin(async move { f(this, conn).await.map_err(Failed) }))
            .await
            .map_err(|Failed(e)| e)?;
        self.purge_trash().await;
        Ok(done)
    }

    async fn event(
        &self,
        conn: &mut Conn,
        detail_type: &'static str,
        bucket: &str,
        detail: serde_json::Value,
    ) -> S3Result<()> {
        // An object's event belongs to its bucket's region.
        let region: Option<String> =
            sqlx::query_scalar("SELECT region FROM s3_buckets WHERE name = $1")
                .bind(bucket)
                .fetch_optional(&mut *conn)
                .await
                .map_err(internal)?;
        events::append(
            conn,
            &Event {
                source: "aws.s3",
                detail_type,
                account: self.account_id.clone(),
                region: region.unwrap_or_else(|| self.region.clone()),
                resources: vec![format!("arn:aws:s3:::{bucket}")],
                detail,
            },
        )
        .await
        .map(|_| ())
        .map_err(internal)
    }

    /// Writes a whole object from `body` as the server's own writer (a pipeline's
    /// artifacts): staged, then made the current version; the version written.
    pub async fn put_stream<S>(
        &self,
        bucket: &str,
        key: &str,
        body: S,
        reason: &str,
    ) -> S3Result<Written>
    where
        S: Stream<Item = std::io::Result<bytes::Bytes>> + Send,
    {
        self.bucket(bucket).await?;
        let mut hashers = s3s::checksum::ChecksumHasher::default();
        let staged = self.stage(body, u64::MAX, true, &mut hashers).await?;
        let how = How {
            if_none_match: false,
            reason,
        };
        self.commit_object(bucket, key, staged, Meta::default(), Vec::new(), how)
            .await
    }

    /// The bytes of an object (its current version, or `version_id`), streamed.
    pub async fn get_stream(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<impl Stream<Item = Result<bytes::Bytes, slipway_blobs::BlobError>> + Send + 'static>
    {
        let object = self
            .object(bucket, key, version_id)
            .await
            .map_err(|(e, _)| e)?;
        let segments = self.segments(&object).await?;
        Ok(self.read(segments, 0..object.size))
    }

    // ----- reading -----

    /// The version `version_id` of `key`, or its current version. A current version that
    /// is a delete marker answers NoSuchKey (with the marker, for the caller's headers).
    pub async fn object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<ObjectVersion, (S3Error, Option<ObjectVersion>)> {
        let fail = |e| (e, None);
        // One query answers both "which bucket" and "which version".
        let (by_version, current) = &*OBJECT_LOOKUP;
        let row = match version_id {
            Some(v) => sqlx::query(by_version).bind(bucket).bind(key).bind(v),
            None => sqlx::query(current).bind(bucket).bind(key),
        }
        .fetch_optional(self.store.pool())
        .await
        .map_err(|e| fail(internal(e)))?
        .ok_or_else(|| fail(no_such_bucket(bucket)))?;
        if row.get::<Option<i64>, _>(0).is_none() {
            return Err(fail(match version_id {
                Some(_) => s3_error!(NoSuchVersion, "The specified version does not exist."),
                None => no_such_key(),
            }));
        }
        let object = object_from_row(&row).map_err(fail)?;
        if object.delete_marker {
            let e = if version_id.is_some() {
                s3_error!(
                    MethodNotAllowed,
                    "The specified method is not allowed against this resource."
                )
            } else {
                no_such_key()
            };
            return Err((e, Some(object)));
        }
        Ok(object)
    }

    pub async fn segments(&self, object: &ObjectVersion) -> S3Result<Vec<Segment>> {
        let rows = sqlx::query("SELECT start, size, blob, sha256, wrapped_key, data FROM s3_segments WHERE object_id = $1 ORDER BY idx")
            .bind(object.id)
            .fetch_all(self.store.pool())
            .await
            .map_err(internal)?;
        Ok(rows
            .iter()
            .map(|r| Segment {
                start: r.get::<i64, _>(0) as u64,
                blob: r.get(2),
                info: BlobInfo {
                    size: r.get::<i64, _>(1) as u64,
                    sha256: r.get(3),
                    wrapped_key: r.get(4),
                },
                inline: r.get(5),
            })
            .collect())
    }

    /// The plaintext bytes `range` of an object, streamed segment by segment.
    pub fn read(
        &self,
        segments: Vec<Segment>,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<bytes::Bytes, slipway_blobs::BlobError>> + Send + 'static {
        let blobs = self.blobs.clone();
        let parts: Vec<_> = segments
            .into_iter()
            .filter_map(|s| {
                let end = s.start + s.info.size;
                let from = range.start.max(s.start);
                let to = range.end.min(end);
                if from >= to && !(s.info.size == 0 && range.is_empty()) {
                    return None;
                }
                let local = (from - s.start)..(to.max(from) - s.start);
                let whole = local.start == 0 && local.end == s.info.size;
                Some((s, (!whole).then_some(local)))
            })
            .collect();
        futures_util::stream::iter(parts).flat_map(move |(s, local)| match (&s.inline, &s.blob) {
            (Some(sealed), _) => {
                let plain = blobs.open_small(sealed).map(|p| {
                    let r = local.unwrap_or(0..p.len() as u64);
                    bytes::Bytes::from(p).slice(r.start as usize..r.end as usize)
                });
                futures_util::stream::once(async move { plain }).boxed()
            }
            (None, Some(blob)) => blobs.get(blob, &s.info, local),
            (None, None) => futures_util::stream::once(async move {
                Err(slipway_blobs::BlobError::Corrupt(
                    "segment without bytes".into(),
                ))
            })
            .boxed(),
        })
    }

    // ----- deleting -----

    /// Deletes as S3 does: a version by id for good; otherwise the current version in an
    /// unversioned bucket, or a new delete marker in a versioned one.
    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<Deleted> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let version_id = version_id.map(str::to_owned);
        self.grouped(move |this, conn| {
            Box::pin(async move {
                this.delete_in(conn, &bucket, &key, version_id.as_deref())
                    .await
            })
        })
        .await
    }

    async fn delete_in(
        &self,
        conn: &mut Conn,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<Deleted> {
        let b = bucket_in(conn, bucket).await?;
        let deleted = match version_id {
            Some(v) => {
                let row = sqlx::query(
                    "SELECT id, latest, delete_marker FROM s3_objects WHERE bucket = $1 AND key = $2 AND version_id = $3",
                )
                .bind(bucket)
                .bind(key)
                .bind(v)
                .fetch_optional(&mut *conn)
                .await
                .map_err(internal)?;
                let Some(row) = row else {
                    // Deleting a version that does not exist succeeds, as in S3; a version id
                    // that could never exist is an error.
                    if v != "null" && (v.len() != 32 || !v.bytes().all(|c| c.is_ascii_hexdigit())) {
                        return Err(s3_error!(InvalidArgument, "Invalid version id specified"));
                    }
                    return Ok(Deleted {
                        version_id: Some(v.into()),
                        delete_marker: false,
                    });
                };
                let (id, latest, marker): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
                let queued = remove_version(conn, id).await?;
                self.trash_queued(queued);
                if latest != 0 {
                    sqlx::query("UPDATE s3_objects SET latest = 1 WHERE id = (SELECT max(id) FROM s3_objects WHERE bucket = $1 AND key = $2)")
                        .bind(bucket)
                        .bind(key)
                        .execute(&mut *conn)
                        .await
                        .map_err(internal)?;
                }
                Deleted {
                    version_id: Some(v.into()),
                    delete_marker: marker != 0,
                }
            }
            None if b.versioning.is_none() => {
                let row = sqlx::query(
                    "SELECT id FROM s3_objects WHERE bucket = $1 AND key = $2 AND latest = 1",
                )
                .bind(bucket)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(internal)?;
                if let Some(row) = row {
                    let queued = remove_version(conn, row.get(0)).await?;
                    self.trash_queued(queued);
                }
                Deleted::default()
            }
            None => {
                let (version_id, queued) = make_room(conn, &b, key).await?;
                self.trash_queued(queued);
                sqlx::query("INSERT INTO s3_objects (bucket, key, version_id, latest, delete_marker, size, etag, meta, tags, parts, modified) VALUES ($1, $2, $3, 1, 1, 0, '', '{}', '[]', NULL, $4)")
                    .bind(bucket)
                    .bind(key)
                    .bind(&version_id)
                    .bind(slipway_store::now())
                    .execute(&mut *conn)
                    .await
                    .map_err(internal)?;
                Deleted {
                    version_id: Some(version_id),
                    delete_marker: true,
                }
            }
        };
        self.event(
            conn,
            "Object Deleted",
            bucket,
            serde_json::json!({
                "version": "0",
                "bucket": {"name": bucket},
                "object": {"key": key, "version-id": deleted.version_id},
                "reason": "DeleteObject",
                "deletion-type": if deleted.delete_marker && version_id.is_none() { "Delete Marker Created" } else { "Permanently Deleted" },
            }),
        )
        .await?;
        Ok(deleted)
    }

    /// Deletes the blobs queued in `blob_trash` (when a write may have queued some).
    /// Failures stay queued for the next call.
    pub async fn purge_trash(&self) {
        if !self.trash_pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let rows = match sqlx::query("SELECT blob FROM blob_trash LIMIT 1000")
            .fetch_all(self.store.pool())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading the blob trash");
                return;
            }
        };
        for r in rows {
            let blob: String = r.get(0);
            match self.blobs.delete(&blob).await {
                Ok(()) => {
                    let _ = sqlx::query("DELETE FROM blob_trash WHERE blob = $1")
                        .bind(&blob)
                        .execute(self.store.pool())
                        .await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, blob, "deleting a blob");
                    self.trash_pending.store(true, Ordering::Release);
                }
            }
        }
    }

    // ----- listing -----

    /// Lists current objects (or, with `versions`, every version and delete marker) in key
    /// order, after `after` (a key, and for versions a row id within it), rolling keys up
    /// to common prefixes at `delimiter`.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<(String, Option<i64>)>,
        max: usize,
        versions: bool,
    ) -> S3Result<Listing> {
        self.bucket(bucket).await?;
        let mut out = Listing::default();
        // The cursor: rows strictly after (key, id) in (key asc, id desc) order.
        let mut cursor: (String, Option<i64>) = after.unwrap_or_default();
        // Resuming after a common prefix (or a key under one) skips everything under it.
        if let Some(p) = rollup(&cursor.0, prefix, delimiter) {
            cursor = (format!("{p}{}", char::MAX), None);
        }
        let batch = (max + 1).clamp(1, 1000) as i64;
        'outer: loop {
            let sql = format!(
                "SELECT {OBJECT_COLUMNS} FROM s3_objects WHERE bucket = $1 AND key >= $2 {} AND (key > $3 OR (key = $3 AND id < $4)) ORDER BY key, id DESC LIMIT $5",
                if versions { "" } else { "AND latest = 1 AND delete_marker = 0" }
            );
            let rows = sqlx::query(&sql)
                .bind(bucket)
                .bind(prefix)
                .bind(&cursor.0)
                .bind(cursor.1.unwrap_or(i64::MIN))
                .bind(batch)
                .fetch_all(self.store.pool())
                .await
                .map_err(internal)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let o = object_from_row(row)?;
                if !o.key.starts_with(prefix) {
                    break 'outer;
                }
                let rolled = rollup(&o.key, prefix, delimiter);
                if out.entries.len() >= max {
                    out.truncated = true;
                    break 'outer;
                }
                match rolled {
                    Some(p) => {
                        // Skip every key under this prefix.
                        cursor = (format!("{p}{}", char::MAX), None);
                        out.next = Some((p.clone(), None));
                        out.entries.push(Entry::Prefix(p));
                        continue 'outer;
                    }
                    None => {
                        cursor = (o.key.clone(), Some(o.id));
                        out.next = Some((o.key.clone(), versions.then_some(o.id)));
                        out.entries.push(Entry::Object(Box::new(o)));
                    }
                }
            }
            if (rows.len() as i64) < batch {
                break;
            }
        }
        if !out.truncated {
            out.next = None;
        }
        Ok(out)
    }

    /// The row id of a version, to resume a version listing after it.
    pub async fn version_row(&self, bucket: &str, key: &str, version_id: &str) -> S3Result<i64> {
        sqlx::query("SELECT id FROM s3_objects WHERE bucket = $1 AND key = $2 AND version_id = $3")
            .bind(bucket)
            .bind(key)
            .bind(version_id)
            .fetch_optional(self.store.pool())
            .await
            .map_err(internal)?
            .map(|r| r.get(0))
            .ok_or_else(|| s3_error!(InvalidArgument, "Invalid version id specified"))
    }

    // ----- tags -----

    pub async fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: Tags,
    ) -> S3Result<ObjectVersion> {
        let object = self
            .object(bucket, key, version_id)
            .await
            .map_err(|e| e.0)?;
        sqlx::query("UPDATE s3_objects SET tags = $2 WHERE id = $1")
            .bind(object.id)
            .bind(to_json(&tags))
            .execute(self.store.pool())
            .await
            .map_err(internal)?;
        Ok(object)
    }

    // ----- multipart -----

    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        meta: Meta,
        tags: Tags,
        initiator: &str,
    ) -> S3Result<String> {
        self.bucket(bucket).await?;
        let upload_id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        sqlx::query(&format!(
            "INSERT INTO s3_uploads ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&upload_id)
        .bind(bucket)
        .bind(key)
        .bind(slipway_store::now())
        .bind(to_json(&meta))
        .bind(to_json(&tags))
        .bind(initiator)
        .execute(self.store.pool())
        .await
        .map_err(internal)?;
        Ok(upload_id)
    }

    pub async fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> S3Result<Upload> {
        self.bucket(bucket).await?;
        let row = sqlx::query(&format!("SELECT {UPLOAD_COLUMNS} FROM s3_uploads WHERE upload_id = $1 AND bucket = $2 AND key = $3"))
            .bind(upload_id)
            .bind(bucket)
            .bind(key)
            .fetch_optional(self.store.pool())
            .await
            .map_err(internal)?
            .ok_or_else(no_such_upload)?;
        upload_from_row(&row)
    }

    pub async fn list_uploads(&self, bucket: &str, prefix: &str) -> S3Result<Vec<Upload>> {
        self.bucket(bucket).await?;
        let rows = sqlx::query(&format!("SELECT {UPLOAD_COLUMNS} FROM s3_uploads WHERE bucket = $1 AND key >= $2 ORDER BY key, initiated"))
            .bind(bucket)
            .bind(prefix)
            .fetch_all(self.store.pool())
            .await
            .map_err(internal)?;
        rows.iter()
            .map(upload_from_row)
            .filter(|u| u.as_ref().map_or(true, |u| u.key.starts_with(prefix)))
            .collect()
    }

    /// Records a staged part (replacing an earlier upload of the same number).
    pub async fn commit_part(
        &self,
        upload: &Upload,
        part_number: i32,
        staged: Staged,
    ) -> S3Result<String> {
        let etag = hex::encode(staged.md5);
        let Some(blob) = staged.blob.clone() else {
            return Err(internal("a part must be a blob"));
        };
        let (upload_id, info, part_etag) =
            (upload.upload_id.clone(), staged.info.clone(), etag.clone());
        // The part may replace an earlier upload of its number, whose blob then goes.
        self.trash_queued(true);
        let result = self
            .grouped(move |_, conn| {
                Box::pin(async move {
                    record_part(conn, &upload_id, part_number, &part_etag, &blob, &info).await
                })
            })
            .await;
        match result {
            Ok(()) => Ok(etag),
            Err(e) => {
                self.discard(staged).await;
                Err(e)
            }
        }
    }

    pub async fn parts(&self, upload_id: &str) -> S3Result<Vec<PartRow>> {
        let rows = sqlx::query("SELECT part_number, size, etag, modified FROM s3_parts WHERE upload_id = $1 ORDER BY part_number")
            .bind(upload_id)
            .fetch_all(self.store.pool())
            .await
            .map_err(internal)?;
        Ok(rows
            .iter()
            .map(|r| PartRow {
                part_number: r.get::<i64, _>(0) as i32,
                size: r.get::<i64, _>(1) as u64,
                etag: r.get(2),
                modified: r.get(3),
            })
            .collect())
    }

    /// Completes an upload from the listed parts (number, ETag): the parts' blobs become
    /// the object's segments; parts not listed are deleted.
    pub async fn complete_upload(
        &self,
        upload: &Upload,
        listed: &[(i32, String)],
    ) -> S3Result<Written> {
        if listed.is_empty() {
            return Err(malformed_xml());
        }
        if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(s3_error!(
                InvalidPartOrder,
                "The list of parts was not in ascending order. The parts list must be specified in order by part number."
            ));
        }
        let rows = sqlx::query("SELECT part_number, size, etag, blob, sha256, wrapped_key FROM s3_parts WHERE upload_id = $1")
            .bind(&upload.upload_id)
            .fetch_all(self.store.pool())
            .await
            .map_err(internal)?;
        let mut have = BTreeMap::new();
        for r in &rows {
            have.insert(r.get::<i64, _>(0) as i32, r);
        }
        let mut segments = Vec::new();
        let mut md5s = Vec::new();
        let mut start = 0u64;
        for (i, (number, etag)) in listed.iter().enumerate() {
            let row = have
                .get(number)
                .filter(|r| r.get::<&str, _>(2) == etag.trim_matches('"'));
            let Some(row) = row else {
                return Err(s3_error!(
                    InvalidPart,
                    "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."
                ));
            };
            let size = row.get::<i64, _>(1) as u64;
            if size < MIN_PART_SIZE && i + 1 < listed.len() {
                return Err(s3_error!(
                    EntityTooSmall,
                    "Your proposed upload is smaller than the minimum allowed object size."
                ));
            }
            md5s.extend(hex::decode(row.get::<&str, _>(2)).map_err(internal)?);
            segments.push(Segment {
                start,
                inline: None,
                blob: Some(row.get(3)),
                info: BlobInfo {
                    size,
                    sha256: row.get(4),
                    wrapped_key: row.get(5),
                },
            });
            start += size;
        }
        let etag = {
            use s3s::crypto::Checksum as _;
            let mut h = s3s::crypto::Md5::new();
            h.update(&md5s);
            format!("{}-{}", hex::encode(h.finalize()), listed.len())
        };
        let used: Vec<String> = segments.iter().filter_map(|s| s.blob.clone()).collect();
        let new = NewVersion {
            etag,
            size: start,
            meta: upload.meta.clone(),
            tags: upload.tags.clone(),
            parts: Some(listed.len() as i64),
            segments,
        };
        // One transaction: the upload row must still exist (not aborted meanwhile).
        let mut tx = self.store.begin_write().await.map_err(internal)?;
        let live = sqlx::query("DELETE FROM s3_uploads WHERE upload_id = $1")
            .bind(&upload.upload_id)
            .execute(&mut *tx)
            .await
            .map_err(internal)?
            .rows_affected();
        if live == 0 {
            return Err(no_such_upload());
        }
        // Parts not used go to the trash (the used ones now belong to the object).
        for r in &rows {
            let blob: String = r.get(3);
            if !used.contains(&blob) {
                trash(&mut tx, &blob).await?;
            }
        }
        tx.commit().await.map_err(internal)?;
        self.trash_queued(true);
        // The upload is gone; should the insert fail now, the parts must not leak.
        match self
            .insert_version(
                &upload.bucket,
                &upload.key,
                new,
                false,
                "CompleteMultipartUpload",
            )
            .await
        {
            Ok(w) => Ok(w),
            Err(e) => {
                for blob in used {
                    let _ = self.blobs.delete(&blob).await;
                }
                Err(e)
            }
        }
    }

    pub async fn abort_upload(&self, upload: &Upload) -> S3Result<()> {
        let mut tx = self.store.begin_write().await.map_err(internal)?;
        sqlx::query("INSERT OR IGNORE INTO blob_trash (blob, queued) SELECT blob, $2 FROM s3_parts WHERE upload_id = $1")
            .bind(&upload.upload_id)
            .bind(slipway_store::now())
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        let n = sqlx::query("DELETE FROM s3_uploads WHERE upload_id = $1")
            .bind(&upload.upload_id)
            .execute(&mut *tx)
            .await
            .map_err(internal)?
            .rows_affected();
        if n == 0 {
            return Err(no_such_upload());
        }
        tx.commit().await.map_err(internal)?;
        self.trash_queued(true);
        self.purge_trash().await;
        Ok(())
    }

    /// Re-wraps every object and part data key under the master key's primary key; no
    /// object bytes are rewritten. Returns how many keys were re-wrapped.
    pub async fn rewrap_keys(store: &Store, key: &MasterKey) -> Result<usize, String> {
        let mut tx = store.begin_write().await.map_err(|e| e.to_string())?;
        let mut n = 0;
        for (select, update) in [
            (
                "SELECT object_id, idx, wrapped_key FROM s3_segments WHERE data IS NULL",
                "UPDATE s3_segments SET wrapped_key = $3 WHERE object_id = $1 AND idx = $2",
            ),
            (
                "SELECT upload_id, part_number, wrapped_key FROM s3_parts",
                "UPDATE s3_parts SET wrapped_key = $3 WHERE upload_id = $1 AND part_number = $2",
            ),
        ] {
            let rows = sqlx::query(select)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            for r in &rows {
                let wrapped: Vec<u8> = r.get(2);
                let rewrapped = key.reencrypt(&wrapped).map_err(|e| e.to_string())?;
                let q = sqlx::query(update);
                let q = match r.try_get::<i64, _>(0) {
                    Ok(id) => q.bind(id),
                    Err(_) => q.bind(r.get::<String, _>(0)),
                };
                q.bind(r.get::<i64, _>(1))
                    .bind(rewrapped)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                n += 1;
            }
        }
        // Inline objects: their envelopes re-wrapped.
        let rows =
            sqlx::query("SELECT object_id, idx, data FROM s3_segments WHERE data IS NOT NULL")
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
        for r in &rows {
            let sealed: Vec<u8> = r.get(2);
            sqlx::query("UPDATE s3_segments SET data = $3 WHERE object_id = $1 AND idx = $2")
                .bind(r.get::<i64, _>(0))
                .bind(r.get::<i64, _>(1))
                .bind(key.rewrap(&sealed).map_err(|e| e.to_string())?)
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            n += 1;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(n)
    }
}

/// The common prefix `key` rolls up to under `prefix` and `delimiter`, if any.
pub fn rollup(key: &str, prefix: &str, delimiter: Option<&str>) -> Option<String> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.strip_prefix(prefix)?;
    rest.find(d)
        .map(|i| key[..prefix.len() + i + d.len()].to_owned())
}

struct NewVersion {
    etag: String,
    size: u64,
    meta: Meta,
    tags: Tags,
    parts: Option<i64>,
    segments: Vec<Segment>,
}

#[derive(Debug)]
struct TooLarge;
impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body exceeds the size limit")
    }
}
impl std::error::Error for TooLarge {}

/// The S3 error for a request body that failed while being read (or grew too large).
fn source_error(e: std::io::Error) -> S3Error {
    if e.get_ref().is_some_and(|i| i.is::<TooLarge>()) {
        return s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed size"
        );
    }
    tracing::debug!(error = %e, "request body ended early");
    body_error(&e)
}

/// The S3 error for a request body that failed while being read: a payload that did not
/// match its signature or checksum, or a client that went away.
fn body_error(e: &std::io::Error) -> S3Error {
    let text = e.to_string();
    if text.contains("SignatureDoesNotMatch") || text.to_ascii_lowercase().contains("signature") {
        s3_error!(
            SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided."
        )
    } else if text.to_ascii_lowercase().contains("sha256") || text.contains("checksum") {
        custom(
            "XAmzContentSHA256Mismatch",
            400,
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    } else {
        s3_error!(
            IncompleteBody,
            "You did not provide the number of bytes specified by the Content-Length HTTP header."
        )
    }
}

pub fn no_such_bucket(name: &str) -> S3Error {
    tracing::debug!(bucket = name, "no such bucket");
    s3_error!(NoSuchBucket, "The specified bucket does not exist")
}

/// An S3 error code `s3s` has no variant for.
pub fn custom(code: &'static str, status: u16, message: &'static str) -> S3Error {
    let mut e = S3Error::with_message(s3s::S3ErrorCode::Custom(code.into()), message);
    if let Ok(s) = http::StatusCode::from_u16(status) {
        e.set_status_code(s);
    }
    e
}

pub fn malformed_xml() -> S3Error {
    s3_error!(
        MalformedXML,
        "The XML you provided was not well-formed or did not validate against our published schema"
    )
}

pub fn precondition_failed() -> S3Error {
    s3_error!(
        PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold"
    )
}

pub fn no_such_key() -> S3Error {
    s3_error!(NoSuchKey, "The specified key does not exist.")
}

pub fn no_such_upload() -> S3Error {
    s3_error!(
        NoSuchUpload,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )
}

const UPLOAD_COLUMNS: &str = "upload_id, bucket, key, initiated, meta, tags, initiator";

fn upload_from_row(r: &sqlx::sqlite::SqliteRow) -> S3Result<Upload> {
    Ok(Upload {
        upload_id: r.get(0),
        bucket: r.get(1),
        key: r.get(2),
        initiated: r.get(3),
        meta: serde_json::from_str(r.get::<&str, _>(4)).map_err(internal)?,
        tags: serde_json::from_str(r.get::<&str, _>(5)).map_err(internal)?,
        initiator: r.get(6),
    })
}

const BUCKET_COLUMNS: &str = "name, region, created, versioning";

fn bucket_from_row(r: &sqlx::sqlite::SqliteRow) -> Bucket {
    Bucket {
        name: r.get(0),
        region: r.get(1),
        created: r.get(2),
        versioning: r.get(3),
    }
}

/// A bucket by name, through the pool or inside a transaction; NoSuchBucket if absent.
async fn fetch_bucket<'e>(db: impl sqlx::SqliteExecutor<'e>, name: &str) -> S3Result<Bucket> {
    sqlx::query(&format!(
        "SELECT {BUCKET_COLUMNS} FROM s3_buckets WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(db)
    .await
    .map_err(internal)?
    .map(|r| bucket_from_row(&r))
    .ok_or_else(|| no_such_bucket(name))
}

/// Records an uploaded part (replacing an earlier upload of the same number, whose blob
/// goes to the trash).
async fn record_part(
    conn: &mut Conn,
    upload_id: &str,
    part_number: i32,
    etag: &str,
    blob: &str,
    info: &BlobInfo,
) -> S3Result<()> {
    let live = sqlx::query("SELECT 1 FROM s3_uploads WHERE upload_id = $1")
        .bind(upload_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(internal)?
        .is_some();
    if !live {
        return Err(no_such_upload());
    }
    sqlx::query("INSERT OR IGNORE INTO blob_trash (blob, queued) SELECT blob, $3 FROM s3_parts WHERE upload_id = $1 AND part_number = $2")
        .bind(upload_id)
        .bind(part_number)
        .bind(slipway_store::now())
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
    sqlx::query("INSERT INTO s3_parts (upload_id, part_number, size, etag, blob, sha256, wrapped_key, modified) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (upload_id, part_number) DO UPDATE SET size = excluded.size, etag = excluded.etag, blob = excluded.blob, sha256 = excluded.sha256, wrapped_key = excluded.wrapped_key, modified = excluded.modified")
        .bind(upload_id)
        .bind(part_number)
        .bind(info.size as i64)
        .bind(etag)
        .bind(blob)
        .bind(&info.sha256)
        .bind(&info.wrapped_key)
        .bind(slipway_store::now())
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
    Ok(())
}

async fn bucket_in(conn: &mut Conn, name: &str) -> S3Result<Bucket> {
    fetch_bucket(conn, name).await
}

async fn trash(conn: &mut Conn, blob: &str) -> S3Result<()> {
    sqlx::query("INSERT OR IGNORE INTO blob_trash (blob, queued) VALUES ($1, $2)")
        .bind(blob)
        .bind(slipway_store::now())
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
    Ok(())
}

/// Removes a version row, queueing its blobs for deletion; says whether any were queued.
/// One round trip to SQLite.
async fn remove_version(conn: &mut Conn, id: i64) -> S3Result<bool> {
    let rows = sqlx::query("INSERT OR IGNORE INTO blob_trash (blob, queued) SELECT blob, $2 FROM s3_segments WHERE object_id = $1 AND blob IS NOT NULL; SELECT changes(); DELETE FROM s3_objects WHERE id = $1")
        .bind(id)
        .bind(slipway_store::now())
        .fetch_all(&mut *conn)
        .await
        .map_err(internal)?;
    Ok(rows.first().is_some_and(|r| r.get::<i64, _>(0) > 0))
}

/// Prepares for a new current version of `key`: the old current one stops being latest
/// (versioning on) or goes (off, and the `null` version when suspended). Returns the new
/// version's id, and whether blobs were queued for deletion. One round trip to SQLite.
async fn make_room(conn: &mut Conn, bucket: &Bucket, key: &str) -> S3Result<(String, bool)> {
    if bucket.versioning.as_deref() == Some("Enabled") {
        sqlx::query(
            "UPDATE s3_objects SET latest = 0 WHERE bucket = $1 AND key = $2 AND latest = 1",
        )
        .bind(&bucket.name)
        .bind(key)
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
        return Ok((new_version_id(), false));
    }
    let rows = sqlx::query(
        "INSERT OR IGNORE INTO blob_trash (blob, queued) SELECT s.blob, $3 FROM s3_segments s JOIN s3_objects o ON o.id = s.object_id WHERE o.bucket = $1 AND o.key = $2 AND o.version_id = 'null' AND s.blob IS NOT NULL; \
         SELECT changes(); \
         DELETE FROM s3_objects WHERE bucket = $1 AND key = $2 AND version_id = 'null'; \
         UPDATE s3_objects SET latest = 0 WHERE bucket = $1 AND key = $2 AND latest = 1",
    )
    .bind(&bucket.name)
    .bind(key)
    .bind(slipway_store::now())
    .fetch_all(&mut *conn)
    .await
    .map_err(internal)?;
    let queued = rows.first().is_some_and(|r| r.get::<i64, _>(0) > 0);
    Ok(("null".into(), queued))
}
