//! Support for generated code: the request context, AWS-shaped errors, JSON codec and validation.

use regex::Regex;
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// Seconds since the Unix epoch, as AWS's JSON protocols carry timestamps.
pub type Timestamp = f64;

/// A shape with no members (operations without an input or output).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

impl Validate for Empty {
    fn validate(&self, _v: &mut Validator) {}
}

/// Binary data, carried base64-encoded in JSON.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64_encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        base64_decode(&s)
            .map(Blob)
            .ok_or_else(|| serde::de::Error::custom("blob is not valid base64"))
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (the encoding AWS JSON protocols use for blobs).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; `None` when the text is not valid base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6).then_some(out)
}

/// Who is making a request, once SigV4 has verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The ARN of the caller (`arn:aws:iam::ACCOUNT:root` or `…:user/NAME`).
    pub arn: String,
    /// The access key id the request was signed with.
    pub access_key_id: String,
    /// The IAM user name; `None` for the account root.
    pub user_name: Option<String>,
}

impl Principal {
    /// The principal `arn` names, acting without a key of its own (a build acting as the
    /// principal that started it).
    pub fn acting_as(arn: &str) -> Principal {
        Principal {
            user_name: arn
                .rsplit_once(":user/")
                .and_then(|(_, rest)| rest.rsplit('/').next())
                .map(str::to_owned),
            arn: arn.to_owned(),
            access_key_id: String::new(),
        }
    }
}

/// What a handler knows about the request it serves.
#[derive(Debug, Clone)]
pub struct Context {
    pub request_id: String,
    pub region: String,
    pub account_id: String,
    pub principal: Principal,
}

/// An error as AWS's JSON protocols send it: an HTTP status, a `__type` code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Cow<'static, str>,
    pub status: u16,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(
        code: impl Into<Cow<'static, str>>,
        status: u16,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            code: code.into(),
            status,
            message: message.into(),
        }
    }

    pub fn not_implemented(service: &str, operation: &str) -> Self {
        Self::new(
            "NotImplementedException",
            501,
            format!("The operation {operation} of {service} is not implemented by Slipway yet."),
        )
    }

    pub fn unknown_operation(prefix: &str, operation: &str) -> Self {
        Self::new(
            "UnknownOperationException",
            400,
            format!("Unknown operation {prefix}.{operation}"),
        )
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", 400, message)
    }

    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new("SerializationException", 400, message)
    }

    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new("AccessDeniedException", 400, message)
    }

    /// An internal failure; the detail goes to the log, never to the client.
    pub fn internal() -> Self {
        Self::new(
            "InternalFailure",
            500,
            "The request processing has failed because of an unknown error.",
        )
    }

    /// The JSON body AWS sends for this error.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "__type": self.code, "message": self.message }))
            .unwrap_or_default()
    }
}

/// Decodes an operation's input from the request's JSON value.
pub fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| {
        ApiError::serialization(format!(
            "Start of structure or map found where not expected, or wrong type: {e}"
        ))
    })
}

/// Encodes an operation's output as the JSON response body.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|_| ApiError::internal())
}

/// A shape that can check itself against its model's constraints.
pub trait Validate {
    fn validate(&self, v: &mut Validator);
}

/// Why a value failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    Missing,
    Invalid,
    TooMany,
}

/// One constraint violation, with the path to the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The top-level input member the violation is under.
    pub member: String,
    pub path: String,
    pub kind: ViolationKind,
    pub message: String,
}

/// Walks a shape, collecting violations with AWS's path format (`a.b.1.member.c`).
#[derive(Debug, Default)]
pub struct Validator {
    path: Vec<String>,
    pub violations: Vec<Violation>,
}

impl Validator {
    pub fn enter_member(&mut self, name: &str) {
        self.path.push(name.to_owned());
    }
    pub fn enter_index(&mut self, i: usize) {
        self.path.push(format!("{}.member", i + 1));
    }
    pub fn enter_key(&mut self, key: &str) {
        self.path.push(key.to_owned());
    }
    pub fn leave(&mut self) {
        self.path.pop();
    }

    fn fail(&mut self, kind: ViolationKind, value: &str, constraint: String) {
        let path = self.path.join(".");
        let member = self.path.first().cloned().unwrap_or_default();
        // Lengths and counts do not show the value (it may be long, or secret): "Value at …".
        let shown = if value.is_empty() {
            String::new()
        } else {
            format!("{value} ")
        };
        let message =
            format!("Value {shown}at '{path}' failed to satisfy constraint: {constraint}");
        self.violations.push(Violation {
            member,
            path,
            kind,
            message,
        });
    }

