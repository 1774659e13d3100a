//! What a function knows besides the request: session, API and config.

use crate::{Api, Result, Session};

/// The caller's session, the API definition and this plugin reference's
/// config, handed to every function.
#[derive(Debug)]
pub struct Context {
    /// The caller's session (anonymous on keyless APIs).
    pub session: Session,
    /// The API definition the request matched.
    pub api: Api,
    /// The plugin reference's `config` from the YAML, as JSON text.
    pub config_json: String,
}

impl Context {
    /// The plugin reference's `config`, deserialised into your own type.
    ///
    /// A missing `config` in the YAML reads as `{}`, so a struct whose fields
    /// all have `#[serde(default)]` always deserialises.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.config_json).map_err(|e| crate::Error::msg(format!("invalid plugin config: {e}")))
    }

    /// The API definition's own `config`, deserialised into your own type.
    pub fn api_config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.api.config).map_err(|e| crate::Error::msg(format!("invalid API config: {e}")))
    }
}
