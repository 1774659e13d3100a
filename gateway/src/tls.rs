//! TLS both ways, with rustls and its ring provider (no OpenSSL):
//!
//! - the HTTPS listener: certificates picked by SNI, client certificates
//!   for mutual TLS, all of it re-read on reload and when the files change,
//!   swapped in for new connections while open ones keep theirs;
//! - the client side: one verified configuration per API for the upstream
//!   and the API's plugins' outbound calls (system roots by default, a
//!   private CA, a client certificate, a server name override);
//! - what the rest of the gateway needs from a certificate: the
//!   `x-forwarded-client-cert` value, expiry for the metrics, and a readable
//!   reason when a handshake with an upstream fails.
//!
//! There is no switch to turn upstream verification off: trust a private or
//! self-signed certificate by naming it in `upstream_tls.ca`.
//!
//! One file, past 500 lines: both directions read the same PEM files and
//! describe certificates the same way, and each half alone would import
//! the other's loading.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderValue;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

/// TLS 1.2 and 1.3, nothing older.
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// Makes ring the process's default rustls provider, for the clients built
/// by crates we do not configure ourselves: reqwest 0.13 (the registry
/// client and the OTLP exporter share it) is built without a provider of
/// its own and panics when it finds none. Idempotent.
pub fn install_default_provider() {
    // An error means a provider is installed already.
    let _ = CryptoProvider::install_default(provider().as_ref().clone());
}

/// A certificate or key that cannot be used: which file, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct TlsError {
    /// The configuration field that names the file, e.g. `tls.certificates[1].key`.
    pub field: String,
    pub file: PathBuf,
    pub reason: String,
}

/// What the metrics and logs say about one loaded certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// What it is for: `listener`, `client_ca`, `upstream_ca`, `upstream_client`.
    pub role: &'static str,
    pub file: PathBuf,
    pub subject: String,
    /// DNS names it is valid for (subject alternative names, or the CN).
    pub names: Vec<String>,
    /// Expiry, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Reads the files of one TLS configuration, hashing everything it read
/// so a later poll can tell whether any of them changed.
struct Files {
    digest: Sha256,
}

impl Files {
    fn new() -> Self {
        Files { digest: Sha256::new() }
    }

    fn read(&mut self, field: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
        let read = std::fs::read(path);
        self.note(path, read.as_deref().ok());
        read.map_err(|e| error(field, path, format!("cannot read: {e}")))
    }

    /// Adds a file's path and contents (`None`: unreadable) to the digest.
    fn note(&mut self, path: &Path, contents: Option<&[u8]>) {
        self.digest.update(path.as_os_str().as_encoded_bytes());
        match contents {
            Some(bytes) => {
                self.digest.update((bytes.len() as u64).to_le_bytes());
                self.digest.update(bytes);
            }
            None => self.digest.update(u64::MAX.to_le_bytes()),
        }
    }

    fn certs(&mut self, field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let pem = self.read(field, path)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(field, path, format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(error(field, path, "no certificate (BEGIN CERTIFICATE) in the file"));
        }
        Ok(certs)
    }

    fn key(&mut self, field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
        let pem = self.read(field, path)?;
        warn_if_shared(field, path);
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            error(
                field,
                path,
                format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
            )
        })
    }

    fn roots(
        &mut self,
        field: &str,
        path: &Path,
        role: &'static str,
    ) -> Result<(RootCertStore, Vec<CertInfo>), TlsError> {
        let certs = self.certs(field, path)?;
        let mut roots = RootCertStore::empty();
        let mut infos = Vec::with_capacity(certs.len());
        for cert in certs {
            infos.push(cert_info(role, path, &cert).map_err(|why| error(field, path, why))?);
            roots
                .add(cert)
                .map_err(|e| error(field, path, format!("not a usable CA certificate: {e}")))?;
        }
        Ok((roots, infos))
    }

    fn fingerprint(self) -> [u8; 32] {
        self.digest.finalize().into()
    }
}

/// Warns when a private key file can be read (or written) by users other
/// than its owner: loaded all the same, since a mounted secret often is.
fn warn_if_shared(field: &str, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    field,
                    mode = format!("{:04o}", mode & 0o7777),
                    "private key file is accessible to other users; `chmod 600` it (or 0400 with `defaultMode` in Kubernetes)"
                );
            }
        }
    }
}

fn error(field: &str, file: &Path, reason: impl Into<String>) -> TlsError {
    TlsError {
        field: field.to_owned(),
        file: file.to_owned(),
        reason: reason.into(),
    }
}

/// Why `key` (named by `field`) cannot be used with `cert`.
fn key_error(field: &str, key: &Path, cert: &Path, e: rustls::Error) -> TlsError {
    let why = match e {
        rustls::Error::InconsistentKeys(_) => {
            format!("this key does not belong to the certificate {}", cert.display())
        }
        other => format!("unusable key: {other}"),
    };
    error(field, key, why)
}

