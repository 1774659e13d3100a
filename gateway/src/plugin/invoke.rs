//! One call of a plugin: the instance it gets (fresh, or reused when the
//! reference opts in), its input, its budgets, and how its result or trap
//! becomes an outcome or a `PluginError`.

use super::*;

impl Session {
    /// The session of a caller on a keyless API: no key, no limits.
    pub fn anonymous() -> Self {
        Session {
            key_id: String::new(),
            alias: None,
            rate: 0,
            per: 0,
            quota_max: -1,
            quota_remaining: -1,
            quota_renewal_seconds: 0,
            metadata: Vec::new(),
            tags: Vec::new(),
            expires: None,
        }
    }
}

/// Everything about the request's context a plugin call needs besides the
/// request itself.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub api: Arc<Api>,
    pub api_id: Arc<str>,
    pub outbound: Arc<OutboundPolicy>,
    /// Where the plugin may route the request.
    pub routing: Arc<RoutingPolicy>,
    pub request_id: RequestId,
    /// The client's trace context, carried by outbound calls.
    pub trace: TraceContext,
    /// Where to add up what the calls used (the access log, `portcullis
    /// plugin call`).
    pub stats: Option<Arc<Mutex<CallStats>>>,
    /// The hook point the call is made for (`pre`, `auth`, `endpoint`...),
    /// for its trace span.
    pub hook: &'static str,
}

/// A loaded plugin reference: component + function + config + limits.
/// Cheap to share; each call makes a fresh instance.
pub struct Plugin {
    pub(super) runtime: Arc<PluginRuntime>,
    pub(super) component: Arc<LoadedComponent>,
    /// `file.wasm#function`, for logs.
    pub(super) label: Arc<str>,
    pub(super) function: String,
    /// The function's index in the component's list (0.2 calls by index).
    pub(super) index: u32,
    pub(super) config_json: String,
    pub(super) wants_body: bool,
    pub(super) limits: Limits,
    pub(super) on_error: OnError,
    pub(super) fallback: Option<Fallback>,
    /// Where it came from: its file, or `oci://...`.
    pub(super) source: Arc<str>,
    /// The digest it is pinned by: the registry manifest's, or the file's.
    pub(super) digest: Arc<str>,
    /// `label@digest`, as the access log lists the plugins a request ran.
    pub(super) ran: Arc<str>,
    /// Calls made for the function before it runs.
    pub(super) fan_out: Option<FanOut>,
    /// Instances kept between calls, when the reference opted in.
    pub(super) reuse: Option<Reuse>,
    pub(super) metrics: Arc<PluginMetrics>,
}

/// A store with its instance slot and, once instantiated, the instance.
pub(super) struct Lease {
    pub(super) store: Store<State>,
    pub(super) instance: Option<Instance>,
    /// Calls this instance has served.
    pub(super) calls: u32,
    pub(super) _slot: OwnedSemaphorePermit,
}

/// The idle instances of a plugin with `reuse: max_calls`.
pub(super) struct Reuse {
    pub(super) max_calls: u32,
    pub(super) idle: Mutex<Vec<Lease>>,
}

impl Reuse {
    pub(super) fn take(&self) -> Option<Lease> {
        lock(&self.idle).pop()
    }

