//! CodeDeploy's domain error: an exception of CodeDeploy's model (its generated
//! `ErrorKind`, which knows the code and HTTP status) with AWS's message, or an internal
//! failure whose detail belongs in the log only.

pub use slipway_model::codedeploy::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {message}", kind.code())]
    Api { kind: ErrorKind, message: String },
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of kind `kind` with AWS's `message`.
pub fn err(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::Api {
        kind,
        message: message.into(),
    }
}

impl Error {
    /// The exception's kind (None for an internal failure).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Api { kind, .. } => Some(*kind),
            Error::Internal(_) => None,
        }
    }
}

impl From<slipway_store::StoreError> for Error {
    fn from(e: slipway_store::StoreError) -> Self {
        Error::Internal(e.to_string())
    }
}
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Internal(e.to_string())
    }
}
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("a stored CodeDeploy document: {e}"))
    }
}
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

/// The error on the wire: the exception with its model status, or `InternalFailure` with
/// the detail logged and never sent.
impl From<Error> for slipway_model::ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Api { kind, message } => {
                slipway_model::ApiError::new(kind.code(), kind.status(), message)
            }
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                slipway_model::ApiError::internal()
            }
        }
    }
}
