//! Identity and access: root credentials, IAM users, access keys, inline policies,
//! service-specific (git) credentials, and the authorisation decision for every request.
//!
//! This crate knows nothing of HTTP or SigV4: it hands the API edge the secret for an
//! access key id and answers "may this principal do this action on this resource?".

pub mod crypto;
pub mod login;
pub mod policy;

use crypto::{random_bytes, MasterKey};
use hmac::{Hmac, Mac};
use policy::{Decision, Policy};
use serde::Serialize;
use sha2::Sha256;
use slipway_store::{is_unique_violation, now, sqlx, Store, StoreError};
use sqlx::Row;
use std::path::Path;

/// Errors of IAM operations, named as AWS IAM names them.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    NoSuchEntity(String),
    #[error("{0}")]
    EntityAlreadyExists(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    DeleteConflict(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    Validation(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for IamError {
    fn from(e: sqlx::Error) -> Self {
        IamError::Store(StoreError::Db(e))
    }
}

impl IamError {
    /// The error code AWS IAM uses.
    pub fn code(&self) -> &'static str {
        match self {
            IamError::NoSuchEntity(_) => "NoSuchEntity",
            IamError::EntityAlreadyExists(_) => "EntityAlreadyExists",
            IamError::LimitExceeded(_) => "LimitExceeded",
            IamError::DeleteConflict(_) => "DeleteConflict",
            IamError::MalformedPolicyDocument(_) => "MalformedPolicyDocument",
            IamError::Validation(_) => "ValidationError",
            IamError::Store(_) | IamError::Internal(_) => "ServiceFailure",
        }
    }
}

/// A principal as the API edge needs it: who, and the secret to check their signature.
#[derive(Clone)]
pub struct KeyOwner {
    pub arn: String,
    pub user_name: Option<String>,
    pub secret: String,
}

/// The account root's access key pair.
#[derive(Clone)]
pub struct RootCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for RootCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

const ALNUM_UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_string<const N: usize>(alphabet: &[u8]) -> String {
    random_bytes::<N>()
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect()
}

/// A new access key id: `AKIA` + 16 characters, as AWS issues them.
pub fn new_access_key_id() -> String {
    format!("AKIA{}", random_string::<16>(ALNUM_UPPER))
}

/// A new 40-character secret access key.
pub fn new_secret_key() -> String {
    random_string::<40>(SECRET_CHARS)
}

impl RootCredentials {
    /// Root credentials that match no request (for tools that never authenticate anyone).
    pub fn disabled() -> RootCredentials {
        RootCredentials {
            access_key_id: String::new(),
            secret_access_key: String::new(),
        }
    }

    /// Existing root credentials (env or file), without creating any.
    pub fn load(data_dir: &Path) -> Option<RootCredentials> {
        let has_env = std::env::var("SLIPWAY_ROOT_ACCESS_KEY_ID").is_ok_and(|v| !v.is_empty());
        if !has_env && !data_dir.join("root-credentials").exists() {
            return None;
        }
        Self::load_or_create(data_dir).ok().map(|(c, _)| c)
    }

    /// From `SLIPWAY_ROOT_ACCESS_KEY_ID`/`SLIPWAY_ROOT_SECRET_ACCESS_KEY` if both are set;
    /// otherwise from `DIR/root-credentials`, generated (mode 0600) on first start.
    /// Returns the credentials and whether they were generated just now.
    pub fn load_or_create(data_dir: &Path) -> Result<(RootCredentials, bool), IamError> {
        if let (Ok(id), Ok(secret)) = (
            std::env::var("SLIPWAY_ROOT_ACCESS_KEY_ID"),
            std::env::var("SLIPWAY_ROOT_SECRET_ACCESS_KEY"),
        ) {
            if !id.is_empty() && !secret.is_empty() {
                return Ok((
                    RootCredentials {
                        access_key_id: id,
                        secret_access_key: secret,
                    },
                    false,
                ));
            }
        }
        let path = data_dir.join("root-credentials");
        let mut created = false;
        if !path.exists() {
            let text = format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                new_access_key_id(),
                new_secret_key()
            );
            crypto::write_private_file(&path, text.as_bytes())
                .map_err(|e| IamError::Internal(format!("writing {}: {e}", path.display())))?;
            created = true;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| IamError::Internal(format!("reading {}: {e}", path.display())))?;
        let field = |name: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_owned())
        };
        match (field("aws_access_key_id"), field("aws_secret_access_key")) {
            (Some(id), Some(secret)) => Ok((
                RootCredentials {
                    access_key_id: id,
                    secret_access_key: secret,
                },
                created,
            )),
            _ => Err(IamError::Internal(format!(
                "{} lacks aws_access_key_id/aws_secret_access_key",
                path.display()
            ))),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct User {
    pub path: String,
    pub user_name: String,
    pub user_id: String,
    pub arn: String,
    pub create_date: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccessKey {
    pub user_name: String,
    pub access_key_id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    pub create_date: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpecificCredential {
    pub create_date: String,
    pub service_name: String,
    pub service_user_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_password: Option<String>,
    pub service_specific_credential_id: String,
    pub user_name: String,
    pub status: String,
}

/// Formats epoch seconds as ISO 8601 the way the aws-cli prints IAM dates.
pub fn iso8601(epoch: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Services that accept service-specific credentials.
const CREDENTIAL_SERVICES: &[&str] = &["codecommit.amazonaws.com"];

fn valid_name(kind: &str, name: &str, max: usize) -> Result<(), IamError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "The specified value for {kind} is invalid. It must contain only alphanumeric characters and/or the following: +=,.@_- (1-{max} characters)"
        )))
    }
}

