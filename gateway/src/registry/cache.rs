//! What was fetched from registries, kept under the plugin cache so that a
//! gateway whose registry is down still starts:
//!
//! - `oci/blobs/<hex>.wasm`: components, named by their SHA-256;
//! - `oci/manifests/<repository>-<hex>.json`: what each manifest of each
//!   repository resolved to (its component's digest and the signatures
//!   stored beside it there: a signature in one repository does not vouch
//!   for the same digest in another);
//! - `oci/tags/<hex>`: the manifest a reference last resolved to, named by
//!   the SHA-256 of the reference.
//!
//! Everything read back is checked: a component against its name, a
//! manifest record only trusted for the digest it is named by, and
//! signatures verified again at every load.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::text::hex;

/// A signature found for a manifest: the payload and cosign's base64
/// signature of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signature {
    pub payload: String,
    pub signature: String,
}

/// What a manifest resolved to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The component's SHA-256, in hex.
    pub wasm: String,
    /// `None` when they were not looked for (no policy needed them).
    pub signatures: Option<Vec<Signature>>,
}

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache under the plugin cache directory.
    pub fn new(plugin_cache: &Path) -> Cache {
        Cache {
            dir: plugin_cache.join("oci"),
        }
    }

    pub fn blob_path(&self, wasm_hex: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{wasm_hex}.wasm"))
    }

    /// Stores a component whose SHA-256 is `wasm_hex`; returns its path.
    pub fn put_blob(&self, wasm_hex: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.blob_path(wasm_hex);
        if !path.is_file() {
            write_atomically(&path, bytes)?;
        }
        Ok(path)
    }

    /// The component named `wasm_hex`, when it is cached and intact.
    pub fn blob(&self, wasm_hex: &str) -> Option<PathBuf> {
        let path = self.blob_path(wasm_hex);
        let bytes = std::fs::read(&path).ok()?;
        (hex(&Sha256::digest(&bytes)) == wasm_hex).then_some(path)
    }

    /// `repository` is `host/name`; it is hashed into the file's name.
    fn record_path(&self, repository: &str, manifest: &str) -> PathBuf {
        let name = manifest.strip_prefix("sha256:").unwrap_or(manifest);
        let repository = hex(&Sha256::digest(repository.as_bytes()));
        self.dir
            .join("manifests")
            .join(format!("{}-{name}.json", &repository[..16]))
    }

    pub fn record(&self, repository: &str, manifest: &str) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(self.record_path(repository, manifest)).ok()?).ok()
    }

    pub fn put_record(&self, repository: &str, manifest: &str, record: &Record) -> std::io::Result<()> {
        write_atomically(&self.record_path(repository, manifest), &serde_json::to_vec(record)?)
    }

    fn tag_path(&self, reference: &str) -> PathBuf {
        self.dir.join("tags").join(hex(&Sha256::digest(reference.as_bytes())))
    }

    /// The manifest digest `reference` last resolved to.
    pub fn tag(&self, reference: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.tag_path(reference)).ok()?;
        let (digest, written) = text.split_once('\n')?;
        (written == reference).then(|| digest.to_owned())
    }

    pub fn put_tag(&self, reference: &str, manifest: &str) -> std::io::Result<()> {
        write_atomically(&self.tag_path(reference), format!("{manifest}\n{reference}").as_bytes())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_blobs_records_and_tags_and_refuses_a_blob_that_changed() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Cache::new(dir.path());
        let name = hex(&Sha256::digest(b"\0asm component"));
        let path = cache.put_blob(&name, b"\0asm component").expect("stored");
        assert_eq!(cache.blob(&name), Some(path.clone()));
        std::fs::write(&path, b"\0asm altered").expect("write");
        assert_eq!(cache.blob(&name), None);

        let record = Record {
            wasm: name.clone(),
            signatures: Some(vec![Signature {
                payload: "p".into(),
                signature: "s".into(),
            }]),
        };
        cache.put_record("host/a", "sha256:abc", &record).expect("record");
        assert_eq!(cache.record("host/a", "sha256:abc").expect("record").wasm, name);
        assert!(cache.record("host/a", "sha256:def").is_none());
        assert!(cache.record("host/b", "sha256:abc").is_none());

        cache.put_tag("host/repo:1", "sha256:abc").expect("tag");
        assert_eq!(cache.tag("host/repo:1").as_deref(), Some("sha256:abc"));
        assert_eq!(cache.tag("host/repo:2"), None);
    }
}
