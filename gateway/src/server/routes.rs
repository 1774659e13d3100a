//! The routing table built from a loaded configuration: APIs by listen path
//! (longest prefix wins), endpoints by method and path template, each
//! endpoint with its loaded plugin. Built whole and swapped whole on reload,
//! so a request sees one consistent configuration from start to end.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::config::{ApiConfig, AuthConfig, Config, ConfigError, PluginRef, UpstreamTimeouts};
use crate::config::{ClientIps, Cors, EndpointPolicy, HeaderTransforms};
use crate::config::{OverrideHeaders, RoutingPolicy, Transport, Unmatched};
use crate::plugin::{Api, CallContext, HookKind, LoadError, Plugin, PluginRuntime};
use crate::server::auth::RateLimiter;
use crate::server::canonical::{self, PathError, PathOptions};
use crate::server::jwt::JwtAuth;
use crate::telemetry::metrics::ApiMetrics;
use crate::telemetry::{RequestId, TraceContext};
use crate::upstream::ApiUpstreams;
use crate::upstream::outbound::OutboundPolicy;

/// Why a configuration could not be turned into a routing table.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugin(#[from] LoadError),
}

/// Everything needed to serve requests under one configuration.
#[derive(Debug)]
pub struct Routes {
    /// Sorted by listen path, longest first.
    apis: Vec<ApiRoute>,
    /// The APIs by listen path (without its final `/`), for tables large
    /// enough that a scan would cost more than a few lookups.
    index: Option<PrefixIndex>,
    pub config: Config,
    /// [`Config::digest`] of the files this table was built from.
    pub digest: String,
    /// When it was built.
    pub loaded_at: std::time::SystemTime,
}

#[derive(Debug)]
pub struct ApiRoute {
    pub id: Arc<str>,
    pub listen_path: String,
    pub strip_listen_path: bool,
    /// Targets, pools and health of `upstream` and `upstreams`.
    pub upstreams: ApiUpstreams,
    pub timeouts: UpstreamTimeouts,
    /// Largest request body proxied; `None`: no limit.
    pub max_request_body_bytes: Option<usize>,
    /// How long an upgraded connection may stay silent both ways.
    pub tunnel_idle_timeout: Duration,
    /// Whether a verified client certificate is forwarded as XFCC.
    pub forward_client_cert: bool,
    /// How paths under this API are canonicalised.
    pub paths: PathOptions,
    pub unmatched: Unmatched,
    pub override_headers: OverrideHeaders,
    /// Protocols an `Upgrade` may switch to, lower case.
    pub upgrades: Vec<String>,
    pub transport: Transport,
    /// How long a client may take to send a body the gateway reads whole.
    pub body_timeout: Duration,
    pub outbound: Arc<OutboundPolicy>,
    pub routing: Arc<RoutingPolicy>,
    /// The record plugins receive.
    pub record: Arc<Api>,
    pub auth: Auth,
    /// Cross-origin requests from browsers.
    pub cors: Option<Cors>,
    /// Client addresses let in or turned away.
    pub client_ips: Option<ClientIps>,
    /// Header changes on every request and response.
    pub headers: HeaderTransforms,
    /// `rate_limit` on the whole API.
    pub rate_limit: Option<RateLimiter>,
    pub hooks: Hooks,
    pub metrics: ApiMetrics,
    endpoints: matchit::Router<Vec<usize>>,
    endpoint_list: Vec<Endpoint>,
}

/// How the API authenticates callers, with its plugin loaded.
#[derive(Debug)]
pub enum Auth {
    Keyless,
    ApiKey {
        header: http::HeaderName,
        query: Option<String>,
    },
    Plugin(Box<Plugin>),
    Jwt(Box<JwtAuth>),
}

/// The API-level hooks, loaded, in the order they run.
#[derive(Debug, Default)]
pub struct Hooks {
    pub pre: Vec<Plugin>,
    pub post_auth: Vec<Plugin>,
    pub post: Vec<Plugin>,
    pub response: Vec<Plugin>,
}

impl Hooks {
    /// No hook runs before the upstream (`pre`, `post_auth`, `post`).
    pub fn request_phase_is_empty(&self) -> bool {
        self.pre.is_empty() && self.post_auth.is_empty() && self.post.is_empty()
    }
}

