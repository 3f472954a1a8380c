//! AWS Signature Version 4 verification (header form), and the SigV4-derived passwords of
//! the CodeCommit git credential helper. The one place Slipway checks signatures.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

type HmacSha256 = Hmac<Sha256>;

/// The longest a signature stays valid either side of the server's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// Why a request's signature was not accepted; each maps to the AWS error the API sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No Authorization header at all.
    Missing,
    /// The header is present but not a well-formed SigV4 authorization.
    Incomplete(String),
    /// The access key id is unknown or inactive.
    UnknownKey,
    /// The signature does not match, the scope is wrong, or the clock skew is too large.
    BadSignature(String),
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    /// The scope a signer uses: its key, the date of `amz_date`, region, service and the
    /// headers it signs (no signature yet).
    pub fn new(
        access_key_id: &str,
        amz_date: &str,
        region: &str,
        service: &str,
        signed_headers: &[&str],
    ) -> Authorization {
        Authorization {
            access_key_id: access_key_id.to_owned(),
            date: amz_date.get(..8).unwrap_or(amz_date).to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_headers: signed_headers.iter().map(|h| (*h).to_owned()).collect(),
            signature: String::new(),
        }
    }

    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Parses the Authorization header.
pub fn parse_authorization(header: &str) -> Result<Authorization, AuthError> {
    let rest = header.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        AuthError::Incomplete(
            "Authorization header requires the AWS4-HMAC-SHA256 algorithm.".into(),
        )
    })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |what: &str| {
        AuthError::Incomplete(format!(
            "Authorization header requires '{what}' parameter. Authorization={header}"
        ))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" || parts[0].is_empty() {
        return Err(AuthError::Incomplete(format!(
            "Credential should be of the form ACCESS_KEY/DATE/REGION/SERVICE/aws4_request, not {credential}"
        )));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Incomplete(
            "Signature must be 64 hexadecimal characters.".into(),
        ));
    }
    Ok(Authorization {
        access_key_id: parts[0].to_owned(),
        date: parts[1].to_owned(),
        region: parts[2].to_owned(),
        service: parts[3].to_owned(),
        signed_headers: signed.split(';').map(|h| h.to_ascii_lowercase()).collect(),
        signature: signature.to_ascii_lowercase(),
    })
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The SigV4 signing key for a date (`YYYYMMDD`), region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// The hex signature of a canonical request.
pub fn sign(
    secret: &str,
    amz_date: &str,
    scope: &Authorization,
    canonical_request: &str,
) -> String {
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        scope.scope(),
        sha256_hex(canonical_request.as_bytes())
    );
    hex::encode(hmac(
        &signing_key(secret, &scope.date, &scope.region, &scope.service),
        string_to_sign.as_bytes(),
    ))
}

/// Signs a request as an AWS client would (the worker's client side): the headers to send,
/// `x-amz-date`, `x-amz-content-sha256` and `authorization`, for a request to `host` whose
/// body hashes to `payload_hash` (or `UNSIGNED-PAYLOAD` for a streamed body).
#[allow(clippy::too_many_arguments)]
pub fn sign_request(
    method: &str,
    host: &str,
    path: &str,
    query: &str,
    payload_hash: &str,
    credentials: (&str, &str),
    region: &str,
    service: &str,
    now: i64,
) -> Vec<(&'static str, String)> {
    let (access_key_id, secret) = credentials;
    let amz_date = format_amz_date(now);
    let scope = Authorization::new(
        access_key_id,
        &amz_date,
        region,
        service,
        &["host", "x-amz-content-sha256", "x-amz-date"],
    );
    let headers = vec![
        ("host".to_owned(), host.to_owned()),
        ("x-amz-content-sha256".to_owned(), payload_hash.to_owned()),
        ("x-amz-date".to_owned(), amz_date.clone()),
    ];
    let canonical = canonical_request(
        method,
        &canonical_uri(path, service != "s3"),
        query,
        &headers,
        &scope.signed_headers,
        payload_hash,
    );
    let signature = sign(secret, &amz_date, &scope, &canonical);
    vec![
        ("x-amz-date", amz_date),
        ("x-amz-content-sha256", payload_hash.to_owned()),
        (
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={access_key_id}/{}, SignedHeaders={}, Signature={signature}",
                scope.scope(),
                scope.signed_headers.join(";")
            ),
        ),
    ]
}

