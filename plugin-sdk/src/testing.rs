//! Unit-test plugin functions as plain Rust, in `cargo test`, without a
//! gateway: build the [`Request`] and [`Context`] a function receives, fake
//! the outbound HTTP it makes, and read the log lines it writes.
//!
//! The builders write the same input buffer the gateway sends, so a
//! function reads it through the same code as in production. The fakes
//! (outbound HTTP, log capture) take effect when the SDK is built for the
//! host, which is where tests run (`cargo test` in a crate made by
//! `portcullis plugin new` builds for wasm, then runs the tests natively); in
//! a wasm build the gateway's real host functions answer instead.
//!
//! ```
//! use portcullis_sdk::testing::{FakeHttp, TestContext, TestRequest};
//! use portcullis_sdk::{Context, Outcome, Request, RequestChanges, Result, http};
//!
//! fn tag_user(req: &Request, _: &Context) -> Result<Outcome> {
//!     let user: serde_json::Value = http::get("http://users.internal/me")?.json()?;
//!     Ok(RequestChanges::new().set_header("x-user", user["name"].as_str().unwrap_or("?")).into())
//! }
//!
//! let fake = FakeHttp::install();
//! fake.respond_json("http://users.internal/me", 200, &serde_json::json!({ "name": "ann" }));
//! let outcome = tag_user(&TestRequest::get("/me").build(), &TestContext::new().build()).unwrap();
//! let changes = outcome.continued().expect("continues");
//! assert_eq!(changes.set_headers, [("x-user".to_owned(), "ann".to_owned())]);
//! assert_eq!(fake.calls().len(), 1);
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use crate::http::{BatchOptions, HttpError, OutboundRequest, OutboundResponse};
use crate::log::Level;
use portcullis_wire::{ApiSection, RequestSection, ResponseSection, SessionSection};

use crate::wire::{Sections, Writer};
use crate::{Api, AuthOutcome, Context, Outcome, Request, RequestChanges, Response, Session};

/// A request as the gateway would hand it to a function.
///
/// Defaults: `GET /`, no headers, no path parameters, no body, client
/// `127.0.0.1:40000`, request id `test-request`.
#[derive(Debug, Clone)]
pub struct TestRequest {
    method: String,
    path: String,
    upstream_path: Option<String>,
    query: String,
    client_addr: String,
    request_id: String,
    headers: Vec<(String, String)>,
    params: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl TestRequest {
    /// A request for `uri`: a path, optionally with `?query` (kept raw, as
    /// the gateway does).
    pub fn new(method: &str, uri: &str) -> Self {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        TestRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            upstream_path: None,
            query: query.to_owned(),
            client_addr: "127.0.0.1:40000".into(),
            request_id: "test-request".into(),
            headers: Vec::new(),
            params: Vec::new(),
            body: None,
        }
    }

    /// `GET uri`.
    pub fn get(uri: &str) -> Self {
        Self::new("GET", uri)
    }

    /// `POST uri` with `body`.
    pub fn post(uri: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", uri).body(body)
    }

    /// Adds a header (names are matched case-insensitively, as in the gateway).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds a path parameter, as an endpoint template `/{name}` would capture.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// The body, as a function declared with `(body)` receives it.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// A JSON body and `content-type: application/json`.
    pub fn json(self, value: &impl serde::Serialize) -> Self {
        let body = serde_json::to_vec(value).expect("a serialisable test body");
        self.header("content-type", "application/json").body(body)
    }

    /// The path the upstream will get (default: the path itself, as with
    /// `strip_listen_path: false`).
    pub fn upstream_path(mut self, path: impl Into<String>) -> Self {
        self.upstream_path = Some(path.into());
        self
    }

    /// The client's address, `ip:port`.
    pub fn client_addr(mut self, addr: impl Into<String>) -> Self {
        self.client_addr = addr.into();
        self
    }

    /// The request id (`x-request-id`).
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = id.into();
        self
    }

    fn write(&self, w: &mut Writer) {
        RequestSection {
            method: &self.method,
            path: &self.path,
            upstream_path: self.upstream_path.as_deref().unwrap_or(&self.path),
            query: &self.query,
            client_addr: &self.client_addr,
            request_id: &self.request_id,
            headers: pairs(&self.headers),
            params: pairs(&self.params),
            body: self.body.as_deref(),
        }
        .write(w);
    }

    /// The [`Request`] a function receives.
    pub fn build(&self) -> Request {
        let (input, sections) = input(self, &TestContext::new());
        Request::parse(input, &sections).expect("the test input is well-formed")
    }
}

