//! The S3 edge: `s3s`'s protocol service, with Slipway's IAM as its key source (SigV4 header,
//! presigned-URL and streaming forms are checked by `s3s`) and its policy decision
//! (`s3:Action` on `arn:aws:s3:::bucket/key`).

use crate::AppState;
use hyper::http::{HeaderMap, Method, Uri};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{s3_error, S3Error, S3Request, S3Result};
use slipway_iam::policy::Decision;
use slipway_iam::Iam;
use std::sync::Arc;

/// The S3 service every non-JSON, non-git, non-`/-/` request goes to.
pub fn service(state: &Arc<AppState>) -> s3s::service::S3Service {
    let mut builder = s3s::service::S3ServiceBuilder::new(slipway_s3::service::SlipwayS3 {
        store: state.s3.clone(),
    });
    builder.set_auth(IamAuth {
        iam: state.iam.clone(),
    });
    builder.set_access(IamAccess {
        iam: state.iam.clone(),
        s3: state.s3.clone(),
    });
    builder.build()
}

/// Whether a request is for the S3 API: everything but JSON-1.1 (`POST /` or an
/// `X-Amz-Target`), git (`/v1/repos/…`) and Slipway's own routes (`/-/…`).
pub fn is_s3(method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
    let path = uri.path();
    !(path == "/-"
        || path.starts_with("/-/")
        || path == "/v1/repos"
        || path.starts_with("/v1/repos/")
        || (method == Method::POST && path == "/")
        || headers.contains_key("x-amz-target"))
}

struct IamAuth {
    iam: Iam,
}

#[async_trait::async_trait]
impl S3Auth for IamAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.iam.key_owner(access_key).await {
            Ok(Some(owner)) => Ok(SecretKey::from(owner.secret)),
            Ok(None) => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
            Err(e) => {
                tracing::error!(error = %e, "looking up access key");
                Err(s3_error!(InternalError))
            }
        }
    }
}

struct IamAccess {
    iam: Iam,
    s3: slipway_s3::S3Store,
}

/// The region a request is signed for: the credential scope of its `Authorization` header
/// or of a presigned URL's `X-Amz-Credential`.
fn signing_region(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let scope = |credential: &str| credential.split('/').nth(2).map(str::to_owned);
    if let Some(h) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let credential = h.split("Credential=").nth(1)?;
        return scope(credential.split([',', ' ']).next()?);
    }
    let q = uri.query()?;
    q.split('&').find_map(|kv| {
        let v = kv.strip_prefix("X-Amz-Credential=")?;
        scope(&crate::sigv4::percent_decode(v, false))
    })
}

/// S3's answer to a request that reached the wrong region's endpoint for its bucket:
/// `301 PermanentRedirect` naming the bucket's region in `x-amz-bucket-region` (which the
/// SDKs follow by signing again for that region).
fn wrong_region(bucket: &str, region: &str) -> S3Error {
    let mut e = s3_error!(
        PermanentRedirect,
        "The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint (bucket {bucket} is in {region})."
    );
    let mut h = HeaderMap::new();
    if let Ok(v) = hyper::http::HeaderValue::from_str(region) {
        h.insert("x-amz-bucket-region", v);
    }
    e.set_headers(h);
    e.set_status_code(hyper::StatusCode::MOVED_PERMANENTLY);
    e
}

fn arn(bucket: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("arn:aws:s3:::{bucket}/{k}"),
        None => format!("arn:aws:s3:::{bucket}"),
    }
}

/// The IAM action an S3 operation needs (as AWS's "Actions, resources, and condition keys
/// for Amazon S3" lists them); `versioned` when the request names a version.
pub fn action_for(operation: &str, versioned: bool) -> String {
    let a = match (operation, versioned) {
        ("ListBuckets", _) => "ListAllMyBuckets",
        ("HeadBucket" | "ListObjects" | "ListObjectsV2", _) => "ListBucket",
        ("ListObjectVersions", _) => "ListBucketVersions",
        ("ListMultipartUploads", _) => "ListBucketMultipartUploads",
        ("ListParts", _) => "ListMultipartUploadParts",
        (
            "PutObject"
            | "CopyObject"
            | "CreateMultipartUpload"
            | "UploadPart"
            | "UploadPartCopy"
            | "CompleteMultipartUpload",
            _,
        ) => "PutObject",
        ("GetObject" | "HeadObject", false) => "GetObject",
        ("GetObject" | "HeadObject", true) => "GetObjectVersion",
        ("DeleteObject" | "DeleteObjects", false) => "DeleteObject",
        ("DeleteObject" | "DeleteObjects", true) => "DeleteObjectVersion",
        ("GetObjectTagging", true) => "GetObjectVersionTagging",
        ("PutObjectTagging", true) => "PutObjectVersionTagging",
        ("DeleteObjectTagging", true) => "DeleteObjectVersionTagging",
        (op, _) => op,
    };
    format!("s3:{a}")
}

