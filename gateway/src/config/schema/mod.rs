//! The YAML schema, exactly as operators write it: one struct per document
//! shape, unknown fields rejected. Values that can be checked on their own
//! (URLs, paths, methods) are checked here, so the error carries the line.
//! Checks that need context (files on disk, duplicates) live in `load` and
//! `api`. One file per document: `gateway` (gateway.yaml), `api` (an API
//! file), `upstream` (an upstream's long form); `values` holds the strings
//! checked as they are parsed.

use std::path::PathBuf;

use serde::Deserialize;

/// A string checked while it is parsed, so the error carries its line.
/// (A `try_from` conversion would run after the parser moved on.)
macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Checked;
                impl serde::de::Visitor<'_> for Checked {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        let check: fn(&str) -> Result<(), String> = $check;
                        check(s).map(|()| $name(s.to_owned())).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Checked)
            }
        }
    };
}

mod api;
mod gateway;
mod policy;
pub mod units;
mod upstream;
mod values;

pub use api::*;
pub use gateway::*;
pub use policy::*;
pub use upstream::*;
pub use values::*;
