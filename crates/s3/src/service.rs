//! The S3 REST protocol over [`S3Store`]: `s3s` parses requests, checks signatures and
//! writes XML; this maps its operation inputs to the store and the results back.
//!
//! Operations not listed here answer S3's `NotImplemented` (501) from `s3s`'s defaults.

use crate::{
    malformed_xml, precondition_failed, Entry, Meta, ObjectVersion, S3Store, Staged, Tags,
};
use bytes::Bytes;
use futures_util::StreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result, S3};

/// The `s3s` handler: one per server.
#[derive(Clone, Debug)]
pub struct SlipwayS3 {
    pub store: S3Store,
}

fn ts(secs: f64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos((secs * 1e3) as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

fn etag(value: &str) -> ETag {
    ETag::Strong(value.to_owned())
}

fn owner(store: &S3Store) -> Owner {
    Owner {
        display_name: Some("slipway".into()),
        id: Some(store.account_id().to_owned()),
    }
}

fn sse() -> Option<ServerSideEncryption> {
    Some(ServerSideEncryption::from_static(
        ServerSideEncryption::AES256,
    ))
}

/// Slipway encrypts every object with its own envelope scheme (reported as SSE-S3,
/// `AES256`); requests for KMS or customer-provided keys are refused, not silently ignored.
fn check_sse(
    requested: Option<&ServerSideEncryption>,
    customer: Option<&SSECustomerAlgorithm>,
) -> S3Result<()> {
    if customer.is_some() {
        return Err(s3_error!(
            NotImplemented,
            "Server-side encryption with customer-provided keys is not supported; Slipway encrypts every object at rest (AES256)."
        ));
    }
    match requested.map(|s| s.as_str()) {
        None | Some("AES256") => Ok(()),
        Some(other) => Err(s3_error!(
            InvalidArgument,
            "Server-side encryption {other} is not supported; Slipway encrypts every object at rest with AES256."
        )),
    }
}

fn validate_key(key: &str) -> S3Result<()> {
    if key.is_empty() || key.len() > 1024 {
        return Err(s3_error!(KeyTooLongError, "Your key is too long"));
    }
    Ok(())
}

/// Parses a tag set, as S3 validates it.
fn check_tags(tags: Tags) -> S3Result<Tags> {
    if tags.len() > 10 {
        return Err(crate::custom(
            "BadRequest",
            400,
            "Object tags cannot be greater than 10",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (k, v) in &tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(s3_error!(
                InvalidTag,
                "The TagKey you have provided is invalid"
            ));
        }
        if v.chars().count() > 256 {
            return Err(s3_error!(
                InvalidTag,
                "The TagValue you have provided is too long, max length is 256"
            ));
        }
        if k.starts_with("aws:") {
            return Err(s3_error!(
                InvalidTag,
                "Your TagKey cannot be prefixed with aws:"
            ));
        }
        if !seen.insert(k.clone()) {
            return Err(s3_error!(
                InvalidTag,
                "Cannot provide multiple Tags with the same key"
            ));
        }
    }
    Ok(tags)
}

fn tags_from_header(header: Option<&str>) -> S3Result<Tags> {
    let pairs = header
        .map(|h| {
            form_urlencoded::parse(h.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    check_tags(pairs)
}

fn tags_from_set(set: TagSet) -> S3Result<Tags> {
    check_tags(
        set.into_iter()
            .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
            .collect(),
    )
}

fn tag_set(tags: &Tags) -> TagSet {
    tags.iter()
        .map(|(k, v)| Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

fn http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

/// Builds stored headers from a request's.
#[allow(clippy::too_many_arguments)]
fn meta_from(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<&Timestamp>,
    storage_class: Option<&StorageClass>,
    user: Option<Metadata>,
) -> S3Result<Meta> {
    let storage_class = storage_class.map(|s| s.as_str().to_owned());
    if let Some(s) = &storage_class {
        const CLASSES: &[&str] = &[
            "STANDARD",
            "REDUCED_REDUNDANCY",
            "STANDARD_IA",
            "ONEZONE_IA",
            "INTELLIGENT_TIERING",
            "GLACIER",
            "DEEP_ARCHIVE",
            "GLACIER_IR",
            "OUTPOSTS",
            "SNOW",
            "EXPRESS_ONEZONE",
        ];
        if !CLASSES.contains(&s.as_str()) {
            return Err(s3_error!(
                InvalidStorageClass,
                "The storage class you specified is not valid"
            ));
        }
    }
    let user: std::collections::BTreeMap<String, String> = user
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let size: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > 2048 {
        return Err(s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size"
        ));
    }
    Ok(Meta {
        content_type,
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        expires: expires.and_then(http_date),
        storage_class: storage_class.filter(|s| s != "STANDARD"),
        user,
        checksum: None,
    })
}

// ----- checksums -----

const CHECKSUMS: &[&str] = &["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"];

/// What a write must be checked against: an algorithm and, unless it comes in a trailer,
/// the value the client sent.
struct Expected {
    algorithm: Option<String>,
    value: Option<String>,
    md5: Option<[u8; 16]>,
}

#[allow(clippy::too_many_arguments)]
fn expected(
    headers: &http::HeaderMap,
    algorithm: Option<&ChecksumAlgorithm>,
    crc32: Option<&String>,
    crc32c: Option<&String>,
    crc64nvme: Option<&String>,
    sha1: Option<&String>,
    sha256: Option<&String>,
    content_md5: Option<&String>,
) -> S3Result<Expected> {
    let md5 = match content_md5 {
        None => None,
        Some(b64) => {
            let raw = slipway_model::runtime::base64_decode(b64)
                .filter(|r| r.len() == 16)
                .ok_or_else(|| {
                    s3_error!(InvalidDigest, "The Content-MD5 you specified was invalid.")
                })?;
            let mut out = [0u8; 16];
            out.copy_from_slice(&raw);
            Some(out)
        }
    };
    let given = [
        ("CRC32", crc32),
        ("CRC32C", crc32c),
        ("CRC64NVME", crc64nvme),
        ("SHA1", sha1),
        ("SHA256", sha256),
    ];
    let mut sent = given.iter().filter_map(|(a, v)| v.map(|v| (*a, v)));
    if let Some((a, v)) = sent.next() {
        if sent.next().is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
            ));
        }
        return Ok(Expected {
            algorithm: Some(a.into()),
            value: Some(v.clone()),
            md5,
        });
    }
    let trailer = headers
        .get("x-amz-trailer")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.trim().strip_prefix("x-amz-checksum-"))
        .map(str::to_ascii_uppercase);
    let algorithm = trailer.or_else(|| algorithm.map(|a| a.as_str().to_ascii_uppercase()));
    if let Some(a) = &algorithm {
        if !CHECKSUMS.contains(&a.as_str()) {
            return Err(s3_error!(
                InvalidRequest,
                "Value for x-amz-checksum-algorithm header is invalid."
            ));
        }
    }
    Ok(Expected {
        algorithm,
        value: None,
        md5,
    })
}

fn hasher_for(algorithm: Option<&str>) -> s3s::checksum::ChecksumHasher {
    use s3s::crypto::Checksum as _;
    let mut h = s3s::checksum::ChecksumHasher::default();
    match algorithm {
        Some("CRC32") => h.crc32 = Some(s3s::crypto::Crc32::new()),
        Some("CRC32C") => h.crc32c = Some(s3s::crypto::Crc32c::new()),
        Some("CRC64NVME") => h.crc64nvme = Some(s3s::crypto::Crc64Nvme::new()),
        Some("SHA1") => h.sha1 = Some(s3s::crypto::Sha1::new()),
        Some("SHA256") => h.sha256 = Some(s3s::crypto::Sha256::new()),
        _ => {}
    }
    h
}

fn checksum_value(c: &Checksum, algorithm: &str) -> Option<String> {
    match algorithm {
        "CRC32" => c.checksum_crc32.clone(),
        "CRC32C" => c.checksum_crc32c.clone(),
        "CRC64NVME" => c.checksum_crc64nvme.clone(),
        "SHA1" => c.checksum_sha1.clone(),
        "SHA256" => c.checksum_sha256.clone(),
        _ => None,
    }
}

/// The request body as the blob store takes it.
fn body_stream(
    body: Option<StreamingBlob>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Unpin {
    match body {
        Some(b) => b.map(|r| r.map_err(std::io::Error::other)).left_stream(),
        None => futures_util::stream::empty().right_stream(),
    }
}

impl SlipwayS3 {
    /// Streams a request body into a staged blob and checks it against the Content-MD5 and
    /// checksum the client sent (in headers or a trailer). On a mismatch nothing is kept.
    async fn receive(
        &self,
        body: Option<StreamingBlob>,
        limit: u64,
        inline: bool,
        expected: Expected,
        trailers: Option<&s3s::TrailingHeaders>,
    ) -> S3Result<(Staged, Option<(String, String)>)> {
        let mut hasher = hasher_for(expected.algorithm.as_deref());
        let staged = self
            .store
            .stage(body_stream(body), limit, inline, &mut hasher)
            .await?;
        let verdict = (|| {
            if let Some(md5) = expected.md5 {
                if md5 != staged.md5 {
                    return Err(s3_error!(
                        BadDigest,
                        "The Content-MD5 you specified did not match what we received."
                    ));
                }
            }
            let Some(algorithm) = expected.algorithm else {
                return Ok(None);
            };
            let computed = checksum_value(&hasher.finalize(), &algorithm).unwrap_or_default();
            let sent = expected.value.or_else(|| {
                let name = format!("x-amz-checksum-{}", algorithm.to_ascii_lowercase());
                trailers
                    .and_then(|t| {
                        t.read(|h| {
                            h.get(&name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        })
                    })
                    .flatten()
            });
            match sent {
                Some(s) if s != computed => Err(s3_error!(
                    BadDigest,
                    "The {algorithm} you specified did not match the calculated checksum."
                )),
                _ => Ok(Some((algorithm, computed))),
            }
        })();
        match verdict {
            Ok(c) => Ok((staged, c)),
            Err(e) => {
                self.store.discard(staged).await;
                Err(e)
            }
        }
    }
}

/// A stored (algorithm, value) checksum as the response's `x-amz-checksum-*` fields.
fn checksum_of(c: Option<&(String, String)>) -> Checksum {
    let mut out = Checksum::default();
    if let Some((a, v)) = c {
        match a.as_str() {
            "CRC32" => out.checksum_crc32 = Some(v.clone()),
            "CRC32C" => out.checksum_crc32c = Some(v.clone()),
            "CRC64NVME" => out.checksum_crc64nvme = Some(v.clone()),
            "SHA1" => out.checksum_sha1 = Some(v.clone()),
            "SHA256" => out.checksum_sha256 = Some(v.clone()),
            _ => {}
        }
    }
    out
}

/// An output struct with the given fields and the checksum fields of `$c` (a [`Checksum`]).
macro_rules! with_checksum {
    ($t:ident { $($field:ident: $value:expr),* $(,)? }, $c:expr) => {{
        let c: Checksum = $c;
        $t {
            $($field: $value,)*
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            ..Default::default()
        }
    }};
}

/// What GET and HEAD report about version `$o` of an object (bytes `$range`), with the
/// request's `response-*` overrides: a `GetObjectOutput` or a `HeadObjectOutput`.
macro_rules! described {
    ($t:ident, $input:ident, $o:expr, $range:expr, $partial:expr, $c:expr, { $($field:ident: $value:expr),* $(,)? }) => {{
        let (o, range, m) = (&$o, &$range, &$o.meta);
        with_checksum!($t {
            $($field: $value,)*
            accept_ranges: Some("bytes".into()),
            content_length: Some((range.end - range.start) as i64),
            content_range: $partial.then(|| content_range(range, o.size)),
            content_type: $input
                .response_content_type
                .or_else(|| m.content_type.clone())
                .or_else(|| Some("binary/octet-stream".into())),
            content_encoding: $input
                .response_content_encoding
                .or_else(|| m.content_encoding.clone()),
            content_disposition: $input
                .response_content_disposition
                .or_else(|| m.content_disposition.clone()),
            content_language: $input
                .response_content_language
                .or_else(|| m.content_language.clone()),
            cache_control: $input
                .response_cache_control
                .or_else(|| m.cache_control.clone()),
            expires: $input
                .response_expires
                .or_else(|| m.expires.as_deref().and_then(parse_http_date)),
            e_tag: Some(etag(&o.etag)),
            last_modified: Some(ts(o.modified)),
            metadata: (!m.user.is_empty()).then(|| m.user.clone().into_iter().collect()),
            version_id: version_of(o),
            server_side_encryption: sse(),
            storage_class: m.storage_class.clone().map(StorageClass::from),
            parts_count: $input.part_number.and(o.parts.map(|p| p as i32)),
        }, $c)
    }};
}

/// The object version a read (GetObject, HeadObject: the same field names in each input)
/// names, after its SSE-C and conditional headers are checked.
macro_rules! readable {
    ($self:ident, $input:ident) => {{
        check_sse(None, $input.sse_customer_algorithm.as_ref())?;
        let o = $self
            .store
            .object(&$input.bucket, &$input.key, $input.version_id.as_deref())
            .await
            .map_err(|(e, m)| marker_error(e, m))?;
        preconditions(
            &o,
            $input.if_match.as_ref(),
            $input.if_none_match.as_ref(),
            $input.if_modified_since.as_ref(),
            $input.if_unmodified_since.as_ref(),
        )?;
        o
    }};
}

/// The stored headers of a write request (PutObject, CopyObject with REPLACE,
/// CreateMultipartUpload: the same field names in each input).
macro_rules! meta_of {
    ($input:ident) => {
        meta_from(
            $input.content_type,
            $input.content_encoding,
            $input.content_disposition,
            $input.content_language,
            $input.cache_control,
            $input.expires.as_ref(),
            $input.storage_class.as_ref(),
            $input.metadata,
        )
    };
}

/// What a body-carrying request (PutObject, UploadPart) must be checked against.
macro_rules! expected_of {
    ($headers:expr, $input:ident) => {
        expected(
            $headers,
            $input.checksum_algorithm.as_ref(),
            $input.checksum_crc32.as_ref(),
            $input.checksum_crc32c.as_ref(),
            $input.checksum_crc64nvme.as_ref(),
            $input.checksum_sha1.as_ref(),
            $input.checksum_sha256.as_ref(),
            $input.content_md5.as_ref(),
        )
    };
}

/// Whether the request asked for checksums (`x-amz-checksum-mode: ENABLED`).
fn checksum_wanted(mode: Option<&ChecksumMode>) -> bool {
    mode.is_some_and(|m| m.as_str() == "ENABLED")
}

fn version_of(o: &ObjectVersion) -> Option<String> {
    (o.version_id != "null").then(|| o.version_id.clone())
}

/// Whether an If-Match / If-None-Match condition names the entity tag `etag` (or is `*`).
fn etag_matches(c: &ETagCondition, etag: &str) -> bool {
    match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

/// Evaluates If-Match / If-None-Match / If-(Un)Modified-Since as RFC 7232 and S3 do.
fn preconditions(
    o: &ObjectVersion,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let matches = |c: &ETagCondition| etag_matches(c, &o.etag);
    let modified = time::OffsetDateTime::from(ts(o.modified.floor()));
    if let Some(c) = if_match {
        if !matches(c) {
            return Err(precondition_failed());
        }
    } else if let Some(t) = if_unmodified_since {
        if modified > time::OffsetDateTime::from(t.clone()) {
            return Err(precondition_failed());
        }
    }
    let not_modified = || s3_error!(NotModified, "Not Modified");
    if let Some(c) = if_none_match {
        if matches(c) {
            return Err(not_modified());
        }
    } else if let Some(t) = if_modified_since {
        if modified <= time::OffsetDateTime::from(t.clone()) {
            return Err(not_modified());
        }
    }
    Ok(())
}

/// The error for a current version that is a delete marker, with S3's headers.
fn marker_error(mut e: S3Error, marker: Option<ObjectVersion>) -> S3Error {
    if let Some(m) = marker {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-amz-delete-marker",
            http::HeaderValue::from_static("true"),
        );
        if let Ok(v) = http::HeaderValue::from_str(&m.version_id) {
            h.insert("x-amz-version-id", v);
        }
        e.set_headers(h);
    }
    e
}

/// The byte range a GET or HEAD selects: a part, a Range header, or everything.
fn select(
    o: &ObjectVersion,
    segments: &[crate::Segment],
    part_number: Option<i32>,
    range: Option<&Range>,
) -> S3Result<(std::ops::Range<u64>, bool)> {
    if part_number.is_some() && range.is_some() {
        return Err(s3_error!(
            InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter"
        ));
    }
    if let Some(n) = part_number {
        part_number_ok(n)?;
        let Some(s) = segments.get(n as usize - 1) else {
            return Err(crate::custom(
                "InvalidPartNumber",
                416,
                "The requested partnumber is not satisfiable",
            ));
        };
        return Ok((s.start..s.start + s.info.size, o.parts.is_some()));
    }
    match range {
        Some(r) => Ok((r.check(o.size)?, true)),
        None => Ok((0..o.size, false)),
    }
}

fn content_range(r: &std::ops::Range<u64>, size: u64) -> String {
    format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), size)
}

/// A stream the HTTP layer can own: the blob reads run in their own task (so decryption
/// overlaps with sending) and hand chunks over a small channel.
fn pump(
    stream: impl futures_util::Stream<Item = Result<Bytes, slipway_blobs::BlobError>> + Send + 'static,
) -> StreamingBlob {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| {
                tracing::error!(error = %e, "reading an object");
                std::io::Error::other(e.to_string())
            });
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    StreamingBlob::wrap(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

fn url_encode(s: &str, on: bool) -> String {
    if on {
        form_urlencoded::byte_serialize(s.as_bytes()).collect()
    } else {
        s.to_owned()
    }
}

/// A page size (max-keys, max-parts, max-uploads): 1000 by default and at most; negative
/// is refused with `negative` as the message.
fn page_size(v: Option<i32>, negative: &'static str) -> S3Result<usize> {
    match v {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "{negative}")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

fn max_keys(v: Option<i32>) -> S3Result<usize> {
    page_size(
        v,
        "Provided max-keys not an integer or within integer range",
    )
}

/// The objects of a listing page (`None` when there are none, as S3 omits the element).
fn contents(entries: &[Entry], enc: bool, owner: Option<Owner>) -> Option<Vec<Object>> {
    let v: Vec<Object> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Object(o) => Some(Object {
                e_tag: Some(etag(&o.etag)),
                key: Some(url_encode(&o.key, enc)),
                last_modified: Some(ts(o.modified)),
                size: Some(o.size as i64),
                storage_class: Some(ObjectStorageClass::from(
                    o.meta
                        .storage_class
                        .clone()
                        .unwrap_or_else(|| "STANDARD".into()),
                )),
                owner: owner.clone(),
                ..Default::default()
            }),
            Entry::Prefix(_) => None,
        })
        .collect();
    (!v.is_empty()).then_some(v)
}

fn prefixes(entries: &[Entry], enc: bool) -> Option<Vec<CommonPrefix>> {
    let v: Vec<CommonPrefix> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Prefix(p) => Some(CommonPrefix {
                prefix: Some(url_encode(p, enc)),
            }),
            Entry::Object(_) => None,
        })
        .collect();
    (!v.is_empty()).then_some(v)
}

fn encoding(e: Option<&EncodingType>) -> S3Result<bool> {
    match e.map(|e| e.as_str()) {
        None => Ok(false),
        Some("url") => Ok(true),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "Invalid Encoding Method specified in Request"
        )),
    }
}

