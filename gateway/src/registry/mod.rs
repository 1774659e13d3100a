//! Plugins from OCI registries, and the trust policy every plugin is held
//! to. [`resolve`] runs on every load (`validate`, start, reload) before the
//! plugins are compiled: it fetches each `oci://` reference into the cache
//! (a tag resolved once per load), falls back to the cache when a registry
//! cannot be reached, and refuses what the policy does not allow, naming
//! the reference, the digest and the reason. [`push`] writes and signs
//! plugins for `portcullis plugin push` and `sign`.

mod cache;
pub mod client;
pub mod pull;
pub mod push;

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use oci_client::Reference;
use sha2::{Digest as _, Sha256};

pub use cache::{Cache, Signature};

/// The CNCF wasm artifact's config and layer media types (what `plugin
/// push` writes; the layer type is the first a load accepts).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
use pull::Failure;

use crate::config::{Config, ConfigError, PluginRef, Registries, Require, TrustPolicy};
use crate::text::hex;

/// Fetches every registry reference of `config` and checks every plugin
/// against its API's trust policy. On success each registry reference's
/// `path` is its cached component, pinned to its digest.
pub async fn resolve(config: &mut Config) -> Result<(), ConfigError> {
    let mut fetcher = Fetcher::new(&config.registries, config.plugin_cache.as_deref());
    for api in &mut config.apis {
        let trust = std::sync::Arc::clone(&api.plugin_trust);
        for reference in api.plugin_refs_mut() {
            fetcher.resolve(reference, &trust).await?;
        }
    }
    Ok(())
}

/// Fetches one reference (`host/repository:tag` or `@sha256:...`, without
/// `oci://`) as a load would, for the plugin tools: its manifest's digest,
/// where its component is cached, and the signatures stored for it.
pub async fn fetch_one(
    registries: &Registries,
    plugin_cache: Option<&Path>,
    reference: &str,
) -> Result<(String, std::path::PathBuf, Vec<Signature>), String> {
    let found = Fetcher::new(registries, plugin_cache).fetch(reference, true).await?;
    Ok((found.manifest, found.path, found.signatures.unwrap_or_default()))
}

/// One load's fetches: each reference is fetched once however many plugins
/// name it.
struct Fetcher<'a> {
    registries: &'a Registries,
    /// `None` with `plugin_cache: false`: then registry plugins cannot load.
    cache: Option<Cache>,
    /// By reference as written.
    done: HashMap<String, Result<Found, String>>,
}

/// A reference resolved: its manifest, its component and the signatures found.
#[derive(Debug, Clone)]
struct Found {
    /// `host/repository`, where the signatures were looked for.
    repository: String,
    manifest: String,
    wasm: String,
    path: std::path::PathBuf,
    signatures: Option<Vec<Signature>>,
}

impl<'a> Fetcher<'a> {
    fn new(registries: &'a Registries, plugin_cache: Option<&Path>) -> Self {
        Fetcher {
            registries,
            cache: plugin_cache.map(Cache::new),
            done: HashMap::new(),
        }
    }

