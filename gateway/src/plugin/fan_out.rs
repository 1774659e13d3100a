//! A reference's `fan_out`: the calls the gateway makes before the
//! function runs, concurrently and under the reference's deadline, whose
//! results the function receives.

use super::*;

impl Plugin {
    /// Runs the reference's fan-out, unless no instance slot is free: an
    /// overloaded gateway sheds the request rather than send its backends
    /// calls whose results it cannot use. A check, not a reservation: a
    /// slot taken while the calls run still fails the request at the lease,
    /// after them. Its time counts as the plugin's.
    pub(super) async fn run_fan_out(
        &self,
        ctx: &CallContext,
        fan_out: &FanOut,
        params: &[(String, String)],
    ) -> Result<Vec<wire::FanOutResult>, PluginError> {
        let idle = self.reuse.as_ref().is_some_and(|r| !lock(&r.idle).is_empty());
        if !idle && self.runtime.slots.available_permits() == 0 {
            let error = PluginError::PoolExhausted(self.runtime.pool_size);
            self.metrics.failed(error.reason());
            return Err(error);
        }
        let started = Instant::now();
        // With traces on, the fan-out has its own span (beside the plugin
        // call's), and its calls are children of it.
        let calls = i64::try_from(fan_out.calls.len()).unwrap_or(i64::MAX);
        let traced = self.traced(ctx, "fan-out", vec![KeyValue::new("portcullis.fan_out.calls", calls)]);
        let results = self
            .fan_out_calls(traced.as_ref().map_or(ctx, |(ctx, _)| ctx), fan_out, params)
            .await;
        if let Some((_, span)) = &traced {
            let failed = i64::try_from(results.iter().filter(|(_, r)| r.is_err()).count()).unwrap_or(i64::MAX);
            telemetry::record(span, vec![KeyValue::new("portcullis.fan_out.failed", failed)]);
            telemetry::end(span, None);
        }
        if let Some(stats) = &ctx.stats {
            lock(stats).time += started.elapsed();
        }
        Ok(results)
    }

    /// Makes the fan-out's calls, concurrently, within its deadline; one
    /// result per call, in the order of `fan_out.calls`.
    pub(super) async fn fan_out_calls(
        &self,
        ctx: &CallContext,
        fan_out: &FanOut,
        params: &[(String, String)],
    ) -> Vec<wire::FanOutResult> {
        let client = &self.runtime.client;
        let calls = fan_out.calls.iter().enumerate().map(|(i, call)| {
            let request = outbound::OutboundRequest {
                method: call.method.to_string(),
                url: call.url.fill(params),
                headers: call.headers.clone(),
                body: call.body.clone(),
                timeout: call.timeout,
            };
            (
                i,
                client.send(&ctx.outbound, request, &self.limits, &ctx.request_id, &ctx.trace),
            )
        });
        let deadline = fan_out.deadline.unwrap_or(ctx.outbound.timeout);
        let (results, stop) = outbound::batch(fan_out.calls.len(), calls, deadline, fan_out.first).await;
        fan_out
            .calls
            .iter()
            .zip(results)
            .map(|(call, result)| {
                let result = match result {
                    Some(Ok(response)) => Ok(response),
                    Some(Err(e)) => {
                        tracing::debug!(
                            plugin = &*self.label,
                            request_id = ctx.request_id.as_str(),
                            call = call.name,
                            error = %e,
                            "fan-out call failed"
                        );
                        Err(HttpError::from(e))
                    }
                    None if stop == BatchStop::Enough => Err(HttpError::Cancelled),
                    None => Err(HttpError::Timeout),
                };
                (call.name.clone(), result)
            })
            .collect()
    }
}
