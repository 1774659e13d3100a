//! `auth: { type: jwt }` against tokens made by a real JWT library
//! (jsonwebtoken), signed with keys openssl made (`tests/fixtures/jwt/`):
//! each algorithm with its own key, the classic attacks (`alg: none`, an
//! RSA public key used as an HMAC secret), time and audience checks,
//! claims made into the session that limits and plugins see, and a JWKS
//! that rotates.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::{
    ConfigDir, Gateway, Wasm, assert_gateway_error, eventually, get_with, plugin, repo_root, upstream, upstreams,
    validate, yaml,
};

const SECRET: &str = "an HMAC secret of more than 32 bytes, for tests";

fn fixture(name: &str) -> std::path::PathBuf {
    repo_root().join("tests/fixtures/jwt").join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

fn rs256(key: &str, kid: Option<&str>, claims: &Value) -> String {
    sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&read(key)).expect("RSA key"),
        kid,
        claims,
    )
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now() + 600, "iss": "https://idp.test", "aud": "orders" })
}

async fn call(gw: &Gateway, path: &str, token: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    get_with(&gw.url(path), &[("authorization", &format!("Bearer {token}"))]).await
}

fn api(extra: Value) -> String {
    let mut api = json!({
        "id": "jwt", "listen_path": "/j/",
        "auth": {
            "type": "jwt",
            "algorithms": ["HS256", "RS256", "ES256", "EdDSA"],
            "secret": SECRET,
            "public_key_files": [fixture("rsa1.pub"), fixture("ec.pub"), fixture("ed.pub")],
            "issuers": ["https://idp.test"],
            "audiences": ["orders"],
            "claims": { "rate": "rate", "per": "per", "quota_max": "quota", "tags": "scope", "metadata": { "email": "email" } },
        },
        "endpoints": [{ "path": "/whoami", "plugin": { "path": plugin(Wasm::Probe), "function": "whoami" } }],
    });
    if let (Some(api), Value::Object(extra)) = (api.as_object_mut(), extra) {
        api.extend(extra);
    }
    yaml(api)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_algorithm_verifies_with_its_own_key_and_claims_make_the_session() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(ConfigDir::single(&api(json!({ "upstream": echo }))));

    let ec = EncodingKey::from_ec_pem(&read("ec.key")).expect("EC key");
    let ed = EncodingKey::from_ed_pem(&read("ed.key")).expect("Ed25519 key");
    for (alg, token) in [
        ("HS256", hs256(&claims("hs"))),
        ("RS256", rs256("rsa1.key", None, &claims("rs"))),
        ("ES256", sign(Algorithm::ES256, &ec, None, &claims("es"))),
        ("EdDSA", sign(Algorithm::EdDSA, &ed, None, &claims("ed"))),
    ] {
        let (status, _, body) = call(&gw, "/j/orders", &token).await;
        assert_eq!(status, 200, "{alg}: {body}");
    }

    // The claims are the session a plugin sees.
    let mut session = claims("alice");
    session["email"] = json!("alice@example.com");
    session["scope"] = json!("orders:read orders:write");
    session["quota"] = json!(100);
    let (status, _, seen) = call(&gw, "/j/whoami", &hs256(&session)).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["key_id"], "alice");
    assert_eq!(seen["tags"], json!(["orders:read", "orders:write"]));
    assert_eq!(seen["metadata"], json!([["email", "alice@example.com"]]));
    assert_eq!(seen["quota_max"], 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(ConfigDir::single(&api(json!({ "upstream": echo }))));
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());

    let (status, headers, body) = get_with(&gw.url("/j/x"), &[]).await;
    assert_gateway_error(status, &body, 401, "missing token");
    assert_eq!(headers["www-authenticate"], "Bearer");

    // `alg: none`, unsigned.
    let none = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT" })),
        b64(&claims("eve"))
    );
    let (status, headers, body) = call(&gw, "/j/x", &none).await;
    assert_gateway_error(status, &body, 401, "malformed token");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .expect("ASCII")
            .contains("invalid_token")
    );

    // Key confusion: the RSA public key, which anyone may have, used as an
    // HMAC secret. HS256 is accepted on this API, yet only the secret
    // verifies HS256 tokens.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&read("rsa1.pub")),
        None,
        &claims("eve"),
    );
    let (status, _, body) = call(&gw, "/j/x", &confused).await;
    assert_gateway_error(status, &body, 401, "no key verifies this token");

    // Signed by a key the gateway does not trust.
    let (status, _, body) = call(&gw, "/j/x", &rs256("rsa2.key", None, &claims("eve"))).await;
    assert_gateway_error(status, &body, 401, "no key verifies this token");

    // A signed token whose payload was changed afterwards.
    let honest = hs256(&claims("bob"));
    let parts: Vec<&str> = honest.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims("admin")), parts[2]);
    let (status, _, body) = call(&gw, "/j/x", &tampered).await;
    assert_gateway_error(status, &body, 401, "no key verifies this token");

    let t = now();
    let cases = [
        (
            json!({ "sub": "a", "exp": t - 120, "iss": "https://idp.test", "aud": "orders" }),
            "token expired",
        ),
        (
            json!({ "sub": "a", "iss": "https://idp.test", "aud": "orders" }),
            "token claims do not make a session",
        ),
        (
            json!({ "sub": "a", "exp": t + 600, "nbf": t + 300, "iss": "https://idp.test", "aud": "orders" }),
            "token not valid yet",
        ),
        (
            json!({ "sub": "a", "exp": t + 600, "iat": t + 300, "iss": "https://idp.test", "aud": "orders" }),
            "token not valid yet",
        ),
        (
            json!({ "sub": "a", "exp": t + 600, "iss": "https://other.test", "aud": "orders" }),
            "token issuer not accepted",
        ),
        (
            json!({ "sub": "a", "exp": t + 600, "iss": "https://idp.test", "aud": "billing" }),
            "token audience not accepted",
        ),
        (
            json!({ "exp": t + 600, "iss": "https://idp.test", "aud": "orders" }),
            "token claims do not make a session",
        ),
    ];
    for (claims, message) in cases {
        let (status, _, body) = call(&gw, "/j/x", &hs256(&claims)).await;
        assert_gateway_error(status, &body, 401, message);
    }
    // Within the leeway (30 s by default), a just-expired token passes.
    let (status, _, _) = call(
        &gw,
        "/j/x",
        &hs256(&json!({ "sub": "a", "exp": t - 5, "iss": "https://idp.test", "aud": "orders" })),
    )
    .await;
    assert_eq!(status, 200);

    // An API that takes RS256 only refuses HS256 outright.
    let strict = ConfigDir::single(&yaml(json!({
        "id": "rs", "listen_path": "/rs/", "upstream": echo,
        "auth": { "type": "jwt", "algorithms": ["RS256"], "public_key_files": [fixture("rsa1.pub")] },
    })));
    let gw = Gateway::start(strict);
    let (status, _, body) = call(&gw, "/rs/x", &confused).await;
    assert_gateway_error(status, &body, 401, "token algorithm not accepted");
    let (status, _, _) = call(&gw, "/rs/x", &rs256("rsa1.key", None, &claims("bob"))).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_and_quota_claims_limit_the_caller() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(ConfigDir::single(&api(json!({ "upstream": echo }))));
    let mut limited = claims("carol");
    limited["rate"] = json!(2);
    limited["per"] = json!(60);
    let token = hs256(&limited);
    for _ in 0..2 {
        let (status, _, body) = call(&gw, "/j/x", &token).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, headers, body) = call(&gw, "/j/x", &token).await;
    assert_gateway_error(status, &body, 429, "rate limit exceeded");
    assert_eq!(headers["x-ratelimit-limit"], "2");
    // Another subject has its own allowance.
    let mut other = limited.clone();
    other["sub"] = json!("dave");
    let (status, _, _) = call(&gw, "/j/x", &hs256(&other)).await;
    assert_eq!(status, 200);

    let mut quota = claims("erin");
    quota["quota"] = json!(1);
    let token = hs256(&quota);
    let (status, _, _) = call(&gw, "/j/x", &token).await;
    assert_eq!(status, 200);
    let (status, _, body) = call(&gw, "/j/x", &token).await;
    assert_gateway_error(status, &body, 429, "quota exceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_from_a_jwks_url_rotate() {
    let echo = upstream(upstreams::echo("up")).await;
    let document = Arc::new(Mutex::new(String::from_utf8(read("rsa1.jwks.json")).expect("UTF-8")));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (served, counted) = (Arc::clone(&document), Arc::clone(&fetches));
    let jwks = upstream(axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = served.lock().expect("lock").clone();
            async move { body }
        }),
    ))
    .await;
    let api = yaml(json!({
        "id": "jwks", "listen_path": "/k/", "upstream": echo,
        "auth": { "type": "jwt", "algorithms": ["RS256"], "jwks_url": format!("{jwks}/jwks.json"), "jwks_refresh_s": 1 },
    }));
    let gw = Gateway::start(ConfigDir::single(&api));
    let old = rs256("rsa1.key", Some("k1"), &claims("a"));
    let new = rs256("rsa2.key", Some("k2"), &claims("a"));
    let (status, _, body) = call(&gw, "/k/x", &old).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(&gw, "/k/x", &new).await;
    assert_gateway_error(status, &body, 401, "no key verifies this token");

    // The IdP rotates: the new key is found (by its unknown kid, or the
    // periodic refresh), and the retired one stops working.
    *document.lock().expect("lock") = String::from_utf8(read("rsa2.jwks.json")).expect("UTF-8");
    eventually("the rotated key verifies", || async {
        call(&gw, "/k/x", &new).await.0 == 200
    })
    .await;
    eventually("the retired key is refused", || async {
        call(&gw, "/k/x", &old).await.0 == 401
    })
    .await;

    // Tokens naming unknown key ids do not make the gateway fetch on
    // every request.
    let before = fetches.load(std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    for i in 0..20 {
        let forged = rs256("rsa1.key", Some(&format!("made-up-{i}")), &claims("a"));
        call(&gw, "/k/x", &forged).await;
    }
    let fetched = fetches.load(std::sync::atomic::Ordering::SeqCst) - before;
    let allowed = 2 + started.elapsed().as_secs() as usize;
    assert!(fetched <= allowed, "{fetched} fetches in {:?}", started.elapsed());
}