fn denied() -> S3Error {
    s3_error!(AccessDenied, "Access Denied")
}

impl IamAccess {
    async fn allow(&self, access_key: &str, action: &str, resource: String) -> S3Result<()> {
        let owner = match self.iam.key_owner(access_key).await {
            Ok(Some(o)) => o,
            Ok(None) => return Err(denied()),
            Err(e) => {
                tracing::error!(error = %e, "looking up access key");
                return Err(s3_error!(InternalError));
            }
        };
        let decision = self
            .iam
            .authorize(
                owner.user_name.as_deref(),
                action,
                std::slice::from_ref(&resource),
            )
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "evaluating policies");
                s3_error!(InternalError)
            })?;
        if decision == Decision::Allow {
            Ok(())
        } else {
            tracing::info!(principal = owner.arn, action, resource, "access denied");
            Err(s3_error!(
                AccessDenied,
                "User: {} is not authorized to perform: {action} on resource: \"{resource}\"",
                owner.arn
            ))
        }
    }
}

fn has_query(uri: &Uri, name: &str) -> bool {
    uri.query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == name && !v.is_empty())
    })
}

#[async_trait::async_trait]
impl S3Access for IamAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        // Anonymous requests: S3 answers AccessDenied when no policy grants the public access.
        let Some(creds) = cx.credentials() else {
            return Err(denied());
        };
        let access_key = creds.access_key.clone();
        let operation = cx.s3_op().name().to_owned();
        let region = signing_region(cx.headers(), cx.uri());
        if let Some(r) = region.as_deref().filter(|r| !slipway_regions::is_known(r)) {
            return Err(s3_error!(
                AuthorizationHeaderMalformed,
                "The authorization header is malformed; the region '{r}' is not a valid AWS region."
            ));
        }
        // Buckets are global, but each lives in one region: a request signed for another
        // is sent there (GetBucketLocation answers from anywhere, as S3's does).
        let bucket = match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(bucket.to_string()),
            S3Path::Root => None,
        };
        if let (Some(bucket), Some(region)) = (&bucket, &region) {
            if !matches!(operation.as_str(), "CreateBucket" | "GetBucketLocation") {
                if let Ok(b) = self.s3.bucket(bucket).await {
                    if &b.region != region {
                        return Err(wrong_region(bucket, &b.region));
                    }
                }
            }
        }
        if operation == "DeleteObjects" {
            // Checked per key once the body is parsed (see `delete_objects`).
            return Ok(());
        }
        let versioned = has_query(cx.uri(), "versionId");
        let resource = match cx.s3_path() {
            S3Path::Root => "arn:aws:s3:::*".to_owned(),
            S3Path::Bucket { bucket } => arn(bucket, None),
            S3Path::Object { bucket, key } => arn(bucket, Some(key)),
        };
        self.allow(&access_key, &action_for(&operation, versioned), resource)
            .await?;
        if operation == "CopyObject" || operation == "UploadPartCopy" {
            let source = cx
                .headers()
                .get("x-amz-copy-source")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| s3s::dto::CopySource::parse(v).ok());
            if let Some(s3s::dto::CopySource::Bucket {
                bucket,
                key,
                version_id,
            }) = source
            {
                let action = if version_id.is_some() {
                    "s3:GetObjectVersion"
                } else {
                    "s3:GetObject"
                };
                self.allow(&access_key, action, arn(&bucket, Some(&key)))
                    .await?;
            }
        }
        Ok(())
    }

    async fn delete_objects(
        &self,
        req: &mut S3Request<s3s::dto::DeleteObjectsInput>,
    ) -> S3Result<()> {
        let Some(creds) = &req.credentials else {
            return Err(denied());
        };
        for o in &req.input.delete.objects {
            self.allow(
                &creds.access_key,
                &action_for("DeleteObjects", o.version_id.is_some()),
                arn(&req.input.bucket, Some(&o.key)),
            )
            .await?;
        }
        Ok(())
    }
}
