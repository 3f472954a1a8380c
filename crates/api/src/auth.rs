//! Authentication of API requests (SigV4 header form) against IAM, and authorisation.

use crate::sigv4::{self, AuthError};
use crate::AppState;
use axum::http::HeaderMap;
use slipway_iam::policy::Decision;
use slipway_model::{ApiError, Principal};

impl AuthError {
    /// The AWS error a JSON API answers for this failure.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            AuthError::Missing => ApiError::new(
                "MissingAuthenticationTokenException",
                403,
                "Missing Authentication Token",
            ),
            AuthError::Incomplete(m) => {
                ApiError::new("IncompleteSignatureException", 403, m.clone())
            }
            AuthError::UnknownKey => ApiError::new(
                "UnrecognizedClientException",
                403,
                "The security token included in the request is invalid.",
            ),
            AuthError::BadSignature(m) => {
                ApiError::new("InvalidSignatureException", 403, m.clone())
            }
        }
    }
}

/// The request line and headers SigV4 covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The error for a credential scoped to a name that is no AWS region.
fn unknown_region(region: &str) -> ApiError {
    AuthError::BadSignature(format!(
        "Credential should be scoped to a valid region, not '{region}'."
    ))
    .to_api_error()
}

/// Verifies a SigV4-signed request for `service`; returns the caller and the region the
/// request is signed for (which it is served in).
pub async fn authenticate(
    state: &AppState,
    req: &SignedRequest<'_>,
    service: &str,
) -> Result<(Principal, String), ApiError> {
    let header = req
        .headers
        .get("authorization")
        .ok_or(AuthError::Missing)
        .and_then(|h| {
            h.to_str()
                .map_err(|_| AuthError::Incomplete("Authorization header is not ASCII".into()))
        })
        .map_err(|e| e.to_api_error())?;
    let auth = sigv4::parse_authorization(header).map_err(|e| e.to_api_error())?;
    let amz_date = req
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            AuthError::Incomplete("Authorization requires the X-Amz-Date header.".into())
                .to_api_error()
        })?;
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(AuthError::Incomplete("The host header must be signed.".into()).to_api_error());
    }
    let owner = state
        .iam
        .key_owner(&auth.access_key_id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "looking up access key");
            ApiError::internal()
        })?
        .ok_or_else(|| AuthError::UnknownKey.to_api_error())?;
    let fail = |m: String| AuthError::BadSignature(m).to_api_error();
    sigv4::check_skew(amz_date, now()).map_err(|e| e.to_api_error())?;
    if !amz_date.starts_with(&auth.date) {
        return Err(fail("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.".into()));
    }
    if !slipway_regions::is_known(&auth.region) {
        return Err(unknown_region(&auth.region));
    }
    if auth.service != service {
        return Err(fail(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // The body's hash as signed. A hash in `x-amz-content-sha256` must be the body's (else a
    // body could be swapped under a signature made for another, the header added or kept
    // with the old body's hash); `UNSIGNED-PAYLOAD` leaves the body out of the signature,
    // as S3 allows (and as streaming routes, whose body is not read here, are signed).
    let actual = || sigv4::sha256_hex(req.body);
    let payload_hash = match req
        .headers
        .get("x-amz-content-sha256")
        .map(|v| v.to_str().unwrap_or_default())
    {
        Some("UNSIGNED-PAYLOAD") => "UNSIGNED-PAYLOAD".to_owned(),
        Some(claimed) => {
            if !sigv4::signatures_equal(claimed, &actual()) {
                return Err(fail(
                    "The provided 'x-amz-content-sha256' header does not match what was computed."
                        .into(),
                ));
            }
            claimed.to_owned()
        }
        None => actual(),
    };
    let canonical = sigv4::canonical_request(
        req.method,
        &sigv4::canonical_uri(req.path, service != "s3"),
        req.query,
        &headers,
        &auth.signed_headers,
        &payload_hash,
    );
    let expected = sigv4::sign(&owner.secret, amz_date, &auth, &canonical);
    if !sigv4::signatures_equal(&expected, &auth.signature) {
        tracing::debug!(access_key_id = %auth.access_key_id, "signature mismatch");
        return Err(fail(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".into(),
        ));
    }
    let region = auth.region.clone();
    Ok((
        Principal {
            arn: owner.arn,
            access_key_id: auth.access_key_id,
            user_name: owner.user_name,
        },
        region,
    ))
}

/// Verifies a presigned GET (SigV4 in the query string, only `host` signed) for `service`;
/// returns the caller and the region the link is signed for. Expired, future-dated or
/// altered links are refused.
pub async fn authenticate_presigned(
    state: &AppState,
    path: &str,
    query: &str,
    host: &str,
    service: &str,
) -> Result<(Principal, String), ApiError> {
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| sigv4::percent_decode(v, false))
        })
    };
    let missing = || AuthError::Missing.to_api_error();
    let fail = |m: &str| AuthError::BadSignature(m.to_owned()).to_api_error();
    if param("X-Amz-Algorithm").as_deref() != Some("AWS4-HMAC-SHA256") {
        return Err(missing());
    }
    let credential = param("X-Amz-Credential").ok_or_else(missing)?;
    let amz_date = param("X-Amz-Date").ok_or_else(missing)?;
    let signature = param("X-Amz-Signature").ok_or_else(missing)?;
    let expires: i64 = param("X-Amz-Expires")
        .and_then(|e| e.parse().ok())
        .filter(|e| (1..=604_800).contains(e))
        .ok_or_else(|| fail("X-Amz-Expires must be between 1 and 604800 seconds"))?;
    if param("X-Amz-SignedHeaders").as_deref() != Some("host") {
        return Err(fail("Only the host header may be signed in this link"));
    }
    let parts: Vec<&str> = credential.split('/').collect();
    let [key, date, region, svc, "aws4_request"] = parts.as_slice() else {
        return Err(AuthError::Incomplete("Malformed X-Amz-Credential".into()).to_api_error());
    };
    let signed_at = sigv4::parse_amz_date(&amz_date).ok_or_else(|| fail("Bad X-Amz-Date"))?;
    let t = now();
    if t < signed_at - 300 || t > signed_at + expires {
        return Err(ApiError::access_denied("Request has expired"));
    }
    if !slipway_regions::is_known(region) {
        return Err(unknown_region(region));
    }
    if *svc != service || !amz_date.starts_with(date) {
        return Err(fail("Credential scope does not match this link"));
    }
    let owner = state
        .iam
        .key_owner(key)
        .await
        .map_err(|_| ApiError::internal())?
        .ok_or_else(|| AuthError::UnknownKey.to_api_error())?;
    let unsigned: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.starts_with("X-Amz-Signature="))
        .collect();
    let scope = sigv4::Authorization::new(key, &amz_date, region, svc, &["host"]);
    let canonical = sigv4::canonical_request(
        "GET",
        &sigv4::canonical_uri(path, service != "s3"),
        &unsigned.join("&"),
        &[("host".to_owned(), host.to_owned())],
        &scope.signed_headers,
        "UNSIGNED-PAYLOAD",
    );
    let expected = sigv4::sign(&owner.secret, &amz_date, &scope, &canonical);
    if !sigv4::signatures_equal(&expected, &signature) {
        return Err(fail(
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    Ok((
        Principal {
            arn: owner.arn,
            access_key_id: key.to_string(),
            user_name: owner.user_name,
        },
        region.to_string(),
    ))
}

/// Whether the principal may perform `action` on all `resources`; AWS's AccessDenied if not.
pub async fn authorize(
    state: &AppState,
    principal: &Principal,
    action: &str,
    resources: &[String],
) -> Result<(), ApiError> {
    let decision = state
        .iam
        .authorize(principal.user_name.as_deref(), action, resources)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "evaluating policies");
            ApiError::internal()
        })?;
    match decision {
        Decision::Allow => Ok(()),
        d => {
            let why = if d == Decision::ExplicitDeny {
                "with an explicit deny in an identity-based policy".to_owned()
            } else {
                format!("because no identity-based policy allows the {action} action")
            };
            Err(ApiError::access_denied(format!(
                "User: {} is not authorized to perform: {action} on resource: {} {why}",
                principal.arn,
                resources.join(", ")
            )))
        }
    }
}
