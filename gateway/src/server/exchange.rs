//! The request as it moves through the chain ([`Exchange`]): its head,
//! its body (streaming, or read whole for plugins), where it goes, the
//! caller's session; and what applying a plugin's changes does to it.

use super::*;

/// The request as it moves through the chain.
pub(super) struct Exchange {
    pub(super) parts: Parts,
    pub(super) body: BodyState,
    /// Where it goes: upstream and the path the upstream sees.
    pub(super) destination: Destination,
    pub(super) upstream_path: String,
    pub(super) params: Vec<(String, String)>,
    pub(super) client: Arc<Peer>,
    pub(super) ctx: CallContext,
    /// What plugins see: anonymous until authenticated.
    pub(super) session: Session,
    pub(super) caller: Option<Caller>,
    /// Session metadata changed by a plugin, to be saved.
    pub(super) metadata_dirty: bool,
    pub(super) limit_headers: LimitHeaders,
    /// Headers request-phase plugins set on the client's response.
    pub(super) response_headers: HeaderMap,
    /// What the access log records as the request is served.
    pub(super) usage: Option<Arc<std::sync::Mutex<Usage>>>,
    /// With traces on, while the upstream exchange runs: its span.
    pub(super) upstream_span: Option<opentelemetry::Context>,
    /// How long the client may take to send a body the gateway reads whole.
    pub(super) body_timeout: Duration,
    /// The upstream exchange's timeouts: the API's, or its endpoint's.
    pub(super) timeouts: crate::config::UpstreamTimeouts,
    /// The largest body sent upstream: the API's, or its endpoint's.
    pub(super) max_body: Option<usize>,
}

pub(super) enum BodyState {
    Streaming(Body),
    Buffered(Bytes),
}

impl Exchange {
    /// The request to send upstream, as the chain left it, with the
    /// forwarding headers. `keep` leaves the exchange's copy of the request
    /// head for the response hooks; otherwise it moves out. A streamed body
    /// is cut off past `max_body` bytes; an empty one can be sent again.
    pub(super) fn upstream_request(&mut self, keep: bool, max_body: Option<usize>) -> Result<Outgoing, RequestError> {
        let mut parts = if keep {
            self.parts.clone()
        } else {
            std::mem::replace(&mut self.parts, http::Request::new(()).into_parts().0)
        };
        proxy::forwarded_request_headers(
            &mut parts.headers,
            &self.client.ip,
            &self.client.proto,
            parts.uri.authority(),
        );
        if let Some(span) = &self.upstream_span {
            telemetry::inject(span, &mut parts.headers);
        }
        parts
            .headers
            .insert(RequestId::HEADER, self.ctx.request_id.header().clone());
        parts.version = http::Version::HTTP_11;
        let body = match (&mut self.body, max_body) {
            (BodyState::Streaming(body), _) if hyper::body::Body::is_end_stream(body) => OutBody::Bytes(Bytes::new()),
            (BodyState::Streaming(body), None) => OutBody::Stream(std::mem::take(body)),
            (BodyState::Streaming(body), Some(limit)) => {
                OutBody::Stream(Body::new(http_body_util::Limited::new(std::mem::take(body), limit)))
            }
            (BodyState::Buffered(bytes), Some(limit)) if bytes.len() > limit => {
                return Err(RequestError::BodyTooLarge(limit));
            }
            (BodyState::Buffered(bytes), _) => OutBody::Bytes(bytes.clone()),
        };
        let path = if keep {
            self.upstream_path.clone()
        } else {
            std::mem::take(&mut self.upstream_path)
        };
        Ok(Outgoing { parts, path, body })
    }