fn password_digest(salt: &str, password: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(salt.as_bytes()).expect("HMAC takes any key length");
    mac.update(password.as_bytes());
    mac
}

/// IAM for one account.
#[derive(Clone)]
pub struct Iam {
    store: Store,
    key: MasterKey,
    root: RootCredentials,
    account_id: String,
}

impl Iam {
    pub fn new(store: Store, key: MasterKey, root: RootCredentials, account_id: String) -> Iam {
        Iam {
            store,
            key,
            root,
            account_id,
        }
    }

    pub fn root_arn(&self) -> String {
        format!("arn:aws:iam::{}:root", self.account_id)
    }

    pub fn user_arn(&self, user: &str) -> String {
        format!("arn:aws:iam::{}:user/{user}", self.account_id)
    }

    /// The owner and secret of an active access key, if there is one.
    pub async fn key_owner(&self, access_key_id: &str) -> Result<Option<KeyOwner>, IamError> {
        if access_key_id.is_empty() {
            return Ok(None);
        }
        if access_key_id == self.root.access_key_id {
            return Ok(Some(KeyOwner {
                arn: self.root_arn(),
                user_name: None,
                secret: self.root.secret_access_key.clone(),
            }));
        }
        let row = sqlx::query("SELECT user_name, secret_ciphertext FROM iam_access_keys WHERE access_key_id = $1 AND status = 'Active'")
            .bind(access_key_id)
            .fetch_optional(self.store.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let user: String = row.get(0);
        let ct: Vec<u8> = row.get(1);
        let secret = self
            .key
            .decrypt(&ct)
            .map_err(|e| IamError::Internal(e.to_string()))?;
        Ok(Some(KeyOwner {
            arn: self.user_arn(&user),
            user_name: Some(user),
            secret: String::from_utf8(secret)
                .map_err(|_| IamError::Internal("secret is not UTF-8".into()))?,
        }))
    }

    /// Checks a service-specific credential; returns the user it belongs to.
    pub async fn verify_service_credential(
        &self,
        service: &str,
        user: &str,
        password: &str,
    ) -> Result<Option<String>, IamError> {
        let row = sqlx::query(
            "SELECT user_name, password_salt, password_hash FROM iam_service_credentials WHERE service_user_name = $1 AND service_name = $2 AND status = 'Active'",
        )
        .bind(user)
        .bind(service)
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let expected = hex::decode(row.get::<String, _>(2))
            .map_err(|_| IamError::Internal("bad hash".into()))?;
        // The password is 44 random characters, so a keyed fast hash is as strong as a slow
        // one here, and git sends it on every request. verify_slice compares in constant time.
        let ok = password_digest(&row.get::<String, _>(1), password)
            .verify_slice(&expected)
            .is_ok();
        Ok(ok.then(|| row.get(0)))
    }

    /// Whether `user_name` (None = root) may perform `action` on every one of `resources`.
    pub async fn authorize(
        &self,
        user_name: Option<&str>,
        action: &str,
        resources: &[String],
    ) -> Result<Decision, IamError> {
        let Some(user) = user_name else {
            return Ok(Decision::Allow);
        };
        let docs: Vec<String> =
            sqlx::query_scalar("SELECT document FROM iam_user_policies WHERE user_name = $1")
                .bind(user)
                .fetch_all(self.store.pool())
                .await?;
        let policies: Vec<Policy> = docs.iter().filter_map(|d| Policy::parse(d).ok()).collect();
        let mut decision = Decision::Allow;
        for r in resources {
            match policy::evaluate(&policies, action, r) {
                Decision::Allow => {}
                Decision::ExplicitDeny => return Ok(Decision::ExplicitDeny),
                Decision::ImplicitDeny => decision = Decision::ImplicitDeny,
            }
        }
        Ok(decision)
    }

    /// Re-encrypts every stored access-key secret under the primary master key (after a
    /// rotation). Returns how many were re-encrypted.
    pub async fn reencrypt_secrets(&self) -> Result<usize, IamError> {
        let mut tx = self.store.begin_write().await?;
        let rows = sqlx::query("SELECT access_key_id, secret_ciphertext FROM iam_access_keys")
            .fetch_all(&mut *tx)
            .await?;
        for r in &rows {
            let ct: Vec<u8> = r.get(1);
            let fresh = self
                .key
                .reencrypt(&ct)
                .map_err(|e| IamError::Internal(e.to_string()))?;
            sqlx::query(
                "UPDATE iam_access_keys SET secret_ciphertext = $1 WHERE access_key_id = $2",
            )
            .bind(fresh)
            .bind(r.get::<String, _>(0))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    // ---- administration (the `slipway admin` commands; later the IAM API) ----

    async fn require_user(&self, user: &str) -> Result<(), IamError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM iam_users WHERE user_name = $1")
            .bind(user)
            .fetch_one(self.store.pool())
            .await?;
        if n == 0 {
            return Err(IamError::NoSuchEntity(format!(
                "The user with name {user} cannot be found."
            )));
        }
        Ok(())
    }

    fn user_from_row(&self, row: &sqlx::sqlite::SqliteRow) -> User {
        let name: String = row.get("user_name");
        let path: String = row.get("path");
        User {
            arn: format!("arn:aws:iam::{}:user{}{}", self.account_id, path, name),
            path,
            user_id: row.get("user_id"),
            create_date: iso8601(row.get("created_at")),
            user_name: name,
        }
    }

    pub async fn create_user(&self, user: &str, path: Option<&str>) -> Result<User, IamError> {
        valid_name("userName", user, 64)?;
        let path = path.unwrap_or("/");
        if !path.starts_with('/') || !path.ends_with('/') {
            return Err(IamError::Validation(
                "The path must begin and end with /".into(),
            ));
        }
        let user_id = format!("AIDA{}", random_string::<17>(ALNUM_UPPER));
        let res = sqlx::query(
            "INSERT INTO iam_users (user_name, user_id, path, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(user)
        .bind(&user_id)
        .bind(path)
        .bind(now())
        .execute(self.store.pool())
        .await;
        match res {
            Err(e) if is_unique_violation(&e) => Err(IamError::EntityAlreadyExists(format!(
                "User with name {user} already exists."
            ))),
            Err(e) => Err(e.into()),
            Ok(_) => self.get_user(user).await,
        }
    }

    pub async fn get_user(&self, user: &str) -> Result<User, IamError> {
        let row = sqlx::query("SELECT * FROM iam_users WHERE user_name = $1")
            .bind(user)
            .fetch_optional(self.store.pool())
            .await?
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!("The user with name {user} cannot be found."))
            })?;
        Ok(self.user_from_row(&row))
    }