    /// Keeps `lease` for a later call unless it has served its calls or
    /// enough instances are idle already.
    pub(super) fn put(&self, lease: Lease) {
        if lease.calls < self.max_calls {
            let mut idle = lock(&self.idle);
            if idle.len() < MAX_IDLE_PER_PLUGIN {
                idle.push(lease);
            }
        }
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// `file.wasm#function`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The names of the reference's fan-out calls, if it has one.
    pub fn fan_out_names(&self) -> Option<Vec<&str>> {
        let fan_out = self.fan_out.as_ref()?;
        Some(fan_out.calls.iter().map(|c| c.name.as_str()).collect())
    }

    /// Whether the function reads the body (so the gateway must buffer it).
    pub fn wants_body(&self) -> bool {
        self.wants_body
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// The fixed response to give when this plugin fails, if configured.
    pub fn fallback(&self) -> Option<&Fallback> {
        self.fallback.as_ref()
    }

    /// Where it came from: its file, or `oci://...`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The digest it is pinned by: the registry manifest's
    /// (`@sha256:...`), or the file's (`sha256:`).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The contract version the component speaks (`0.1`, `0.2`).
    pub fn contract(&self) -> &'static str {
        self.component.exports.version()
    }

    /// How many calls one instance serves (1: a fresh instance per call).
    pub fn reuse(&self) -> u32 {
        self.reuse.as_ref().map_or(1, |r| r.max_calls)
    }

    /// The store for one invocation: an idle instance of this plugin when it
    /// reuses them, otherwise a free slot and a fresh store.
    pub(super) fn lease(&self, ctx: &CallContext) -> Result<Lease, PluginError> {
        let call = CallInfo {
            plugin: Arc::clone(&self.label),
            api_id: Arc::clone(&ctx.api_id),
            request_id: ctx.request_id.clone(),
            trace: ctx.trace.clone(),
            outbound: Arc::clone(&ctx.outbound),
            client: self.runtime.client.clone(),
            limits: self.limits.clone(),
            metrics: Some(Arc::clone(&self.metrics)),
            calls_made: self
                .fan_out
                .as_ref()
                .map_or(0, |f| u32::try_from(f.calls.len()).unwrap_or(u32::MAX)),
        };
        if let Some(mut lease) = self.reuse.as_ref().and_then(Reuse::take) {
            lease.store.data_mut().begin(call);
            lease.store.set_epoch_deadline(1);
            return Ok(lease);
        }
        let slot = Arc::clone(&self.runtime.slots)
            .try_acquire_owned()
            .map_err(|_| PluginError::PoolExhausted(self.runtime.pool_size))?;
        Ok(Lease {
            store: self.runtime.store(call),
            instance: None,
            calls: 0,
            _slot: slot,
        })
    }

    /// Calls one hook export and checks what it returned with `check`, so an
    /// outcome the gateway cannot apply fails here (with the plugin named)
    /// rather than somewhere in the HTTP stack. Every failure of the plugin,
    /// whatever its kind, is counted here.
    pub(super) async fn invoke<H: HookSignature, T>(
        &self,
        ctx: &CallContext,
        hook: &Hook<H>,
        params: H::Params<'_>,
        check: impl FnOnce(H::Value) -> Result<T, String>,
    ) -> Result<T, PluginError> {
        // With traces on, the call has its own span, and the context the
        // instance sees makes its outbound calls children of it.
        let traced = self.traced(ctx, "plugin", Vec::new());
        let ctx = traced.as_ref().map_or(ctx, |(ctx, _)| ctx);
        let mut outcome_name = "";
        let result = self.run(ctx, hook, params).await.and_then(|value| {
            outcome_name = value.outcome_name();
            check(value).map_err(|why| PluginError::InvalidOutcome(untrusted::escape(&why, untrusted::MAX_TEXT_BYTES)))
        });
        if let Err(error) = &result {
            self.metrics.failed(error.reason());
        }
        if let Some((_, span)) = &traced {
            let outcome = match &result {
                Ok(_) => outcome_name,
                Err(error) => error.reason(),
            };
            telemetry::record(span, vec![KeyValue::new("portcullis.plugin.outcome", outcome)]);
            telemetry::end(span, result.as_ref().err().map(ToString::to_string));
        }
        result
    }

    /// Calls one hook export in a leased instance under the plugin's timeout
    /// and sorts out how it ended. The instance is dropped afterwards, or
    /// kept for the next call if the plugin reuses instances and this one
    /// returned normally (a trap, a timeout or a budget overrun drops it).
    pub(super) async fn run<H: HookSignature>(
        &self,
        ctx: &CallContext,
        hook: &Hook<H>,
        params: H::Params<'_>,
    ) -> Result<H::Value, PluginError> {
        let started = Instant::now();
        let mut lease = self.lease(ctx)?;
        let running = self.runtime.ticker.running();
        let outcome = tokio::time::timeout(self.limits.timeout, self.call(&mut lease, hook, params)).await;
        drop(running);
        self.metrics.observe(started.elapsed());
        lease.store.data_mut().finish_logs();
        if let Some(span) = &ctx.trace.span {
            let state = lease.store.data();
            telemetry::record(
                span,
                vec![
                    KeyValue::new(
                        "portcullis.plugin.cpu_us",
                        i64::try_from(state.clock.guest_time().as_micros()).unwrap_or(i64::MAX),
                    ),
                    KeyValue::new(
                        "portcullis.plugin.peak_memory_bytes",
                        i64::try_from(state.limits.peak_memory).unwrap_or(i64::MAX),
                    ),
                ],
            );
        }
        if let Some(stats) = &ctx.stats {
            let state = lease.store.data();
            let mut stats = lock(stats);
            stats.calls += 1;
            stats.time += started.elapsed();
            stats.cpu += state.clock.guest_time();
            stats.peak_memory_bytes = stats.peak_memory_bytes.max(state.limits.peak_memory);
            if !stats.ran.iter().any(|r| Arc::ptr_eq(r, &self.ran)) {
                stats.ran.push(Arc::clone(&self.ran));
            }
        }
        let result = match outcome {
            Err(_) => return Err(PluginError::Timeout(self.limits.timeout)),
            Ok(Err(e)) => return Err(self.classify_trap(e)),
            Ok(Ok(result)) => result,
        };
        if let Some(reuse) = &self.reuse {
            lease.calls += 1;
            reuse.put(lease);
        }
        result
            .map(Into::into)
            .map_err(|text| PluginError::Failed(untrusted::escape(&text, untrusted::MAX_TEXT_BYTES)))
    }

    /// A failure found after the call, in what the plugin returned (for
    /// example a session that would outgrow its limit once merged with the
    /// stored one): counted like any other.
    pub fn invalid(&self, why: &str) -> PluginError {
        self.metrics.failed("invalid_outcome");
        PluginError::InvalidOutcome(untrusted::escape(why, untrusted::MAX_TEXT_BYTES))
    }

    /// With traces on: a span under the request's, `{what} {function}`,
    /// with the plugin's attributes and `extra`, and a copy of `ctx` whose
    /// outbound calls are its children.
    pub(super) fn traced(
        &self,
        ctx: &CallContext,
        what: &str,
        extra: Vec<KeyValue>,
    ) -> Option<(CallContext, opentelemetry::Context)> {
        let parent = ctx.trace.span.as_ref()?;
        let mut attributes = vec![
            KeyValue::new("portcullis.api", ctx.api_id.to_string()),
            KeyValue::new("portcullis.hook", ctx.hook),
            KeyValue::new("portcullis.plugin.path", self.source.to_string()),
            KeyValue::new("portcullis.plugin.function", self.function.clone()),
        ];
        attributes.extend(extra);
        let span = telemetry::child(
            parent,
            format!("{what} {}", self.function),
            SpanKind::Internal,
            attributes,
        );
        let mut ctx = ctx.clone();
        ctx.trace.span = Some(span.clone());
        Some((ctx, span))
    }

    /// The 0.2 input buffer for one call, after the reference's fan-out
    /// if it has one.
    pub(super) async fn input(
        &self,
        ctx: &CallContext,
        request: &RequestRecord<'_>,
        session: &Session,
        response: Option<&ResponseRecord<'_>>,
    ) -> Result<Vec<u8>, PluginError> {
        let fanned = match &self.fan_out {
            Some(fan_out) => self.run_fan_out(ctx, fan_out, request.params).await?,
            None => Vec::new(),
        };
        Ok(wire::input(
            request,
            session,
            response,
            &ctx.api,
            &self.config_json,
            &fanned,
        ))
    }

    /// Runs a `request` function.
    pub async fn on_request(
        &self,
        ctx: &CallContext,
        request: &RequestRecord<'_>,
        session: &Session,
    ) -> Result<RequestOutcome, PluginError> {
        let check = |outcome: Outcome| untrusted::check_outcome(outcome, &self.limits, &ctx.routing);
        match &self.component.exports {
            Contract::V02 { on_request, .. } => {
                let input = self.input(ctx, request, session, None).await?;
                self.invoke(ctx, on_request, (self.index, &input[..]), check).await
            }
            Contract::V01 { on_request, .. } => {
                let session = SessionRecord01::from(session);
                let params = (
                    self.function.as_str(),
                    request,
                    &session,
                    &*ctx.api,
                    self.config_json.as_str(),
                );
                self.invoke(ctx, on_request, params, check).await
            }
        }
    }

    /// Runs an `auth` function.
    pub async fn on_auth(&self, ctx: &CallContext, request: &RequestRecord<'_>) -> Result<AuthResult, PluginError> {
        let check = |outcome: AuthOutcome| untrusted::check_auth(outcome, &self.limits, &ctx.routing);
        match &self.component.exports {
            Contract::V02 { on_auth, .. } => {
                let input = self.input(ctx, request, &Session::anonymous(), None).await?;
                self.invoke(ctx, on_auth, (self.index, &input[..]), check).await
            }
            Contract::V01 { on_auth, .. } => {
                let params = (self.function.as_str(), request, &*ctx.api, self.config_json.as_str());
                self.invoke(ctx, on_auth, params, check).await
            }
        }
    }

    /// Runs a `response` function.
    pub async fn on_response(
        &self,
        ctx: &CallContext,
        request: &RequestRecord<'_>,
        response: &ResponseRecord<'_>,
        session: &Session,
    ) -> Result<Reply, PluginError> {
        let check = |response: Response| untrusted::check_response(response, &self.limits);
        match &self.component.exports {
            Contract::V02 { on_response, .. } => {
                let input = self.input(ctx, request, session, Some(response)).await?;
                self.invoke(ctx, on_response, (self.index, &input[..]), check).await
            }
            Contract::V01 { on_response, .. } => {
                let session = SessionRecord01::from(session);
                let params = (
                    self.function.as_str(),
                    request,
                    response,
                    &session,
                    &*ctx.api,
                    self.config_json.as_str(),
                );
                self.invoke(ctx, on_response, params, check).await
            }
        }
    }

    /// Instantiates the component in the lease's store unless it holds an
    /// instance already, and calls one of its hook exports (checked at load:
    /// the generated bindings would check all of them on every instance).
    pub(super) async fn call<H: HookSignature>(
        &self,
        lease: &mut Lease,
        hook: &Hook<H>,
        params: H::Params<'_>,
    ) -> wasmtime::Result<Result<H::Wire, String>> {
        let store = &mut lease.store;
        let instance = match lease.instance {
            Some(instance) => instance,
            None => {
                let instance = self.component.pre.instantiate_async(&mut *store).await?;
                *lease.instance.insert(instance)
            }
        };
        let func = hook.func(&instance, store)?;
        let (result,) = func.call_async(&mut *store, params).await?;
        Ok(result)
    }

    pub(super) fn classify_trap(&self, e: wasmtime::Error) -> PluginError {
        if e.downcast_ref::<CpuBudgetExceeded>().is_some() {
            return PluginError::CpuBudget(self.limits.cpu);
        }
        if let Some(too_long) = e.downcast_ref::<ListTooLarge>() {
            return PluginError::InvalidOutcome(too_long.to_string());
        }
        let text = format!("{e:#}");
        if text.contains("forcing trap when growing memory") {
            return PluginError::Memory(self.limits.memory_bytes);
        }
        // A trap's text carries the guest's own function names.
        let text = untrusted::escape(&text, untrusted::MAX_TEXT_BYTES);
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => PluginError::Trap(format!("{trap}: {text}")),
            None => PluginError::Trap(text),
        }
    }
}