    async fn resolve(&mut self, plugin: &mut PluginRef, trust: &TrustPolicy) -> Result<(), ConfigError> {
        let refuse = |plugin: &PluginRef, message: String| {
            ConfigError::new(&plugin.file, Some(format!("{}.path", plugin.field)), message)
        };
        let Some(oci) = plugin.oci.clone() else {
            return check_file(plugin, trust).map_err(|m| refuse(plugin, m));
        };
        let written = format!("oci://{}", oci.reference);
        let signed = trust.require == Require::Signed;
        let mut found = match self.done.get(&oci.reference) {
            Some(done) => done.clone(),
            None => {
                let found = self.fetch(&oci.reference, signed).await;
                self.done.insert(oci.reference.clone(), found.clone());
                found
            }
        };
        // Fetched earlier in this load without its signatures (another
        // API's policy did not need them): look them up for the digest it
        // resolved to then, so that a tag means one digest per load.
        if signed
            && let Ok(known) = &found
            && known.signatures.is_none()
        {
            let by_digest = format!("{}@{}", known.repository, known.manifest);
            found = self.fetch(&by_digest, true).await;
            self.done.insert(oci.reference.clone(), found.clone());
        }
        let found = found.map_err(|why| refuse(plugin, format!("{written}: {why}")))?;
        let at = |why: String| refuse(plugin, format!("{written} ({}): {why}", found.manifest));
        if let Some(pin) = plugin.sha256
            && hex(&pin) != found.wasm
        {
            return Err(at(format!(
                "digest mismatch: its component is sha256:{}, but the reference pins sha256:{} (`sha256:`)",
                found.wasm,
                hex(&pin)
            )));
        }
        let pinned = oci.reference.contains("@sha256:") || plugin.sha256.is_some();
        match trust.require {
            Require::Any => {}
            Require::Digest if pinned => {}
            Require::Digest => {
                return Err(at(
                    "not pinned: plugin_trust requires a digest; name it by @sha256:... or add `sha256:`".into(),
                ));
            }
            Require::Signed => {
                let key = verify_image(&found, trust).map_err(at)?;
                tracing::info!(reference = %written, digest = %found.manifest, %key, "plugin signature verified");
            }
        }
        plugin.path = found.path.clone();
        plugin.sha256 = crate::config::parse_sha256(&found.wasm);
        if let Some(o) = plugin.oci.as_mut() {
            o.manifest = Some(found.manifest);
        }
        Ok(())
    }

    /// Resolves `reference` online, or from the cache when its content is
    /// known and the registry is not needed or not reachable.
    async fn fetch(&mut self, reference: &str, want_signatures: bool) -> Result<Found, String> {
        let cache = self
            .cache
            .clone()
            .ok_or("plugins from registries are kept in the plugin cache, which `plugin_cache: false` turns off")?;
        let parsed: Reference = reference.parse().map_err(|e| format!("{e}"))?;
        // A digest names content: when it is cached (with its signatures,
        // if they are needed), the registry is not asked again.
        let repository = format!("{}/{}", parsed.registry(), parsed.repository());
        if let Some(digest) = parsed.digest()
            && let Some(found) = cached(&cache, &repository, digest, want_signatures)
        {
            return Ok(found);
        }
        let conn = client::connect(self.registries, parsed.registry())?;
        let timeout = self.registries.pull_timeout;
        let online = tokio::time::timeout(
            timeout,
            pull::fetch(&conn, &parsed, self.registries.max_plugin_bytes, want_signatures),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Unreachable(format!(
                "no complete answer within plugin_registries.pull_timeout_ms ({} ms)",
                timeout.as_millis()
            )))
        });
        match online {
            Ok(fetched) => {
                let path = cache
                    .put_blob(&fetched.record.wasm, &fetched.wasm)
                    .map_err(|e| format!("cannot write the plugin cache: {e}"))?;
                if let Err(e) = cache.put_record(&repository, &fetched.manifest, &fetched.record) {
                    tracing::warn!(error = %e, "cannot record a fetched plugin in the cache");
                }
                if parsed.digest().is_none()
                    && let Err(e) = cache.put_tag(reference, &fetched.manifest)
                {
                    tracing::warn!(error = %e, "cannot record a tag's digest in the cache");
                }
                tracing::info!(reference = %format!("oci://{reference}"), digest = %fetched.manifest, "plugin fetched");
                Ok(Found {
                    repository,
                    manifest: fetched.manifest,
                    wasm: fetched.record.wasm,
                    path,
                    signatures: fetched.record.signatures,
                })
            }
            Err(Failure::Unreachable(why)) => {
                let known = parsed.digest().map(str::to_owned).or_else(|| cache.tag(reference));
                let found = known.and_then(|digest| cached(&cache, &repository, &digest, want_signatures));
                match found {
                    Some(found) => {
                        tracing::warn!(
                            reference = %format!("oci://{reference}"),
                            digest = %found.manifest,
                            reason = %why,
                            "registry not reachable: loading the plugin from the cache"
                        );
                        Ok(found)
                    }
                    None => Err(format!("{why} (and it is not in the plugin cache)")),
                }
            }
            Err(Failure::Refused(why) | Failure::NotFound(why)) => Err(why),
        }
    }
}

