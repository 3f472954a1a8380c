//! Encryption of secrets at rest: AES-256-GCM under master keys kept outside the database.
//!
//! The keys live in `DIR/master.key` (mode 0600; one `<id> <hex>` line per key, the last is
//! the primary that new data is encrypted under) unless `SLIPWAY_MASTER_KEY` supplies a single
//! key; a leaked database alone therefore never yields usable secrets. Small secrets are
//! encrypted under the primary key directly; larger values use envelopes — a fresh data key
//! per value, wrapped by the primary key — so rotating the master key re-wraps data keys and
//! never rewrites the data.

use rand::RngCore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// `1 | nonce | ciphertext` under key id 0 (the single key of the first format of the file).
const FORMAT_V1: u8 = 1;
/// `2 | len u16 | wrapped data key | nonce | ciphertext`: an envelope.
const FORMAT_ENVELOPE: u8 = 2;
/// `3 | key id u32 | nonce | ciphertext` under the key of that id.
const FORMAT_KEYED: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key: {0}")]
    Key(String),
    #[error("ciphertext is corrupt or was made with a master key this server does not have")]
    Decrypt,
}

/// An AES-256-GCM key (aws-lc's implementation: several times faster than a portable one on
/// machines with AES and carry-less-multiply instructions). Sealed data is the ciphertext
/// followed by the 16-byte tag, as GCM is usually laid out.
#[derive(Clone)]
pub struct Gcm(Arc<aws_lc_rs::aead::LessSafeKey>);

impl std::fmt::Debug for Gcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gcm(..)")
    }
}

