//! Calling plugins from the chain: a hook's outcome applied or its
//! response framed, a failure logged and turned into the reference's
//! fallback or an error, and what an auth plugin's session becomes.

use super::*;

/// Saves session metadata written by plugins (keyed sessions only; the
/// chain calls it when a plugin changed some). A failure is logged; the
/// request goes on.
pub(super) async fn save_metadata(gateway: &Gateway, ex: &mut Exchange) {
    let Some(caller) = ex.caller.as_ref().filter(|c| !c.store_id.is_empty()) else {
        tracing::debug!("session metadata set on an anonymous or token session is not saved");
        return;
    };
    if let Err(e) = gateway.store.put(&caller.store_id, &caller.data).await {
        tracing::warn!(
            request_id = ex.ctx.request_id.as_str(),
            key_id = caller.data.key_id.as_str(),
            error = %e,
            "cannot save session metadata"
        );
    }
}

impl Exchange {
    /// Runs one `request` plugin; `Some` if it answered (or failed into a
    /// fallback response).
    pub(super) async fn request_hook(
        &mut self,
        plugin: &Plugin,
        hook: &'static str,
    ) -> Result<Option<Response>, RequestError> {
        self.ctx.hook = hook;
        self.buffer_body_for(plugin).await?;
        let headers = HeaderText::new(&self.parts.headers);
        let request = self.plugin_request(plugin.wants_body(), &headers);
        let result = match plugin.on_request(&self.ctx, &request, &self.session).await {
            Ok(RequestOutcome::Continue(changes)) => self.continue_with(plugin, changes),
            Ok(RequestOutcome::Respond(reply)) => return Ok(Some(framed(plugin, reply, None))),
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => Ok(None),
            Err(error) if plugin.on_error() == OnError::Continue => {
                log_failure(&self.ctx, plugin, &error);
                Ok(None)
            }
            Err(error) => plugin_failed(&self.ctx, plugin, error).map(Some),
        }
    }

    /// Applies the changes a plugin continued with; a change the gateway
    /// cannot apply is the plugin's failure.
    pub(super) fn continue_with(&mut self, plugin: &Plugin, changes: Changes) -> Result<(), PluginError> {
        log_dropped(plugin, &changes.dropped);
        self.apply(plugin.limits(), changes).map_err(|why| plugin.invalid(&why))
    }

    /// Runs one `response` plugin over `response`. The body is buffered only
    /// if the plugin reads it; otherwise it keeps streaming and only status
    /// and headers can change.
    pub(super) async fn response_hook(
        &mut self,
        plugin: &Plugin,
        response: Response,
    ) -> Result<Response, RequestError> {
        self.ctx.hook = "response";
        let (parts, body) = response.into_parts();
        let (bytes, body) = if plugin.wants_body() {
            let limit = plugin.limits().max_body_bytes;
            let bytes = read_body(body, limit).await.map_err(|e| match e {
                RequestError::BodyTooLarge(limit) => RequestError::ResponseTooLarge(limit),
                other => other,
            })?;
            (bytes, None)
        } else {
            (Bytes::new(), Some(body))
        };
        // `(body)` on a response function means the response's body; the
        // request's has gone to the upstream, so its record carries none.
        let headers = HeaderText::new(&self.parts.headers);
        let request = self.plugin_request(false, &headers);
        let response_headers = HeaderText::new(&parts.headers);
        let record = ResponseRecord {
            status: parts.status.as_u16(),
            headers: response_headers.fields(),
            body: &bytes,
        };
        match plugin.on_response(&self.ctx, &request, &record, &self.session).await {
            // A body the plugin did not read streams on unchanged.
            Ok(reply) => Ok(framed(plugin, reply, body)),
            Err(error) if plugin.on_error() == OnError::Continue => {
                log_failure(&self.ctx, plugin, &error);
                Ok(Response::from_parts(parts, body.unwrap_or_else(|| Body::from(bytes))))
            }
            Err(error) => plugin_failed(&self.ctx, plugin, error),
        }
    }
}

pub(super) fn log_failure(ctx: &CallContext, plugin: &Plugin, error: &PluginError) {
    tracing::warn!(
        request_id = ctx.request_id.as_str(),
        api = &*ctx.api_id,
        plugin = plugin.label(),
        source = %plugin.source(),
        error = %error,
        on_error = ?plugin.on_error(),
        "plugin invocation failed"
    );
}

/// A failed plugin (with `on_error: fail`): its fallback response, or the
/// gateway's error.
pub(super) fn plugin_failed(ctx: &CallContext, plugin: &Plugin, error: PluginError) -> Result<Response, RequestError> {
    log_failure(ctx, plugin, &error);
    match plugin.fallback() {
        Some(fallback) => {
            let body = if framing::has_no_body(fallback.status) {
                Body::empty()
            } else {
                Body::from(fallback.body.clone())
            };
            let mut response = Response::new(body);
            *response.status_mut() = fallback.status;
            *response.headers_mut() = fallback.headers.clone();
            Ok(response)
        }
        None => Err(RequestError::Plugin {
            plugin: plugin.label().to_owned(),
            source: error,
        }),
    }
}

/// A plugin's response record as an HTTP response, framed by the gateway.
/// A plugin's reply as the client's response, framed by the gateway: its
/// status and headers (checked, the gateway's own dropped), and no body for
/// 204 and 304. `body` is an upstream body streaming past a `response`
/// function that did not read it; otherwise the reply's own.
pub(super) fn framed(plugin: &Plugin, reply: Reply, body: Option<Body>) -> Response {
    log_dropped(plugin, &reply.dropped);
    respond_with(reply, body)
}

/// [`framed`], without the log line.
pub(super) fn respond_with(reply: Reply, body: Option<Body>) -> Response {
    let body = if framing::has_no_body(reply.status) {
        Body::empty()
    } else {
        body.unwrap_or_else(|| Body::from(reply.body))
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    response
}

/// Notes the framing and connection headers a plugin set, which the
/// gateway dropped (see [`framing`]).
pub(super) fn log_dropped(plugin: &Plugin, dropped: &[HeaderName]) {
    if !dropped.is_empty() {
        tracing::debug!(
            plugin = plugin.label(),
            ?dropped,
            "headers only the gateway sets were dropped"
        );
    }
}