fn cert_info(role: &'static str, file: &Path, der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty()
        && let Some(cn) = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok())
    {
        names.push(cn.to_ascii_lowercase());
    }
    Ok(CertInfo {
        role,
        file: file.to_owned(),
        subject: cert.subject().to_string(),
        names,
        not_after: cert.validity().not_after.timestamp(),
    })
}

// ---------------------------------------------------------------------------
// The listener

/// `tls:` of the gateway file, paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    pub listen: String,
    /// Picked by SNI; the first is the default.
    pub certificates: Vec<CertKeyPaths>,
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes; zero: never.
    pub watch_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Whether the listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No `client_ca`: no client certificates.
    Off,
    /// A certificate is verified if presented; clients without one get in.
    Optional,
    /// No verified certificate, no handshake.
    Required,
}

/// A loaded listener configuration: what new connections are served with.
#[derive(Debug)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub certificates: Vec<CertInfo>,
    pub settings: ListenerSettings,
    pub(crate) fingerprint: [u8; 32],
}

impl ServerTls {
    /// Reads and checks every certificate, key and CA file of `settings`:
    /// each key must match its certificate.
    pub fn load(settings: &ListenerSettings) -> Result<Self, TlsError> {
        let mut files = Files::new();
        let provider = provider();
        let mut resolver = SniResolver::default();
        let mut certificates = Vec::new();
        for (i, paths) in settings.certificates.iter().enumerate() {
            let cert_field = format!("tls.certificates[{i}].cert");
            let key_field = format!("tls.certificates[{i}].key");
            let chain = files.certs(&cert_field, &paths.cert)?;
            let info =
                cert_info("listener", &paths.cert, &chain[0]).map_err(|why| error(&cert_field, &paths.cert, why))?;
            let key = files.key(&key_field, &paths.key)?;
            let certified = CertifiedKey::from_der(chain, key, &provider)
                .map_err(|e| key_error(&key_field, &paths.key, &paths.cert, e))?;
            resolver.certs.push((info.names.clone(), Arc::new(certified)));
            certificates.push(info);
        }
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(VERSIONS)
            .expect("the ring provider supports TLS 1.2 and 1.3");
        let builder = match &settings.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let (roots, infos) = files.roots("tls.client_ca", path, "client_ca")?;
                certificates.extend(infos);
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
                let verifier = match settings.client_auth {
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                    ClientAuth::Required | ClientAuth::Off => verifier,
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| error("tls.client_ca", path, format!("cannot verify clients with it: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Stateless resumption: returning clients skip the full handshake.
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| {
            error(
                "tls",
                &settings.certificates[0].cert,
                format!("cannot make a session ticket key: {e}"),
            )
        })?;
        Ok(ServerTls {
            config: Arc::new(config),
            certificates,
            settings: settings.clone(),
            fingerprint: files.fingerprint(),
        })
    }

    /// A digest of what the files hold now, readable or not, comparable
    /// with the digest of what was loaded (the files in the same order).
    pub(crate) fn on_disk(settings: &ListenerSettings) -> [u8; 32] {
        let mut files = Files::new();
        let paths = settings
            .certificates
            .iter()
            .flat_map(|p| [&p.cert, &p.key])
            .chain(settings.client_ca.as_ref());
        for path in paths {
            files.note(path, std::fs::read(path).ok().as_deref());
        }
        files.fingerprint()
    }
}

/// Picks the certificate for the name the client asked for (exact, then
/// `*.` wildcard one label deep), else the first.
#[derive(Debug, Default)]
struct SniResolver {
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            let wildcard = name.split_once('.').map(|(_, parent)| format!("*.{parent}"));
            let found = self.certs.iter().find(|(names, _)| names.contains(&name)).or_else(|| {
                let wildcard = wildcard.as_ref()?;
                self.certs.iter().find(|(names, _)| names.contains(wildcard))
            });
            if let Some((_, key)) = found {
                return Some(Arc::clone(key));
            }
        }
        self.certs.first().map(|(_, key)| Arc::clone(key))
    }
}

/// The `x-forwarded-client-cert` value for a verified client certificate,
/// in Envoy's format: `Hash=<sha256 of the DER, hex>;Subject="...";URI=...;DNS=...`.
pub fn forwarded_client_cert(der: &CertificateDer<'_>) -> Option<HeaderValue> {
    use std::fmt::Write as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut value = String::from("Hash=");
    for byte in Sha256::digest(der.as_ref()) {
        let _ = write!(value, "{byte:02x}");
    }
    let _ = write!(value, ";Subject={}", quoted(&cert.subject().to_string()));
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::URI(uri) => {
                    let _ = write!(value, ";URI={}", quoted_if_needed(uri));
                }
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    let _ = write!(value, ";DNS={}", quoted_if_needed(dns));
                }
                _ => {}
            }
        }
    }
    HeaderValue::from_str(&value).ok()
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quoted_if_needed(s: &str) -> String {
    if s.contains([',', ';', '=', '"']) {
        quoted(s)
    } else {
        s.to_owned()
    }
}

