//! Where plugins come from and what they must carry to load:
//! `plugin_registries:` (how `oci://` references are fetched) and
//! `plugin_trust:` (a digest pin or a signature by a trusted key), resolved
//! and checked. Fetching and verifying are the `registry` module's.

use std::collections::BTreeMap;

use super::*;
use schema::{RegistriesFile, TrustFile};

/// What a plugin must carry to load, weakest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    /// Anything loads.
    #[default]
    Any,
    /// Its content is pinned: `@sha256:` on a registry reference, `sha256:`
    /// on any reference.
    Digest,
    /// Signed by one of the keys: a cosign signature in the registry, or a
    /// `cosign sign-blob` signature beside a file (`FILE.sig`).
    Signed,
}

impl Require {
    pub fn as_str(self) -> &'static str {
        match self {
            Require::Any => "any",
            Require::Digest => "digest",
            Require::Signed => "signed",
        }
    }
}

/// `plugin_trust:` resolved: the keys read and checked.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    pub require: Require,
    pub keys: Vec<TrustedKey>,
}

/// A public key plugins may be signed with, and the file it came from.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub file: PathBuf,
    pub key: crate::cosign::PublicKey,
}

impl TrustPolicy {
    /// The keys' files, for errors: `keys/a.pub, keys/b.pub`.
    pub fn key_files(&self) -> String {
        let names: Vec<String> = self.keys.iter().map(|k| k.file.display().to_string()).collect();
        names.join(", ")
    }
}

/// `plugin_trust:` of the gateway file (`parent` is `None`) or of an API,
/// which may only be stricter than its gateway's: a stronger `require`, and
/// when the gateway requires signatures, only keys the gateway trusts.
pub(super) fn trust(
    file: &Path,
    base: &Path,
    written: Option<TrustFile>,
    parent: Option<&TrustPolicy>,
) -> Result<TrustPolicy, ConfigError> {
    let Some(written) = written else {
        return Ok(parent.cloned().unwrap_or_default());
    };
    let mut keys = Vec::new();
    for (i, path) in written.keys.iter().enumerate() {
        let path = base.join(path);
        let key = crate::cosign::PublicKey::from_file(&path)
            .map_err(|e| ConfigError::new(file, Some(format!("plugin_trust.keys[{i}]")), e))?;
        if let Some(parent) = parent
            && parent.require == Require::Signed
            && !parent.keys.iter().any(|k| k.key == key)
        {
            return Err(ConfigError::new(
                file,
                Some(format!("plugin_trust.keys[{i}]")),
                format!(
                    "{} is not one of the gateway's plugin_trust keys; an API may only narrow them (the gateway trusts {})",
                    path.display(),
                    parent.key_files()
                ),
            ));
        }
        keys.push(TrustedKey { file: path, key });
    }
    if keys.is_empty()
        && let Some(parent) = parent
    {
        keys = parent.keys.clone();
    }
    let default = if written.keys.is_empty() {
        Require::Any
    } else {
        Require::Signed
    };
    let require = written.require.unwrap_or(default);
    if let Some(parent) = parent
        && require < parent.require
    {
        return Err(ConfigError::new(
            file,
            Some("plugin_trust.require".into()),
            format!(
                "`{}` is weaker than the gateway's `{}`; an API may only make it stricter",
                require.as_str(),
                parent.require.as_str()
            ),
        ));
    }
    if require == Require::Signed && keys.is_empty() {
        return Err(ConfigError::new(
            file,
            Some("plugin_trust.keys".into()),
            "`require: signed` needs at least one key (a cosign.pub)",
        ));
    }
    Ok(TrustPolicy { require, keys })
}

/// `plugin_registries:` resolved.
#[derive(Debug, Clone)]
pub struct Registries {
    pub pull_timeout: Duration,
    pub max_plugin_bytes: u64,
    pub auth_file: Option<PathBuf>,
    /// By host as references write it (`host` or `host:port`).
    pub hosts: BTreeMap<String, Registry>,
}

impl Default for Registries {
    fn default() -> Self {
        registries(Path::new(""), Path::new(""), RegistriesFile::default()).expect("the defaults are valid")
    }
}

/// One registry's settings. Its password never reaches a log: `Debug`
/// leaves it out.
#[derive(Clone, Default)]
pub struct Registry {
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM certificates to verify the registry with, besides the system's.
    pub ca: Option<(PathBuf, Vec<u8>)>,
    pub http: Option<bool>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("ca", &self.ca.as_ref().map(|(path, _)| path))
            .field("http", &self.http)
            .finish()
    }
}

