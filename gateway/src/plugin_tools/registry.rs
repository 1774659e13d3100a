//! `portcullis plugin push`, `sign`, and `inspect oci://...`: the plugin
//! author's side of shipping plugins through registries, with the same
//! client, credentials and checks the gateway uses.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use oci_client::Reference;

use crate::config::Registries;
use crate::registry::{client, pull, push};

/// Where the registry settings come from: a gateway file's
/// `plugin_registries` (credentials, CAs, plain HTTP), and an auth file.
#[derive(Debug, Default, Clone)]
pub struct RegistryArgs {
    pub gateway: Option<PathBuf>,
    pub auth_file: Option<PathBuf>,
}

impl RegistryArgs {
    /// The settings, and the plugin cache `inspect` fetches into.
    fn load(&self) -> anyhow::Result<(Registries, Option<PathBuf>)> {
        let (mut registries, cache) = match &self.gateway {
            Some(file) => crate::config::registries_of(file)?,
            None => (Registries::default(), crate::config::default_cache_dir()),
        };
        // `--auth-file`, else the gateway file's, else docker's or podman's.
        registries.auth_file = self
            .auth_file
            .clone()
            .or(registries.auth_file)
            .or_else(default_auth_file);
        Ok((registries, cache))
    }
}

/// The auth file `docker login` or `podman login` wrote, when there is one:
/// `$REGISTRY_AUTH_FILE`, Podman's, then Docker's.
fn default_auth_file() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from),
        std::env::var_os("XDG_RUNTIME_DIR").map(|d| Path::new(&d).join("containers/auth.json")),
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

fn parse(reference: &str) -> anyhow::Result<Reference> {
    let plugin = crate::config::parse_oci(reference).map_err(|e| anyhow!(e))?;
    plugin.reference.parse().map_err(|e| anyhow!("{reference}: {e}"))
}

/// Pushes a component as a wasm OCI artifact; returns the pushed reference
/// with its digest.
pub async fn push(file: &Path, reference: &str, args: &RegistryArgs) -> anyhow::Result<String> {
    let target = parse(reference)?;
    if target.digest().is_some() {
        bail!("push to a tag (oci://HOST/REPOSITORY:TAG): the digest is the registry's to compute");
    }
    let inspection = super::inspect(file).await?;
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (registries, _) = args.load()?;
    let conn = client::connect(&registries, target.registry()).map_err(|e| anyhow!(e))?;
    let described = push::Described {
        file_name: file.file_name().unwrap_or_default().to_string_lossy().into_owned(),
        contract: inspection.contract.to_owned(),
        functions: inspection.functions.iter().map(|f| f.name.clone()).collect(),
    };
    let digest = push::artifact(&conn, &target, &wasm, &described)
        .await
        .map_err(|e| anyhow!("pushing to {reference}: {}", e.message()))?;
    Ok(format!("oci://{}/{}@{digest}", target.registry(), target.repository()))
}

/// Signs a registry manifest (resolving a tag first) or writes `FILE.sig`
/// beside a local file, with a cosign key (password from `COSIGN_PASSWORD`).
pub async fn sign(target: &str, key_file: &Path, args: &RegistryArgs) -> anyhow::Result<String> {
    let pem = std::fs::read(key_file).with_context(|| format!("reading {}", key_file.display()))?;
    let password = std::env::var("COSIGN_PASSWORD").unwrap_or_default();
    let key = crate::cosign::SigningKey::from_pem(&pem, password.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", key_file.display()))?;
    if !target.starts_with("oci://") {
        let file = Path::new(target);
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let signature = key.sign(&bytes).map_err(|e| anyhow!(e))?;
        let out = crate::registry::signature_file(file);
        std::fs::write(&out, &signature).with_context(|| format!("writing {}", out.display()))?;
        return Ok(format!(
            "wrote {} (verify with: cosign verify-blob --key cosign.pub --signature {} {})",
            out.display(),
            out.display(),
            file.display()
        ));
    }
    let reference = parse(target)?;
    let (registries, _) = args.load()?;
    let conn = client::connect(&registries, reference.registry()).map_err(|e| anyhow!(e))?;
    let (_, digest) = pull::manifest(&conn, &reference)
        .await
        .map_err(|e| anyhow!("{target}: {}", e.message()))?;
    let tag = push::sign(&conn, &reference, &digest, &key)
        .await
        .map_err(|e| anyhow!("signing {target}: {}", e.message()))?;
    Ok(format!(
        "signed oci://{}/{}@{digest} ({}); the signature is at {tag}",
        reference.registry(),
        reference.repository(),
        key.public().fingerprint()
    ))
}

/// Fetches a registry reference as the gateway would, for `inspect`:
/// the manifest's digest, the cached component and how many signatures
/// are stored for it.
pub async fn fetch(reference: &str, args: &RegistryArgs) -> anyhow::Result<(String, PathBuf, usize)> {
    let plugin = crate::config::parse_oci(reference).map_err(|e| anyhow!(e))?;
    let (registries, cache) = args.load()?;
    let (digest, path, signatures) = crate::registry::fetch_one(&registries, cache.as_deref(), &plugin.reference)
        .await
        .map_err(|e| anyhow!("{reference}: {e}"))?;
    Ok((digest, path, signatures.len()))
}
