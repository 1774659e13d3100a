//! Sending the request upstream: an upgrade tunnelled once the upstream
//! switches protocols, otherwise the response streamed back under the
//! read and total timeouts.

use super::*;

/// What the upstream answered: a response, or protocols switched (101)
/// with a tunnel now running between client and upstream.
pub(super) enum Upstreamed {
    Response(Response),
    Switched(Response),
}

pub(super) async fn to_upstream(api: &ApiRoute, ex: &mut Exchange) -> Result<Upstreamed, RequestError> {
    let max_body = ex.max_body;
    let over_limit = |e: UpstreamError| match e {
        UpstreamError::RequestBodyTooLarge => RequestError::BodyTooLarge(max_body.unwrap_or_default()),
        other => RequestError::Upstream(other),
    };
    // An upgrade (WebSocket) request, once the request phase let it through:
    // forwarded with its `Connection: upgrade`, tunnelled if the upstream
    // switches protocols.
    if let Some(protocol) = proxy::allowed_upgrade(&ex.parts.headers, &api.upgrades)
        && let Some(client_side) = ex.parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    {
        let mut request = ex.upstream_request(false, max_body)?;
        let headers = &mut request.parts.headers;
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
        let exchanged = api
            .upstreams
            .send(&ex.destination, request, ex.timeouts.head, ex.affinity())
            .await
            .map_err(over_limit)?;
        let mut response = exchanged.response;
        let switched = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        let upstream_side = switched.then(|| hyper::upgrade::on(&mut response));
        let (mut parts, body) = response.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        proxy::upstream_response_headers(&mut parts.headers);
        let Some(upstream_side) = upstream_side else {
            return Ok(Upstreamed::Response(Response::from_parts(parts, Body::new(body))));
        };
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            parts.headers.insert(header::UPGRADE, protocol);
        }
        // The tunnel holds the target's in-flight slot while it lasts.
        let in_flight = exchanged.in_flight;
        let idle = api.tunnel_idle_timeout;
        let request_id = ex.ctx.request_id.clone();
        tokio::spawn(async move {
            tunnel::splice(client_side, upstream_side, idle, request_id).await;
            drop(in_flight);
        });
        return Ok(Upstreamed::Switched(Response::from_parts(parts, Body::empty())));
    }
    // Response hooks still need the request; otherwise it can move out.
    let request = ex.upstream_request(!api.hooks.response.is_empty(), max_body)?;
    let started = tokio::time::Instant::now();
    let timeouts = ex.timeouts;
    let head = timeouts.total.map_or(timeouts.head, |total| total.min(timeouts.head));
    let exchanged = api
        .upstreams
        .send(&ex.destination, request, head, ex.affinity())
        .await
        .map_err(over_limit)?;
    if let Some(usage) = &ex.usage {
        let mut usage = lock(usage);
        usage.target = Some(Arc::clone(&exchanged.target));
        usage.tries = exchanged.tries;
    }
    let (mut parts, body) = exchanged.response.into_parts();
    if parts.status == http::StatusCode::SWITCHING_PROTOCOLS {
        // Nobody asked to switch: relaying it would hand the client's
        // connection to a protocol the gateway does not see into.
        return Err(RequestError::Upstream(UpstreamError::Protocol(
            "101 Switching Protocols to a request that asked for no upgrade",
        )));
    }
    proxy::upstream_response_headers(&mut parts.headers);
    // The body streams on under the read and total timeouts.
    let deadline = timeouts.total.map(|total| started + total);
    let body = proxy::TimedBody::new(
        body,
        timeouts.read,
        deadline,
        ex.ctx.request_id.clone(),
        exchanged.in_flight,
    );
    Ok(Upstreamed::Response(Response::from_parts(parts, Body::new(body))))
}

impl Exchange {
    /// [`to_upstream`], noting in the access log's entry how long the
    /// upstream took to answer, under its own span when traced. With
    /// neither an access log nor traces this is `to_upstream` alone: no
    /// clock read.
    pub(super) async fn timed_upstream(&mut self, api: &ApiRoute) -> Result<Upstreamed, RequestError> {
        if self.usage.is_none() && self.ctx.trace.span.is_none() {
            return to_upstream(api, self).await;
        }
        let started = Instant::now();
        self.upstream_span = self.ctx.trace.span.as_ref().map(|parent| {
            telemetry::child(
                parent,
                format!("upstream {}", api.id),
                SpanKind::Client,
                vec![
                    KeyValue::new("portcullis.api", api.id.to_string()),
                    KeyValue::new("http.request.method", self.parts.method.to_string()),
                    KeyValue::new("url.path", self.upstream_path.clone()),
                ],
            )
        });
        let upstreamed = to_upstream(api, self).await;
        if let Some(usage) = &self.usage {
            lock(usage).upstream_time = Some(started.elapsed());
        }
        if let Some(span) = self.upstream_span.take() {
            let status = match &upstreamed {
                Ok(Upstreamed::Response(response) | Upstreamed::Switched(response)) => Ok(response.status().as_u16()),
                Err(error) => Err(error.to_string()),
            };
            telemetry::end_call(&span, status);
        }
        upstreamed
    }
}