fn token_encode(key: &str) -> String {
    slipway_model::runtime::base64_encode(key.as_bytes())
}

fn token_decode(token: &str) -> S3Result<String> {
    slipway_model::runtime::base64_decode(token)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

/// A copy's metadata or tagging directive: whether it is REPLACE (COPY by default).
fn replaces(directive: Option<&str>, unknown: &'static str) -> S3Result<bool> {
    match directive {
        None | Some("COPY") => Ok(false),
        Some("REPLACE") => Ok(true),
        Some(_) => Err(s3_error!(InvalidArgument, "{unknown}")),
    }
}

fn part_number_ok(n: i32) -> S3Result<()> {
    if !(1..=crate::MAX_PART_NUMBER).contains(&n) {
        return Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive"
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl S3 for SlipwayS3 {
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self.store.list_buckets().await?;
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(
                buckets
                    .into_iter()
                    .map(|b| s3s::dto::Bucket {
                        name: Some(b.name),
                        creation_date: Some(ts(b.created)),
                        bucket_region: Some(b.region),
                    })
                    .collect(),
            ),
            owner: Some(owner(&self.store)),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        // The region the request is signed for is the endpoint it reached.
        let region = req
            .region
            .as_ref()
            .map_or(self.store.region(), |r| r.as_str())
            .to_owned();
        let input = req.input;
        if input.object_lock_enabled_for_bucket == Some(true) {
            return Err(s3_error!(NotImplemented, "Object Lock is not supported."));
        }
        let location = input
            .create_bucket_configuration
            .and_then(|c| c.location_constraint)
            .map(|l| l.as_str().to_owned());
        self.store
            .create_bucket(&input.bucket, location.as_deref(), &region)
            .await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", input.bucket)),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.store.delete_bucket(&req.input.bucket).await?;
        Ok(S3Response::with_status(
            DeleteBucketOutput {},
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let b = self.store.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(b.region),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let b = self.store.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: (b.region != "us-east-1")
                .then(|| BucketLocationConstraint::from(b.region)),
        }))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let b = self.store.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketVersioningOutput {
            status: b.versioning.map(BucketVersioningStatus::from),
            mfa_delete: None,
        }))
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let input = req.input;
        if input.mfa.is_some()
            || input
                .versioning_configuration
                .mfa_delete
                .as_ref()
                .is_some_and(|m| m.as_str() == "Enabled")
        {
            return Err(s3_error!(NotImplemented, "MFA Delete is not supported."));
        }
        let status = input
            .versioning_configuration
            .status
            .map(|s| s.as_str().to_owned())
            .ok_or_else(malformed_xml)?;
        self.store.set_versioning(&input.bucket, &status).await?;
        Ok(S3Response::new(PutBucketVersioningOutput {}))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let trailers = req.trailing_headers.clone();
        let headers = req.headers.clone();
        let input = req.input;
        validate_key(&input.key)?;
        check_sse(
            input.server_side_encryption.as_ref(),
            input.sse_customer_algorithm.as_ref(),
        )?;
        if input
            .content_length
            .is_some_and(|n| n as u64 > crate::MAX_PUT_SIZE)
        {
            return Err(s3_error!(
                EntityTooLarge,
                "Your proposed upload exceeds the maximum allowed size"
            ));
        }
        let if_none_match = match &input.if_none_match {
            None => false,
            Some(ETagCondition::Any) => true,
            Some(_) => {
                return Err(s3_error!(
                    NotImplemented,
                    "If-None-Match on PUT supports only *"
                ))
            }
        };
        if input.if_match.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "If-Match on PUT is not supported"
            ));
        }
        let mut meta = meta_of!(input)?;
        let tags = tags_from_header(input.tagging.as_deref())?;
        // Fail fast on a missing bucket rather than after reading the whole body.
        self.store.bucket(&input.bucket).await?;
        let want = expected_of!(&headers, input)?;
        let (staged, checksum) = self
            .receive(
                input.body,
                crate::MAX_PUT_SIZE,
                true,
                want,
                trailers.as_ref(),
            )
            .await?;
        meta.checksum = checksum.clone();
        let written = self
            .store
            .commit_object(
                &input.bucket,
                &input.key,
                staged,
                meta,
                tags,
                crate::How {
                    if_none_match,
                    reason: "PutObject",
                },
            )
            .await?;
        Ok(S3Response::new(with_checksum!(
            PutObjectOutput {
                e_tag: Some(etag(&written.etag)),
                version_id: written.version_id,
                server_side_encryption: sse(),
                checksum_type: checksum
                    .is_some()
                    .then(|| ChecksumType::from_static(ChecksumType::FULL_OBJECT)),
            },
            checksum_of(checksum.as_ref())
        )))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let o = readable!(self, input);
        let segments = self.store.segments(&o).await?;
        let (range, partial) = select(&o, &segments, input.part_number, input.range.as_ref())?;
        let whole = range.start == 0 && range.end == o.size;
        let stored = o
            .meta
            .checksum
            .as_ref()
            .filter(|_| checksum_wanted(input.checksum_mode.as_ref()) && whole);
        let body = pump(self.store.read(segments, range.clone()));
        let output = described!(GetObjectOutput, input, o, range, partial, checksum_of(stored), {
            body: Some(body),
            tag_count: (!o.tags.is_empty()).then_some(o.tags.len() as i32),
            checksum_type: stored.map(|_| ChecksumType::from_static(ChecksumType::FULL_OBJECT)),
        });
        let status = if partial {
            http::StatusCode::PARTIAL_CONTENT
        } else {
            http::StatusCode::OK
        };
        Ok(S3Response::with_status(output, status))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let o = readable!(self, input);
        let segments = if input.part_number.is_some() {
            self.store.segments(&o).await?
        } else {
            Vec::new()
        };
        let (range, partial) = select(&o, &segments, input.part_number, input.range.as_ref())?;
        let stored = o
            .meta
            .checksum
            .as_ref()
            .filter(|_| checksum_wanted(input.checksum_mode.as_ref()) && !partial);
        Ok(S3Response::new(described!(
            HeadObjectOutput,
            input,
            o,
            range,
            partial,
            checksum_of(stored),
            {}
        )))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        let d = self
            .store
            .delete_object(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        Ok(S3Response::with_status(
            DeleteObjectOutput {
                delete_marker: d.delete_marker.then_some(true),
                version_id: d.version_id,
                ..Default::default()
            },
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        if input.delete.objects.len() > 1000 {
            return Err(malformed_xml());
        }
        self.store.bucket(&input.bucket).await?;
        let quiet = input.delete.quiet == Some(true);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for id in input.delete.objects {
            match self
                .store
                .delete_object(&input.bucket, &id.key, id.version_id.as_deref())
                .await
            {
                Ok(d) if !quiet => deleted.push(DeletedObject {
                    key: Some(id.key),
                    delete_marker: d.delete_marker.then_some(true),
                    delete_marker_version_id: (d.delete_marker && id.version_id.is_none())
                        .then(|| d.version_id.clone())
                        .flatten(),
                    version_id: id.version_id,
                }),
                Ok(_) => {}
                Err(e) => errors.push(s3s::dto::Error {
                    code: Some(e.code().as_str().to_owned()),
                    key: Some(id.key),
                    message: e.message().map(str::to_owned),
                    version_id: id.version_id,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        validate_key(&input.key)?;
        check_sse(
            input.server_side_encryption.as_ref(),
            input.sse_customer_algorithm.as_ref(),
        )?;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            version_id: src_version,
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "Copying from access points is not supported."
            ));
        };
        let src = self
            .store
            .object(src_bucket, src_key, src_version.as_deref())
            .await
            .map_err(|(e, m)| marker_error(e, m))?;
        if let Some(c) = &input.copy_source_if_match {
            if !etag_matches(c, &src.etag) {
                return Err(precondition_failed());
            }
        }
        if let Some(ETagCondition::ETag(e)) = &input.copy_source_if_none_match {
            if e.value() == src.etag {
                return Err(precondition_failed());
            }
        }
        let replace_meta = replaces(
            input.metadata_directive.as_ref().map(|d| d.as_str()),
            "Unknown metadata directive.",
        )?;
        let replace_tags = replaces(
            input.tagging_directive.as_ref().map(|d| d.as_str()),
            "Unknown tagging directive.",
        )?;
        let same = **src_bucket == *input.bucket && **src_key == *input.key;
        if same
            && !replace_meta
            && input.storage_class.is_none()
            && input.server_side_encryption.is_none()
        {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let mut meta = if replace_meta {
            meta_of!(input)?
        } else {
            let mut m = src.meta.clone();
            if let Some(s) = input.storage_class.as_ref() {
                m.storage_class = Some(s.as_str().to_owned()).filter(|s| s != "STANDARD");
            }
            m
        };
        let tags = if replace_tags {
            tags_from_header(input.tagging.as_deref())?
        } else {
            src.tags.clone()
        };
        self.store.bucket(&input.bucket).await?;
        let segments = self.store.segments(&src).await?;
        let source = self
            .store
            .read(segments, 0..src.size)
            .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())))
            .boxed();
        let algorithm = src.meta.checksum.as_ref().map(|(a, _)| a.clone());
        let mut hasher = hasher_for(algorithm.as_deref());
        let staged = self
            .store
            .stage(source, crate::MAX_PUT_SIZE, true, &mut hasher)
            .await?;
        meta.checksum =
            algorithm.and_then(|a| checksum_value(&hasher.finalize(), &a).map(|v| (a, v)));
        let written = self
            .store
            .commit_object(
                &input.bucket,
                &input.key,
                staged,
                meta,
                tags,
                crate::How {
                    if_none_match: false,
                    reason: "CopyObject",
                },
            )
            .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&written.etag)),
                last_modified: Some(ts(written.modified)),
                ..Default::default()
            }),
            version_id: written.version_id,
            copy_source_version_id: version_of(&src),
            server_side_encryption: sse(),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let enc = encoding(input.encoding_type.as_ref())?;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(t), _) => Some(token_decode(t)?),
            (None, Some(s)) => Some(s.clone()),
            (None, None) => None,
        };
        let listing = self
            .store
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                after.map(|k| (k, None)),
                max,
                false,
            )
            .await?;
        let fetch_owner = input.fetch_owner == Some(true);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(url_encode(&prefix, enc)),
            delimiter: input.delimiter.map(|d| url_encode(&d, enc)),
            max_keys: Some(max as i32),
            key_count: Some(listing.entries.len() as i32),
            is_truncated: Some(listing.truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: listing.next.map(|(k, _)| token_encode(&k)),
            start_after: input.start_after.map(|s| url_encode(&s, enc)),
            common_prefixes: prefixes(&listing.entries, enc),
            contents: contents(
                &listing.entries,
                enc,
                fetch_owner.then(|| owner(&self.store)),
            ),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let enc = encoding(input.encoding_type.as_ref())?;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let listing = self
            .store
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                input.marker.clone().map(|k| (k, None)),
                max,
                false,
            )
            .await?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(url_encode(&prefix, enc)),
            marker: Some(url_encode(input.marker.as_deref().unwrap_or(""), enc)),
            delimiter: input.delimiter.map(|d| url_encode(&d, enc)),
            max_keys: Some(max as i32),
            is_truncated: Some(listing.truncated),
            next_marker: listing.next.map(|(k, _)| url_encode(&k, enc)),
            common_prefixes: prefixes(&listing.entries, enc),
            contents: contents(&listing.entries, enc, Some(owner(&self.store))),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        let enc = encoding(input.encoding_type.as_ref())?;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = match (&input.key_marker, &input.version_id_marker) {
            (None, Some(_)) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "A version-id marker cannot be specified without a key marker."
                ))
            }
            (Some(k), Some(v)) if !v.is_empty() => Some((
                k.clone(),
                Some(self.store.version_row(&input.bucket, k, v).await?),
            )),
            (Some(k), _) => Some((k.clone(), None)),
            (None, None) => None,
        };
        let listing = self
            .store
            .list(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                after,
                max,
                true,
            )
            .await?;
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        let mut last_version = None;
        for e in &listing.entries {
            if let Entry::Object(o) = e {
                last_version = Some(o.version_id.clone());
                if o.delete_marker {
                    markers.push(DeleteMarkerEntry {
                        is_latest: Some(o.latest),
                        key: Some(url_encode(&o.key, enc)),
                        last_modified: Some(ts(o.modified)),
                        owner: Some(owner(&self.store)),
                        version_id: Some(o.version_id.clone()),
                    });
                } else {
                    versions.push(ObjectVersion_ {
                        e_tag: Some(etag(&o.etag)),
                        is_latest: Some(o.latest),
                        key: Some(url_encode(&o.key, enc)),
                        last_modified: Some(ts(o.modified)),
                        owner: Some(owner(&self.store)),
                        size: Some(o.size as i64),
                        storage_class: Some(ObjectVersionStorageClass::from_static(
                            ObjectVersionStorageClass::STANDARD,
                        )),
                        version_id: Some(o.version_id.clone()),
                        ..Default::default()
                    });
                }
            }
        }
        let next_is_object = matches!(listing.next, Some((_, Some(_))));
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(url_encode(&prefix, enc)),
            delimiter: input.delimiter.map(|d| url_encode(&d, enc)),
            key_marker: Some(input.key_marker.unwrap_or_default()),
            version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
            max_keys: Some(max as i32),
            is_truncated: Some(listing.truncated),
            next_key_marker: listing.next.as_ref().map(|(k, _)| url_encode(k, enc)),
            next_version_id_marker: if listing.truncated && next_is_object {
                last_version
            } else {
                None
            },
            common_prefixes: prefixes(&listing.entries, enc),
            versions: (!versions.is_empty()).then_some(versions),
            delete_markers: (!markers.is_empty()).then_some(markers),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let input = req.input;
        let o = self
            .store
            .object(&input.bucket, &input.key, input.version_id.as_deref())
            .await
            .map_err(|(e, m)| marker_error(e, m))?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: tag_set(&o.tags),
            version_id: version_of(&o),
        }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let input = req.input;
        let tags = tags_from_set(input.tagging.tag_set)?;
        let o = self
            .store
            .set_tags(&input.bucket, &input.key, input.version_id.as_deref(), tags)
            .await?;
        Ok(S3Response::new(PutObjectTaggingOutput {
            version_id: version_of(&o),
        }))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let input = req.input;
        let o = self
            .store
            .set_tags(
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                Vec::new(),
            )
            .await?;
        Ok(S3Response::with_status(
            DeleteObjectTaggingOutput {
                version_id: version_of(&o),
            },
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let initiator = req
            .credentials
            .as_ref()
            .map(|c| c.access_key.clone())
            .unwrap_or_default();
        let input = req.input;
        validate_key(&input.key)?;
        check_sse(
            input.server_side_encryption.as_ref(),
            input.sse_customer_algorithm.as_ref(),
        )?;
        let meta = meta_of!(input)?;
        let tags = tags_from_header(input.tagging.as_deref())?;
        let upload_id = self
            .store
            .create_upload(&input.bucket, &input.key, meta, tags, &initiator)
            .await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            server_side_encryption: sse(),
            checksum_algorithm: input.checksum_algorithm,
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let trailers = req.trailing_headers.clone();
        let headers = req.headers.clone();
        let input = req.input;
        part_number_ok(input.part_number)?;
        check_sse(None, input.sse_customer_algorithm.as_ref())?;
        let upload = self
            .store
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let want = expected_of!(&headers, input)?;
        let (staged, checksum) = self
            .receive(
                input.body,
                crate::MAX_PUT_SIZE,
                false,
                want,
                trailers.as_ref(),
            )
            .await?;
        let part_etag = self
            .store
            .commit_part(&upload, input.part_number, staged)
            .await?;
        Ok(S3Response::new(with_checksum!(
            UploadPartOutput {
                e_tag: Some(etag(&part_etag)),
                server_side_encryption: sse(),
            },
            checksum_of(checksum.as_ref())
        )))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let upload = self
            .store
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let listed: Vec<(i32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    p.part_number.unwrap_or(0),
                    p.e_tag.map(|e| e.value().to_owned()).unwrap_or_default(),
                )
            })
            .collect();
        let written = self.store.complete_upload(&upload, &listed).await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            e_tag: Some(etag(&written.etag)),
            version_id: written.version_id,
            server_side_encryption: sse(),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let upload = self
            .store
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        self.store.abort_upload(&upload).await?;
        Ok(S3Response::with_status(
            AbortMultipartUploadOutput::default(),
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let upload = self
            .store
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let max = page_size(input.max_parts, "max-parts must be a non-negative integer")?;
        let marker = input.part_number_marker.unwrap_or(0);
        let all: Vec<_> = self
            .store
            .parts(&upload.upload_id)
            .await?
            .into_iter()
            .filter(|p| p.part_number > marker)
            .collect();
        let truncated = all.len() > max;
        let page: Vec<_> = all.into_iter().take(max).collect();
        let next = page.last().map(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(truncated),
            initiator: Some(Initiator {
                display_name: Some(upload.initiator.clone()),
                id: Some(upload.initiator.clone()),
            }),
            owner: Some(owner(&self.store)),
            storage_class: Some(StorageClass::from(
                upload
                    .meta
                    .storage_class
                    .clone()
                    .unwrap_or_else(|| "STANDARD".into()),
            )),
            parts: Some(
                page.iter()
                    .map(|p| Part {
                        e_tag: Some(etag(&p.etag)),
                        last_modified: Some(ts(p.modified)),
                        part_number: Some(p.part_number),
                        size: Some(p.size as i64),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = page_size(
            input.max_uploads,
            "max-uploads must be a non-negative integer",
        )?;
        let uploads = self.store.list_uploads(&input.bucket, &prefix).await?;
        let after = |u: &crate::Upload| match (&input.key_marker, &input.upload_id_marker) {
            (Some(k), Some(id)) => u.key > *k || (u.key == *k && u.upload_id > *id),
            (Some(k), None) => u.key > *k,
            _ => true,
        };
        let all: Vec<_> = uploads.into_iter().filter(|u| after(u)).collect();
        let truncated = all.len() > max;
        let page: Vec<_> = all.into_iter().take(max).collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(prefix),
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: page.last().map(|u| u.key.clone()),
            next_upload_id_marker: page.last().map(|u| u.upload_id.clone()),
            uploads: Some(
                page.iter()
                    .map(|u| MultipartUpload {
                        initiated: Some(ts(u.initiated)),
                        initiator: Some(Initiator {
                            display_name: Some(u.initiator.clone()),
                            id: Some(u.initiator.clone()),
                        }),
                        key: Some(u.key.clone()),
                        owner: Some(owner(&self.store)),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        upload_id: Some(u.upload_id.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}

use s3s::dto::ObjectVersion as ObjectVersion_;