/// The query string of a presigned GET of `path` on `host` (SigV4 in the query, payload
/// unsigned, only `host` signed), valid for `expires` seconds from `now`.
#[allow(clippy::too_many_arguments)]
pub fn presign_query(
    host: &str,
    path: &str,
    credentials: (&str, &str),
    region: &str,
    service: &str,
    now: i64,
    expires: i64,
) -> String {
    let (access_key_id, secret) = credentials;
    let amz_date = format_amz_date(now);
    let scope = Authorization::new(access_key_id, &amz_date, region, service, &["host"]);
    let query = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={amz_date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
        uri_encode(&format!("{access_key_id}/{}", scope.scope()), false)
    );
    let canonical = canonical_request(
        "GET",
        &canonical_uri(path, service != "s3"),
        &query,
        &[("host".to_owned(), host.to_owned())],
        &scope.signed_headers,
        "UNSIGNED-PAYLOAD",
    );
    let signature = sign(secret, &amz_date, &scope, &canonical);
    format!("{query}&X-Amz-Signature={signature}")
}

/// RFC 3986 percent-encoding of everything but unreserved characters (and `/` if asked).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Decodes `%XX` escapes (and `+` as space when `plus` is set).
pub fn percent_decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical query string: pairs decoded, re-encoded strictly, sorted.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k, false), false),
                uri_encode(&percent_decode(v, false), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical URI of a path as received (already percent-encoded): for every service but
/// S3 each segment is encoded once more, as the SDKs sign it.
pub fn canonical_uri(raw_path: &str, double_encode: bool) -> String {
    if raw_path.is_empty() {
        return "/".into();
    }
    if double_encode {
        uri_encode(raw_path, true)
    } else {
        raw_path.to_owned()
    }
}

/// A header value trimmed, with inner runs of spaces collapsed.
fn canonical_header_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Builds the canonical request of an HTTP request.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    query: &str,
    headers: &[(String, String)],
    signed_headers: &[String],
    payload_hash: &str,
) -> String {
    let mut out = format!("{method}\n{canonical_uri}\n{}\n", canonical_query(query));
    for name in signed_headers {
        let values: Vec<String> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_header_value(v))
            .collect();
        let _ = writeln!(out, "{name}:{}", values.join(","));
    }
    let _ = write!(out, "\n{}\n{payload_hash}", signed_headers.join(";"));
    out
}

/// Constant-time equality of two hex signatures.
pub fn signatures_equal(a: &str, b: &str) -> bool {
    slipway_iam::crypto::same_secret(a.as_bytes(), b.as_bytes())
}

/// Parses `YYYYMMDDTHHMMSSZ` into Unix seconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, &fmt)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// Formats Unix seconds as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(secs: i64) -> String {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// Checks that `amz_date` is within [`MAX_SKEW_SECS`] of `now`.
pub fn check_skew(amz_date: &str, now: i64) -> Result<(), AuthError> {
    let t = parse_amz_date(amz_date)
        .ok_or_else(|| AuthError::Incomplete(format!("Invalid X-Amz-Date: {amz_date}")))?;
    if (now - t).abs() > MAX_SKEW_SECS {
        let which = if t < now { "earlier" } else { "later" };
        let bound = if t < now {
            now - MAX_SKEW_SECS
        } else {
            now + MAX_SKEW_SECS
        };
        let sign = if t < now { '-' } else { '+' };
        return Err(AuthError::BadSignature(format!(
            "Signature expired: {amz_date} is now {which} than {} ({} {sign} 15 min.)",
            format_amz_date(bound),
            format_amz_date(now)
        )));
    }
    Ok(())
}