pub(super) fn registries(file: &Path, base: &Path, written: RegistriesFile) -> Result<Registries, ConfigError> {
    let field = |name: &str| Some(format!("plugin_registries.{name}"));
    if written.pull_timeout_ms == 0 {
        return Err(ConfigError::new(file, field("pull_timeout_ms"), "must be above 0"));
    }
    if written.max_plugin_bytes == 0 {
        return Err(ConfigError::new(file, field("max_plugin_bytes"), "must be above 0"));
    }
    let mut hosts = BTreeMap::new();
    for (host, entry) in written.registries {
        let at = |name: &str| format!("plugin_registries.registries.{host}.{name}");
        if host.is_empty() || host.contains(['/', ' ']) {
            return Err(ConfigError::new(
                file,
                field("registries"),
                format!("{host:?} is not a registry host (write `host` or `host:port`)"),
            ));
        }
        let secret = |name: &str, value: Option<String>| {
            value
                .map(|v| super::load::env_or_literal(file, &at(name), &v))
                .transpose()
        };
        let username = secret("username", entry.username)?;
        let password = secret("password", entry.password)?;
        if username.is_some() != password.is_some() {
            return Err(ConfigError::new(
                file,
                Some(at(if username.is_some() { "password" } else { "username" })),
                "give both username and password",
            ));
        }
        let ca = match entry.ca_file {
            Some(path) => {
                let path = base.join(path);
                let pem = std::fs::read(&path)
                    .map_err(|e| ConfigError::new(file, Some(at("ca_file")), format!("{}: {e}", path.display())))?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(ConfigError::new(
                        file,
                        Some(at("ca_file")),
                        format!("{}: no PEM certificate in it", path.display()),
                    ));
                }
                Some((path, pem))
            }
            None => None,
        };
        hosts.insert(
            host,
            Registry {
                username,
                password,
                ca,
                http: entry.http,
            },
        );
    }
    Ok(Registries {
        pull_timeout: Duration::from_millis(written.pull_timeout_ms),
        max_plugin_bytes: written.max_plugin_bytes,
        auth_file: written.auth_file.map(|p| base.join(p)),
        hosts,
    })
}

/// A plugin reference that names a registry (`oci://...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciPlugin {
    /// `host[:port]/repository[:tag][@sha256:...]`, as written after `oci://`.
    pub reference: String,
    /// `sha256:<hex>` of the manifest that was loaded, once it is fetched.
    pub manifest: Option<String>,
}

impl OciPlugin {
    /// `oci://REFERENCE@MANIFEST` once fetched: what runs, named the way a
    /// registry names it.
    pub fn pinned(&self) -> String {
        let name = self.reference.split('@').next().unwrap_or_default();
        format!("oci://{name}@{}", self.manifest.as_deref().unwrap_or("(not fetched)"))
    }
}

/// Parses `oci://host[:port]/repository[:tag][@sha256:hex]`. The host is
/// required: a reference does not fall back to Docker Hub.
pub fn parse_oci(written: &str) -> Result<OciPlugin, String> {
    let rest = written
        .strip_prefix("oci://")
        .ok_or_else(|| format!("{written:?} does not start with oci://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if !rest.contains('/') || !(host.contains(['.', ':']) || host == "localhost") {
        return Err(format!(
            "{written:?} names no registry: write oci://HOST[:PORT]/REPOSITORY:TAG (or @sha256:DIGEST)"
        ));
    }
    let parsed: oci_client::Reference = rest.parse().map_err(|e| format!("{written:?}: {e}"))?;
    if let Some(digest) = parsed.digest()
        && digest.strip_prefix("sha256:").and_then(super::parse_sha256).is_none()
    {
        return Err(format!("{written:?}: the digest must be sha256: and 64 hex digits"));
    }
    Ok(OciPlugin {
        reference: rest.to_owned(),
        manifest: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_references_need_a_registry_and_a_sha256_digest() {
        let ok = parse_oci("oci://127.0.0.1:5000/team/policy:1.4").expect("valid");
        assert_eq!(ok.reference, "127.0.0.1:5000/team/policy:1.4");
        let digest = format!("oci://registry.example/p@sha256:{}", "ab".repeat(32));
        assert!(parse_oci(&digest).is_ok());
        for bad in [
            "oci://policy:1.4",
            "oci://team/policy:1.4",
            "oci://registry.example/p@sha256:abc",
            "oci://registry.example/p@md5:d41d8cd98f00b204e9800998ecf8427e",
            "oci://registry.example/UPPER",
            "registry.example/p:1",
        ] {
            assert!(parse_oci(bad).is_err(), "{bad}");
        }
    }

    /// A configuration naming one registry plugin, fetched to `blob`.
    fn fetched(dir: &Path, blob: &Path, manifest: &str) -> Config {
        std::fs::create_dir_all(dir.join("apis")).expect("mkdir");
        std::fs::write(dir.join("gateway.yaml"), "apis: [apis/]\nplugin_cache: false\n").expect("gateway");
        std::fs::write(
            dir.join("apis/a.yaml"),
            "id: a\nlisten_path: /a/\nupstream: http://127.0.0.1:9\nendpoints:\n  - path: /x\n    plugin: { path: oci://registry.example/p:1, function: f }\n",
        )
        .expect("api");
        let mut config = super::super::load(&dir.join("gateway.yaml")).expect("loads");
        let plugin = config.apis[0].plugin_refs_mut().next().expect("the reference");
        plugin.path = blob.to_owned();
        plugin.oci.as_mut().expect("oci").manifest = Some(manifest.to_owned());
        config
    }

    #[test]
    fn the_digest_names_registry_plugins_by_digest_wherever_they_are_cached() {
        let (one, two) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let (cache_one, cache_two) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        for cache in [&cache_one, &cache_two] {
            std::fs::write(cache.path().join("c.wasm"), b"component").expect("blob");
        }
        let digest = |dir: &tempfile::TempDir, cache: &tempfile::TempDir, manifest: &str| {
            let config = fetched(dir.path(), &cache.path().join("c.wasm"), manifest);
            assert!(
                !config.sources().contains(&cache.path().join("c.wasm")),
                "a cached component is not a source to watch"
            );
            config.digest_input().digest().expect("digest")
        };
        let a = digest(&one, &cache_one, "sha256:aa");
        assert_eq!(a, digest(&two, &cache_two, "sha256:aa"), "another node, another cache");
        assert_ne!(a, digest(&two, &cache_two, "sha256:bb"), "another manifest");
    }

    #[test]
    fn require_orders_weakest_first() {
        assert!(Require::Any < Require::Digest && Require::Digest < Require::Signed);
    }
}