async fn load_all(
    runtime: &Arc<PluginRuntime>,
    api: &str,
    refs: &[PluginRef],
    kind: HookKind,
) -> Result<Vec<Plugin>, LoadError> {
    let mut plugins = Vec::with_capacity(refs.len());
    for reference in refs {
        plugins.push(runtime.load(reference, kind, api).await?);
    }
    Ok(plugins)
}

#[derive(Debug)]
pub struct Endpoint {
    methods: Option<Vec<Method>>,
    pub template: String,
    pub plugin: Option<Plugin>,
    pub rate_limit: Option<RateLimiter>,
    /// What the gateway does itself here.
    pub policy: EndpointPolicy,
}

/// A matched endpoint and the parameters its template captured.
#[derive(Debug)]
pub struct EndpointMatch<'a> {
    pub endpoint: &'a Endpoint,
    pub params: Vec<(String, String)>,
}

impl Routes {
    /// Loads every plugin the configuration names and builds the table.
    /// Upstream targets also in `previous` keep their health state.
    pub async fn build(
        config: Config,
        runtime: &Arc<PluginRuntime>,
        previous: Option<&Routes>,
    ) -> Result<Self, BuildError> {
        // Before the plugins load: a file changed while they do changes the
        // digest of the next reload, not this one's.
        // Hashing every file (plugins included) takes a while: not on a
        // thread that serves requests.
        let input = config.digest_input();
        let digest = tokio::task::spawn_blocking(move || input.digest())
            .await
            .map_err(|e| ConfigError::new(&config.file, None, format!("cannot hash the configuration: {e}")))?
            .map_err(|(file, e)| ConfigError::new(&file, None, format!("cannot read: {e}")))?;
        let mut apis = Vec::with_capacity(config.apis.len());
        for api in &config.apis {
            let before = previous.and_then(|p| p.apis.iter().find(|a| *a.id == *api.id));
            apis.push(ApiRoute::build(api, runtime, before.map(|b| &b.upstreams)).await?);
        }
        apis.sort_by_key(|api| std::cmp::Reverse(api.listen_path.len()));
        Ok(Routes {
            index: PrefixIndex::build(&apis),
            apis,
            config,
            digest,
            loaded_at: std::time::SystemTime::now(),
        })
    }

    /// Publishes the certificates this configuration loaded (upstream CAs
    /// and client certificates; the listener's are published by the
    /// listener) for the expiry metric. Called when it starts serving.
    pub fn publish_certificates(&self) {
        for api in &self.config.apis {
            let certificates = api
                .upstream_tls
                .as_ref()
                .map(|t| &t.certificates[..])
                .unwrap_or_default();
            crate::telemetry::metrics::set_certificates(&format!("api:{}", api.id), certificates);
        }
        crate::telemetry::metrics::retain_certificate_sources(|source| {
            source == "listener"
                || source
                    .strip_prefix("api:")
                    .is_some_and(|id| self.config.apis.iter().any(|api| api.id == id))
        });
    }

    /// The API whose listen path is the longest prefix of `path`, and the rest
    /// of the path (always starting with `/`).
    pub fn route<'a>(&self, path: &'a str) -> Option<(&ApiRoute, &'a str)> {
        match &self.index {
            Some(index) => index.route(&self.apis, path),
            None => self.apis.iter().find_map(|api| Some((api, api.rest(path)?))),
        }
    }

    /// The canonical form of the client's `raw` path and the API it routes
    /// to. The gateway's `paths` options pick the API; an API with options of
    /// its own canonicalises `raw` again under them, and the result must
    /// still be under its listen path. A path the gateway's options refuse
    /// (an encoded slash, say) goes to the API it would reach were they
    /// lenient, if that API has options of its own: they decide.
    pub fn resolve<'p>(&self, raw: &'p str) -> Result<(Option<&ApiRoute>, Cow<'p, str>), PathError> {
        let gateway = &self.config.paths;
        let api = match canonical::canonicalize(raw, gateway) {
            Ok(path) => match self.route(&path) {
                None => return Ok((None, path)),
                Some((api, _)) if api.paths == *gateway => return Ok((Some(api), path)),
                Some((api, _)) => api,
            },
            Err(why) if why.is_optional() => {
                let lenient = canonical::canonicalize(raw, &gateway.lenient())?;
                match self.route(&lenient) {
                    Some((api, _)) if api.paths != *gateway => api,
                    _ => return Err(why),
                }
            }
            Err(why) => return Err(why),
        };
        let own = canonical::canonicalize(raw, &api.paths)?;
        match self.route(&own) {
            Some((again, _)) if std::ptr::eq(again, api) => Ok((Some(api), own)),
            _ => Err(PathError::OutsideApi),
        }
    }

    pub fn apis(&self) -> &[ApiRoute] {
        &self.apis
    }

    /// Plugin references (endpoints and hooks), across all APIs.
    pub fn plugin_count(&self) -> usize {
        self.apis.iter().map(ApiRoute::plugin_count).sum()
    }

    /// The APIs that cannot serve without the session store: keyed ones
    /// (their sessions, quotas) and rate-limited ones (their counters).
    pub fn store_needed_by(&self) -> impl Iterator<Item = &ApiRoute> {
        self.apis.iter().filter(|api| {
            !matches!(api.auth, Auth::Keyless)
                || api.rate_limit.is_some()
                || api.endpoints().iter().any(|e| e.rate_limit.is_some())
        })
    }
}