// ---------------------------------------------------------------------------
// The client side

/// `upstream_tls:` of an API, paths resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// Trust these CAs (instead of the system's, unless `system_roots`).
    pub ca: Option<PathBuf>,
    /// With `ca`: trust the system's roots too.
    pub system_roots: bool,
    /// A client certificate and key, for upstreams that require mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name to send (SNI) and verify, instead of the URL's host.
    pub server_name: Option<ServerName<'static>>,
}

/// A verified client configuration: what every connection the gateway makes
/// for an API (upstream and plugin calls) is checked against.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub server_name: Option<ServerName<'static>>,
    pub certificates: Vec<CertInfo>,
}

impl ClientTls {
    /// The system's trust store and no client certificate: what APIs
    /// without `upstream_tls` use. Loaded once per process.
    pub fn system() -> ClientTls {
        static SYSTEM: OnceLock<ClientTls> = OnceLock::new();
        SYSTEM
            .get_or_init(|| ClientTls {
                config: Arc::new(
                    client_config(system_roots().clone(), None).expect("the ring provider supports TLS 1.2 and 1.3"),
                ),
                server_name: None,
                certificates: Vec::new(),
            })
            .clone()
    }

    pub fn load(settings: &UpstreamSettings) -> Result<ClientTls, TlsError> {
        let mut files = Files::new();
        let mut certificates = Vec::new();
        let roots = match &settings.ca {
            None => system_roots().clone(),
            Some(path) => {
                let (mut roots, infos) = files.roots("upstream_tls.ca", path, "upstream_ca")?;
                certificates.extend(infos);
                if settings.system_roots {
                    roots.extend(system_roots().roots.iter().cloned());
                }
                roots
            }
        };
        let identity = match &settings.client_cert {
            None => None,
            Some((cert, key)) => {
                let chain = files.certs("upstream_tls.client_cert", cert)?;
                certificates.push(
                    cert_info("upstream_client", cert, &chain[0])
                        .map_err(|why| error("upstream_tls.client_cert", cert, why))?,
                );
                let key_der = files.key("upstream_tls.client_key", key)?;
                Some((chain, key_der))
            }
        };
        // rustls checks that the key belongs to the certificate (the check
        // the listener makes): a mismatch would otherwise only fail at the
        // upstream's handshake.
        let config = client_config(roots, identity).map_err(|e| {
            let (cert, key) = settings
                .client_cert
                .as_ref()
                .expect("only a client certificate can fail here");
            key_error("upstream_tls.client_key", key, cert, e)
        })?;
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: settings.server_name.clone(),
            certificates,
        })
    }
}

fn client_config(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder.with_client_auth_cert(chain, key),
    }
}

/// The system's trust store (`SSL_CERT_FILE` and `SSL_CERT_DIR` override
/// where it is read from), read once.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "cannot read part of the system's CA certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                "no system CA certificates found: https upstreams with public certificates will fail verification (install ca-certificates, set SSL_CERT_FILE, or name a CA in upstream_tls.ca)"
            );
        } else {
            tracing::debug!(added, ignored, "system CA certificates loaded");
        }
        roots
    })
}

/// Why a connection failed, if it failed in the TLS handshake: a short
/// reason (`unknown issuer`, `name mismatch`, `certificate expired`, ...)
/// followed by rustls's own account.
pub fn handshake_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(mut e) = next {
        // An `io::Error`'s `source` skips the error it wraps (and hyper-rustls
        // wraps rustls's io::Error in another): unwrap them by hand.
        while let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            e = inner;
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        next = e.source();
    }
    None
}

fn describe(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let reason = match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => "unknown issuer",
            C::NotValidForName | C::NotValidForNameContext { .. } => "name mismatch",
            C::Expired | C::ExpiredContext { .. } => "certificate expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate not valid yet",
            C::Revoked => "certificate revoked",
            C::BadSignature | C::BadEncoding => "bad certificate",
            _ => "invalid certificate",
        },
        rustls::Error::NoApplicationProtocol => "no common application protocol",
        rustls::Error::InvalidMessage(_) => "invalid TLS message (does the peer speak plain HTTP?)",
        rustls::Error::AlertReceived(_) => "refused by the peer",
        _ => "handshake failed",
    };
    format!("{reason} ({error})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_quotes_what_envoy_quotes() {
        assert_eq!(quoted_if_needed("a.example"), "a.example");
        assert_eq!(quoted_if_needed("a;b"), "\"a;b\"");
        assert_eq!(quoted(r#"CN="x\y""#), r#""CN=\"x\\y\"""#);
    }

    #[test]
    fn handshake_failures_are_found_under_nested_io_errors() {
        use std::io::{Error, ErrorKind};
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let nested = Error::other(Error::new(ErrorKind::InvalidData, tls));
        let reason = handshake_failure(&nested).expect("found");
        assert!(reason.starts_with("unknown issuer ("), "{reason}");
        assert_eq!(handshake_failure(&Error::other("refused")), None);
    }
}
