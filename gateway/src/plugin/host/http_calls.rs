//! The `http` interface: outbound calls under the reference's call budget
//! and the API's allowlist, one at a time or as a batch.
//!
//! 0.2's `http` and `log` interfaces have 0.1's shapes: the 0.2 host
//! functions convert and call the 0.1 ones.

use super::*;

impl State {
    /// Takes one call from the invocation's budget, or says why not.
    pub(super) fn take_call(&mut self) -> Result<(), HttpError> {
        if self.outbound_calls >= self.call.limits.max_outbound_calls {
            if self.log.take(0) {
                tracing::warn!(
                    plugin = &*self.call.plugin,
                    api = &*self.call.api_id,
                    request_id = self.call.request_id.as_str(),
                    limit = self.call.limits.max_outbound_calls,
                    "outbound call refused: call limit reached"
                );
            }
            return Err(HttpError::CallLimit);
        }
        self.outbound_calls += 1;
        Ok(())
    }

    /// One outbound call as a future that borrows nothing from the store, so
    /// a batch can run several at once; [`Self::outbound_result`] turns its
    /// result into what the guest sees.
    pub(super) fn call_future(
        &self,
        request: OutboundRequest,
    ) -> impl Future<Output = Result<outbound::OutboundResponse, OutboundError>> + Send + 'static {
        let client = self.call.client.clone();
        let policy = Arc::clone(&self.call.outbound);
        let request_id = self.call.request_id.clone();
        let trace = self.call.trace.clone();
        let limits = self.call.limits.clone();
        let mut counted = Counted {
            metrics: self.call.metrics.clone(),
            started: std::time::Instant::now(),
        };
        async move {
            let request = outbound::OutboundRequest {
                method: request.method,
                url: request.url,
                headers: request.headers,
                body: request.body,
                timeout: request.timeout_ms.map(|ms| Duration::from_millis(ms.into())),
            };
            let result = client.send(&policy, request, &limits, &request_id, &trace).await;
            counted.finish(result.as_ref().map_or_else(OutboundError::reason, |_| "ok"));
            result
        }
    }

    /// Logs a refused or failed outbound call (refusals count against the
    /// invocation's log budget: a plugin cannot flood the log by making
    /// them) and converts the result for the guest.
    pub(super) fn outbound_result(
        &mut self,
        url: &str,
        result: Result<outbound::OutboundResponse, OutboundError>,
    ) -> Result<OutboundResponse, HttpError> {
        result.map(to_wit_response).map_err(|e| {
            let (plugin, request_id) = (&*self.call.plugin, self.call.request_id.as_str());
            if matches!(e, OutboundError::NotAllowed(_)) {
                if self.log.take(url.len().min(MAX_LOG_LINE)) {
                    let url = untrusted::escape(url, MAX_LOG_LINE);
                    tracing::warn!(
                        plugin,
                        request_id,
                        url,
                        "outbound call refused: host not on the API's allowlist"
                    );
                }
            } else {
                let url = untrusted::escape(url, MAX_LOG_LINE);
                tracing::debug!(plugin, request_id, url, error = %e, "outbound call failed");
            }
            HttpError::from(e)
        })
    }
}

/// One outbound call's metrics: its result when it finishes, `cancelled`
/// when it is dropped first (a batch's deadline, or enough successes).
struct Counted {
    metrics: Option<Arc<crate::telemetry::metrics::PluginMetrics>>,
    started: std::time::Instant,
}

