//! `auth: { type: jwt }`: a bearer token verified by the gateway, its
//! claims made into the caller's session so rate limits, quotas and
//! plugins see them like any key's.
//!
//! The token's header chooses nothing it should not: its `alg` must be one
//! the API lists, and only keys of that algorithm's kind are tried (an RSA
//! public key is never an HMAC secret); `alg: none` does not parse. Keys
//! come from the configuration and from a JWKS URL the operator named (a
//! token's `jku` or `x5u` is never followed), refreshed in the background
//! and, for a `kid` the gateway has not seen, at most once every
//! [`MIN_REFETCH`].

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::Value;
use sha2::Digest as _;

use crate::config::{JwtConfig, JwtKey, MAX_JWKS_BYTES, jwks_keys};
use crate::store::SessionData;
use crate::tls::ClientTls;
use crate::upstream::client::HttpClient;

use super::*;

/// How long a JWKS fetch may take, connection to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between two fetches a token's unknown `kid` causes
/// (or the refresh interval, if shorter): a client inventing key ids
/// cannot make the gateway hammer its IdP.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// Most bytes of a token the gateway parses.
const MAX_TOKEN_BYTES: usize = 16 << 10;
/// Most verified tokens remembered per API; when full, the memory starts
/// over (bounded, and a flood of fresh tokens costs what it would cost
/// without it).
const MAX_CACHED: usize = 4096;

/// Why a token is refused (401). The client is told which, as RFC 6750's
/// `error_description` would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("no key verifies this token")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token issuer not accepted")]
    Issuer,
    #[error("token audience not accepted")]
    Audience,
    #[error("token claims do not make a session")]
    Claims,
}

/// An API's JWT verifier: its settings, and the keys a JWKS URL supplied.
pub struct JwtAuth {
    config: JwtConfig,
    jwks: Option<Arc<Jwks>>,
    /// Tokens verified before, by their SHA-256, with the session they
    /// made: a signature is checked once per token, not once per request
    /// (an RS256 verification is several hundred thousand instructions).
    /// Time is checked again on every use.
    /// Each entry carries the JWKS generation it was verified under: a
    /// rotation that retires a key retires its tokens here too.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], (SessionData, u64)>>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithms", &self.config.algorithms)
            .field("jwks_url", &self.config.jwks_url)
            .finish_non_exhaustive()
    }
}

struct Jwks {
    url: http::Uri,
    client: HttpClient<Full<Bytes>>,
    keys: ArcSwap<Vec<JwtKey>>,
    /// When the last fetch was tried (successful or not).
    tried: std::sync::Mutex<Option<Instant>>,
    /// When the keys were last replaced.
    fetched: std::sync::Mutex<Option<Instant>>,
    refreshing: AtomicBool,
    refresh: Duration,
    /// Counts the documents fetched that differ from the one before.
    generation: std::sync::atomic::AtomicU64,
    /// The SHA-256 of the document the keys come from.
    document: std::sync::Mutex<[u8; 32]>,
}

impl JwtAuth {
    /// The verifier, with the JWKS fetched once if there is one. A fetch
    /// that fails is logged; tokens are then refused until one succeeds.
    pub async fn build(config: &JwtConfig, api_id: &str, tls: Option<&ClientTls>) -> Self {
        let jwks = config.jwks_url.clone().map(|url| {
            Arc::new(Jwks {
                url,
                client: crate::upstream::outbound::OutboundClient::pooled(tls.unwrap_or(&ClientTls::system())),
                keys: ArcSwap::from_pointee(Vec::new()),
                tried: Default::default(),
                fetched: Default::default(),
                refreshing: AtomicBool::new(false),
                refresh: config.jwks_refresh,
                generation: Default::default(),
                document: Default::default(),
            })
        });
        if let Some(jwks) = &jwks
            && let Err(why) = jwks.fetch().await
        {
            tracing::warn!(api = api_id, url = %jwks.url, "cannot fetch the JWKS: {why}; tokens are refused until a fetch succeeds");
        }
        JwtAuth {
            config: config.clone(),
            jwks,
            verified: Default::default(),
        }
    }

    /// What the admin API shows of it (no keys).
    pub fn describe(&self) -> Value {
        let c = &self.config;
        serde_json::json!({
            "type": "jwt",
            "algorithms": c.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
            "keys": c.keys.len(),
            "jwks_url": c.jwks_url.as_ref().map(ToString::to_string),
            "jwks_keys": self.jwks.as_ref().map(|j| j.keys.load().len()),
            "issuers": c.issuers,
            "audiences": c.audiences,
        })
    }

