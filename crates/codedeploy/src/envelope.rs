//! The deployment specification's signed envelope (`PKCS7/JSON`, the only format AWS's agent
//! accepts): a PKCS #7 SignedData in PEM with the specification as its attached content,
//! signed (ECDSA P-256, SHA-256, no signed attributes) by a key and self-signed certificate
//! the server makes when it starts. AWS's agent reads the content without checking who
//! signed it; Slipway's agent reads it the same way ([`content`]).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};

/// The envelope format.
pub const PKCS7_JSON: &str = "PKCS7/JSON";

const OID_SIGNED_DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02];
const OID_DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// One DER element: `tag`, its length, `content`.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn set(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x31, &parts.concat())
}

fn oid(o: &[u8]) -> Vec<u8> {
    tlv(0x06, o)
}

fn algorithm(o: &[u8]) -> Vec<u8> {
    seq(&[&oid(o)])
}

/// A signer: its key, certificate, and the certificate's issuer and serial.
pub struct Signer {
    key: EcdsaKeyPair,
    certificate: Vec<u8>,
    issuer: Vec<u8>,
    serial: Vec<u8>,
}

impl Signer {
    /// A fresh key and a self-signed certificate for it (CN=slipway-codedeploy).
    pub fn generate() -> Result<Signer, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| "generating the specification signing key failed".to_owned())?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
            .map_err(|_| "loading the specification signing key failed".to_owned())?;
        let mut serial_bytes = uuid::Uuid::new_v4().into_bytes().to_vec();
        serial_bytes[0] &= 0x7F; // a positive INTEGER
        let serial = tlv(0x02, &serial_bytes);
        let name = seq(&[&set(&[&seq(&[
            &oid(OID_COMMON_NAME),
            &tlv(0x0C, b"slipway-codedeploy"),
        ])])]);
        let validity = seq(&[&tlv(0x17, b"250101000000Z"), &tlv(0x17, b"491231235959Z")]);
        let mut point = vec![0u8];
        point.extend_from_slice(key.public_key().as_ref());
        let spki = seq(&[
            &seq(&[&oid(OID_EC_PUBLIC_KEY), &oid(OID_P256)]),
            &tlv(0x03, &point),
        ]);
        let version = tlv(0xA0, &tlv(0x02, &[2]));
        let tbs = seq(&[
            &version,
            &serial,
            &algorithm(OID_ECDSA_SHA256),
            &name,
            &validity,
            &name,
            &spki,
        ]);
        let sig = key
            .sign(&rng, &tbs)
            .map_err(|_| "signing the certificate failed".to_owned())?;
        let mut bits = vec![0u8];
        bits.extend_from_slice(sig.as_ref());
        let certificate = seq(&[&tbs, &algorithm(OID_ECDSA_SHA256), &tlv(0x03, &bits)]);
        Ok(Signer {
            key,
            certificate,
            issuer: name,
            serial,
        })
    }

    /// `payload` in a signed PKCS #7 envelope, PEM-encoded.
    pub fn pkcs7_pem(&self, payload: &[u8]) -> Result<String, String> {
        let rng = SystemRandom::new();
        let sig = self
            .key
            .sign(&rng, payload)
            .map_err(|_| "signing the deployment specification failed".to_owned())?;
        let signer_info = seq(&[
            &tlv(0x02, &[1]),
            &seq(&[&self.issuer, &self.serial]),
            &algorithm(OID_SHA256),
            &algorithm(OID_ECDSA_SHA256),
            &tlv(0x04, sig.as_ref()),
        ]);
        let content = seq(&[&oid(OID_DATA), &tlv(0xA0, &tlv(0x04, payload))]);
        let signed = seq(&[
            &tlv(0x02, &[1]),
            &set(&[&algorithm(OID_SHA256)]),
            &content,
            &tlv(0xA0, &self.certificate),
            &set(&[&signer_info]),
        ]);
        let der = seq(&[&oid(OID_SIGNED_DATA), &tlv(0xA0, &signed)]);
        let b64 = slipway_model::runtime::base64_encode(&der);
        let mut pem = String::from("-----BEGIN PKCS7-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PKCS7-----\n");
        Ok(pem)
    }
}

/// One DER element at the start of `b`: (tag, content, rest).
fn read(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, head) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7F;
        if n == 0 || n > 4 {
            return None;
        }
        let len = b
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |a, x| (a << 8) | *x as usize);
        (len, 2 + n)
    };
    let content = b.get(head..head.checked_add(len)?)?;
    Some((tag, content, &b[head + len..]))
}

/// The attached content of a PEM PKCS #7 SignedData (the signer is not checked, as AWS's
/// agent does not check it).
pub fn content(pem: &str) -> Option<Vec<u8>> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = slipway_model::runtime::base64_decode(b64.trim())?;
    let (0x30, info, _) = read(&der)? else {
        return None;
    };
    let (0x06, _, rest) = read(info)? else {
        return None;
    };
    let (0xA0, explicit, _) = read(rest)? else {
        return None;
    };
    let (0x30, signed, _) = read(explicit)? else {
        return None;
    };
    let (0x02, _, rest) = read(signed)? else {
        return None;
    };
    let (0x31, _, rest) = read(rest)? else {
        return None;
    };
    let (0x30, inner, _) = read(rest)? else {
        return None;
    };
    let (0x06, _, rest) = read(inner)? else {
        return None;
    };
    let (0xA0, explicit, _) = read(rest)? else {
        return None;
    };
    let (0x04, data, _) = read(explicit)? else {
        return None;
    };
    Some(data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_openssl_verifies_it() {
        let signer = Signer::generate().unwrap();
        let payload = br#"{"DeploymentId":"d-ABC","Revision":{"RevisionType":"S3"}}"#.repeat(20);
        let pem = signer.pkcs7_pem(&payload).unwrap();
        assert_eq!(content(&pem).unwrap(), payload);
        assert!(content("-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n").is_none());
        // Where the openssl CLI exists, it checks the structure and the signature as
        // AWS's agent's OpenSSL reads them.
        let Ok(dir) = tempfile_dir() else { return };
        let path = dir.join("spec.pem");
        std::fs::write(&path, &pem).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["smime", "-verify", "-noverify", "-inform", "PEM", "-in"])
            .arg(&path)
            .output();
        let _ = std::fs::remove_dir_all(&dir);
        if let Ok(out) = out {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, payload);
        }
    }

    /// The agent reads the envelope from the network: truncated and mutated envelopes give
    /// None or some content, never a panic.
    #[test]
    fn mutated_envelopes_never_panic() {
        let signer = Signer::generate().unwrap();
        let pem = signer.pkcs7_pem(b"{\"DeploymentId\":\"d-1\"}").unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = slipway_model::runtime::base64_decode(&b64).unwrap();
        let mut x: u64 = 0x0dd_ba11_cafe_f00d;
        for i in 0..4000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut d = der.clone();
            if i % 2 == 0 {
                d.truncate((x as usize) % d.len());
            } else {
                let at = (x as usize) % d.len();
                d[at] ^= (x >> 32) as u8 | 1;
            }
            let pem = format!(
                "-----BEGIN PKCS7-----\n{}\n-----END PKCS7-----\n",
                slipway_model::runtime::base64_encode(&d)
            );
            let _ = content(&pem);
        }
    }

    fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
        let d = std::env::temp_dir().join(format!("slipway-pkcs7-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }
}