impl Counted {
    fn finish(&mut self, result: &'static str) {
        if let Some(metrics) = self.metrics.take() {
            metrics.outbound(result, self.started.elapsed());
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish("cancelled");
    }
}

pub(super) fn to_wit_response(response: outbound::OutboundResponse) -> OutboundResponse {
    OutboundResponse {
        status: response.status,
        headers: response.headers,
        body: response.body.into(),
    }
}

impl From<OutboundError> for HttpError {
    fn from(e: OutboundError) -> Self {
        match e {
            OutboundError::NotAllowed(host) => HttpError::NotAllowed(host),
            OutboundError::Invalid(why) => HttpError::InvalidRequest(why),
            OutboundError::Connect(why) => HttpError::Connect(why),
            OutboundError::Timeout => HttpError::Timeout,
            OutboundError::TooLarge(_) => HttpError::TooLarge,
            OutboundError::Other(why) => HttpError::Other(why),
        }
    }
}

impl http::Host for State {
    async fn send(&mut self, request: OutboundRequest) -> Result<OutboundResponse, HttpError> {
        self.take_call()?;
        self.clock.pause();
        let url = request.url.clone();
        let result = self.call_future(request).await;
        self.clock.resume();
        self.outbound_result(&url, result)
    }

    async fn send_all(
        &mut self,
        requests: Vec<OutboundRequest>,
        options: BatchOptions,
    ) -> Vec<Result<OutboundResponse, HttpError>> {
        self.clock.pause();
        let deadline = options
            .deadline_ms
            .map_or(self.call.outbound.timeout, |ms| Duration::from_millis(ms.into()));
        let len = requests.len();
        let mut urls = Vec::with_capacity(len);
        let mut refused = Vec::new();
        let mut calls = Vec::with_capacity(len);
        for (i, request) in requests.into_iter().enumerate() {
            urls.push(request.url.clone());
            match self.take_call() {
                Ok(()) => calls.push((i, self.call_future(request))),
                Err(refusal) => refused.push((i, refusal)),
            }
        }
        let (results, stop) = outbound::batch(len, calls, deadline, options.min_successes).await;
        self.clock.resume();
        let unfinished = match stop {
            BatchStop::Deadline => HttpError::Timeout,
            BatchStop::Enough => HttpError::Cancelled,
        };
        let mut refused = refused.into_iter().peekable();
        results
            .into_iter()
            .zip(urls)
            .enumerate()
            .map(|(i, (result, url))| match result {
                Some(result) => self.outbound_result(&url, result),
                None => match refused.next_if(|(r, _)| *r == i) {
                    Some((_, refusal)) => Err(refusal),
                    None => Err(unfinished.clone()),
                },
            })
            .collect()
    }
}

impl From<v02::http::OutboundRequest> for OutboundRequest {
    fn from(r: v02::http::OutboundRequest) -> Self {
        OutboundRequest {
            method: r.method,
            url: r.url,
            headers: r.headers,
            body: r.body,
            timeout_ms: r.timeout_ms,
        }
    }
}

impl From<OutboundResponse> for v02::http::OutboundResponse {
    fn from(r: OutboundResponse) -> Self {
        v02::http::OutboundResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<HttpError> for v02::http::HttpError {
    fn from(e: HttpError) -> Self {
        use v02::http::HttpError as E;
        match e {
            HttpError::NotAllowed(host) => E::NotAllowed(host),
            HttpError::InvalidRequest(why) => E::InvalidRequest(why),
            HttpError::Connect(why) => E::Connect(why),
            HttpError::Timeout => E::Timeout,
            HttpError::TooLarge => E::TooLarge,
            HttpError::CallLimit => E::CallLimit,
            HttpError::Other(why) => E::Other(why),
            HttpError::Cancelled => E::Cancelled,
        }
    }
}

impl v02::http::Host for State {
    async fn send(
        &mut self,
        request: v02::http::OutboundRequest,
    ) -> Result<v02::http::OutboundResponse, v02::http::HttpError> {
        http::Host::send(self, request.into())
            .await
            .map(Into::into)
            .map_err(Into::into)
    }

    async fn send_all(
        &mut self,
        requests: Vec<v02::http::OutboundRequest>,
        options: v02::http::BatchOptions,
    ) -> Vec<Result<v02::http::OutboundResponse, v02::http::HttpError>> {
        let options = BatchOptions {
            deadline_ms: options.deadline_ms,
            min_successes: options.min_successes,
        };
        let requests = requests.into_iter().map(Into::into).collect();
        http::Host::send_all(self, requests, options)
            .await
            .into_iter()
            .map(|r| r.map(Into::into).map_err(Into::into))
            .collect()
    }
}