    pub async fn list_users(&self) -> Result<Vec<User>, IamError> {
        let rows = sqlx::query("SELECT * FROM iam_users ORDER BY user_name")
            .fetch_all(self.store.pool())
            .await?;
        Ok(rows.iter().map(|r| self.user_from_row(r)).collect())
    }

    /// Deletes a user; like IAM, refuses while keys, policies or credentials remain.
    pub async fn delete_user(&self, user: &str) -> Result<(), IamError> {
        self.require_user(user).await?;
        let mut tx = self.store.begin_write().await?;
        for (table, what) in [
            ("iam_access_keys", "access keys"),
            ("iam_user_policies", "policies"),
            ("iam_service_credentials", "service-specific credentials"),
        ] {
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM {table} WHERE user_name = $1"
            ))
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
            if n > 0 {
                return Err(IamError::DeleteConflict(format!(
                    "Cannot delete entity, must delete {what} first."
                )));
            }
        }
        sqlx::query("DELETE FROM iam_users WHERE user_name = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_access_key(&self, user: &str) -> Result<AccessKey, IamError> {
        self.require_user(user).await?;
        let mut tx = self.store.begin_write().await?;
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM iam_access_keys WHERE user_name = $1")
                .bind(user)
                .fetch_one(&mut *tx)
                .await?;
        if n >= 2 {
            return Err(IamError::LimitExceeded(
                "Cannot exceed quota for AccessKeysPerUser: 2".into(),
            ));
        }
        let id = new_access_key_id();
        let secret = new_secret_key();
        let created = now();
        sqlx::query("INSERT INTO iam_access_keys (access_key_id, user_name, secret_ciphertext, status, created_at) VALUES ($1, $2, $3, 'Active', $4)")
            .bind(&id)
            .bind(user)
            .bind(self.key.encrypt(secret.as_bytes()))
            .bind(created)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(AccessKey {
            user_name: user.into(),
            access_key_id: id,
            status: "Active".into(),
            secret_access_key: Some(secret),
            create_date: iso8601(created),
        })
    }

    pub async fn list_access_keys(&self, user: &str) -> Result<Vec<AccessKey>, IamError> {
        self.require_user(user).await?;
        let rows = sqlx::query("SELECT access_key_id, status, created_at FROM iam_access_keys WHERE user_name = $1 ORDER BY created_at")
            .bind(user)
            .fetch_all(self.store.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| AccessKey {
                user_name: user.into(),
                access_key_id: r.get(0),
                status: r.get(1),
                secret_access_key: None,
                create_date: iso8601(r.get(2)),
            })
            .collect())
    }

    pub async fn update_access_key(
        &self,
        user: &str,
        id: &str,
        status: &str,
    ) -> Result<(), IamError> {
        if status != "Active" && status != "Inactive" {
            return Err(IamError::Validation(
                "Status must be Active or Inactive".into(),
            ));
        }
        let res = sqlx::query(
            "UPDATE iam_access_keys SET status = $1 WHERE access_key_id = $2 AND user_name = $3",
        )
        .bind(status)
        .bind(id)
        .bind(user)
        .execute(self.store.pool())
        .await?;
        if res.rows_affected() == 0 {
            return Err(IamError::NoSuchEntity(format!(
                "The Access Key with id {id} cannot be found."
            )));
        }
        Ok(())
    }

    pub async fn delete_access_key(&self, user: &str, id: &str) -> Result<(), IamError> {
        self.delete_owned(
            "DELETE FROM iam_access_keys WHERE user_name = $1 AND access_key_id = $2",
            user,
            id,
            format!("The Access Key with id {id} cannot be found."),
        )
        .await
    }

    /// Runs a `DELETE … WHERE user_name = $1 AND <key> = $2`; `NoSuchEntity` if nothing matched.
    async fn delete_owned(
        &self,
        sql: &str,
        user: &str,
        key: &str,
        missing: String,
    ) -> Result<(), IamError> {
        let res = sqlx::query(sql)
            .bind(user)
            .bind(key)
            .execute(self.store.pool())
            .await?;
        if res.rows_affected() == 0 {
            return Err(IamError::NoSuchEntity(missing));
        }
        Ok(())
    }

    pub async fn put_user_policy(
        &self,
        user: &str,
        name: &str,
        document: &str,
    ) -> Result<(), IamError> {
        valid_name("policyName", name, 128)?;
        self.require_user(user).await?;
        Policy::parse(document).map_err(IamError::MalformedPolicyDocument)?;
        sqlx::query(
            "INSERT INTO iam_user_policies (user_name, policy_name, document) VALUES ($1, $2, $3)
             ON CONFLICT (user_name, policy_name) DO UPDATE SET document = excluded.document",
        )
        .bind(user)
        .bind(name)
        .bind(document)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    pub async fn get_user_policy(&self, user: &str, name: &str) -> Result<String, IamError> {
        self.require_user(user).await?;
        sqlx::query_scalar(
            "SELECT document FROM iam_user_policies WHERE user_name = $1 AND policy_name = $2",
        )
        .bind(user)
        .bind(name)
        .fetch_optional(self.store.pool())
        .await?
        .ok_or_else(|| {
            IamError::NoSuchEntity(format!("The user policy with name {name} cannot be found."))
        })
    }

    pub async fn list_user_policies(&self, user: &str) -> Result<Vec<String>, IamError> {
        self.require_user(user).await?;
        Ok(sqlx::query_scalar(
            "SELECT policy_name FROM iam_user_policies WHERE user_name = $1 ORDER BY policy_name",
        )
        .bind(user)
        .fetch_all(self.store.pool())
        .await?)
    }

    pub async fn delete_user_policy(&self, user: &str, name: &str) -> Result<(), IamError> {
        self.require_user(user).await?;
        self.delete_owned(
            "DELETE FROM iam_user_policies WHERE user_name = $1 AND policy_name = $2",
            user,
            name,
            format!("The user policy with name {name} cannot be found."),
        )
        .await
    }

    pub async fn create_service_specific_credential(
        &self,
        user: &str,
        service: &str,
    ) -> Result<ServiceSpecificCredential, IamError> {
        if !CREDENTIAL_SERVICES.contains(&service) {
            return Err(IamError::Validation(format!(
                "No such service {service} is supported for Service Specific Credentials"
            )));
        }
        self.require_user(user).await?;
        let mut tx = self.store.begin_write().await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM iam_service_credentials WHERE user_name = $1 AND service_name = $2")
            .bind(user)
            .bind(service)
            .fetch_one(&mut *tx)
            .await?;
        if n >= 2 {
            return Err(IamError::LimitExceeded(
                "Cannot exceed quota for ServiceSpecificCredentialsPerUserPerService: 2".into(),
            ));
        }
        let id = format!("ACCA{}", random_string::<17>(ALNUM_UPPER));
        // Two credentials per user and service: suffix the second so names stay unique.
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("+{}", n)
        };
        let service_user = format!("{user}-at-{}{suffix}", self.account_id);
        let password = random_string::<44>(SECRET_CHARS);
        let salt = hex::encode(random_bytes::<16>());
        let hash = hex::encode(password_digest(&salt, &password).finalize().into_bytes());
        let created = now();
        sqlx::query(
            "INSERT INTO iam_service_credentials (credential_id, user_name, service_name, service_user_name, password_salt, password_hash, status, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'Active', $7)",
        )
        .bind(&id)
        .bind(user)
        .bind(service)
        .bind(&service_user)
        .bind(&salt)
        .bind(&hash)
        .bind(created)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ServiceSpecificCredential {
            create_date: iso8601(created),
            service_name: service.into(),
            service_user_name: service_user,
            service_password: Some(password),
            service_specific_credential_id: id,
            user_name: user.into(),
            status: "Active".into(),
        })
    }

    pub async fn list_service_specific_credentials(
        &self,
        user: &str,
    ) -> Result<Vec<ServiceSpecificCredential>, IamError> {
        self.require_user(user).await?;
        let rows = sqlx::query(
            "SELECT credential_id, service_name, service_user_name, status, created_at FROM iam_service_credentials WHERE user_name = $1 ORDER BY created_at",
        )
        .bind(user)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| ServiceSpecificCredential {
                service_specific_credential_id: r.get(0),
                service_name: r.get(1),
                service_user_name: r.get(2),
                status: r.get(3),
                create_date: iso8601(r.get(4)),
                service_password: None,
                user_name: user.into(),
            })
            .collect())
    }

    pub async fn delete_service_specific_credential(
        &self,
        user: &str,
        id: &str,
    ) -> Result<(), IamError> {
        self.require_user(user).await?;
        self.delete_owned(
            "DELETE FROM iam_service_credentials WHERE user_name = $1 AND credential_id = $2",
            user,
            id,
            format!("No such credential {id} exists"),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn iam() -> (tempfile::TempDir, Iam) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "us-east-1").await.unwrap();
        let key = MasterKey::load_or_create(dir.path()).unwrap();
        let root = RootCredentials {
            access_key_id: "AKIAROOT".into(),
            secret_access_key: "s".into(),
        };
        (dir, Iam::new(store, key, root, "000000000000".into()))
    }

    #[tokio::test]
    async fn keys_are_encrypted_and_resolvable() {
        let (dir, iam) = iam().await;
        iam.create_user("alice", None).await.unwrap();
        assert!(matches!(
            iam.create_user("alice", None).await,
            Err(IamError::EntityAlreadyExists(_))
        ));
        let k = iam.create_access_key("alice").await.unwrap();
        let secret = k.secret_access_key.clone().unwrap();
        let owner = iam.key_owner(&k.access_key_id).await.unwrap().unwrap();
        assert_eq!(owner.secret, secret);
        assert_eq!(owner.arn, "arn:aws:iam::000000000000:user/alice");
        let db = std::fs::read(dir.path().join("slipway.db")).unwrap();
        let wal = std::fs::read(dir.path().join("slipway.db-wal")).unwrap_or_default();
        for bytes in [db, wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "secret stored in plaintext"
            );
        }
        iam.create_access_key("alice").await.unwrap();
        assert!(matches!(
            iam.create_access_key("alice").await,
            Err(IamError::LimitExceeded(_))
        ));
        assert!(matches!(
            iam.delete_user("alice").await,
            Err(IamError::DeleteConflict(_))
        ));
        iam.update_access_key("alice", &k.access_key_id, "Inactive")
            .await
            .unwrap();
        assert!(iam.key_owner(&k.access_key_id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn service_credentials_verify() {
        let (_dir, iam) = iam().await;
        iam.create_user("bob", None).await.unwrap();
        let c = iam
            .create_service_specific_credential("bob", "codecommit.amazonaws.com")
            .await
            .unwrap();
        let pw = c.service_password.clone().unwrap();
        let svc = "codecommit.amazonaws.com";
        assert_eq!(
            iam.verify_service_credential(svc, &c.service_user_name, &pw)
                .await
                .unwrap()
                .as_deref(),
            Some("bob")
        );
        assert_eq!(
            iam.verify_service_credential(svc, &c.service_user_name, "wrong")
                .await
                .unwrap(),
            None
        );
        assert!(iam
            .create_service_specific_credential("bob", "s3.amazonaws.com")
            .await
            .is_err());
    }

    #[tokio::test]
    async fn authorization_uses_policies() {
        let (_dir, iam) = iam().await;
        iam.create_user("carol", None).await.unwrap();
        let repo = vec!["arn:aws:codecommit:us-east-1:000000000000:r".to_string()];
        assert_eq!(
            iam.authorize(Some("carol"), "codecommit:GitPull", &repo)
                .await
                .unwrap(),
            Decision::ImplicitDeny
        );
        assert_eq!(
            iam.authorize(None, "codecommit:GitPull", &repo)
                .await
                .unwrap(),
            Decision::Allow
        );
        assert!(matches!(
            iam.put_user_policy("carol", "p", "{").await,
            Err(IamError::MalformedPolicyDocument(_))
        ));
        iam.put_user_policy(
            "carol",
            "p",
            r#"{"Statement":{"Effect":"Allow","Action":"codecommit:Git*","Resource":"*"}}"#,
        )
        .await
        .unwrap();
        assert_eq!(
            iam.authorize(Some("carol"), "codecommit:GitPull", &repo)
                .await
                .unwrap(),
            Decision::Allow
        );
    }
}
