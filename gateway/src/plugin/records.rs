//! The records that cross the boundary, written by hand where the generated
//! ones would cost or risk too much:
//!
//! - Into the guest, [`RequestRecord`] and [`ResponseRecord`] are borrowed
//!   from the exchange being served. Lowering copies the gateway's own bytes
//!   (the parsed request's header map, path and body) straight into guest
//!   memory; building the generated owned records first would copy every
//!   string, and the body, once more on the host for each hook call.
//! - Out of the guest, the `*Wire` records lift every list of strings as a
//!   [`Bounded`] list: its length is checked against [`MAX_LIFTED_ENTRIES`]
//!   before a single entry is copied, so a plugin cannot make the host
//!   allocate a million strings (outside its CPU budget) only to have them
//!   refused. They convert into the generated types for the rest of the
//!   gateway, where `untrusted` applies the configured limits.
//!
//! Their shapes are the WIT records of the contract version they serve
//! (`wit/0.1`, `plugin-sdk/wit`); a mismatch fails when a plugin loads,
//! where every hook export is type-checked against them. A 0.1 plugin's
//! records convert into the 0.2 types the rest of the gateway works in.
//!
//! One file, past 500 lines: the bounded lifting of every list a guest
//! returns is one rule, applied to each record of both contract versions;
//! split, the rule would be read in one place and applied in another.

use http::HeaderMap;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift, Lower, WasmList};

use super::bindings::v01::portcullis::plugin::types as v01;
use super::bindings::{AuthOutcome, Authenticated, FunctionInfo, HookKind, Outcome, RequestChanges, Response, Session};

/// Most entries of any list of strings lifted out of a guest, whatever the
/// limits: the ceiling of `max_headers` and far above any session's.
pub const MAX_LIFTED_ENTRIES: usize = 10_000;

/// The WIT `request` record, borrowed.
#[derive(Debug, ComponentType, Lower)]
#[component(record)]
pub struct RequestRecord<'a> {
    pub method: &'a str,
    pub path: &'a str,
    #[component(name = "upstream-path")]
    pub upstream_path: &'a str,
    pub query: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
    #[component(name = "client-addr")]
    pub client_addr: &'a str,
    pub params: &'a [(String, String)],
    #[component(name = "request-id")]
    pub request_id: &'a str,
}

/// The WIT `response` record, borrowed: the upstream's response as a
/// `response` hook receives it.
#[derive(Debug, ComponentType, Lower)]
#[component(record)]
pub struct ResponseRecord<'a> {
    pub status: u16,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
}

/// A list lifted out of a guest only if it has at most
/// [`MAX_LIFTED_ENTRIES`] entries; the length is read and checked before
/// any entry is.
#[derive(Debug)]
pub struct Bounded<T>(pub Vec<T>);

/// Most bytes of the strings of one list lifted out of a guest (see
/// [`crate::config::MAX_LIST_BYTES`]). Counted from the strings' lengths in
/// guest memory before any is copied, so entries that all point at the same
/// bytes count each time: a plugin cannot make the host copy its memory
/// thousands of times over.
pub const MAX_LIFTED_BYTES: u64 = crate::config::MAX_LIST_BYTES;

/// A guest returned a list longer than [`MAX_LIFTED_ENTRIES`], or whose
/// strings add up to more than [`MAX_LIFTED_BYTES`].
#[derive(Debug, thiserror::Error)]
pub enum ListTooLarge {
    #[error("returned a list of {0} entries; at most {MAX_LIFTED_ENTRIES} are read")]
    Entries(usize),
    #[error("returned a list whose strings add up to {0} bytes or more; at most {MAX_LIFTED_BYTES} are read")]
    Bytes(u64),
}

/// List entries whose strings' lengths can be read in guest memory
/// without lifting them.
pub trait Strings: Lift {
    /// Where, in one entry's canonical ABI layout (memory32), the length
    /// word of each of its strings lies.
    const LENGTHS: &'static [usize];
}

impl Strings for String {
    const LENGTHS: &'static [usize] = &[4];
}

impl Strings for (String, String) {
    const LENGTHS: &'static [usize] = &[4, 12];
}