/// What follows `listen_path` (which ends with `/`) in `path`, if the API
/// serves it: `/` for the listen path itself.
fn rest_after<'a>(listen_path: &str, path: &'a str) -> Option<&'a str> {
    let prefix = &listen_path[..listen_path.len() - 1];
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') || prefix.is_empty() {
        Some(rest)
    } else {
        None
    }
}

/// Routing that does not grow with the number of APIs: the listen paths
/// (without their final `/`) in a map, and a path looked up at each of its
/// segment boundaries, longest first: what [`ApiRoute::rest`] accepts,
/// found in as many lookups as the path has segments, at most as long as
/// the longest listen path.
#[derive(Debug)]
struct PrefixIndex {
    /// Prefix to the first API (in the table's order) with it.
    apis: std::collections::HashMap<Box<str>, usize>,
    longest: usize,
    /// Whether some prefix is this long: a candidate of another length is
    /// not hashed at all (a path of many short segments costs no lookups).
    lengths: Vec<bool>,
}

impl PrefixIndex {
    /// Below this many APIs a scan is cheaper than hashing the path a few
    /// times.
    const MIN_APIS: usize = 32;

    fn build(apis: &[ApiRoute]) -> Option<Self> {
        (apis.len() >= Self::MIN_APIS).then(|| Self::of(apis.iter().map(|api| &*api.listen_path)))
    }

    /// The index of these listen paths (each ending with `/`), in order.
    fn of<'l>(listen_paths: impl Iterator<Item = &'l str>) -> Self {
        let mut index = std::collections::HashMap::new();
        for (i, listen_path) in listen_paths.enumerate() {
            let prefix = &listen_path[..listen_path.len() - 1];
            index.entry(Box::<str>::from(prefix)).or_insert(i);
        }
        let longest = index.keys().map(|prefix| prefix.len()).max().unwrap_or(0);
        let mut lengths = vec![false; longest + 1];
        for prefix in index.keys() {
            lengths[prefix.len()] = true;
        }
        PrefixIndex {
            apis: index,
            longest,
            lengths,
        }
    }

    fn route<'r, 'a>(&self, apis: &'r [ApiRoute], path: &'a str) -> Option<(&'r ApiRoute, &'a str)> {
        let (i, rest) = self.find(path)?;
        Some((&apis[i], rest))
    }

    /// The position of the API serving `path`, and the rest of the path.
    fn find<'a>(&self, path: &'a str) -> Option<(usize, &'a str)> {
        // The longest candidate: the whole path, or its last boundary
        // within the longest listen path (a client's long path costs no
        // more than the configuration's longest one).
        let mut end = if path.len() <= self.longest {
            path.len()
        } else {
            path.get(..=self.longest)?.rfind('/')?
        };
        loop {
            let (prefix, rest) = path.split_at(end);
            if self.lengths[end]
                && let Some(&i) = self.apis.get(prefix)
            {
                return Some((i, if rest.is_empty() { "/" } else { rest }));
            }
            end = prefix.rfind('/')?;
        }
    }
}

impl ApiRoute {
    /// The API-wide policies set, by their YAML names, for the admin API.
    pub fn policy_names(&self) -> Vec<&'static str> {
        [
            ("cors", self.cors.is_some()),
            ("client_ips", self.client_ips.is_some()),
            ("headers", !self.headers.is_empty()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// `path` under this API's listen path (always starting with `/`), if
    /// it is under it.
    pub fn rest<'a>(&self, path: &'a str) -> Option<&'a str> {
        rest_after(&self.listen_path, path)
    }

