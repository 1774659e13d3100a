//! Small HTTP services on loopback, used as the demo's example upstreams and
//! as the real upstream servers of the end-to-end tests.
//!
//! - [`echo`]: answers every request with a JSON description of it (method,
//!   path, query, headers, body) and its own name, so a caller can see exactly
//!   what the gateway forwarded and where.
//! - [`records`]: `GET /{kind}/{id}` answers a small JSON record, like an
//!   internal user or inventory service.
//! - [`status`] and [`slow`]: a fixed status, or an answer after a delay.
//! - [`hang`], [`barrier`] and [`gate`]: no answer ever, an answer once `n`
//!   requests wait together, an answer when the test says: timing shown by
//!   behaviour rather than by a clock.
//! - [`counter`]: counts the requests it gets; [`mirror`]: streams the body back.
//! - [`stall`] and [`trickle`]: a body that stops after its first piece, or
//!   never ends.
//! - [`websocket_echo`]: a WebSocket service that echoes every message.
//! - [`switchable`]: counts requests and answers the status the test sets.
//! - [`Killable`]: a server the test can kill (every open connection
//!   dropped, like a crashed process) and restart on the same port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

/// Binds `addr` (use port 0 for a free port), serves `app` in the background
/// and returns the bound address.
pub async fn spawn(addr: &str, app: Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}

/// A WebSocket service. Its first message (text) is a JSON object of the
/// upgrade request's headers; then it echoes every text and binary message
/// back, and answers a close with a close.
pub fn websocket_echo() -> Router {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    Router::new().fallback(|headers: axum::http::HeaderMap, upgrade: WebSocketUpgrade| async move {
        let seen: Map<String, Value> = headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    Value::from(String::from_utf8_lossy(v.as_bytes())),
                )
            })
            .collect();
        upgrade.on_upgrade(move |mut socket| async move {
            if socket
                .send(Message::Text(Value::Object(seen).to_string().into()))
                .await
                .is_err()
            {
                return;
            }
            while let Some(Ok(message)) = socket.recv().await {
                // A close is answered by the socket itself on the next read.
                if matches!(message, Message::Text(_) | Message::Binary(_)) && socket.send(message).await.is_err() {
                    return;
                }
            }
        })
    })
}

/// Describes each request back as JSON, tagged with `name`.
pub fn echo(name: &str) -> Router {
    let name = name.to_owned();
    Router::new().fallback(move |request: Request| {
        let name = name.clone();
        async move { Json(describe(&name, request).await) }
    })
}

async fn describe(name: &str, request: Request) -> Value {
    let (parts, body) = request.into_parts();
    let mut headers = Map::new();
    for (header, value) in &parts.headers {
        let value = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(header.as_str()) {
            Some(Value::Array(values)) => values.push(value),
            _ => {
                headers.insert(header.as_str().to_owned(), Value::Array(vec![value]));
            }
        }
    }
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or_default(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    })
}

/// `GET /{kind}/{id}` answers `{"kind": .., "id": .., "source": name, ...}`
/// with a few made-up fields; ids that are not numbers get 404.
pub fn records(name: &str) -> Router {
    let name = name.to_owned();
    Router::new().route(
        "/{kind}/{id}",
        get(move |Path((kind, id)): Path<(String, String)>| {
            let name = name.clone();
            async move {
                let Ok(n) = id.parse::<u64>() else {
                    return (StatusCode::NOT_FOUND, Json(json!({ "error": "no such record" }))).into_response();
                };
                let detail = match kind.as_str() {
                    "users" => {
                        json!({ "name": format!("user-{n}"), "tier": if n % 2 == 0 { "gold" } else { "standard" } })
                    }
                    "stock" => json!({ "available": n * 3 % 17, "warehouse": "north" }),
                    "prices" => json!({ "amount": n * 100 + 99, "currency": "EUR" }),
                    _ => json!({}),
                };
                let mut record = json!({ "kind": kind, "id": n, "source": name });
                if let (Some(record), Value::Object(detail)) = (record.as_object_mut(), detail) {
                    record.extend(detail);
                }
                Json(record).into_response()
            }
        }),
    )
}

/// Answers every request with `status` and a small JSON body.
pub fn status(code: u16) -> Router {
    Router::new().fallback(move || async move {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({ "status": code }))).into_response()
    })
}