/// Load-time lists: bounded by entries only (and the load's own budget).
macro_rules! no_string_bound {
    ($($t:ty),*) => {$(impl Strings for $t { const LENGTHS: &'static [usize] = &[]; })*};
}
no_string_bound!(
    Option<String>,
    FunctionInfo,
    super::bindings::v01::portcullis::plugin::types::FunctionInfo
);

// SAFETY: `Bounded<T>` has exactly the representation and type of a
// `list<T>`: it forwards every item to the implementations for `[T]`.
#[expect(
    unsafe_code,
    reason = "wasmtime's value traits are unsafe to implement; this one forwards to [T]'s"
)]
unsafe impl<T: ComponentType> ComponentType for Bounded<T> {
    type Lower = <[T] as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = <[T] as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[T] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: lifting goes through `WasmList<T>` (which checks the list's bounds
// in guest memory) and then `T`'s own list lifting, as `Vec<T>` does; the
// only addition is the length check in between.
#[expect(
    unsafe_code,
    reason = "wasmtime's value traits are unsafe to implement; this one forwards to Vec<T>'s"
)]
unsafe impl<T: Strings> Lift for Bounded<T> {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> wasmtime::Result<Self> {
        let list = <WasmList<T> as Lift>::linear_lift_from_flat(cx, ty, src)?;
        Self::lift(cx, &list, src[0].get_u32())
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        let list = <WasmList<T> as Lift>::linear_lift_from_memory(cx, ty, bytes)?;
        let ptr = bytes.first_chunk::<4>().map_or(0, |b| u32::from_le_bytes(*b));
        Self::lift(cx, &list, ptr)
    }
}

impl<T: Strings> Bounded<T> {
    /// Lifts `list`, whose entries start at `ptr` in guest memory (checked
    /// in bounds by `WasmList`), once its length and string bytes pass.
    fn lift(cx: &mut LiftContext<'_>, list: &WasmList<T>, ptr: u32) -> wasmtime::Result<Self> {
        if list.len() > MAX_LIFTED_ENTRIES {
            return Err(wasmtime::Error::new(ListTooLarge::Entries(list.len())));
        }
        if !T::LENGTHS.is_empty() {
            let memory = cx.memory();
            let size = T::SIZE32;
            let mut total = 0u64;
            for i in 0..list.len() {
                let entry = ptr as usize + i * size;
                for offset in T::LENGTHS {
                    let at = entry + offset;
                    let word = memory.get(at..at + 4).and_then(|w| w.first_chunk::<4>());
                    // The top bit tags compact UTF-16 strings; the rest is
                    // the length in code units.
                    total += u64::from(word.map_or(0, |w| u32::from_le_bytes(*w)) & 0x7fff_ffff);
                }
                if total > MAX_LIFTED_BYTES {
                    return Err(wasmtime::Error::new(ListTooLarge::Bytes(total)));
                }
            }
        }
        T::linear_lift_list_from_memory(cx, list).map(Bounded)
    }
}

type Fields = Bounded<(String, String)>;

/// The WIT `response` record, as a guest returns it.
#[derive(Debug, ComponentType, Lift)]
#[component(record)]
pub struct ResponseWire {
    status: u16,
    headers: Fields,
    body: Vec<u8>,
}

impl From<ResponseWire> for Response {
    fn from(wire: ResponseWire) -> Self {
        Response {
            status: wire.status,
            headers: wire.headers.0,
            body: wire.body,
        }
    }
}

/// The 0.1 `request-changes` record, as a guest returns it.
#[derive(Debug, ComponentType, Lift)]
#[component(record)]
pub struct RequestChangesWire01 {
    method: Option<String>,
    path: Option<String>,
    query: Option<String>,
    #[component(name = "set-headers")]
    set_headers: Fields,
    #[component(name = "remove-headers")]
    remove_headers: Bounded<String>,
    body: Option<Vec<u8>>,
    upstream: Option<String>,
    #[component(name = "session-metadata")]
    session_metadata: Fields,
}

impl From<RequestChangesWire01> for RequestChanges {
    fn from(c: RequestChangesWire01) -> Self {
        RequestChangesWire {
            method: c.method,
            path: c.path,
            query: c.query,
            set_headers: c.set_headers,
            remove_headers: c.remove_headers,
            body: c.body,
            upstream: c.upstream,
            session_metadata: c.session_metadata,
            response_headers: Bounded(Vec::new()),
        }
        .into()
    }
}

/// The 0.2 `request-changes` record, as a guest returns it.
#[derive(Debug, ComponentType, Lift)]
#[component(record)]
pub struct RequestChangesWire {
    method: Option<String>,
    path: Option<String>,
    query: Option<String>,
    #[component(name = "set-headers")]
    set_headers: Fields,
    #[component(name = "remove-headers")]
    remove_headers: Bounded<String>,
    body: Option<Vec<u8>>,
    upstream: Option<String>,
    #[component(name = "session-metadata")]
    session_metadata: Fields,
    #[component(name = "response-headers")]
    response_headers: Fields,
}

impl From<RequestChangesWire> for RequestChanges {
    fn from(c: RequestChangesWire) -> Self {
        RequestChanges {
            method: c.method,
            path: c.path,
            query: c.query,
            set_headers: c.set_headers.0,
            remove_headers: c.remove_headers.0,
            body: c.body,
            upstream: c.upstream,
            session_metadata: c.session_metadata.0,
            response_headers: c.response_headers.0,
        }
    }
}

/// The 0.1 `outcome` variant, as a guest returns it.
#[derive(Debug, ComponentType, Lift)]
#[component(variant)]
pub enum OutcomeWire01 {
    #[component(name = "continue")]
    Continue(RequestChangesWire01),
    #[component(name = "respond")]
    Respond(ResponseWire),
}

/// The 0.2 `outcome` variant, as a guest returns it.
#[derive(Debug, ComponentType, Lift)]
#[component(variant)]
pub enum OutcomeWire {
    #[component(name = "continue")]
    Continue(RequestChangesWire),
    #[component(name = "respond")]
    Respond(ResponseWire),
}

impl From<OutcomeWire01> for Outcome {
    fn from(wire: OutcomeWire01) -> Self {
        match wire {
            OutcomeWire01::Respond(response) => Outcome::Respond(response.into()),
            OutcomeWire01::Continue(changes) => Outcome::Continue(changes.into()),
        }
    }
}

impl From<OutcomeWire> for Outcome {
    fn from(wire: OutcomeWire) -> Self {
        match wire {
            OutcomeWire::Respond(response) => Outcome::Respond(response.into()),
            OutcomeWire::Continue(changes) => Outcome::Continue(changes.into()),
        }
    }
}

/// The 0.1 `session` record, as an auth function returns it.
#[derive(Debug, ComponentType, Lift)]
#[component(record)]
pub struct SessionWire01 {
    #[component(name = "key-id")]
    key_id: String,
    rate: u32,
    per: u32,
    #[component(name = "quota-max")]
    quota_max: i64,
    #[component(name = "quota-remaining")]
    quota_remaining: i64,
    #[component(name = "quota-renewal-seconds")]
    quota_renewal_seconds: u64,
    metadata: Fields,
    tags: Bounded<String>,
    expires: Option<i64>,
}

/// The 0.2 `session` record, as an auth function returns it.
#[derive(Debug, ComponentType, Lift)]
#[component(record)]
pub struct SessionWire {
    #[component(name = "key-id")]
    key_id: String,
    alias: Option<String>,
    rate: u32,
    per: u32,
    #[component(name = "quota-max")]
    quota_max: i64,
    #[component(name = "quota-remaining")]
    quota_remaining: i64,
    #[component(name = "quota-renewal-seconds")]
    quota_renewal_seconds: u64,
    metadata: Fields,
    tags: Bounded<String>,
    expires: Option<i64>,
}

impl From<SessionWire01> for Session {
    fn from(s: SessionWire01) -> Self {
        SessionWire {
            key_id: s.key_id,
            alias: None,
            rate: s.rate,
            per: s.per,
            quota_max: s.quota_max,
            quota_remaining: s.quota_remaining,
            quota_renewal_seconds: s.quota_renewal_seconds,
            metadata: s.metadata,
            tags: s.tags,
            expires: s.expires,
        }
        .into()
    }
}

impl From<SessionWire> for Session {
    fn from(s: SessionWire) -> Self {
        Session {
            key_id: s.key_id,
            alias: s.alias,
            rate: s.rate,
            per: s.per,
            quota_max: s.quota_max,
            quota_remaining: s.quota_remaining,
            quota_renewal_seconds: s.quota_renewal_seconds,
            metadata: s.metadata.0,
            tags: s.tags.0,
            expires: s.expires,
        }
    }
}

/// The 0.2 `authenticated` record.
#[derive(Debug, ComponentType, Lift)]
#[component(record)]
pub struct AuthenticatedWire {
    session: SessionWire,
    changes: RequestChangesWire,
}

/// The 0.1 `auth-outcome` variant, as a guest returns it: the session alone.
#[derive(Debug, ComponentType, Lift)]
#[component(variant)]
pub enum AuthOutcomeWire01 {
    #[component(name = "authenticated")]
    Authenticated(SessionWire01),
    #[component(name = "respond")]
    Respond(ResponseWire),
}

/// The 0.2 `auth-outcome` variant, as a guest returns it (lifted and
/// converted at once, never stored: its size does not matter).
#[expect(clippy::large_enum_variant, reason = "a transient value, converted straight away")]
#[derive(Debug, ComponentType, Lift)]
#[component(variant)]
pub enum AuthOutcomeWire {
    #[component(name = "authenticated")]
    Authenticated(AuthenticatedWire),
    #[component(name = "respond")]
    Respond(ResponseWire),
}

impl From<AuthOutcomeWire01> for AuthOutcome {
    fn from(wire: AuthOutcomeWire01) -> Self {
        match wire {
            AuthOutcomeWire01::Respond(response) => AuthOutcome::Respond(response.into()),
            AuthOutcomeWire01::Authenticated(session) => AuthOutcome::Authenticated(Authenticated {
                session: session.into(),
                changes: no_changes(),
            }),
        }
    }
}

impl From<AuthOutcomeWire> for AuthOutcome {
    fn from(wire: AuthOutcomeWire) -> Self {
        match wire {
            AuthOutcomeWire::Respond(response) => AuthOutcome::Respond(response.into()),
            AuthOutcomeWire::Authenticated(a) => AuthOutcome::Authenticated(Authenticated {
                session: a.session.into(),
                changes: a.changes.into(),
            }),
        }
    }
}

/// A `continue` that changes nothing.
fn no_changes() -> RequestChanges {
    RequestChanges {
        method: None,
        path: None,
        query: None,
        set_headers: Vec::new(),
        remove_headers: Vec::new(),
        body: None,
        upstream: None,
        session_metadata: Vec::new(),
        response_headers: Vec::new(),
    }
}

/// The 0.1 `session` record, borrowed from the gateway's (0.2) session:
/// what a 0.1 plugin receives (no alias).
#[derive(Debug, ComponentType, Lower)]
#[component(record)]
pub struct SessionRecord01<'a> {
    #[component(name = "key-id")]
    key_id: &'a str,
    rate: u32,
    per: u32,
    #[component(name = "quota-max")]
    quota_max: i64,
    #[component(name = "quota-remaining")]
    quota_remaining: i64,
    #[component(name = "quota-renewal-seconds")]
    quota_renewal_seconds: u64,
    metadata: &'a [(String, String)],
    tags: &'a [String],
    expires: Option<i64>,
}