    /// What `consistent_hash` may hash besides the headers. (Borrows two
    /// fields, not the exchange, whose streaming body is not `Sync`.)
    pub(super) fn affinity(&self) -> Affinity<'_> {
        Affinity {
            client_ip: self.client.ip.as_bytes(),
            key_id: self.caller.as_ref().map(|c| c.data.key_id.as_str()),
        }
    }

    /// Buffers the body if `plugin` reads it (before [`Self::plugin_request`]).
    pub(super) async fn buffer_body_for(&mut self, plugin: &Plugin) -> Result<(), RequestError> {
        if plugin.wants_body() {
            self.buffered_body(plugin.limits().max_body_bytes).await?;
        }
        Ok(())
    }

    /// The request record a plugin sees, borrowed from the exchange. With
    /// `with_body` it carries the body [`Self::buffer_body_for`] buffered.
    pub(super) fn plugin_request<'a>(&'a self, with_body: bool, headers: &'a HeaderText<'a>) -> RequestRecord<'a> {
        let body = match &self.body {
            BodyState::Buffered(bytes) if with_body => Some(&bytes[..]),
            _ => None,
        };
        RequestRecord {
            method: self.parts.method.as_str(),
            path: self.parts.uri.path(),
            upstream_path: &self.upstream_path,
            query: self.parts.uri.query().unwrap_or_default(),
            headers: headers.fields(),
            body,
            client_addr: &self.client.addr,
            params: &self.params,
            request_id: self.ctx.request_id.as_str(),
        }
    }

    pub(super) async fn buffered_body(&mut self, limit: usize) -> Result<Bytes, RequestError> {
        let bytes = match std::mem::replace(&mut self.body, BodyState::Buffered(Bytes::new())) {
            BodyState::Buffered(bytes) if bytes.len() > limit => return Err(RequestError::BodyTooLarge(limit)),
            BodyState::Buffered(bytes) => bytes,
            BodyState::Streaming(body) => tokio::time::timeout(self.body_timeout, read_body(body, limit))
                .await
                .map_err(|_| RequestError::BodyTimeout(self.body_timeout.as_millis() as u64))??,
        };
        self.body = BodyState::Buffered(bytes.clone());
        Ok(bytes)
    }
}

impl Exchange {
    /// Applies a `continue` outcome, checked and typed by the runtime. What
    /// can only be checked here (the session metadata merged with the
    /// session's own) is checked before anything changes: a refused outcome
    /// leaves the request as it was.
    pub(super) fn apply(&mut self, limits: &Limits, changes: Changes) -> Result<(), String> {
        let metadata = if changes.session_metadata.is_empty() {
            None
        } else {
            Some(self.merged_metadata(limits, changes.session_metadata)?)
        };
        // The path is the request's own and the query was checked to make
        // a valid one with it: this does not fail.
        let uri: Option<http::Uri> = changes
            .query
            .map(|query| {
                let path = self.parts.uri.path();
                if query.is_empty() {
                    path.parse()
                } else {
                    format!("{path}?{query}").parse()
                }
            })
            .transpose()
            .map_err(|e| format!("{e}"))?;
        let parts = &mut self.parts;
        if let Some(method) = changes.method {
            parts.method = method;
        }
        if let Some(uri) = uri {
            parts.uri = uri;
        }
        if let Some(path) = changes.path {
            self.upstream_path = path;
        }
        for name in &changes.remove_headers {
            parts.headers.remove(name);
        }
        // Each name set replaces every value the request had for it.
        set_all(&mut parts.headers, changes.set_headers);
        if let Some((_, destination)) = changes.upstream {
            self.destination = destination;
        }
        set_all(&mut self.response_headers, changes.response_headers);
        if let Some(body) = changes.body {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::TRANSFER_ENCODING);
            self.body = BodyState::Buffered(body);
        }
        if let Some(metadata) = metadata {
            self.session.metadata = metadata.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
            if let Some(caller) = &mut self.caller {
                caller.data.metadata = metadata;
            }
            self.metadata_dirty = true;
        }
        Ok(())
    }

    /// The session's metadata with `changes` set (a sorted map: linear in
    /// the entries, however many the plugin returns), if the session stays
    /// within the plugin's limits.
    pub(super) fn merged_metadata(
        &self,
        limits: &Limits,
        changes: Vec<(String, String)>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut merged: BTreeMap<String, String> = self.session.metadata.iter().cloned().collect();
        merged.extend(changes);
        plugin::check_session_size(
            &self.session.key_id,
            self.session.tags.iter().map(String::as_str),
            merged.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            limits,
        )
        .map_err(|why| format!("with the session's own metadata, {why}"))?;
        Ok(merged)
    }
}

/// Sets every name in `fields` on `headers`, replacing the values `headers`
/// had for it (a name `fields` holds several values for gets them all).
pub(super) fn set_all(headers: &mut HeaderMap, fields: HeaderMap) {
    let mut last = None;
    for (name, value) in fields {
        match name {
            Some(name) => {
                headers.insert(&name, value);
                last = Some(name);
            }
            None => {
                if let Some(name) = &last {
                    headers.append(name, value);
                }
            }
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, RequestError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(RequestError::BodyTooLarge(limit)),
        Err(e) => Err(RequestError::BadBody(e.to_string())),
    }
}

/// The body length a request declares, if it declares one.
pub(super) fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
