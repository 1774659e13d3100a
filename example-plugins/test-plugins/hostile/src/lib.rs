//! Test-only plugin (not an example): each function attempts one attack on
//! the gateway's sandbox. With `?benign` in the query every function behaves
//! and answers 200 `{"ok": true}`, so tests can show the same endpoint works
//! again after an attack.
//!
//! Attacks the sandbox stops with an error value (files, environment,
//! sockets, outbound HTTP) end in `Err`, so the client sees a 500 and the
//! gateway logs the reason; if one ever succeeded, the plugin would answer
//! 200 with what it obtained, and the tests would fail.

use portcullis_sdk::http::{self, HttpError, OutboundRequest};
use portcullis_sdk::{Context, Error, Outcome, Request, Response, Result, plugin};
use serde_json::json;

fn benign(req: &Request) -> Option<Outcome> {
    req.query_param("benign").map(|_| {
        Response::json(200, &json!({ "ok": true }))
            .expect("serialisable")
            .into()
    })
}

fn leak(what: &str, loot: impl Into<serde_json::Value>) -> Result<Outcome> {
    Ok(Response::json(200, &json!({ "attack": what, "succeeded": true, "loot": loot.into() }))?.into())
}

fn spin(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Not an attack: a well-behaved function that needs some CPU. Logs
/// `working` when it starts (so a test knows it runs), spins for
/// `?iterations=N`, and answers 200 with the count.
fn work(req: &Request, _: &Context) -> Result<Outcome> {
    let iterations: u64 = req
        .query_param("iterations")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    portcullis_sdk::info!("working");
    let mut n: u64 = 0;
    for _ in 0..iterations {
        n = std::hint::black_box(n.wrapping_add(1));
    }
    Ok(Response::json(200, &json!({ "iterations": n }))?.into())
}

fn memory_bomb(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    // Grow in 8 MiB steps, touching every page, until something gives.
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xA5; 8 << 20]);
        std::hint::black_box(&hoard);
    }
}

#[inline(never)]
fn descend(depth: u64, pad: [u8; 256]) -> u64 {
    let pad = std::hint::black_box(pad);
    if depth == u64::MAX {
        return pad[0] as u64;
    }
    descend(depth + 1, pad) + pad[(depth % 256) as usize] as u64
}

fn recursion(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    let n = descend(0, [1; 256]);
    leak("recursion", n)
}

fn panic(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    panic!("hostile plugin panics on purpose")
}

fn huge_body(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    Ok(Response::new(200).body(vec![b'x'; 4 << 20]).into())
}

fn bad_status(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    Ok(Response::new(99).into())
}

fn bad_header(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    Ok(Response::new(200)
        .header("x-injected", "a\r\nset-cookie: pwned=1")
        .into())
}

fn read_file(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    match std::fs::read_to_string("/etc/passwd") {
        Ok(text) => leak("read-file", text),
        Err(e) => Err(Error::msg(format!("reading /etc/passwd failed: {e}"))),
    }
}

fn read_env(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let args: Vec<String> = std::env::args().collect();
    if !vars.is_empty() || !args.is_empty() || std::env::var("HOME").is_ok() {
        return leak("read-env", json!({ "vars": vars, "args": args }));
    }
    Err(Error::msg("environment is empty: no variables, no arguments"))
}

fn open_socket(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    let target = req.query_param("target").unwrap_or_else(|| "127.0.0.1:80".into());
    match std::net::TcpStream::connect(&target) {
        Ok(_) => leak("socket", target),
        Err(e) => Err(Error::msg(format!("connecting to {target} failed: {e}"))),
    }
}

/// Calls `?url=` once; anything but a refusal is a leak.
fn outbound_forbidden(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    let url = req.query_param("url").ok_or_else(|| Error::msg("missing ?url"))?;
    match http::get(&url) {
        Ok(response) => leak(
            "outbound-forbidden",
            String::from_utf8_lossy(&response.body).into_owned(),
        ),
        Err(e) => Err(Error::msg(format!("outbound call to {url} refused: {e}"))),
    }
}

/// Calls `?url=` up to 1000 times; fails once the gateway stops it.
fn outbound_flood(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    let url = req.query_param("url").ok_or_else(|| Error::msg("missing ?url"))?;
    for made in 0..1000 {
        match http::send(&OutboundRequest::get(&url)) {
            Ok(_) => {}
            Err(HttpError::CallLimit) => {
                return Err(Error::msg(format!("call limit reached after {made} calls")));
            }
            Err(e) => return Err(Error::msg(format!("call {made} failed: {e}"))),
        }
    }
    leak("outbound-flood", 1000)
}

/// Calls a slow `?url=` with a very long per-call timeout.
fn outbound_slow(req: &Request, _: &Context) -> Result<Outcome> {
    if let Some(ok) = benign(req) {
        return Ok(ok);
    }
    let url = req.query_param("url").ok_or_else(|| Error::msg("missing ?url"))?;
    let call = OutboundRequest::get(&url).timeout(std::time::Duration::from_secs(3600));
    match http::send(&call) {
        Ok(response) => leak("outbound-slow", response.status),
        Err(e) => Err(Error::msg(format!("slow call failed: {e}"))),
    }
}

plugin! {
    request "spin" => spin,
    request "work" => work,
    request "memory-bomb" => memory_bomb,
    request "recursion" => recursion,
    request "panic" => panic,
    request "huge-body" => huge_body,
    request "bad-status" => bad_status,
    request "bad-header" => bad_header,
    request "read-file" => read_file,
    request "read-env" => read_env,
    request "open-socket" => open_socket,
    request "outbound-forbidden" => outbound_forbidden,
    request "outbound-flood" => outbound_flood,
    request "outbound-slow" => outbound_slow,
}