impl<'a> From<&'a Session> for SessionRecord01<'a> {
    fn from(s: &'a Session) -> Self {
        SessionRecord01 {
            key_id: &s.key_id,
            rate: s.rate,
            per: s.per,
            quota_max: s.quota_max,
            quota_remaining: s.quota_remaining,
            quota_renewal_seconds: s.quota_renewal_seconds,
            metadata: &s.metadata,
            tags: &s.tags,
            expires: s.expires,
        }
    }
}

impl From<v01::FunctionInfo> for FunctionInfo {
    fn from(f: v01::FunctionInfo) -> Self {
        FunctionInfo {
            name: f.name,
            kind: match f.kind {
                v01::HookKind::Request => HookKind::Request,
                v01::HookKind::Auth => HookKind::Auth,
                v01::HookKind::Response => HookKind::Response,
            },
            wants_body: f.wants_body,
        }
    }
}

/// A header map's fields as the text pairs a guest receives. Values are
/// borrowed from the map; the rare value that is not UTF-8 (obs-text) is
/// converted lossily and held here, so [`HeaderText::fields`] can borrow it
/// too.
#[derive(Debug)]
pub struct HeaderText<'a> {
    headers: &'a HeaderMap,
    /// Lossy conversions of the values that are not UTF-8, in map order.
    lossy: Vec<String>,
}

