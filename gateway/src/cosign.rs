//! cosign's keys and signatures, so that a plugin signed with `cosign sign
//! --key` is accepted and one signed here passes `cosign verify --key`.
//!
//! - Keys are ECDSA P-256, as `cosign generate-key-pair` makes them: the
//!   public key a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), the private key
//!   cosign's `ENCRYPTED SIGSTORE PRIVATE KEY` (scrypt, then NaCl secretbox,
//!   around PKCS#8) or a plain PEM `PRIVATE KEY`.
//! - A signature is ASN.1 DER ECDSA over SHA-256 of the signed bytes, in
//!   base64: of the "simple signing" payload for an image, of the file
//!   itself for `cosign sign-blob`.
//!
//! The tests check against a key and a signature cosign itself made.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::{self, KeyPair as _};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer as _;

/// cosign's media type for a signature layer (its blob is the payload).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that carries the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of an image signature's payload.
const PAYLOAD_TYPE: &str = "cosign container image signature";

/// A public key signatures are checked against.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed P-256 point.
    point: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` holding an ECDSA P-256 key.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, String> {
        let der = pem_block(pem, |label| label == "PUBLIC KEY").ok_or("not a PEM `PUBLIC KEY` (cosign.pub is one)")?;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der)
            .map_err(|e| format!("cannot parse the public key: {e}"))?;
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
            return Err("only ECDSA P-256 keys are supported (what `cosign generate-key-pair` makes)".into());
        }
        Ok(PublicKey {
            point: spki.subject_public_key.data.to_vec(),
        })
    }

    /// Reads the key in `file`, for errors naming the file.
    pub fn from_file(file: &Path) -> Result<PublicKey, String> {
        let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        PublicKey::from_pem(&pem).map_err(|e| format!("{}: {e}", file.display()))
    }

    /// Whether `signature` (base64 DER, as cosign writes it) signs `message`.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Ok(signature) = BASE64.decode(signature.trim()) else {
            return false;
        };
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, &signature)
            .is_ok()
    }

    /// The key as a PEM `PUBLIC KEY`, as cosign.pub is written.
    pub fn to_pem(&self) -> String {
        // SubjectPublicKeyInfo { ecPublicKey, prime256v1 } around the point:
        // the fixed prefix every P-256 SPKI starts with.
        const PREFIX: [u8; 26] = [
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
            0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        let der = [&PREFIX[..], &self.point].concat();
        pem_encode("PUBLIC KEY", &der)
    }

    /// A short name for logs and errors: the start of the key's SHA-256.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.point);
        format!("key {}", crate::text::hex(&digest.as_ref()[..8]))
    }
}

/// A private key that signs.
pub struct SigningKey {
    pair: signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.public()).finish()
    }
}

impl SigningKey {
    /// Reads cosign's encrypted key (decrypted with `password`) or a plain
    /// PKCS#8 PEM `PRIVATE KEY`.
    pub fn from_pem(pem: &[u8], password: &[u8]) -> Result<SigningKey, String> {
        let pkcs8 = if let Some(sealed) = pem_block(pem, |l| l.starts_with("ENCRYPTED ") && l.ends_with(" PRIVATE KEY"))
        {
            decrypt(&sealed, password)?
        } else if let Some(plain) = pem_block(pem, |l| l == "PRIVATE KEY") {
            plain
        } else {
            return Err("not a cosign private key (`ENCRYPTED SIGSTORE PRIVATE KEY`) or a PEM `PRIVATE KEY`".into());
        };
        let rng = ring::rand::SystemRandom::new();
        let pair = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng)
            .map_err(|e| format!("not an ECDSA P-256 private key: {e}"))?;
        Ok(SigningKey { pair, rng })
    }

    /// Signs `message`: base64 DER, as cosign writes signatures.
    pub fn sign(&self, message: &[u8]) -> Result<String, String> {
        let signature = self
            .pair
            .sign(&self.rng, message)
            .map_err(|_| "signing failed".to_owned())?;
        Ok(BASE64.encode(signature.as_ref()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            point: self.pair.public_key().as_ref().to_vec(),
        }
    }

    /// A new key, as an unencrypted PKCS#8 PEM (what the tests sign with).
    pub fn generate_pem() -> Result<String, String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| "cannot generate a key".to_owned())?;
        Ok(pem_encode("PRIVATE KEY", pkcs8.as_ref()))
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The contents of the first PEM block whose label `wanted` accepts.
fn pem_block(pem: &[u8], wanted: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .find(|block| wanted(&block.label))
        .map(|block| block.contents)
}

/// cosign's sealed key: JSON naming the KDF and cipher, around PKCS#8.
#[derive(serde::Deserialize)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    #[serde(with = "b64")]
    ciphertext: Vec<u8>,
}

#[derive(serde::Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(serde::Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(serde::Deserialize)]
struct Cipher {
    name: String,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

mod b64 {
    use base64::Engine as _;
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        super::BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

fn decrypt(sealed: &[u8], password: &[u8]) -> Result<Vec<u8>, String> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let sealed: Sealed = serde_json::from_slice(sealed).map_err(|e| format!("unreadable encrypted key: {e}"))?;
    if sealed.kdf.name != "scrypt" || sealed.cipher.name != "nacl/secretbox" {
        return Err(format!(
            "unsupported key encryption {} / {}",
            sealed.kdf.name, sealed.cipher.name
        ));
    }
    let p = &sealed.kdf.params;
    if !p.n.is_power_of_two() || p.n > 1 << 20 || p.r > 32 || p.p > 16 {
        return Err("the key's scrypt parameters are out of range".into());
    }
    let params = scrypt::Params::new(p.n.trailing_zeros() as u8, p.r, p.p, 32)
        .map_err(|e| format!("the key's scrypt parameters: {e}"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, &sealed.kdf.salt, &params, &mut key).map_err(|e| format!("scrypt: {e}"))?;
    let nonce = crypto_secretbox::Nonce::from_exact_iter(sealed.cipher.nonce.iter().copied())
        .ok_or("the key's nonce is not 24 bytes")?;
    crypto_secretbox::XSalsa20Poly1305::new(&key.into())
        .decrypt(&nonce, sealed.ciphertext.as_slice())
        .map_err(|_| "wrong password for the private key (COSIGN_PASSWORD)".to_owned())
}

/// The "simple signing" payload cosign signs for an image: the repository
/// (`docker-reference`) and the manifest's digest. Written with serde's
/// field order, which is cosign's.
pub fn image_payload(repository: &str, manifest_digest: &str) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": { "docker-reference": repository },
            "image": { "docker-manifest-digest": manifest_digest },
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// The manifest digest an image signature's payload vouches for, when it
/// is one cosign would accept.
pub fn payload_digest(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let critical = value.get("critical")?;
    if critical.get("type")?.as_str()? != PAYLOAD_TYPE {
        return None;
    }
    Some(
        critical
            .get("image")?
            .get("docker-manifest-digest")?
            .as_str()?
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // A key and an image signature that cosign made, from sigstore-rs's
    // tests (src/crypto/mod.rs and src/crypto/verification_key.rs).
    const COSIGN_PUB: &str = include_str!("../../tests/fixtures/cosign/cosign-made.pub");
    const COSIGN_PAYLOAD: &str = include_str!("../../tests/fixtures/cosign/cosign-made.payload.json");
    const COSIGN_SIGNATURE: &str = include_str!("../../tests/fixtures/cosign/cosign-made.sig");
    // A key `cosign generate-key-pair` wrote with an empty password, from
    // sigstore-rs's tests/data/keys.
    const COSIGN_KEY: &str = include_str!("../../tests/fixtures/cosign/cosign-generated-empty-password.key");

    #[test]
    fn accepts_a_signature_cosign_made() {
        let key = PublicKey::from_pem(COSIGN_PUB.as_bytes()).expect("cosign's public key");
        let payload = COSIGN_PAYLOAD.trim_end().as_bytes();
        assert!(key.verifies(payload, COSIGN_SIGNATURE));
        assert_eq!(
            payload_digest(payload).as_deref(),
            Some("sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b")
        );
        let mut tampered = payload.to_vec();
        tampered[20] ^= 1;
        assert!(!key.verifies(&tampered, COSIGN_SIGNATURE));
        let other = SigningKey::from_pem(SigningKey::generate_pem().expect("key").as_bytes(), b"").expect("key");
        assert!(!other.public().verifies(payload, COSIGN_SIGNATURE));
    }

    #[test]
    fn opens_a_key_cosign_generated_and_signs_what_its_public_key_accepts() {
        let key = SigningKey::from_pem(COSIGN_KEY.as_bytes(), b"").expect("cosign's encrypted key");
        let signature = key.sign(b"plugin bytes").expect("signs");
        assert!(key.public().verifies(b"plugin bytes", &signature));
        // The public key survives a PEM round trip, as cosign.pub.
        let public = PublicKey::from_pem(key.public().to_pem().as_bytes()).expect("pem");
        assert_eq!(public, key.public());
        let wrong = SigningKey::from_pem(COSIGN_KEY.as_bytes(), b"guess").expect_err("wrong password");
        assert!(wrong.contains("wrong password"), "{wrong}");
    }

    #[test]
    fn writes_the_payload_cosign_writes() {
        let payload = image_payload(
            "registry-testing.svc.lan/busybox",
            "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b",
        );
        // Byte for byte what cosign signed, so its signature verifies ours.
        assert_eq!(payload, COSIGN_PAYLOAD.trim_end().as_bytes());
    }

    #[test]
    fn refuses_what_is_not_a_p256_key() {
        assert!(PublicKey::from_pem(b"hello").is_err());
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
        let err = PublicKey::from_pem(ed.public_key_pem().as_bytes()).expect_err("ed25519");
        assert!(err.contains("P-256"), "{err}");
    }
}