/// What a function knows besides the request: session, API definition and
/// config. (A `response` function takes its [`Response`] as an argument.)
///
/// Defaults: the anonymous session, an API `test` listening on `/test/`, no
/// config (`{}`).
#[derive(Debug, Clone)]
pub struct TestContext {
    session: Session,
    api: Api,
    config: String,
    fan_out: Vec<(String, Result<OutboundResponse, HttpError>)>,
}

impl Default for TestContext {
    fn default() -> Self {
        Self::new()
    }
}

impl TestContext {
    /// The defaults above.
    pub fn new() -> Self {
        TestContext {
            session: Session::new(""),
            api: Api {
                id: "test".into(),
                name: "test".into(),
                listen_path: "/test/".into(),
                upstream: "http://127.0.0.1:9".into(),
                config: "{}".into(),
            },
            config: "{}".into(),
            fan_out: Vec::new(),
        }
    }

    /// Adds the result of one `fan_out` call, as the gateway would pass it
    /// ([`Context::fan_out`]); results keep the order they are added in.
    pub fn fan_out(mut self, name: impl Into<String>, result: Result<OutboundResponse, HttpError>) -> Self {
        self.fan_out.push((name.into(), result));
        self
    }

    /// The caller's session.
    pub fn session(mut self, session: Session) -> Self {
        self.session = session;
        self
    }

    /// The API definition.
    pub fn api(mut self, api: Api) -> Self {
        self.api = api;
        self
    }

    /// The plugin reference's `config`, as the YAML would give it.
    pub fn config(self, config: &impl serde::Serialize) -> Self {
        self.config_json(serde_json::to_string(config).expect("a serialisable test config"))
    }

    /// The plugin reference's `config` as JSON text, valid or not (to test
    /// how a function handles a bad config).
    pub fn config_json(mut self, json: impl Into<String>) -> Self {
        self.config = json.into();
        self
    }

    /// The [`Context`] a function receives.
    pub fn build(&self) -> Context {
        let (input, sections) = input(&TestRequest::get("/"), self);
        Context::new(input, sections)
    }
}

fn pairs(fields: &[(String, String)]) -> impl ExactSizeIterator<Item = (&str, &str)> {
    fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
}

/// The input the gateway would write for `request` in `ctx`.
fn input(request: &TestRequest, ctx: &TestContext) -> (Rc<Vec<u8>>, Sections) {
    let mut w = Writer::default();
    request.write(&mut w);
    let s = &ctx.session;
    SessionSection {
        key_id: &s.key_id,
        alias: s.alias.as_deref(),
        rate: s.rate,
        per: s.per,
        quota_max: s.quota_max,
        quota_remaining: s.quota_remaining,
        quota_renewal_seconds: s.quota_renewal_seconds,
        metadata: pairs(&s.metadata),
        tags: s.tags.iter().map(String::as_str),
        expires: s.expires,
    }
    .write(&mut w);
    // The response: a response function takes it as an argument.
    ResponseSection::<std::iter::Empty<(&str, &str)>>::write(None, &mut w);
    let api = &ctx.api;
    ApiSection {
        id: &api.id,
        name: &api.name,
        listen_path: &api.listen_path,
        upstream: &api.upstream,
        config: &api.config,
    }
    .write(&mut w);
    portcullis_wire::write_config(&mut w, &ctx.config);
    crate::wire::write_fan_out(&mut w, &ctx.fan_out);
    let input = w.into_bytes();
    let sections = Sections::split(&input).expect("the test input is well-formed");
    (Rc::new(input), sections)
}

/// Reading outcomes in assertions.
impl Outcome {
    /// The changes, if the function continues.
    pub fn continued(self) -> Option<RequestChanges> {
        match self {
            Outcome::Continue(changes) => Some(changes),
            Outcome::Respond(_) => None,
        }
    }

    /// The response, if the function answers the client itself.
    pub fn responded(self) -> Option<Response> {
        match self {
            Outcome::Respond(response) => Some(response),
            Outcome::Continue(_) => None,
        }
    }
}

/// Reading auth outcomes in assertions.
impl AuthOutcome {
    /// The session, if the caller is authenticated.
    pub fn session(&self) -> Option<&Session> {
        match self {
            AuthOutcome::Authenticated(a) => Some(&a.session),
            AuthOutcome::Respond(_) => None,
        }
    }

    /// The rejection, if the caller is refused.
    pub fn rejection(&self) -> Option<&Response> {
        match self {
            AuthOutcome::Respond(response) => Some(response),
            AuthOutcome::Authenticated(_) => None,
        }
    }
}

/// What the fake answers one URL with.
#[derive(Debug, Clone)]
enum Canned {
    Respond(OutboundResponse),
    Fail(HttpError),
}

