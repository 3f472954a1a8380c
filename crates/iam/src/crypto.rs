//! Encryption of secrets at rest: AES-256-GCM under a master key kept outside the database.
//!
//! The master key lives in `DIR/master.key` (hex, mode 0600) unless `SLIPWAY_MASTER_KEY`
//! supplies it; a leaked database alone therefore never yields usable secrets.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use std::io::Write;
use std::path::Path;

/// Format byte of ciphertexts sealed directly under the master key.
const FORMAT_V1: u8 = 1;
/// Format byte of envelopes: a data key wrapped by the master key, then the data under it.
const FORMAT_ENVELOPE: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key: {0}")]
    Key(String),
    #[error("ciphertext is corrupt or was made with another master key")]
    Decrypt,
}

/// The master key. Cloning shares nothing mutable; `Debug` never prints the key.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(text.trim()).map_err(|_| CryptoError::Key("not hex".into()))?;
        if bytes.len() != 32 {
            return Err(CryptoError::Key(
                "must be 32 bytes (64 hex characters)".into(),
            ));
        }
        Ok(MasterKey {
            cipher: Aes256Gcm::new_from_slice(&bytes)
                .map_err(|e| CryptoError::Key(e.to_string()))?,
        })
    }

    /// Loads `SLIPWAY_MASTER_KEY` if set, else `DIR/master.key`, creating it (mode 0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, CryptoError> {
        if let Ok(hex_key) = std::env::var("SLIPWAY_MASTER_KEY") {
            return Self::from_hex(&hex_key);
        }
        let path = data_dir.join("master.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_hex(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                write_private_file(&path, format!("{}\n", hex::encode(key)).as_bytes())
                    .map_err(|e| CryptoError::Key(format!("writing {}: {e}", path.display())))?;
                // Another process may have won the race to create it: use whatever is on disk.
                Self::from_hex(
                    &std::fs::read_to_string(&path).map_err(|e| CryptoError::Key(e.to_string()))?,
                )
            }
            Err(e) => Err(CryptoError::Key(format!("reading {}: {e}", path.display()))),
        }
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("AES-GCM encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Envelope encryption: a fresh AES-256 data key encrypts `plaintext`; the master key
    /// wraps the data key. Layout: `2 | len(wrapped) u16 BE | wrapped | nonce(12) | ciphertext`.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let data_key = random_bytes::<32>();
        let wrapped = self.encrypt(&data_key);
        let nonce = random_bytes::<12>();
        let cipher = Aes256Gcm::new_from_slice(&data_key).expect("32-byte key");
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("AES-GCM encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(3 + wrapped.len() + 12 + ct.len());
        out.push(FORMAT_ENVELOPE);
        out.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens an envelope made by [`MasterKey::seal`].
    pub fn open(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if data.len() < 3 || data[0] != FORMAT_ENVELOPE {
            return Err(CryptoError::Decrypt);
        }
        let n = u16::from_be_bytes([data[1], data[2]]) as usize;
        let rest = &data[3..];
        if rest.len() < n + 12 {
            return Err(CryptoError::Decrypt);
        }
        let data_key = self.decrypt(&rest[..n])?;
        let cipher = Aes256Gcm::new_from_slice(&data_key).map_err(|_| CryptoError::Decrypt)?;
        cipher
            .decrypt(Nonce::from_slice(&rest[n..n + 12]), &rest[n + 12..])
            .map_err(|_| CryptoError::Decrypt)
    }

    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if data.len() < 13 || data[0] != FORMAT_V1 {
            return Err(CryptoError::Decrypt);
        }
        self.cipher
            .decrypt(Nonce::from_slice(&data[1..13]), &data[13..])
            .map_err(|_| CryptoError::Decrypt)
    }
}

/// Creates `path` with mode 0600 and `contents`, failing if it already exists.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    // hard_link fails if the target exists, so concurrent creators never overwrite each other.
    let res = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match res {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Random bytes from the OS-seeded CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = MasterKey::from_hex(&"ab".repeat(32)).unwrap();
        let ct = k.encrypt(b"secret");
        assert_ne!(&ct[13..], b"secret");
        assert_eq!(k.decrypt(&ct).unwrap(), b"secret");
        let mut bad = ct.clone();
        bad[20] ^= 1;
        assert!(k.decrypt(&bad).is_err());
        let other = MasterKey::from_hex(&"cd".repeat(32)).unwrap();
        assert!(other.decrypt(&ct).is_err());
    }

    #[test]
    fn envelopes_round_trip_and_resist_tampering() {
        let k = MasterKey::from_hex(&"ab".repeat(32)).unwrap();
        let sealed = k.seal(b"database password");
        assert!(!sealed.windows(8).any(|w| w == b"database"));
        assert_eq!(k.open(&sealed).unwrap(), b"database password");
        for i in [0, 1, 5, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(k.open(&bad).is_err(), "byte {i}");
        }
        assert!(k.open(&sealed[..10]).is_err());
        let other = MasterKey::from_hex(&"cd".repeat(32)).unwrap();
        assert!(other.open(&sealed).is_err());
    }

    #[test]
    fn key_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k1 = MasterKey::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let k2 = MasterKey::load_or_create(dir.path()).unwrap();
        assert_eq!(k2.decrypt(&k1.encrypt(b"x")).unwrap(), b"x");
    }
}