    /// The token from the header (`Bearer ` removed), the query parameter
    /// or the cookie, in that order.
    pub fn token(&self, parts: &Parts) -> Option<String> {
        let config = &self.config;
        if let Some(key) = auth::extract_key(
            &parts.headers,
            &config.header,
            config.query.as_deref(),
            parts.uri.query(),
        ) {
            return Some(key);
        }
        let name = config.cookie.as_deref()?;
        parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|line| line.split(';'))
            .find_map(|pair| {
                let (n, v) = pair.trim().split_once('=')?;
                (n == name && !v.is_empty()).then(|| v.to_owned())
            })
    }

    /// Verifies `token` and makes its session.
    pub async fn verify(&self, token: &str) -> Result<SessionData, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let generation = self.jwks.as_ref().map_or(0, |j| j.generation.load(Ordering::Acquire));
        if let Some((session, seen)) = lock(&self.verified).get(&digest)
            && *seen == generation
        {
            if let Some(jwks) = &self.jwks {
                jwks.refresh_if_stale();
            }
            // Issuer, audience and signature held for these very bytes
            // and keys; only time moves.
            let leeway = i64::try_from(self.config.leeway_s).unwrap_or(i64::MAX);
            return match session.expires {
                Some(exp) if exp.saturating_add(leeway) <= auth::now() => Err(TokenError::Expired),
                _ => Ok(session.clone()),
            };
        }
        let session = self.verify_anew(token).await?;
        let mut verified = lock(&self.verified);
        if verified.len() >= MAX_CACHED {
            verified.clear();
        }
        verified.insert(digest, (session.clone(), generation));
        Ok(session)
    }

    /// [`Self::verify`] without the memory of tokens verified before.
    async fn verify_anew(&self, token: &str) -> Result<SessionData, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.as_deref();
        let claims = match self.try_keys(token, header.alg, kid) {
            Err(TokenError::Signature) if self.may_refetch(kid) => {
                // A key the gateway has not seen: the IdP may have rotated.
                if let Some(jwks) = &self.jwks
                    && let Err(why) = jwks.fetch().await
                {
                    tracing::warn!(url = %jwks.url, "cannot fetch the JWKS: {why}");
                }
                self.try_keys(token, header.alg, kid)
            }
            other => other,
        }?;
        if let Some(jwks) = &self.jwks {
            jwks.refresh_if_stale();
        }
        self.session(&claims)
    }

    /// Whether a failed verification may fetch the JWKS again now.
    fn may_refetch(&self, kid: Option<&str>) -> bool {
        let Some(jwks) = &self.jwks else { return false };
        let unknown = kid.is_none_or(|kid| !jwks.keys.load().iter().any(|k| k.kid.as_deref() == Some(kid)));
        unknown && lock(&jwks.tried).is_none_or(|at| at.elapsed() >= MIN_REFETCH.min(jwks.refresh))
    }

    /// The claims, verified with the first key that fits and verifies.
    fn try_keys(&self, token: &str, alg: Algorithm, kid: Option<&str>) -> Result<Value, TokenError> {
        let mut validation = Validation::new(alg);
        validation.leeway = self.config.leeway_s;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        let mut required = Vec::new();
        if self.config.require_exp {
            required.push("exp");
        }
        if !self.config.issuers.is_empty() {
            validation.set_issuer(&self.config.issuers);
            required.push("iss");
        }
        if self.config.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.config.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let fetched = self.jwks.as_ref().map(|jwks| jwks.keys.load_full());
        let keys = self.config.keys.iter().chain(fetched.iter().flat_map(|k| k.iter()));
        for key in keys.filter(|k| k.fits(alg, kid)) {
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return self.check_issued_at(data.claims),
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
                        continue;
                    }
                    // The signature held: the claims are what is wrong.
                    ErrorKind::ExpiredSignature => return Err(TokenError::Expired),
                    ErrorKind::ImmatureSignature => return Err(TokenError::NotYetValid),
                    ErrorKind::InvalidIssuer => return Err(TokenError::Issuer),
                    ErrorKind::InvalidAudience => return Err(TokenError::Audience),
                    ErrorKind::MissingRequiredClaim(claim) => {
                        return Err(match claim.as_str() {
                            "iss" => TokenError::Issuer,
                            "aud" => TokenError::Audience,
                            _ => TokenError::Claims,
                        });
                    }
                    _ => return Err(TokenError::Malformed),
                },
            }
        }
        Err(TokenError::Signature)
    }

    /// A token issued in the future (beyond the leeway) is not valid yet.
    fn check_issued_at(&self, claims: Value) -> Result<Value, TokenError> {
        if let Some(iat) = claims.get("iat").and_then(Value::as_u64)
            && iat > jsonwebtoken::get_current_timestamp() + self.config.leeway_s
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// The session the claims make, as `auth.claims` maps them, within
    /// the bounds a plugin's session has.
    fn session(&self, claims: &Value) -> Result<SessionData, TokenError> {
        let map = &self.config.claims;
        let text = |claim: &str| -> Option<String> {
            match claims.get(claim)? {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }
        };
        let number = |claim: &Option<String>| -> Result<Option<i64>, TokenError> {
            let Some(claim) = claim else { return Ok(None) };
            match claims.get(claim) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(TokenError::Claims),
                Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| TokenError::Claims),
                Some(_) => Err(TokenError::Claims),
            }
        };
        let key_id = text(&map.key_id).filter(|k| !k.is_empty()).ok_or(TokenError::Claims)?;
        let tags = match map.tags.as_deref().and_then(|claim| claims.get(claim)) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned).ok_or(TokenError::Claims))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(TokenError::Claims),
        };
        let metadata: BTreeMap<String, String> = map
            .metadata
            .iter()
            .filter_map(|(name, claim)| Some((name.clone(), text(claim)?)))
            .collect();
        let limits = Limits::default();
        crate::plugin::check_session_size(
            &key_id,
            tags.iter().map(String::as_str),
            metadata.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            &limits,
        )
        .map_err(|_| TokenError::Claims)?;
        let small = |n: Option<i64>| n.map(|n| u32::try_from(n).map_err(|_| TokenError::Claims)).transpose();
        Ok(SessionData {
            alias: map.alias.as_deref().and_then(text),
            rate: small(number(&map.rate)?)?.unwrap_or(0),
            per: small(number(&map.per)?)?.unwrap_or(0),
            quota_max: number(&map.quota_max)?.unwrap_or(-1),
            quota_renewal_seconds: number(&map.quota_renewal_seconds)?
                .map(|n| u64::try_from(n).map_err(|_| TokenError::Claims))
                .transpose()?
                .unwrap_or(0),
            apis: Vec::new(),
            metadata,
            tags,
            expires: claims.get("exp").and_then(Value::as_i64),
            key_id,
        })
    }
}

