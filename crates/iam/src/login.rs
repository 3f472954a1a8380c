//! Sign-in for the console: IAM users' passwords (AWS's login profiles), kept as argon2id
//! hashes with a random salt each, and sign-in with an access key pair.

use crate::{Iam, IamError, KeyOwner};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use slipway_store::console as db;

/// The shortest password accepted (AWS's default password policy: 8).
pub const MIN_PASSWORD: usize = 8;
/// The longest (AWS: 128).
pub const MAX_PASSWORD: usize = 128;

/// A hash made once at start, checked when a name has no password, so that a sign-in takes
/// as long for an unknown name as for a wrong password.
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("slipway decoy password").unwrap_or_default())
}

fn hash(password: &str) -> Result<String, IamError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IamError::Internal(format!("hashing a password: {e}")))
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

impl Iam {
    /// Sets a user's console password (CreateLoginProfile / UpdateLoginProfile); the
    /// user's sessions end.
    pub async fn set_password(&self, user: &str, password: &str) -> Result<(), IamError> {
        self.get_user(user).await?;
        let n = password.chars().count();
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
            return Err(IamError::Validation(format!(
                "Password should have between {MIN_PASSWORD} and {MAX_PASSWORD} characters"
            )));
        }
        let password = password.to_owned();
        let h = tokio_blocking(move || hash(&password)).await??;
        let mut tx = self.store.begin_write().await?;
        db::put_login_profile(&mut tx, user, &h, slipway_store::now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether `password` is `user`'s console password (false when they have none).
    pub async fn verify_password(&self, user: &str, password: &str) -> Result<bool, IamError> {
        let stored = {
            let mut conn = self.store.pool().acquire().await?;
            db::login_profile(&mut conn, user).await?
        };
        let password = password.to_owned();
        tokio_blocking(move || match stored {
            Some(h) => verify(&h, &password),
            None => {
                verify(decoy(), &password);
                false
            }
        })
        .await
    }

    /// The owner of an access key pair, if the secret is the key's (compared in constant
    /// time).
    pub async fn verify_key_pair(
        &self,
        access_key_id: &str,
        secret: &str,
    ) -> Result<Option<KeyOwner>, IamError> {
        Ok(self
            .key_owner(access_key_id)
            .await?
            .filter(|o| crate::crypto::same_secret(o.secret.as_bytes(), secret.as_bytes())))
    }
}

/// Runs CPU-heavy work (argon2) off the async workers.
async fn tokio_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, IamError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IamError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_and_verify_only_their_password() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert_ne!(a, b, "each hash has its own salt");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify(&a, "correct horse") && verify(&b, "correct horse"));
        assert!(!verify(&a, "correct horsf"));
        assert!(!verify("not a hash", "correct horse"));
    }
}
