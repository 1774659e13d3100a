//! The on-disk cache of compiled components, keyed by the SHA-256 of the
//! `.wasm` bytes and the engine's compatibility hash, so a restart does not
//! recompile and a changed file or engine configuration never reuses stale
//! code. Files are written atomically (temporary file, then rename).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The content hash of a component's bytes.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn entry_path(dir: &Path, engine: &Engine, hash: &[u8; 32]) -> PathBuf {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    dir.join(format!("{}-{:016x}.cwasm", crate::text::hex(hash), hasher.finish()))
}

/// Loads the compiled form of `bytes` from `dir`, or compiles and stores it.
/// A cache that cannot be read or written is skipped with a warning.
pub fn load_or_compile(
    engine: &Engine,
    dir: Option<&Path>,
    bytes: &[u8],
    hash: &[u8; 32],
) -> wasmtime::Result<Component> {
    let Some(dir) = dir else {
        return Component::new(engine, bytes);
    };
    let path = entry_path(dir, engine, hash);
    if path.is_file() {
        match deserialize(engine, &path) {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "discarding unusable compiled plugin cache entry")
            }
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(&path, &component) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the compiled plugin cache; plugins will be recompiled at next start");
    }
    Ok(component)
}

fn store(path: &Path, component: &Component) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let serialized = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tmp = tempfile_in(dir)?;
    std::io::Write::write_all(&mut tmp.1, &serialized)?;
    std::fs::rename(&tmp.0, path)?;
    Ok(())
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = format!(".tmp-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let path = dir.join(name);
    let file = std::fs::File::create_new(&path)?;
    Ok((path, file))
}

#[expect(unsafe_code, reason = "deserializing compiled code; see the SAFETY note")]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file lives in the gateway's own cache directory, was written
    // by `store` above from `Component::serialize` and is named by the hash of
    // its source and of the engine configuration; wasmtime additionally checks
    // the engine compatibility header and rejects mismatches.
    unsafe { Component::deserialize_file(engine, path) }
}