/// `manifest` of `repository` from the cache, when it and its component
/// (and its signatures, when wanted) are there.
fn cached(cache: &Cache, repository: &str, manifest: &str, want_signatures: bool) -> Option<Found> {
    let record = cache.record(repository, manifest)?;
    if want_signatures && record.signatures.is_none() {
        return None;
    }
    let path = cache.blob(&record.wasm)?;
    Some(Found {
        repository: repository.to_owned(),
        manifest: manifest.to_owned(),
        wasm: record.wasm,
        path,
        signatures: record.signatures,
    })
}

/// The key that signed `found`'s manifest, or why none did.
fn verify_image(found: &Found, trust: &TrustPolicy) -> Result<String, String> {
    let signatures = found.signatures.as_deref().unwrap_or_default();
    if signatures.is_empty() {
        return Err(format!(
            "not signed: no cosign signature at tag {} of {}",
            pull::signature_tag(&found.manifest),
            found.repository
        ));
    }
    let mut other_digest = None;
    for signature in signatures {
        let Ok(payload) = base64::engine::general_purpose::STANDARD.decode(&signature.payload) else {
            continue;
        };
        for key in &trust.keys {
            if !key.key.verifies(&payload, &signature.signature) {
                continue;
            }
            match crate::cosign::payload_digest(&payload) {
                Some(digest) if digest == found.manifest => return Ok(key.file.display().to_string()),
                Some(digest) => other_digest = Some((key.file.display().to_string(), digest)),
                None => {}
            }
        }
    }
    Err(match other_digest {
        Some((key, digest)) => {
            format!("digest mismatch: the signature by {key} vouches for {digest}, not for this manifest")
        }
        None => format!(
            "signed, but by no trusted key: {} signature(s) checked against {}",
            signatures.len(),
            trust.key_files()
        ),
    })
}

/// A local file held to the policy: `digest` needs its `sha256:` pin,
/// `signed` a `cosign sign-blob` signature beside it (`FILE.sig`).
fn check_file(plugin: &mut PluginRef, trust: &TrustPolicy) -> Result<(), String> {
    match trust.require {
        Require::Any => Ok(()),
        Require::Digest if plugin.sha256.is_some() => Ok(()),
        Require::Digest => Err(format!(
            "{}: not pinned: plugin_trust requires a digest; add `sha256:` (portcullis plugin inspect prints it)",
            plugin.path.display()
        )),
        Require::Signed => {
            let bytes = std::fs::read(&plugin.path).map_err(|e| format!("{}: {e}", plugin.path.display()))?;
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            let sig_path = signature_file(&plugin.path);
            let signature = std::fs::read_to_string(&sig_path).map_err(|_| {
                format!(
                    "{} (sha256:{}): not signed: no signature file {} (cosign sign-blob, or portcullis plugin sign)",
                    plugin.path.display(),
                    hex(&digest),
                    sig_path.display()
                )
            })?;
            if !trust.keys.iter().any(|k| k.key.verifies(&bytes, &signature)) {
                return Err(format!(
                    "{} (sha256:{}): {} does not verify with any trusted key ({}); the file changed or was signed by another key",
                    plugin.path.display(),
                    hex(&digest),
                    sig_path.display(),
                    trust.key_files()
                ));
            }
            // Pinned to what was checked, unless the operator pinned it:
            // then loading holds the file to that pin, as it always does.
            plugin.sha256.get_or_insert(digest);
            Ok(())
        }
    }
}

/// Where a file's `cosign sign-blob` signature is kept: `FILE.sig`.
pub fn signature_file(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig");
    name.into()
}