#[test]
fn bad_jwt_settings_are_refused_with_their_place() {
    let cases = [
        (
            json!({ "algorithms": ["none"], "secret": SECRET }),
            "auth.algorithms",
            "`none` is never accepted",
        ),
        (
            json!({ "algorithms": ["HS256"], "secret": "short" }),
            "auth.secret",
            "too short",
        ),
        (
            json!({ "algorithms": ["RS256"], "secret": SECRET }),
            "auth.algorithms",
            "no key of its kind",
        ),
        (
            json!({ "algorithms": ["RS256"], "public_key_files": ["missing.pem"] }),
            "auth.public_key_files[0]",
            "cannot read",
        ),
        (
            json!({ "algorithms": ["RS256"], "jwks_url": "http://idp.example/jwks" }),
            "auth.jwks_url",
            "https://",
        ),
        (json!({ "algorithms": ["HS256"] }), "auth.type", "needs keys"),
    ];
    for (auth, field, message) in cases {
        let mut auth = auth;
        auth["type"] = json!("jwt");
        let config = ConfigDir::single(&yaml(json!({
            "id": "j", "listen_path": "/j/", "upstream": "http://127.0.0.1:9", "auth": auth,
        })));
        let output = validate(&config);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{auth}");
        assert!(stderr.contains(field) && stderr.contains(message), "{auth}: {stderr}");
    }
}

/// A verified token is remembered (its signature is checked once), yet
/// it still expires on time.
#[tokio::test(flavor = "multi_thread")]
async fn a_remembered_token_still_expires() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(ConfigDir::single(&yaml(json!({
        "id": "short", "listen_path": "/s/", "upstream": echo,
        "auth": { "type": "jwt", "algorithms": ["HS256"], "secret": SECRET, "leeway_s": 0 },
    }))));
    let token = hs256(&json!({ "sub": "a", "exp": now() + 5 }));
    for _ in 0..2 {
        let (status, _, body) = call(&gw, "/s/x", &token).await;
        assert_eq!(status, 200, "{body}");
    }
    eventually("the remembered token expires", || async {
        let (status, _, body) = call(&gw, "/s/x", &token).await;
        status == 401 && body["error"] == "token expired"
    })
    .await;
}