impl Jwks {
    /// Fetches the document and replaces the keys, if it holds any.
    async fn fetch(&self) -> Result<(), String> {
        *lock(&self.tried) = Some(Instant::now());
        let request = http::Request::get(self.url.clone())
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let fetch = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| crate::upstream::client::root_cause(&e))?;
            if !response.status().is_success() {
                return Err(format!("the server answered {}", response.status()));
            }
            http_body_util::Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map(|body| body.to_bytes())
                .map_err(|e| format!("reading the document: {e}"))
        };
        let body = tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| format!("no answer within {} s", FETCH_TIMEOUT.as_secs()))??;
        let (keys, skipped) = jwks_keys(&body)?;
        if keys.is_empty() {
            return Err(format!(
                "the document holds no signature key the gateway can use ({skipped} skipped)"
            ));
        }
        *lock(&self.fetched) = Some(Instant::now());
        let digest: [u8; 32] = sha2::Sha256::digest(&body).into();
        if std::mem::replace(&mut *lock(&self.document), digest) != digest {
            tracing::info!(url = %self.url, keys = keys.len(), skipped, "JWKS fetched");
            self.keys.store(Arc::new(keys));
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Starts a fetch in the background when the keys are older than the
    /// refresh interval (one at a time; requests go on with the old keys).
    fn refresh_if_stale(self: &Arc<Self>) {
        let stale = lock(&self.fetched).is_none_or(|at| at.elapsed() >= self.refresh)
            && lock(&self.tried).is_none_or(|at| at.elapsed() >= MIN_REFETCH.min(self.refresh));
        if !stale || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let jwks = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(why) = jwks.fetch().await {
                tracing::warn!(url = %jwks.url, "cannot refresh the JWKS: {why}; the keys fetched before stay in use");
            }
            jwks.refreshing.store(false, Ordering::Release);
        });
    }
}