    async fn build(
        api: &ApiConfig,
        runtime: &Arc<PluginRuntime>,
        previous: Option<&ApiUpstreams>,
    ) -> Result<Self, BuildError> {
        let mut endpoint_list: Vec<Endpoint> = Vec::with_capacity(api.endpoints.len());
        // Endpoints sharing a template (different methods) share a route.
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, endpoint) in api.endpoints.iter().enumerate() {
            let plugin = match &endpoint.plugin {
                Some(reference) => Some(runtime.load(reference, HookKind::Request, &api.id).await?),
                None => None,
            };
            let methods = endpoint.methods.clone();
            let rate_limit = endpoint.rate_limit.clone().map(|limit| {
                let scope = match &methods {
                    Some(methods) => format!(
                        "{} {}",
                        methods.iter().map(Method::as_str).collect::<Vec<_>>().join(","),
                        endpoint.path
                    ),
                    None => endpoint.path.clone(),
                };
                RateLimiter::new(&api.id, &scope, limit)
            });
            endpoint_list.push(Endpoint {
                methods,
                template: endpoint.path.clone(),
                plugin,
                rate_limit,
                policy: endpoint.policy.clone(),
            });
            match groups
                .iter_mut()
                .find(|(first, _)| api.endpoints[*first].path == endpoint.path)
            {
                Some((_, members)) => members.push(i),
                None => groups.push((i, vec![i])),
            }
        }
        let mut endpoints = matchit::Router::new();
        for (first, members) in groups {
            let path = &api.endpoints[first].path;
            endpoints.insert(path, members).map_err(|e| {
                ConfigError::new(
                    &api.file,
                    Some(format!("endpoints[{first}].path")),
                    format!("{path:?} conflicts with another endpoint: {e}"),
                )
            })?;
        }
        let auth = match &api.auth {
            AuthConfig::Keyless => Auth::Keyless,
            AuthConfig::ApiKey { header, query } => Auth::ApiKey {
                header: header.clone(),
                query: query.clone(),
            },
            AuthConfig::Plugin(reference) => {
                Auth::Plugin(Box::new(runtime.load(reference, HookKind::Auth, &api.id).await?))
            }
            AuthConfig::Jwt(jwt) => Auth::Jwt(Box::new(JwtAuth::build(jwt, &api.id, api.upstream_tls.as_ref()).await)),
        };
        let hooks = Hooks {
            pre: load_all(runtime, &api.id, &api.hooks.pre, HookKind::Request).await?,
            post_auth: load_all(runtime, &api.id, &api.hooks.post_auth, HookKind::Request).await?,
            post: load_all(runtime, &api.id, &api.hooks.post, HookKind::Request).await?,
            response: load_all(runtime, &api.id, &api.hooks.response, HookKind::Response).await?,
        };
        let id: Arc<str> = api.id.as_str().into();
        let upstreams = ApiUpstreams::build(api, previous);
        Ok(ApiRoute {
            auth,
            cors: api.cors.clone(),
            client_ips: api.client_ips.clone(),
            headers: api.headers.clone(),
            rate_limit: api
                .rate_limit
                .clone()
                .map(|limit| RateLimiter::new(&api.id, "api", limit)),
            hooks,
            metrics: ApiMetrics::new(&id),
            id,
            listen_path: api.listen_path.clone(),
            strip_listen_path: api.strip_listen_path,
            timeouts: api.timeouts,
            max_request_body_bytes: api.max_request_body_bytes,
            tunnel_idle_timeout: api.tunnel_idle_timeout,
            forward_client_cert: api.forward_client_cert,
            paths: api.paths,
            unmatched: api.unmatched,
            override_headers: api.override_headers,
            upgrades: api.upgrades.clone(),
            transport: api.transport,
            body_timeout: api.body_timeout,
            outbound: Arc::new(OutboundPolicy::new(&api.outbound, api.upstream_tls.as_ref())),
            routing: Arc::new(api.routing.clone()),
            record: Arc::new(Api {
                id: api.id.clone(),
                name: api.name.clone(),
                listen_path: api.listen_path.clone(),
                upstream: upstreams.default_url(),
                config: api.config_json.clone(),
            }),
            upstreams,
            endpoints,
            endpoint_list,
        })
    }

    /// The endpoint for `method` and `rest` (the path under the listen path).
    /// A path with a trailing slash that no template spells so is governed
    /// by the endpoint of the path without it (`/orders/42/` by `/{id}`).
    pub fn match_endpoint(&self, method: &Method, rest: &str) -> Option<EndpointMatch<'_>> {
        let find = |path| {
            let matched = self.endpoints.at(path).ok()?;
            let endpoint = matched
                .value
                .iter()
                .map(|&i| &self.endpoint_list[i])
                .find(|e| e.methods.as_ref().is_none_or(|m| m.contains(method)))?;
            Some((endpoint, matched.params))
        };
        let (endpoint, params) = find(rest).or_else(|| {
            let trimmed = canonical::for_matching(rest);
            (trimmed.len() < rest.len()).then(|| find(trimmed)).flatten()
        })?;
        let params = params
            .iter()
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned(),
                )
            })
            .collect();
        Some(EndpointMatch { endpoint, params })
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoint_list
    }

    fn plugin_count(&self) -> usize {
        self.plugins().count()
    }

    /// Every plugin of the API: auth, hooks, then endpoints.
    pub fn plugins(&self) -> impl Iterator<Item = &Plugin> {
        let auth = match &self.auth {
            Auth::Plugin(plugin) => Some(&**plugin),
            _ => None,
        };
        let hooks = &self.hooks;
        auth.into_iter()
            .chain(&hooks.pre)
            .chain(&hooks.post_auth)
            .chain(&hooks.post)
            .chain(&hooks.response)
            .chain(self.endpoint_list.iter().filter_map(|e| e.plugin.as_ref()))
    }

    /// The context plugin calls under this API need. Outbound calls carry
    /// the request id and the client's W3C trace context headers.
    /// `span` is the request's trace span, when traces are on.
    pub fn call_context(
        &self,
        request_id: RequestId,
        headers: &http::HeaderMap,
        span: Option<opentelemetry::Context>,
    ) -> CallContext {
        CallContext {
            api: Arc::clone(&self.record),
            api_id: Arc::clone(&self.id),
            outbound: Arc::clone(&self.outbound),
            routing: Arc::clone(&self.routing),
            request_id,
            trace: TraceContext::from_headers(headers, span),
            stats: None,
            hook: "pre",
        }
    }
}