impl Gcm {
    /// A key from 32 bytes.
    pub fn new(key: &[u8]) -> Result<Gcm, CryptoError> {
        aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key)
            .map(|k| Gcm(Arc::new(aws_lc_rs::aead::LessSafeKey::new(k))))
            .map_err(|_| CryptoError::Key("an AES-256 key is 32 bytes".into()))
    }

    /// `plaintext` encrypted under `nonce`, bound to `aad`: ciphertext and tag.
    pub fn seal(&self, nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + 16);
        self.seal_into(nonce, aad, plaintext, &mut out);
        out
    }

    /// Like [`Gcm::seal`], appending ciphertext and tag to `out` (one copy of the data,
    /// into a buffer the caller sized).
    pub fn seal_into(&self, nonce: &[u8; 12], aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(plaintext);
        self.seal_in_place(nonce, aad, out, at);
    }

    /// Encrypts `buf[at..]` where it is and appends the tag (no copy of the data).
    pub fn seal_in_place(&self, nonce: &[u8; 12], aad: &[u8], out: &mut Vec<u8>, at: usize) {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                aws_lc_rs::aead::Nonce::assume_unique_for_key(*nonce),
                aws_lc_rs::aead::Aad::from(aad),
                &mut out[at..],
            )
            .expect("AES-GCM encryption cannot fail for in-memory buffers");
        out.extend_from_slice(tag.as_ref());
    }

    /// The plaintext of `sealed` (ciphertext and tag), if it is authentic.
    pub fn open(&self, nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce = aws_lc_rs::aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| CryptoError::Decrypt)?;
        let mut buf = sealed.to_vec();
        let n = self
            .0
            .open_in_place(nonce, aws_lc_rs::aead::Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

/// Whether two secrets (signatures, password hashes) are equal, compared in constant time
/// (aws-lc's comparison) so a mismatch tells nothing about where it is.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

struct Keyring {
    keys: Vec<(u32, Gcm)>,
    /// Modification time of the key file when it was read (None: keys from the environment).
    loaded: Option<SystemTime>,
}

impl Keyring {
    fn primary(&self) -> (u32, &Gcm) {
        let (id, k) = self.keys.last().expect("a keyring always has a key");
        (*id, k)
    }
    fn get(&self, id: u32) -> Option<&Gcm> {
        self.keys.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }
}

/// The master keys. Clones share one keyring, which follows the key file when another
/// process (`slipway admin rotate-master-key`) rotates it. `Debug` never prints a key.
#[derive(Clone)]
pub struct MasterKey {
    ring: Arc<RwLock<Keyring>>,
    file: Option<PathBuf>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn cipher(hex_key: &str) -> Result<Gcm, CryptoError> {
    let bytes = hex::decode(hex_key.trim()).map_err(|_| CryptoError::Key("not hex".into()))?;
    if bytes.len() != 32 {
        return Err(CryptoError::Key(
            "must be 32 bytes (64 hex characters)".into(),
        ));
    }
    Gcm::new(&bytes)
}

/// Parses a key file: `<id> <hex>` lines (or one bare hex key, id 0); `#` starts a comment.
fn parse_key_file(text: &str) -> Result<Vec<(u32, Gcm)>, CryptoError> {
    let mut keys = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.split_once(' ') {
            Some((id, key)) => {
                let id = u32::from_str_radix(id, 16)
                    .map_err(|_| CryptoError::Key(format!("bad key id {id}")))?;
                keys.push((id, cipher(key)?));
            }
            None => keys.push((0, cipher(line)?)),
        }
    }
    if keys.is_empty() {
        return Err(CryptoError::Key("the key file holds no key".into()));
    }
    Ok(keys)
}

fn seal_with(key: &Gcm, plaintext: &[u8]) -> ([u8; 12], Vec<u8>) {
    let nonce = random_bytes::<12>();
    let ct = key.seal(&nonce, &[], plaintext);
    (nonce, ct)
}

impl MasterKey {
    /// A single key from 64 hex characters (id 0).
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        Ok(MasterKey {
            ring: Arc::new(RwLock::new(Keyring {
                keys: vec![(0, cipher(text)?)],
                loaded: None,
            })),
            file: None,
        })
    }

    /// Loads `SLIPWAY_MASTER_KEY` if set, else `DIR/master.key`, creating it (mode 0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, CryptoError> {
        if let Ok(hex_key) = std::env::var("SLIPWAY_MASTER_KEY") {
            return Self::from_hex(&hex_key);
        }
        let path = data_dir.join("master.key");
        if !path.exists() {
            let text = format!(
                "{}\n00000001 {}\n",
                KEY_FILE_HEADER,
                hex::encode(random_bytes::<32>())
            );
            write_private_file(&path, text.as_bytes())
                .map_err(|e| CryptoError::Key(format!("writing {}: {e}", path.display())))?;
        }
        let key = MasterKey {
            ring: Arc::new(RwLock::new(Keyring {
                keys: vec![],
                loaded: None,
            })),
            file: Some(path),
        };
        key.reload()?;
        Ok(key)
    }

    fn modified(&self) -> Option<SystemTime> {
        self.file
            .as_ref()
            .and_then(|f| std::fs::metadata(f).ok()?.modified().ok())
    }

    /// Re-reads the key file (a no-op for keys from the environment).
    fn reload(&self) -> Result<(), CryptoError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let modified = self.modified();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CryptoError::Key(format!("reading {}: {e}", path.display())))?;
        let keys = parse_key_file(&text)?;
        let mut ring = self
            .ring
            .write()
            .map_err(|_| CryptoError::Key("keyring lock poisoned".into()))?;
        *ring = Keyring {
            keys,
            loaded: modified,
        };
        Ok(())
    }

    /// Reloads the key file if it changed since it was read (a rotation by another process).
    fn refresh(&self) {
        if self.file.is_none() {
            return;
        }
        let stale = self
            .ring
            .read()
            .map(|r| r.loaded != self.modified() || r.keys.is_empty())
            .unwrap_or(true);
        if stale {
            if let Err(e) = self.reload() {
                tracing::error!(error = %e, "reloading the master key file");
            }
        }
    }

    /// Encrypts a small secret under the primary key.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        self.refresh();
        let ring = self.ring.read().expect("keyring lock");
        let (id, key) = ring.primary();
        let (nonce, ct) = seal_with(key, plaintext);
        let mut out = Vec::with_capacity(1 + 4 + 12 + ct.len());
        out.push(FORMAT_KEYED);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (id, body) = match data.first() {
            Some(&FORMAT_V1) => (0, &data[1..]),
            Some(&FORMAT_KEYED) if data.len() >= 5 => (
                u32::from_be_bytes([data[1], data[2], data[3], data[4]]),
                &data[5..],
            ),
            _ => return Err(CryptoError::Decrypt),
        };
        if body.len() < 12 {
            return Err(CryptoError::Decrypt);
        }
        let attempt = |ring: &Keyring| -> Option<Result<Vec<u8>, CryptoError>> {
            let key = ring.get(id)?;
            Some(key.open(&body[..12], &[], &body[12..]))
        };
        let first = attempt(&*self.ring.read().map_err(|_| CryptoError::Decrypt)?);
        if let Some(r) = first {
            return r;
        }
        // A key this process has not seen: another process may have rotated.
        self.reload()?;
        let ring = self.ring.read().map_err(|_| CryptoError::Decrypt)?;
        attempt(&ring).unwrap_or(Err(CryptoError::Decrypt))
    }

    /// Envelope encryption: a fresh AES-256 data key encrypts `plaintext`; the primary master
    /// key wraps the data key.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let data_key = random_bytes::<32>();
        let wrapped = self.encrypt(&data_key);
        let cipher = Gcm::new(&data_key).expect("32-byte key");
        let nonce = random_bytes::<12>();
        // One buffer, the data copied into it once (values may be megabytes: log chunks).
        let mut out = Vec::with_capacity(3 + wrapped.len() + 12 + plaintext.len() + 16);
        out.push(FORMAT_ENVELOPE);
        out.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce);
        cipher.seal_into(&nonce, &[], plaintext, &mut out);
        out
    }

    fn split_envelope(data: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
        if data.len() < 3 || data[0] != FORMAT_ENVELOPE {
            return Err(CryptoError::Decrypt);
        }
        let n = u16::from_be_bytes([data[1], data[2]]) as usize;
        let rest = &data[3..];
        if rest.len() < n + 12 {
            return Err(CryptoError::Decrypt);
        }
        Ok(rest.split_at(n))
    }

    /// Opens an envelope made by [`MasterKey::seal`].
    pub fn open(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (wrapped, body) = Self::split_envelope(data)?;
        let data_key = self.decrypt(wrapped)?;
        let cipher = Gcm::new(&data_key).map_err(|_| CryptoError::Decrypt)?;
        cipher.open(&body[..12], &[], &body[12..])
    }

    /// The same envelope with its data key re-wrapped under the primary key; the data itself
    /// is not touched.
    pub fn rewrap(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (wrapped, body) = Self::split_envelope(data)?;
        let rewrapped = self.encrypt(&self.decrypt(wrapped)?);
        let mut out = Vec::with_capacity(3 + rewrapped.len() + body.len());
        out.push(FORMAT_ENVELOPE);
        out.extend_from_slice(&(rewrapped.len() as u16).to_be_bytes());
        out.extend_from_slice(&rewrapped);
        out.extend_from_slice(body);
        Ok(out)
    }

    /// A small secret re-encrypted under the primary key.
    pub fn reencrypt(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        Ok(self.encrypt(&self.decrypt(data)?))
    }

    /// Adds a new primary key to the key file (older keys stay, for reading); returns its id.
    pub fn add_primary(&self) -> Result<u32, CryptoError> {
        let Some(path) = &self.file else {
            return Err(CryptoError::Key(
                "the master key comes from SLIPWAY_MASTER_KEY; rotate it by re-encrypting with a new key file".into(),
            ));
        };
        self.reload()?;
        let text = std::fs::read_to_string(path).map_err(|e| CryptoError::Key(e.to_string()))?;
        let next = self
            .ring
            .read()
            .map_err(|_| CryptoError::Decrypt)?
            .keys
            .iter()
            .map(|(i, _)| *i)
            .max()
            .unwrap_or(0)
            + 1;
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        // A legacy one-line file: give its key the id 0 explicitly before appending.
        for l in lines.iter_mut() {
            let t = l.trim();
            if !t.is_empty() && !t.starts_with('#') && !t.contains(' ') {
                *l = format!("00000000 {t}");
            }
        }
        lines.push(format!("{next:08x} {}", hex::encode(random_bytes::<32>())));
        let tmp = path.with_extension("rotating");
        let _ = std::fs::remove_file(&tmp);
        write_private_file(&tmp, format!("{}\n", lines.join("\n")).as_bytes())
            .map_err(|e| CryptoError::Key(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| CryptoError::Key(e.to_string()))?;
        self.reload()?;
        Ok(next)
    }

    /// The id of the key new data is encrypted under.
    pub fn primary_id(&self) -> u32 {
        self.refresh();
        self.ring.read().map(|r| r.primary().0).unwrap_or(0)
    }
}

