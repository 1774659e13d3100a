//! The built-in policies on the request path: CORS (preflights answered,
//! responses marked), the endpoint's changes to the request on its way
//! upstream (headers, path, method) and to the response on its way back,
//! and its static response. The checks that refuse a request (client
//! addresses, denied endpoints) are in `chain::admit`.

use crate::config::{Cors, EndpointPolicy, HeaderTransforms, TemplateVars};

use super::*;

/// Why a request is refused with 403 before anything else runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the client's address is not allowed by client_ips")]
    ClientIp,
    #[error("the endpoint is denied")]
    Endpoint,
    #[error("CORS preflight refused: origin, method or headers not allowed")]
    Cors,
}

/// A CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`), answered by the gateway: 204 with
/// what may be sent, or refused. `None`: not a preflight, or the API
/// passes preflights on.
pub(super) fn preflight(cors: &Cors, parts: &Parts) -> Option<Result<Response, RequestError>> {
    if parts.method != http::Method::OPTIONS || cors.preflight_passthrough {
        return None;
    }
    let origin = parts.headers.get(header::ORIGIN)?.to_str().ok();
    let method = parts.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    let refused = Some(Err(RequestError::Refused(Refusal::Cors)));
    if !origin.is_some_and(|o| cors.allows_origin(o)) {
        return refused;
    }
    let method_allowed = http::Method::from_bytes(method.as_bytes()).is_ok_and(|m| cors.methods.contains(&m));
    if !method_allowed {
        return refused;
    }
    let requested: Vec<&str> = parts
        .headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    if !cors.headers.is_empty()
        && !requested.iter().all(|name| {
            cors.headers
                .iter()
                .any(|allowed| allowed.as_str().eq_ignore_ascii_case(name))
        })
    {
        return refused;
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = http::StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    let methods = cors
        .methods
        .iter()
        .map(http::Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    insert(headers, header::ACCESS_CONTROL_ALLOW_METHODS, &methods);
    let allowed_headers = if cors.headers.is_empty() {
        requested.join(", ")
    } else {
        cors.headers
            .iter()
            .map(HeaderName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !allowed_headers.is_empty() {
        insert(headers, header::ACCESS_CONTROL_ALLOW_HEADERS, &allowed_headers);
    }
    if let Some(max_age) = cors.max_age_s {
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age));
    }
    headers.append(
        header::VARY,
        HeaderValue::from_static("access-control-request-method, access-control-request-headers"),
    );
    Some(Ok(response))
}

/// Marks a response to a request from an allowed `origin`, whatever the
/// response (an error too, so a script can read why it failed). Every
/// response of the API varies by origin, for caches.
pub(super) fn cors_response(cors: &Cors, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|o| cors.allows_origin(o))) else {
        return;
    };
    if cors.wildcard() {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    } else {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    if cors.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !cors.expose_headers.is_empty() {
        let names = cors
            .expose_headers
            .iter()
            .map(HeaderName::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        insert(headers, header::ACCESS_CONTROL_EXPOSE_HEADERS, &names);
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

impl Exchange {
    /// What the templates of this request's transforms stand for.
    fn vars<'a>(&'a self, api: &'a ApiRoute, path: &'a str) -> TemplateVars<'a> {
        TemplateVars {
            request_id: self.ctx.request_id.as_str(),
            client_ip: self.client.ip.to_str().unwrap_or_default(),
            api_id: &api.id,
            method: self.parts.method.as_str(),
            path,
            params: &self.params,
        }
    }

    /// The API's and the endpoint's changes to the request on its way
    /// upstream, once the plugins are done with it: headers, then the
    /// path, then the method.
    pub(super) fn transform_request(&mut self, api: &ApiRoute, endpoint: Option<&EndpointPolicy>) {
        let transforms = [Some(&api.headers), endpoint.map(|e| &e.headers)];
        if transforms.iter().flatten().any(|t| !t.request.is_empty()) {
            let path = self.parts.uri.path().to_owned();
            let mut headers = std::mem::take(&mut self.parts.headers);
            for transform in transforms.into_iter().flatten() {
                transform.request.apply(&mut headers, &self.vars(api, &path));
            }
            self.parts.headers = headers;
        }
        let Some(endpoint) = endpoint else { return };
        if let Some(rewrite) = &endpoint.rewrite {
            let path = self.parts.uri.path().to_owned();
            if let Some(rewritten) = rewrite.apply(&self.upstream_path, &self.vars(api, &path)) {
                self.rewrite_upstream(rewritten);
            }
        }
        if let Some(method) = &endpoint.upstream_method {
            self.parts.method = method.clone();
        }
    }

    /// Sets the upstream path; a `?query` in it replaces the request's.
    fn rewrite_upstream(&mut self, rewritten: String) {
        match rewritten.split_once('?') {
            Some((path, query)) => {
                if let Some(uri) = super::handle::with_query(&self.parts.uri, query) {
                    self.parts.uri = uri;
                }
                self.upstream_path = path.to_owned();
            }
            None => self.upstream_path = rewritten,
        }
    }

    /// The API's and the endpoint's changes to the response.
    pub(super) fn transform_response(
        &self,
        api: &ApiRoute,
        endpoint: Option<&EndpointPolicy>,
        response: &mut Response,
    ) {
        let transforms: [Option<&HeaderTransforms>; 2] = [Some(&api.headers), endpoint.map(|e| &e.headers)];
        if transforms.iter().flatten().all(|t| t.response.is_empty()) {
            return;
        }
        let path = self.parts.uri.path();
        let vars = self.vars(api, path);
        for transform in transforms.into_iter().flatten() {
            transform.response.apply(response.headers_mut(), &vars);
        }
    }
}

/// The endpoint's static response (`respond:`), a fresh copy.
pub(super) fn static_response(respond: &crate::config::Fallback) -> Response {
    let mut response = Response::new(Body::from(respond.body.clone()));
    *response.status_mut() = respond.status;
    *response.headers_mut() = respond.headers.clone();
    response
}