impl Endpoint {
    pub fn methods(&self) -> Option<&[Method]> {
        self.methods.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{PrefixIndex, rest_after};

    /// The scan the index replaces: the first listen path (longest first)
    /// that serves `path`.
    fn scan<'a>(listen_paths: &[String], path: &'a str) -> Option<(usize, &'a str)> {
        listen_paths
            .iter()
            .enumerate()
            .find_map(|(i, listen_path)| Some((i, rest_after(listen_path, path)?)))
    }

    /// Listen paths and request paths from a small alphabet, so that
    /// prefixes, shared segments, the root and duplicates are common.
    fn segment() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "ab", "b", "api", "v1", "", "%2F", "a.b"]).prop_map(String::from)
    }

    fn path_of(segments: Vec<String>) -> String {
        segments.iter().map(|s| format!("/{s}")).collect()
    }

    proptest! {
        #[test]
        fn the_index_routes_as_the_scan_does(
            listen in prop::collection::vec(prop::collection::vec(segment(), 0..4), 1..60),
            paths in prop::collection::vec(prop::collection::vec(segment(), 0..8), 1..30),
            trailing in any::<bool>(),
        ) {
            let mut listen_paths: Vec<String> = listen.into_iter().map(|s| format!("{}/", path_of(s))).collect();
            listen_paths.sort_by_key(|l| std::cmp::Reverse(l.len()));
            let index = PrefixIndex::of(listen_paths.iter().map(String::as_str));
            for segments in paths {
                let mut path = path_of(segments);
                if path.is_empty() || trailing {
                    path.push('/');
                }
                prop_assert_eq!(index.find(&path), scan(&listen_paths, &path), "path {}", path);
            }
        }
    }

    #[test]
    fn a_long_path_is_looked_up_only_within_the_longest_listen_path() {
        let listen_paths = ["/a/b/", "/a/", "/"];
        let index = PrefixIndex::of(listen_paths.into_iter());
        let long = format!("/a/b{}", "/x".repeat(10_000));
        assert_eq!(index.find(&long), Some((0, &long[4..])));
        assert_eq!(index.find("/a/bc/d"), Some((1, "/bc/d")));
        assert_eq!(index.find("/zz"), Some((2, "/zz")));
        assert_eq!(index.find("/a"), Some((1, "/")));
    }
}
