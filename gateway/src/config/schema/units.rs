//! Durations and sizes with units: `5s`, `250ms`, `2m`, `16MiB`, `512KB`.
//! A field named `..._ms`, `..._s` or `..._bytes` keeps accepting a bare
//! integer in the unit its name says; a string with a unit is converted.
//! Used as `#[serde(deserialize_with = "units::ms")]`, so an error carries
//! the field's line like any other.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// An integer, or a string with a unit, before it is converted.
enum Raw<'a> {
    Int(u64),
    Text(std::borrow::Cow<'a, str>),
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-negative integer or a string with a unit such as \"5s\" or \"16MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw<'de>, E> {
                Ok(Raw::Int(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw<'de>, E> {
                u64::try_from(v)
                    .map(Raw::Int)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Raw<'de>, E> {
                Ok(Raw::Text(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw<'de>, E> {
                Ok(Raw::Text(v.to_owned().into()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `5s`, `250ms`, `2m`, `1h 30m` (humantime's forms).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?}: {e} (write e.g. \"250ms\", \"5s\", \"2m\")"))
}

/// `16MiB`, `512KiB`, `1GB`, `100B`, `4096`: binary (KiB, MiB, GiB) and
/// decimal (KB, MB, GB) units.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size {text:?}: write e.g. \"512KiB\", \"16MiB\", \"1GB\" or a number of bytes");
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let scale: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

fn convert<T: TryFrom<u64>>(raw: Raw<'_>, unit: Unit) -> Result<T, String> {
    let value = match raw {
        Raw::Int(v) => v,
        Raw::Text(text) => match unit {
            Unit::Bytes => parse_size(&text)?,
            Unit::Millis | Unit::Secs => {
                let d = parse_duration(&text)?;
                if unit == Unit::Secs && d.subsec_nanos() != 0 {
                    return Err(format!("{text:?} is not a whole number of seconds"));
                }
                if unit == Unit::Millis && d.subsec_nanos() % 1_000_000 != 0 {
                    return Err(format!("{text:?} is not a whole number of milliseconds"));
                }
                let v = if unit == Unit::Secs {
                    d.as_secs() as u128
                } else {
                    d.as_millis()
                };
                u64::try_from(v).map_err(|_| format!("{text:?} is too long"))?
            }
        },
    };
    T::try_from(value).map_err(|_| format!("{value} is too large for this field"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Millis,
    Secs,
    Bytes,
}

fn one<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D, unit: Unit) -> Result<T, D::Error> {
    convert(Raw::deserialize(d)?, unit).map_err(de::Error::custom)
}

fn optional<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D, unit: Unit) -> Result<Option<T>, D::Error> {
    Option::<Raw>::deserialize(d)?
        .map(|raw| convert(raw, unit))
        .transpose()
        .map_err(de::Error::custom)
}

/// A `..._ms` field: milliseconds, or a duration such as `"5s"`.
pub fn ms<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    one(d, Unit::Millis)
}

pub fn opt_ms<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    optional(d, Unit::Millis)
}

/// A `..._s` field: seconds, or a duration such as `"2m"`.
pub fn secs<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    one(d, Unit::Secs)
}

pub fn opt_secs<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    optional(d, Unit::Secs)
}

/// A `..._bytes` field: bytes, or a size such as `"16MiB"`.
pub fn bytes<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    one(d, Unit::Bytes)
}

pub fn opt_bytes<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    optional(d, Unit::Bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("16mb").is_err());
        assert!(parse_size("-1MiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        let ms = |t: &str| convert::<u64>(Raw::Text(t.into()), Unit::Millis);
        let s = |t: &str| convert::<u64>(Raw::Text(t.into()), Unit::Secs);
        assert_eq!(ms("5s"), Ok(5000));
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms("1m 30s"), Ok(90_000));
        assert_eq!(s("2m"), Ok(120));
        assert!(s("1500ms").is_err());
        assert!(ms("1us").is_err());
        assert!(ms("soon").is_err());
        assert_eq!(convert::<u32>(Raw::Int(7), Unit::Secs), Ok(7));
        assert!(convert::<u32>(Raw::Int(u64::MAX), Unit::Secs).is_err());
    }
}