impl<'a> HeaderText<'a> {
    pub fn new(headers: &'a HeaderMap) -> Self {
        let lossy = headers
            .values()
            .filter(|value| std::str::from_utf8(value.as_bytes()).is_err())
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        HeaderText { headers, lossy }
    }

    /// `(name, value)` per field, in the map's order; names are lower-case.
    pub fn fields(&self) -> Vec<(&str, &str)> {
        let mut lossy = self.lossy.iter();
        self.headers
            .iter()
            .map(|(name, value)| {
                let text = std::str::from_utf8(value.as_bytes())
                    .ok()
                    .or_else(|| lossy.next().map(String::as_str));
                (name.as_str(), text.unwrap_or_default())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn header_text_keeps_order_repeats_and_converts_obs_text_lossily() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append(
            "x-latin",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid value"),
        );
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-utf8", HeaderValue::from_bytes("né".as_bytes()).expect("valid value"));
        headers.append(
            "x-latin2",
            HeaderValue::from_bytes(b"\xff").expect("obs-text is a valid value"),
        );
        let text = HeaderText::new(&headers);
        assert_eq!(
            text.fields(),
            [
                ("x-a", "1"),
                ("x-a", "2"),
                ("x-latin", "caf\u{fffd}"),
                ("x-utf8", "né"),
                ("x-latin2", "\u{fffd}"),
            ]
        );
    }
}