/// Verifies the password the aws-cli credential helper makes for git over HTTPS:
/// `<YYYYMMDDTHHMMSS>Z<hex signature>`, signing (with the timestamp sans `Z`) the canonical request
/// `GIT\n<repo path>\n\nhost:<hostname>\n\nhost\n`, scoped to `codecommit` in `region`.
pub fn verify_git_password(
    secret: &str,
    password: &str,
    repo_path: &str,
    hostname: &str,
    region: &str,
    now: i64,
) -> Result<(), AuthError> {
    let (stamp, signature) = password
        .split_once('Z')
        .filter(|(s, sig)| s.len() == 15 && sig.len() == 64)
        .ok_or_else(|| AuthError::Incomplete("not a credential-helper password".into()))?;
    let amz_date = format!("{stamp}Z");
    check_skew(&amz_date, now)?;
    let scope = Authorization {
        access_key_id: String::new(),
        date: stamp[..8].to_owned(),
        region: region.to_owned(),
        service: "codecommit".into(),
        signed_headers: vec!["host".into()],
        signature: String::new(),
    };
    let canonical = format!("GIT\n{repo_path}\n\nhost:{hostname}\n\nhost\n");
    // The helper puts its timestamp in the string to sign without the trailing `Z`.
    let expected = sign(secret, stamp, &scope, &canonical);
    if signatures_equal(&expected, &signature.to_ascii_lowercase()) {
        Ok(())
    } else {
        Err(AuthError::BadSignature(
            "The git password does not match.".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn vector_request(
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (String, Authorization) {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut signed: Vec<String> = headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        signed.sort();
        signed.dedup();
        let auth = Authorization {
            access_key_id: "AKIDEXAMPLE".into(),
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "service".into(),
            signed_headers: signed.clone(),
            signature: String::new(),
        };
        let creq = canonical_request(
            method,
            &canonical_uri(path, true),
            query,
            &headers,
            &signed,
            &sha256_hex(body),
        );
        (sign(SECRET, "20150830T123600Z", &auth, &creq), auth)
    }

    // Vectors from AWS's published SigV4 test suite (aws-sig-v4-test-suite).
    #[test]
    fn aws_test_suite_get_vanilla() {
        let (sig, _) = vector_request(
            "GET",
            "/",
            "",
            &[
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            b"",
        );
        assert_eq!(
            sig,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn aws_test_suite_get_vanilla_query_order() {
        let (sig, _) = vector_request(
            "GET",
            "/",
            "Param2=value2&Param1=value1",
            &[
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            b"",
        );
        assert_eq!(
            sig,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn aws_test_suite_post_x_www_form_urlencoded() {
        let (sig, _) = vector_request(
            "POST",
            "/",
            "",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            b"Param1=value1",
        );
        assert_eq!(
            sig,
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn authorization_header_parses_and_rejects_garbage() {
        let h = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let a = parse_authorization(h).unwrap();
        assert_eq!(a.access_key_id, "AKIDEXAMPLE");
        assert_eq!(a.scope(), "20150830/us-east-1/service/aws4_request");
        assert_eq!(a.signed_headers, vec!["host", "x-amz-date"]);
        for bad in [
            "Basic abc",
            "AWS4-HMAC-SHA256 Credential=a/b/c",
            "AWS4-HMAC-SHA256 Credential=A/1/r/s/aws4_request, SignedHeaders=host, Signature=zz",
        ] {
            assert!(
                matches!(parse_authorization(bad), Err(AuthError::Incomplete(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn skew_window() {
        let t = parse_amz_date("20150830T123600Z").unwrap();
        assert!(check_skew("20150830T123600Z", t + 899).is_ok());
        assert!(matches!(
            check_skew("20150830T123600Z", t + 901),
            Err(AuthError::BadSignature(_))
        ));
        assert!(matches!(
            check_skew("20150830T123600Z", t - 901),
            Err(AuthError::BadSignature(_))
        ));
        assert_eq!(format_amz_date(t), "20150830T123600Z");
    }

    #[test]
    fn encoding() {
        assert_eq!(uri_encode("a b/c~", true), "a%20b/c~");
        assert_eq!(percent_decode("a%20b%2", false), "a b%2");
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
    }
}
