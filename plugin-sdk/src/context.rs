//! What a function knows besides the request: session, API and config.
//! Each is read from the input buffer only when the function asks for it.

use std::cell::OnceCell;
use std::rc::Rc;

use crate::http::{HttpError, OutboundResponse};
use portcullis_wire::{OwnedApi, OwnedResponse, OwnedSession};

use crate::wire::{Sections, text};
use crate::{Result, Session};

/// The API definition the request matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// The API's `id`.
    pub id: String,
    /// The API's `name`.
    pub name: String,
    /// Where the API listens, e.g. `/shop/`.
    pub listen_path: String,
    /// The URL of the first target of the API's default upstream.
    pub upstream: String,
    /// The API's own `config` from its YAML, as JSON text (`{}` when none).
    pub config: String,
}

/// The caller's session, the API definition and this plugin reference's
/// config, handed to every function.
#[derive(Debug)]
pub struct Context {
    input: Rc<Vec<u8>>,
    sections: Sections,
    session: OnceCell<Session>,
    api: OnceCell<Api>,
}

impl Context {
    pub(crate) fn new(input: Rc<Vec<u8>>, sections: Sections) -> Self {
        Context {
            input,
            sections,
            session: OnceCell::new(),
            api: OnceCell::new(),
        }
    }

    /// The caller's session: the key's, once the API's authentication has
    /// run (built-in keys or an auth plugin), or the anonymous session (empty
    /// `key_id`, no limits) on a keyless API. Inside an `auth` function it is
    /// always the anonymous session: the caller is not known until that
    /// function answers.
    pub fn session(&self) -> &Session {
        self.session.get_or_init(|| {
            // The gateway always sends a well-formed session; an anonymous
            // one stands in should a section ever fail to read.
            read_session(&self.input, &self.sections).unwrap_or_else(|_| Session::new(""))
        })
    }

    /// The API definition the request matched.
    pub fn api(&self) -> &Api {
        self.api.get_or_init(|| {
            read_api(&self.input, &self.sections).unwrap_or_else(|_| Api {
                id: String::new(),
                name: String::new(),
                listen_path: String::new(),
                upstream: String::new(),
                config: "{}".into(),
            })
        })
    }

    /// The plugin reference's `config` from the YAML, as JSON text (`{}`
    /// when it has none). Checked to be UTF-8 only when read: empty if it is
    /// not, which [`Context::config`] reports as invalid.
    pub fn config_json(&self) -> &str {
        text(&self.input, &self.sections.config)
    }

    /// The plugin reference's `config`, deserialised into your own type.
    ///
    /// A missing `config` in the YAML reads as `{}`, so a struct whose fields
    /// all have `#[serde(default)]` always deserialises.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(self.config_json()).map_err(|e| crate::Error::msg(format!("invalid plugin config: {e}")))
    }

    /// The results of the calls the plugin reference's `fan_out` declares,
    /// which the gateway made, concurrently, before calling the function:
    /// `(name, result)` in name order, each as [`crate::http::send`] would
    /// have returned it (a call still running at the fan-out's deadline is
    /// `Timeout`; one stopped because `first` calls had succeeded is
    /// `Cancelled`). Empty when the reference has no `fan_out`.
    ///
    /// Reading them imports nothing: a function that only merges what the
    /// gateway fetched stays on the lean path (docs/writing-plugins.md).
    pub fn fan_out(&self) -> Result<Vec<(String, std::result::Result<OutboundResponse, HttpError>)>> {
        read_fan_out(&self.input, &self.sections)
    }

    /// The API definition's own `config`, deserialised into your own type.
    pub fn api_config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.api().config).map_err(|e| crate::Error::msg(format!("invalid API config: {e}")))
    }
}

impl Context {
    /// The response section, for a `response` function.
    pub(crate) fn response(&self) -> Result<crate::Response> {
        read_response(&self.input, &self.sections)
    }
}

fn read_session(input: &[u8], sections: &Sections) -> Result<Session> {
    let s = OwnedSession::read(input, sections)?;
    Ok(Session {
        key_id: s.key_id,
        alias: s.alias,
        rate: s.rate,
        per: s.per,
        quota_max: s.quota_max,
        quota_remaining: s.quota_remaining,
        quota_renewal_seconds: s.quota_renewal_seconds,
        metadata: s.metadata,
        tags: s.tags,
        expires: s.expires,
    })
}

fn read_api(input: &[u8], sections: &Sections) -> Result<Api> {
    let a = OwnedApi::read(input, sections)?;
    Ok(Api {
        id: a.id,
        name: a.name,
        listen_path: a.listen_path,
        upstream: a.upstream,
        config: a.config,
    })
}

fn read_fan_out(
    input: &[u8],
    sections: &Sections,
) -> Result<Vec<(String, std::result::Result<OutboundResponse, HttpError>)>> {
    Ok(portcullis_wire::read_fan_out(input, sections)?
        .into_iter()
        .map(|(name, result)| {
            let result = result
                .map(|r| OutboundResponse {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                })
                .map_err(|(case, detail)| crate::wire::http_error(case, detail));
            (name, result)
        })
        .collect())
}

fn read_response(input: &[u8], sections: &Sections) -> Result<crate::Response> {
    let r = OwnedResponse::read(input, sections)?;
    Ok(crate::Response {
        status: r.status,
        headers: r.headers,
        body: r.body,
    })
}