    pub fn required(&mut self, present: bool) {
        if !present {
            self.fail(
                ViolationKind::Missing,
                "null",
                "Member must not be null".into(),
            );
        }
    }

    pub fn length(&mut self, len: usize, min: Option<u64>, max: Option<u64>) {
        if let Some(min) = min.filter(|&m| (len as u64) < m) {
            self.fail(
                ViolationKind::Invalid,
                "",
                format!("Member must have length greater than or equal to {min}"),
            );
        } else if let Some(max) = max.filter(|&m| (len as u64) > m) {
            self.fail(
                ViolationKind::Invalid,
                "",
                format!("Member must have length less than or equal to {max}"),
            );
        }
    }

    pub fn count(&mut self, len: usize, min: Option<u64>, max: Option<u64>) {
        if let Some(min) = min.filter(|&m| (len as u64) < m) {
            self.fail(
                ViolationKind::Invalid,
                "",
                format!("Member must have length greater than or equal to {min}"),
            );
        } else if let Some(max) = max.filter(|&m| (len as u64) > m) {
            self.fail(
                ViolationKind::TooMany,
                "",
                format!("Member must have length less than or equal to {max}"),
            );
        }
    }

    pub fn range(&mut self, value: f64, min: Option<f64>, max: Option<f64>) {
        if let Some(min) = min.filter(|&m| value < m) {
            self.fail(
                ViolationKind::Invalid,
                &format!("'{value}'"),
                format!("Member must have value greater than or equal to {min}"),
            );
        } else if let Some(max) = max.filter(|&m| value > m) {
            self.fail(
                ViolationKind::Invalid,
                &format!("'{value}'"),
                format!("Member must have value less than or equal to {max}"),
            );
        }
    }

    pub fn pattern(&mut self, value: &str, re: &Regex, pattern: &str) {
        if !re.is_match(value) {
            let shown = format!("'{}'", value.chars().take(256).collect::<String>());
            self.fail(
                ViolationKind::Invalid,
                &shown,
                format!("Member must satisfy regular expression pattern: {pattern}"),
            );
        }
    }

    pub fn one_of(&mut self, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            let shown = format!("'{}'", value.chars().take(256).collect::<String>());
            self.fail(
                ViolationKind::Invalid,
                &shown,
                format!(
                    "Member must satisfy enum value set: [{}]",
                    allowed.join(", ")
                ),
            );
        }
    }
}

/// Top-level member → (missing, invalid, too-many) exception codes of one operation.
pub type MemberErrors = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// CodeCommit's text for a repository name it refuses (AWS's own, trailing space included).
pub const INVALID_REPOSITORY_NAME: &str = "The repository name is not valid. Repository names can be any valid combination of letters, numbers, periods, underscores, and dashes between 1 and 100 characters in length. Names are case sensitive. For more information, see Limits in the AWS CodeCommit User Guide. ";

/// The message AWS gives with a service exception for a constraint violation, where it is its
/// own text rather than the constraint's.
fn own_message(code: &str) -> Option<&'static str> {
    (code == "InvalidRepositoryNameException").then_some(INVALID_REPOSITORY_NAME)
}

/// Validates an input; the first violation becomes the service's own exception where the
/// operation's model names one for that member, and `ValidationException` otherwise.
pub fn check<T: Validate>(input: &T, table: &[MemberErrors]) -> Result<(), ApiError> {
    let mut v = Validator::default();
    input.validate(&mut v);
    let Some(first) = v.violations.first() else {
        return Ok(());
    };
    let specific =
        table
            .iter()
            .find(|(m, ..)| *m == first.member)
            .and_then(|(_, missing, invalid, many)| match first.kind {
                ViolationKind::Missing => *missing,
                ViolationKind::Invalid => *invalid,
                ViolationKind::TooMany => many.or(*invalid),
            });
    Err(match specific {
        Some(code) if first.kind == ViolationKind::Missing => ApiError::new(
            code,
            400,
            format!("{} is required but was not specified.", first.member),
        ),
        Some(code) => ApiError::new(
            code,
            400,
            own_message(code).map_or_else(|| first.message.clone(), str::to_owned),
        ),
        None if v.violations.len() == 1 => {
            ApiError::validation(format!("1 validation error detected: {}", first.message))
        }
        None => ApiError::validation(format!(
            "{} validation errors detected: {}",
            v.violations.len(),
            v.violations
                .iter()
                .map(|x| x.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0, 255, 128, 7],
        ] {
            let enc = base64_encode(data);
            assert_eq!(base64_decode(&enc).as_deref(), Some(data), "{enc}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode("Zm9v!").is_none());
    }
}