/// Answers every request after `delay` with `{"slow": true}`.
pub fn slow(delay: Duration) -> Router {
    Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        Json(json!({ "slow": true })).into_response()
    })
}

/// Never answers: holds every request open until the caller goes away. A
/// result from a caller of it proves, without a clock, that the caller did
/// not wait for it (a deadline, a cancellation or a timeout ended the wait).
pub fn hang() -> Router {
    Router::new().fallback(std::future::pending::<Json<Value>>)
}

/// Answers 200 and the first piece of its body, then never sends another:
/// an upstream that stalls mid-response.
pub fn stall() -> Router {
    Router::new().fallback(|| async {
        let first =
            futures_util::stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"partial")) });
        let body = futures_util::StreamExt::chain(first, futures_util::stream::pending());
        Response::new(axum::body::Body::from_stream(body))
    })
}

/// Answers 200 and a body that never ends: one small piece every `every`,
/// so it is never silent for long.
pub fn trickle(every: Duration) -> Router {
    Router::new().fallback(move || async move {
        let pieces = futures_util::stream::unfold((), move |()| async move {
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b".")), ()))
        });
        Response::new(axum::body::Body::from_stream(pieces))
    })
}

/// Answers `{"met": true}` only once `n` requests are waiting at once (then
/// all of them, and so on for the next `n`), so requests sent one after
/// another never get an answer: concurrency shown without a clock.
pub fn barrier(n: usize) -> Router {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    Router::new().fallback(move || {
        let barrier = Arc::clone(&barrier);
        async move {
            barrier.wait().await;
            Json(json!({ "met": true }))
        }
    })
}

/// Holds each request until `release` is notified, counting arrivals in
/// the returned counter first: a test can wait until a request is in
/// flight, check what happens meanwhile, then let it finish.
pub fn gate(release: Arc<tokio::sync::Notify>) -> (Router, Arc<AtomicUsize>) {
    let arrived = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&arrived);
    let app = Router::new().fallback(move || {
        let (release, seen) = (Arc::clone(&release), Arc::clone(&seen));
        async move {
            let released = release.notified();
            seen.fetch_add(1, Ordering::SeqCst);
            released.await;
            Json(json!({ "released": true }))
        }
    });
    (app, arrived)
}

/// Answers every request with 200 `{"n": <count>}` and counts them.
pub fn counter() -> (Router, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&hits);
    let app = Router::new().fallback(move || {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Json(json!({ "n": n })) }
    });
    (app, hits)
}

/// Streams the request body back as the response body, byte for byte,
/// without buffering it (for streaming tests).
pub fn mirror() -> Router {
    Router::new().fallback(|request: Request| async move { Response::new(request.into_body()) })
}

/// Answers every request with the status in the returned cell (200 to
/// begin with) and `{"name": name}`, counting requests in the returned
/// counter.
pub fn switchable(name: &str) -> (Router, Arc<std::sync::atomic::AtomicU16>, Arc<AtomicUsize>) {
    let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
    let hits = Arc::new(AtomicUsize::new(0));
    let (answer, seen, name) = (Arc::clone(&status), Arc::clone(&hits), name.to_owned());
    let app = Router::new().fallback(move || {
        seen.fetch_add(1, Ordering::SeqCst);
        let code = StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
        let name = name.clone();
        async move { (code, Json(json!({ "name": name }))).into_response() }
    });
    (app, status, hits)
}

/// A server whose process can "crash": [`Killable::kill`] closes the
/// listener and every open connection at once; [`Killable::restart`]
/// serves again on the same address.
#[derive(Debug)]
pub struct Killable {
    pub addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Killable {
    pub async fn spawn(app: Router) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(Killable {
            addr,
            task: Some(tokio::spawn(serve_until_killed(listener, app))),
        })
    }

    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub async fn restart(&mut self, app: Router) -> anyhow::Result<()> {
        self.kill();
        // The aborted task drops its listener when it next runs; retry
        // until the port is free again.
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        };
        self.task = Some(tokio::spawn(serve_until_killed(listener, app)));
        Ok(())
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Serves connections as tasks of one set, so aborting this task drops
/// them all.
async fn serve_until_killed(listener: tokio::net::TcpListener, app: Router) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