#[derive(Debug, Default)]
struct Fake {
    installed: bool,
    canned: Vec<(String, Canned)>,
    calls: Vec<OutboundRequest>,
    logs: Vec<(Level, String)>,
}

thread_local! {
    // Each test runs on its own thread, so tests never see each other's fakes.
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
}

/// A fake of the gateway's outbound HTTP for the current test (thread).
///
/// Answers each URL with what you canned for it, exactly matched (query
/// included); a URL with nothing canned is refused as
/// [`HttpError::NotAllowed`], as the gateway refuses a host not on the API's
/// `outbound.allow`. It records every request it receives. Without
/// [`FakeHttp::install`], outbound calls in a test fail with
/// `HttpError::Other("no FakeHttp installed ...")`.
#[derive(Debug)]
pub struct FakeHttp(());

impl FakeHttp {
    /// Installs an empty fake for this test, replacing any earlier one.
    pub fn install() -> Self {
        FAKE.with_borrow_mut(|fake| {
            let logs = std::mem::take(&mut fake.logs);
            *fake = Fake {
                installed: true,
                logs,
                ..Fake::default()
            };
        });
        FakeHttp(())
    }

    fn can(&self, url: &str, canned: Canned) -> &Self {
        FAKE.with_borrow_mut(|fake| {
            fake.canned.retain(|(u, _)| u != url);
            fake.canned.push((url.to_owned(), canned));
        });
        self
    }

    /// Answers `url` with `status` and `body`.
    pub fn respond(&self, url: &str, status: u16, body: impl Into<Vec<u8>>) -> &Self {
        self.respond_with(
            url,
            OutboundResponse {
                status,
                headers: Vec::new(),
                body: body.into(),
            },
        )
    }

    /// Answers `url` with `status` and `value` as JSON.
    pub fn respond_json(&self, url: &str, status: u16, value: &impl serde::Serialize) -> &Self {
        let body = serde_json::to_vec(value).expect("a serialisable canned body");
        self.respond_with(
            url,
            OutboundResponse {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
            },
        )
    }

    /// Answers `url` with `response`, headers included.
    pub fn respond_with(&self, url: &str, response: OutboundResponse) -> &Self {
        self.can(url, Canned::Respond(response))
    }

    /// Fails calls to `url` with `error` (for example
    /// `HttpError::Connect("connection refused".into())`).
    pub fn fail(&self, url: &str, error: HttpError) -> &Self {
        self.can(url, Canned::Fail(error))
    }

    /// Fails calls to `url` as a call past its timeout or its batch's
    /// deadline does.
    pub fn time_out(&self, url: &str) -> &Self {
        self.fail(url, HttpError::Timeout)
    }

    /// Every request the fake received, in order.
    pub fn calls(&self) -> Vec<OutboundRequest> {
        FAKE.with_borrow(|fake| fake.calls.clone())
    }
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn answer(fake: &mut Fake, request: &OutboundRequest) -> Result<OutboundResponse, HttpError> {
    if !fake.installed {
        return Err(HttpError::Other(
            "no FakeHttp installed in this test: call portcullis_sdk::testing::FakeHttp::install()".into(),
        ));
    }
    fake.calls.push(request.clone());
    match fake.canned.iter().find(|(url, _)| *url == request.url) {
        Some((_, Canned::Respond(response))) => Ok(response.clone()),
        Some((_, Canned::Fail(error))) => Err(error.clone()),
        None => Err(HttpError::NotAllowed(host(&request.url).to_owned())),
    }
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn send(request: &OutboundRequest) -> Result<OutboundResponse, HttpError> {
    FAKE.with_borrow_mut(|fake| answer(fake, request))
}

/// A batch, in order; with `first(n)`, the calls after the n-th success are
/// cancelled, as the gateway cancels the calls still in flight.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn send_all(
    requests: &[OutboundRequest],
    options: BatchOptions,
) -> Vec<Result<OutboundResponse, HttpError>> {
    FAKE.with_borrow_mut(|fake| {
        let mut successes = 0;
        requests
            .iter()
            .map(|request| {
                if options.min_successes.is_some_and(|n| successes >= n) {
                    return Err(HttpError::Cancelled);
                }
                let result = answer(fake, request);
                successes += u32::from(result.is_ok());
                result
            })
            .collect()
    })
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn log(level: Level, message: &str) {
    eprintln!("[plugin {level:?}] {message}");
    FAKE.with_borrow_mut(|fake| fake.logs.push((level, message.to_owned())));
}

/// The log lines this test's functions wrote so far, oldest first.
pub fn logs() -> Vec<(Level, String)> {
    FAKE.with_borrow(|fake| fake.logs.clone())
}
