//! `auth`: custom authentication. Accepts `Authorization: Bearer <token>`
//! for the tokens its config lists, and creates the caller's session (rate
//! limit, quota, tags, metadata, alias) from the token's entry; any other
//! caller gets 401 with a JSON error. It tells the upstream who the caller
//! is (`x-auth-user`, with the bearer token removed) and the client which
//! user it was served as (`x-served-for`). The gateway then enforces the
//! session's rate limit and quota and saves the session, so metadata that
//! later plugins write persists across requests.
//!
//! A real deployment would verify a signed token (JWT, HMAC) or ask an
//! identity service over outbound HTTP; the shape of the function is the
//! same.
//!
//! ```yaml
//! auth: { type: plugin }
//! plugins:
//!   auth:
//!     path: auth.wasm
//!     function: bearer-token
//!     config:
//!       tokens:
//!         s3cr3t-alice: { user: alice, alias: Alice Liddell, rate: 10, per: 60, quota: 1000, tags: [staff] }
//! ```

use std::collections::BTreeMap;

use portcullis_sdk::{AuthOutcome, Context, Request, RequestChanges, Response, Result, Session, plugin};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    tokens: BTreeMap<String, Grant>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Grant {
    user: String,
    /// A display name for the caller (the session's alias).
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    rate: u32,
    #[serde(default)]
    per: u32,
    /// Requests per `quota_renewal_seconds`; absent = unlimited.
    #[serde(default)]
    quota: Option<i64>,
    #[serde(default)]
    quota_renewal_seconds: u64,
    #[serde(default)]
    tags: Vec<String>,
}

fn reject(message: &str) -> Result<AuthOutcome> {
    let response = Response::json(401, &json!({ "error": message }))?.header("www-authenticate", "Bearer");
    Ok(AuthOutcome::Respond(response))
}

fn bearer_token(req: &Request, ctx: &Context) -> Result<AuthOutcome> {
    let config: Config = ctx.config()?;
    let Some(header) = req.header("authorization") else {
        return reject("missing bearer token");
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or_default()
        .trim();
    let Some(grant) = config.tokens.get(token) else {
        return reject("invalid bearer token");
    };
    let mut session = Session::new(grant.user.as_str())
        .with_rate(grant.rate, grant.per)
        .with_metadata("user", grant.user.as_str())
        .with_metadata("auth", "bearer-token");
    if let Some(alias) = &grant.alias {
        session = session.with_alias(alias.as_str());
    }
    if let Some(quota) = grant.quota {
        session = session.with_quota(quota, grant.quota_renewal_seconds);
    }
    for tag in &grant.tags {
        session = session.with_tag(tag.as_str());
    }
    let changes = RequestChanges::new()
        .remove_header("authorization")
        .set_header("x-auth-user", grant.user.as_str())
        .response_header("x-served-for", grant.user.as_str());
    Ok(AuthOutcome::authenticated(session).with_changes(changes))
}

plugin! {
    auth "bearer-token" => bearer_token: Config,
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_sdk::testing::{TestContext, TestRequest};

    fn ctx() -> Context {
        TestContext::new()
            .config(&json!({ "tokens": { "t1": { "user": "alice", "alias": "Alice A.", "rate": 10, "per": 60 } } }))
            .build()
    }

    #[test]
    fn a_known_token_becomes_its_users_session_and_is_not_sent_upstream() {
        let req = TestRequest::get("/").header("authorization", "Bearer t1").build();
        let outcome = bearer_token(&req, &ctx()).unwrap();
        let session = outcome.session().expect("authenticated");
        assert_eq!(
            (session.key_id.as_str(), session.alias.as_deref()),
            ("alice", Some("Alice A."))
        );
        assert_eq!((session.rate, session.per), (10, 60));
        let AuthOutcome::Authenticated(auth) = outcome else {
            unreachable!()
        };
        assert_eq!(auth.changes.remove_headers, ["authorization"]);
        assert_eq!(
            auth.changes.response_headers,
            [("x-served-for".to_owned(), "alice".to_owned())]
        );
    }

    #[test]
    fn a_missing_or_unknown_token_gets_a_401_with_a_challenge() {
        for req in [
            TestRequest::get("/").build(),
            TestRequest::get("/").header("authorization", "Bearer nope").build(),
        ] {
            let outcome = bearer_token(&req, &ctx()).unwrap();
            let response = outcome.rejection().expect("rejected");
            assert_eq!(response.status, 401);
            assert_eq!(response.get_header("www-authenticate"), Some("Bearer"));
        }
    }
}
