//! A distribution client for one registry: its protocol (plain HTTP only
//! for loopback or when the operator says so), its CA, its timeouts and
//! its credentials (the registry's entry, else the `auth.json`).

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use crate::config::{Registries, Registry};

/// A client and the credentials it presents.
pub struct Connection {
    pub client: oci_client::Client,
    pub auth: RegistryAuth,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// Opens a client for `host` with the settings `registries` gives it.
pub fn connect(registries: &Registries, host: &str) -> Result<Connection, String> {
    crate::tls::install_default_provider();
    let entry = registries.hosts.get(host).cloned().unwrap_or_default();
    let http = entry
        .http
        .unwrap_or(crate::config::net::is_loopback_host(host) && entry.ca.is_none());
    let config = ClientConfig {
        protocol: if http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        extra_root_certificates: entry
            .ca
            .iter()
            .map(|(_, pem)| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        connect_timeout: Some(registries.pull_timeout.min(Duration::from_secs(10))),
        read_timeout: Some(registries.pull_timeout),
        // A plugin is one manifest: an index is refused, not resolved.
        platform_resolver: None,
        user_agent: concat!("portcullis/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    let client = oci_client::Client::try_from(config).map_err(|e| format!("cannot set up a client for {host}: {e}"))?;
    Ok(Connection {
        client,
        auth: credentials(&entry, registries.auth_file.as_deref(), host)?,
    })
}

/// The registry entry's credentials, else the auth file's for `host`,
/// else none.
fn credentials(entry: &Registry, auth_file: Option<&Path>, host: &str) -> Result<RegistryAuth, String> {
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    let Some(file) = auth_file else {
        return Ok(RegistryAuth::Anonymous);
    };
    let text = std::fs::read(file).map_err(|e| format!("cannot read the auth file {}: {e}", file.display()))?;
    from_auth_json(&text, host).map_err(|e| format!("{}: {e}", file.display()))
}

/// The credentials a Docker or Podman `auth.json` holds for `host`:
/// `auth` (base64 of `user:password`), `username` and `password`, or an
/// `identitytoken`. Keys may be written as URLs (`https://host/v1/`).
pub fn from_auth_json(text: &[u8], host: &str) -> Result<RegistryAuth, String> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        auths: std::collections::BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        auth: Option<String>,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        #[serde(default)]
        identitytoken: Option<String>,
    }
    let file: File = serde_json::from_slice(text).map_err(|e| format!("not an auth.json: {e}"))?;
    let key_host = |key: &str| {
        let key = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
            .unwrap_or(key);
        key.split('/').next().unwrap_or_default().to_owned()
    };
    let Some(entry) = file.auths.iter().find(|(key, _)| key_host(key) == host).map(|(_, e)| e) else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(RegistryAuth::Bearer(token.clone()));
    }
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    let Some(auth) = &entry.auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| format!("the `auth` of {host} is not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| format!("the `auth` of {host} is not text"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| format!("the `auth` of {host} is not user:password"))?;
    Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_and_podman_auth_files() {
        let file = br#"{"auths": {
            "https://registry.example:5000/v1/": {"auth": "YWxpY2U6czNjcmV0"},
            "other.example": {"username": "bob", "password": "pw"},
            "token.example": {"identitytoken": "tok"}
        }}"#;
        assert_eq!(
            from_auth_json(file, "registry.example:5000").expect("auth"),
            RegistryAuth::Basic("alice".into(), "s3cret".into())
        );
        assert_eq!(
            from_auth_json(file, "other.example").expect("auth"),
            RegistryAuth::Basic("bob".into(), "pw".into())
        );
        assert_eq!(
            from_auth_json(file, "token.example").expect("auth"),
            RegistryAuth::Bearer("tok".into())
        );
        assert_eq!(
            from_auth_json(file, "registry.example").expect("auth"),
            RegistryAuth::Anonymous
        );
        assert!(from_auth_json(b"not json", "x").is_err());
    }
}