const KEY_FILE_HEADER: &str =
    "# Slipway master keys, one \"<id> <hex key>\" per line; the last one encrypts new data. Keep this file secret and backed up.";

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
    /// AES-256-GCM known answers (test cases 13 and 14 of McGrew and Viega's GCM
    /// specification): data sealed by the earlier portable implementation reads the same.
    #[test]
    fn gcm_matches_the_specification() {
        let k = Gcm::new(&[0; 32]).unwrap();
        assert_eq!(
            hex::encode(k.seal(&[0; 12], &[], &[])),
            "530f8afbc74536b9a963b4f1c4cb738b"
        );
        let sealed = k.seal(&[0; 12], &[], &[0; 16]);
        assert_eq!(
            hex::encode(&sealed),
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
        );
        assert_eq!(k.open(&[0; 12], &[], &sealed).unwrap(), [0; 16]);
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(k.open(&[0; 12], &[], &bad).is_err());
        assert!(k.open(&[0; 12], b"aad", &sealed).is_err());
        assert!(k.open(&[0; 11], &[], &sealed).is_err());
        assert!(Gcm::new(&[0; 16]).is_err());
    }

    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = MasterKey::from_hex(&"ab".repeat(32)).unwrap();
        let ct = k.encrypt(b"secret");
        assert!(!ct.windows(6).any(|w| w == b"secret"));
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

    #[test]
    fn rotation_rewraps_and_other_processes_follow() {
        let dir = tempfile::tempdir().unwrap();
        let server = MasterKey::load_or_create(dir.path()).unwrap();
        let small = server.encrypt(b"small");
        let sealed = server.seal(b"big value");
        let admin = MasterKey::load_or_create(dir.path()).unwrap();
        let id = admin.add_primary().unwrap();
        assert_eq!(id, 2);
        let rewrapped = admin.rewrap(&sealed).unwrap();
        assert_eq!(
            &rewrapped[rewrapped.len() - 20..],
            &sealed[sealed.len() - 20..],
            "data untouched"
        );
        assert_eq!(admin.open(&rewrapped).unwrap(), b"big value");
        // The other handle picks up the new primary for new data and still reads everything.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(server.open(&rewrapped).unwrap(), b"big value");
        assert_eq!(
            server.decrypt(&admin.reencrypt(&small).unwrap()).unwrap(),
            b"small"
        );
        assert_eq!(server.primary_id(), 2);
        assert_eq!(
            u32::from_be_bytes(server.encrypt(b"n")[1..5].try_into().unwrap()),
            2
        );
        assert_eq!(
            server.decrypt(&small).unwrap(),
            b"small",
            "old keys stay for reading"
        );
    }

    #[test]
    fn legacy_single_key_files_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let hex_key = "ef".repeat(32);
        std::fs::write(dir.path().join("master.key"), format!("{hex_key}\n")).unwrap();
        let legacy = MasterKey::from_hex(&hex_key).unwrap();
        let mut v1 = vec![FORMAT_V1];
        let (nonce, ct) = seal_with(&cipher(&hex_key).unwrap(), b"old");
        v1.extend_from_slice(&nonce);
        v1.extend_from_slice(&ct);
        let k = MasterKey::load_or_create(dir.path()).unwrap();
        assert_eq!(k.decrypt(&v1).unwrap(), b"old");
        assert_eq!(legacy.decrypt(&k.encrypt(b"x")).unwrap(), b"x");
        assert_eq!(k.add_primary().unwrap(), 1);
        assert_eq!(k.decrypt(&v1).unwrap(), b"old");
    }
}
