//! The boundary attacked by plugins written without our SDK, built straight
//! from the WIT with wit-bindgen: `raw` (contract 0.1, `wit/0.1`) with
//! framing headers that disagree with the body, 1xx statuses, upstream
//! overrides to anywhere, floods of metadata, headers and log lines, forged
//! log text, and a component that lists a function twice; `raw2` (contract
//! 0.2) with what 0.2 added: headers for the client's response, an auth
//! function's alias and request changes; and it echoes the input buffer, to
//! check its layout. Each class holds at its root, and the assertions are
//! about bytes and behaviour, never about timing.
//!
//! One file, past 500 lines: every bound at the plugin boundary, each a
//! hostile component's attempt, beside the others.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use serde_json::Value;

use crate::support::wire::{Message, split_responses};
use crate::support::{
    ConfigDir, Gateway, Wasm, assert_gateway_error, client, get_json, get_with, plugin, upstream, upstreams, validate,
};

/// The complete second response the `raw` plugin hides in its bodies.
const FORGED_RESPONSE: &str = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-forged: yes\r\n\r\nforged";
/// The complete second request it hides in a body sent upstream.
const SMUGGLED_REQUEST: &str = "GET /smuggled HTTP/1.1\r\nhost: upstream\r\ncontent-length: 0\r\n\r\n";

/// Sends `requests` (paths, GET) one after another on one keep-alive
/// connection, the last with `connection: close`, reads the whole stream
/// and splits it into responses by the framing each declares. Asserts that
/// the stream holds exactly one well-formed response per request and
/// nothing else.
fn exchange(gw: &Gateway, requests: &[&str]) -> Vec<Message> {
    let addr = gw.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut wire = String::new();
    for (i, path) in requests.iter().enumerate() {
        let close = if i + 1 == requests.len() {
            "connection: close\r\n"
        } else {
            ""
        };
        wire.push_str(&format!("GET {path} HTTP/1.1\r\nhost: gateway\r\n{close}\r\n"));
    }
    stream.write_all(wire.as_bytes()).expect("write");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read the stream to its end");
    let mut messages = split_responses(&bytes);
    assert_eq!(
        messages.len(),
        requests.len(),
        "one response per request; the stream was:\n{}",
        String::from_utf8_lossy(&bytes)
    );
    // The server's own answer to the client's `connection: close`, which
    // the checks below must not mistake for a plugin's.
    let last = messages.last_mut().expect("a response");
    assert_eq!(last.header("connection"), Some("close"));
    last.headers.retain(|(name, _)| name != "connection");
    messages
}

fn raw_endpoints(functions: &[&str]) -> String {
    let raw = plugin(Wasm::Raw);
    functions
        .iter()
        .map(|f| {
            format!(
                "  - path: /{f}\n    plugin: {{ path: {}, function: {f} }}\n",
                raw.display()
            )
        })
        .collect()
}

/// An API at `/r/` with one endpoint per `raw` request function.
fn raw_api(upstream: &str, extra: &str, functions: &[&str]) -> String {
    format!(
        "id: raw\nlisten_path: /r/\nstrip_listen_path: true\nupstream: {upstream}\n{extra}endpoints:\n{}",
        raw_endpoints(functions)
    )
}

fn assert_no_hop_headers(message: &Message) {
    for owned in [
        "connection",
        "x-hop",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authenticate",
        "proxy-x",
        "x-forged",
    ] {
        assert!(
            message.header(owned).is_none(),
            "{owned} reached the client: {message:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_response_cannot_frame_itself_or_split_the_stream() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(ConfigDir::single(&raw_api(&echo, "", &["respond-framed"])));
    for frame in ["length", "chunked", "all"] {
        let first = format!("/r/respond-framed?frame={frame}");
        let second = format!("/r/respond-framed?frame={frame}&body=second");
        let messages = exchange(&gw, &[&first, &second, "/r/respond-framed?body=third"]);
        assert_eq!(messages[0].status, 200);
        assert_eq!(
            messages[0].body,
            FORGED_RESPONSE.as_bytes(),
            "{frame}: the whole body is one message's body"
        );
        assert_eq!(messages[1].body, b"second");
        assert_eq!(messages[2].body, b"third");
        for message in &messages {
            assert_no_hop_headers(message);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_final_statuses_and_no_body_on_204_or_304() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(ConfigDir::single(&raw_api(&echo, "", &["respond-framed"])));
    for code in [0, 100, 101, 103, 199, 600, 1000] {
        let (status, _, body) = get_json(&gw.url(&format!("/r/respond-framed?code={code}&frame=all"))).await;
        assert_gateway_error(status, &body, 500, "plugin failed");
    }
    gw.wait_for_log("invalid status 101: a plugin answers with a final status, 200-599");
    let messages = exchange(
        &gw,
        &[
            "/r/respond-framed?code=204&frame=length",
            "/r/respond-framed?code=304&frame=chunked",
            "/r/respond-framed?code=599&body=last",
        ],
    );
    assert_eq!((messages[0].status, messages[0].body.len()), (204, 0));
    assert_eq!((messages[1].status, messages[1].body.len()), (304, 0));
    assert_eq!((messages[2].status, &messages[2].body[..]), (599, &b"last"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_hook_cannot_reframe_the_upstreams_response() {
    let echo = upstream(upstreams::echo("up")).await;
    let raw = plugin(Wasm::Raw);
    let api = |function: &str| {
        format!(
            "id: {function}\nlisten_path: /{function}/\nupstream: {echo}\nplugins:\n  response:\n    - {{ path: {}, function: {function} }}\n",
            raw.display()
        )
    };
    let gw = Gateway::start(ConfigDir::new(
        "apis: [apis/]\n",
        &[
            ("a.yaml", &api("response-frame")),
            ("b.yaml", &api("response-frame-body")),
        ],
    ));
    for frame in ["length", "chunked", "all"] {
        let streamed = format!("/response-frame/x?frame={frame}");
        let rewritten = format!("/response-frame-body/y?frame={frame}");
        let messages = exchange(&gw, &[&streamed, &rewritten, "/response-frame/z?code=204&frame=length"]);
        let seen: Value = serde_json::from_slice(&messages[0].body).expect("the upstream's whole JSON body");
        assert_eq!(seen["path"], "/response-frame/x");
        assert_eq!(messages[1].body, b"changed by the plugin");
        assert_eq!((messages[2].status, messages[2].body.len()), (204, 0));
        for message in &messages {
            assert_no_hop_headers(message);
        }
    }
}

/// What an upstream received: the path and body of each request.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// An upstream that records every request it receives.
fn recorder() -> (Router, Received) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let app = Router::new().fallback(move |request: axum::extract::Request| {
        let log = Arc::clone(&log);
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let hop = parts.headers.contains_key("x-hop") || parts.headers.contains_key("upgrade");
            log.lock().expect("lock").push((
                parts.uri.path().to_owned(),
                format!("{}{}", String::from_utf8_lossy(&body), if hop { " +hop" } else { "" }),
            ));
            "recorded"
        }
    });
    (app, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_smuggle_a_second_request_to_the_upstream() {
    let (app, seen) = recorder();
    let up = upstream(app).await;
    let gw = Gateway::start(ConfigDir::single(&raw_api(&up, "", &["smuggle", "respond-framed"])));
    // The hidden request is in the body the plugin sets, or in the client's
    // body that the plugin lets through under its own framing headers.
    for query in ["", "&keep"] {
        for frame in ["length", "chunked", "all"] {
            for _ in 0..3 {
                let response = client()
                    .post(gw.url(&format!("/r/smuggle?frame={frame}{query}")))
                    .body(SMUGGLED_REQUEST)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status(), 200);
                assert_eq!(response.text().await.expect("body"), "recorded");
            }
        }
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen.len(),
        18,
        "exactly one upstream request per client request: {seen:?}"
    );
    for (path, body) in &seen {
        assert_eq!(path, "/smuggle");
        assert_eq!(
            body, SMUGGLED_REQUEST,
            "the body arrived whole, as a body, without hop headers"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamic_routing_reaches_only_what_the_operator_allowed() {
    let own = upstream(upstreams::echo("own")).await;
    let allowed = upstream(upstreams::echo("allowed")).await;
    let (forbidden, forbidden_hits) = upstreams::counter();
    let forbidden = upstream(forbidden).await;
    let side = upstream(upstreams::echo("side")).await;
    let routing = format!(
        "routing:\n  allow: ['{}']\nupstreams:\n  side: {side}\n",
        allowed.trim_start_matches("http://")
    );
    let gw = Gateway::start(ConfigDir::single(&raw_api(&own, &routing, &["route"])));

    // Upstream names: the API's own, and nothing that merely looks like one.
    for (name, expected) in [("side", "side"), ("default", "own")] {
        let (status, _, seen) = get_json(&gw.url(&format!("/r/route?to={name}"))).await;
        assert_eq!((status, &seen["upstream"]), (200, &Value::from(expected)), "{name}");
    }
    let long = "s".repeat(10_000);
    for name in ["", "nope", "Side", "side/../x", "side:80", "side%00", long.as_str()] {
        let (status, _, body) = get_json(&gw.url(&format!("/r/route?to={name}"))).await;
        assert_gateway_error(status, &body, 500, "plugin failed");
    }

    let (status, _, seen) = get_json(&gw.url(&format!("/r/route?to={own}/base"))).await;
    assert_eq!(
        (status, &seen["upstream"], &seen["path"]),
        (200, &Value::from("own"), &Value::from("/base/route"))
    );
    let (status, _, seen) = get_json(&gw.url(&format!("/r/route?to={allowed}"))).await;
    assert_eq!((status, &seen["upstream"]), (200, &Value::from("allowed")));

    for target in [
        forbidden.clone(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://localhost:1".to_owned(),
        // https is routable now; the same list decides where it may go.
        forbidden.replacen("http://", "https://", 1),
        "https://169.254.169.254/latest/meta-data".to_owned(),
    ] {
        let (status, _, body) = get_json(&gw.url(&format!("/r/route?to={target}"))).await;
        assert_gateway_error(status, &body, 500, "plugin failed");
        assert!(!body.to_string().contains("routing"), "no internals: {body}");
    }
    assert_eq!(
        forbidden_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request reached it"
    );
    gw.wait_for_log("169.254.169.254:443 refused");
    let log = gw.wait_for_log("169.254.169.254:80 refused");
    let line = log
        .lines()
        .find(|l| l.contains(&format!("{} refused", forbidden.trim_start_matches("http://"))))
        .expect("the refused target is logged");
    for part in ["raw.wasm#route", "request_id=", "routing.allow"] {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert!(
        line.contains("api=\"raw\"") || line.contains("api=raw"),
        "the API in {line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_list_and_string_a_plugin_returns_is_bounded() {
    let echo = upstream(upstreams::echo("up")).await;
    // Building a flood of 100,000 entries takes the guest a while on a busy
    // machine; this test is about the lists' size, so time is not a limit.
    let gw = Gateway::start(ConfigDir::new(
        "apis: [apis/]\nplugin_limits: { cpu_ms: 10000, timeout_ms: 30000 }\n",
        &[(
            "api.yaml",
            &raw_api(
                &echo,
                "",
                &["metadata-flood", "headers-flood", "remove-flood", "long-method"],
            ),
        )],
    ));
    // Lists beyond any limit are refused as they are read, before a single
    // entry is copied; shorter ones by the configured limits.
    for (path, logged) in [
        (
            "/r/metadata-flood",
            "returned a list of 24000 entries; at most 10000 are read",
        ),
        (
            "/r/metadata-flood?n=65",
            "session-metadata: 65 entries, more than the limit of 64",
        ),
        ("/r/metadata-flood?n=10", ""),
        (
            "/r/headers-flood",
            "returned a list of 50000 entries; at most 10000 are read",
        ),
        (
            "/r/headers-flood?n=101",
            "headers: 101 entries, more than the limit of 100",
        ),
        // Few entries but many bytes: counted from the strings' lengths in
        // guest memory, before any is copied (entries aliasing the same
        // bytes would count each time).
        (
            "/r/headers-flood?n=600&size=2000",
            "returned a list whose strings add up to",
        ),
        (
            "/r/remove-flood",
            "returned a list of 100000 entries; at most 10000 are read",
        ),
        (
            "/r/remove-flood?n=101",
            "remove-headers: 101 entries, more than the limit of 100",
        ),
        ("/r/long-method", "invalid method"),
    ] {
        let (status, _, body) = get_json(&gw.url(path)).await;
        if logged.is_empty() {
            assert_eq!(status, 200, "{path} within the limits: {body}");
            continue;
        }
        assert_gateway_error(status, &body, 500, "plugin failed");
        gw.wait_for_log(logged);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_from_an_auth_plugin_is_bounded_including_what_is_stored() {
    let echo = upstream(upstreams::echo("up")).await;
    let api = format!(
        "id: s\nlisten_path: /s/\nupstream: {echo}\nauth: {{ type: plugin }}\nplugins:\n  auth: {{ path: {}, function: session, limits: {{ max_session_entries: 4, max_session_bytes: 4096 }} }}\n",
        plugin(Wasm::Raw).display()
    );
    let gw = Gateway::start(ConfigDir::single(&api));
    for (query, ok, logged) in [
        ("tags=2&meta=2", true, ""),
        (
            "tags=5",
            false,
            "session tags and metadata: 5 entries, more than the limit of 4",
        ),
        ("meta=1&vlen=5000", false, "exceeds max_session_bytes (4096)"),
        (
            "tags=20000",
            false,
            "returned a list of 20000 entries; at most 10000 are read",
        ),
        ("keylen=300", false, "invalid key-id"),
        ("key=a%0Ab", false, "invalid key-id"),
        ("key=grows&entry=a", true, ""),
        ("key=grows&entry=b", true, ""),
        ("key=grows&entry=c", true, ""),
        ("key=grows&entry=d", true, ""),
        // A fifth stored entry would outgrow the limit: refused, not saved.
        (
            "key=grows&entry=e",
            false,
            "with its stored metadata, session tags and metadata: 5 entries",
        ),
        ("key=grows&entry=a", true, ""),
    ] {
        let (status, _, body) = get_json(&gw.url(&format!("/s/x?{query}"))).await;
        if ok {
            assert_eq!(status, 200, "{query}: {body}");
        } else {
            assert_gateway_error(status, &body, 500, "plugin failed");
            gw.wait_for_log(logged);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn log_volume_per_invocation_is_bounded() {
    let echo = upstream(upstreams::echo("up")).await;
    let raw = plugin(Wasm::Raw);
    let api = format!(
        "id: logs\nlisten_path: /l/\nupstream: {echo}\nendpoints:\n  - path: /flood\n    plugin: {{ path: {}, function: log-flood, limits: {{ max_log_lines: 20, max_outbound_calls: 1000, cpu_ms: 2000 }} }}\n  - path: /huge\n    plugin: {{ path: {}, function: err-huge, limits: {{ cpu_ms: 2000 }} }}\n",
        raw.display(),
        raw.display()
    );
    let gw = Gateway::start(ConfigDir::single(&api));
    let (status, _, _) = get_json(&gw.url("/l/flood?lines=5000&refused=500")).await;
    assert_eq!(status, 200);
    let log = gw.wait_for_log("plugin log lines suppressed");
    let flood = log.lines().filter(|l| l.contains("flood line")).count();
    let refused = log.lines().filter(|l| l.contains("outbound call refused")).count();
    assert_eq!((flood, refused), (20, 0), "20 lines, then nothing");
    let summary = log
        .lines()
        .find(|l| l.contains("plugin log lines suppressed"))
        .expect("summary");
    assert!(summary.contains("suppressed=5480"), "{summary}");

    let (status, _, _) = get_json(&gw.url("/l/flood?refused=500")).await;
    assert_eq!(status, 200);
    let log = gw.wait_for_log("suppressed=480");
    assert_eq!(log.lines().filter(|l| l.contains("outbound call refused")).count(), 20);

    let before = gw.log().len();
    let (status, _, body) = get_json(&gw.url("/l/huge?mb=8")).await;
    assert_gateway_error(status, &body, 500, "plugin failed");
    let log = gw.wait_for_log("more bytes cut");
    assert!(
        log.len() - before < 32 << 10,
        "an 8 MiB error text was logged as {} bytes",
        log.len() - before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_text_cannot_forge_a_log_line() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(ConfigDir::single(&raw_api(&echo, "", &["log-forge"])));
    let (status, _, body) = get_with(&gw.url("/r/log-forge"), &[("x-request-id", "forge-req-1")]).await;
    assert_gateway_error(status, &body, 500, "plugin failed");
    let log = gw.wait_for_log("plugin invocation failed");
    let carrying: Vec<&str> = log.lines().filter(|l| l.contains("FORGED-LOG-LINE")).collect();
    assert_eq!(
        carrying.len(),
        4,
        "log call, stdout, the failure, the request line:\n{log}"
    );
    for line in &carrying {
        assert!(!line.starts_with("2026-11-28T00:00:00"), "a forged line: {line}");
        assert!(
            !line.contains('\u{1b}') && !line.contains('\r'),
            "raw control characters: {line:?}"
        );
        assert!(
            line.contains("raw.wasm#log-forge"),
            "names the plugin and function: {line}"
        );
        assert!(line.contains("forge-req-1"), "names the request: {line}");
    }
    // Log calls and errors keep their text on one line, newline escaped;
    // stdout is line-oriented, so its second line is a plugin line of its own.
    let escaped = carrying.iter().filter(|l| l.contains("innocent\\n2026-11-28")).count();
    assert_eq!(escaped, 3, "{carrying:#?}");
}

#[tokio::test]
async fn a_component_listing_a_function_twice_does_not_load() {
    let echo = upstream(upstreams::echo("up")).await;
    let api = format!(
        "id: dup\nlisten_path: /d/\nupstream: {echo}\nendpoints:\n  - path: /\n    plugin: {{ path: {}, function: other }}\n",
        plugin(Wasm::RawDup).display()
    );
    let config = ConfigDir::single(&api);
    let output = validate(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "validate accepted it: {stderr}");
    assert!(stderr.contains("raw_dup.wasm"), "{stderr}");
    assert!(stderr.contains("lists the function `check` more than once"), "{stderr}");
    let refused = Gateway::try_start(config).err().expect("serve refuses it too");
    assert!(
        refused.contains("lists the function `check` more than once"),
        "{refused}"
    );
}

/// An API whose `auth` is function `auth` of the 0.2 raw plugin, with one
/// endpoint per request function.
fn raw2_api(id: &str, upstream: &str, auth: Option<&str>) -> String {
    let wasm = plugin(Wasm::Raw2).display().to_string();
    let auth = auth.map_or(String::new(), |function| {
        format!("auth: {{ type: plugin }}\nplugins:\n  auth: {{ path: {wasm}, function: {function} }}\n")
    });
    let mut text = format!("id: {id}\nname: {id}\nlisten_path: /{id}/\nupstream: {upstream}\n{auth}endpoints:\n");
    for function in [
        "echo-input",
        "response-header-flood",
        "response-header-split",
        "response-header-framing",
    ] {
        text.push_str(&format!(
            "  - path: /{function}\n    plugin: {{ path: {wasm}, function: {function} }}\n"
        ));
    }
    text
}

/// `log-part` (integers only, so that SDK plugins link as one core
/// instance) called as the SDK never would: lengths over 96, levels that
/// change mid-line, control characters, bytes that are not UTF-8, a line
/// far over 4 KiB, and a line never ended.
#[tokio::test(flavor = "multi_thread")]
async fn log_parts_from_a_raw_component_are_bounded_and_escaped() {
    let echo = upstream(upstreams::echo("up")).await;
    let api = format!(
        "id: parts\nlisten_path: /parts/\nupstream: {echo}\nendpoints:\n  - path: /\n    plugin: {{ path: {}, function: log-parts }}\n",
        plugin(Wasm::Raw2).display()
    );
    let gw = Gateway::start(ConfigDir::single(&api));
    let (status, _, _) = get_json(&gw.url("/parts/")).await;
    assert_eq!(status, 200);
    let log = gw.wait_for_log("parts-unfinished");
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{log}"))
    };

    let joined = format!("{}{}parts-ok", "a".repeat(96), "b".repeat(96));
    let ok = line("parts-ok");
    assert!(ok.contains(&joined) && ok.contains("WARN"), "{ok}");
    assert!(ok.contains("raw2.wasm#log-parts"), "attributed: {ok}");

    let forge = line("parts-forge");
    assert!(forge.contains("parts-forge\\n1999-01-01T00:00\\u{1b}[2J"), "{forge}");
    assert!(
        !log.lines().any(|l| l.starts_with("1999-01-01T00:00")),
        "a forged line:\n{log}"
    );

    assert!(line("parts-bad-").contains("parts-bad-\u{fffd}\u{fffd}!"));

    // 9,600 bytes sent, 4,096 kept: 42 whole parts and 64 bytes of the 43rd.
    let long = line("parts-long-");
    assert!(long.contains("zzz... (5504 more bytes cut)"), "{long}");
    assert_eq!(long.matches("parts-long-").count(), 43, "{long}");

    let unfinished = line("parts-unfinished");
    assert!(unfinished.contains("ERROR"), "{unfinished}");
}

/// Reads a `u32` length-prefixed item of the 0.2 input at `*at`.
fn item<'a>(input: &'a [u8], at: &mut usize) -> &'a [u8] {
    let len = u32::from_le_bytes(input[*at..*at + 4].try_into().expect("4 bytes")) as usize;
    let item = &input[*at + 4..*at + 4 + len];
    *at += 4 + len;
    item
}

#[tokio::test]
async fn the_02_input_is_laid_out_as_the_wit_says() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(ConfigDir::single(&raw2_api("r2", &echo, None)));
    let response = client()
        .get(gw.url("/r2/echo-input?a=%20b"))
        .header("x-one", "1")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let input = response.bytes().await.expect("body").to_vec();
    let mut at = 0;
    let sections: Vec<&[u8]> = (0..6).map(|_| item(&input, &mut at)).collect();
    assert_eq!(at, input.len(), "six sections and nothing else");
    let mut at = 0;
    let request: Vec<&[u8]> = (0..6).map(|_| item(sections[0], &mut at)).collect();
    assert_eq!(request[0], b"GET");
    assert_eq!(request[1], b"/r2/echo-input");
    assert_eq!(request[3], b"a=%20b", "the query is raw");
    let headers = u32::from_le_bytes(sections[0][at..at + 4].try_into().expect("count"));
    assert!(headers >= 2, "host and x-one at least");
    assert!(sections[0].windows(5).any(|w| w == b"x-one"));
    assert_eq!(
        sections[0].last(),
        Some(&0),
        "no body: the option's none tag ends the section"
    );
    assert_eq!(item(sections[1], &mut 0), b"", "anonymous session: empty key id");
    assert!(sections[2].is_empty(), "no response for a request function");
    assert_eq!(item(sections[3], &mut 0), b"r2", "the API's id first");
    assert_eq!(sections[4], b"{}", "no config: {{}}");
    assert!(sections[5].is_empty(), "no fan-out");
}

#[tokio::test]
async fn the_fan_out_section_is_laid_out_as_the_wit_says() {
    let records = upstream(upstreams::records("users")).await;
    let down = crate::support::closed_port();
    let api = format!(
        "id: fo\nlisten_path: /fo/\nupstream: {records}\noutbound: {{ allow: ['{}', '{down}'] }}\nendpoints:\n  - path: /input/{{id}}\n    plugin:\n      path: {}\n      function: echo-input\n      fan_out:\n        calls:\n          user: {records}/users/{{id}}\n          down: http://{down}/x\n",
        records.trim_start_matches("http://"),
        plugin(Wasm::Raw2).display()
    );
    let gw = Gateway::start(ConfigDir::single(&api));
    let response = client().get(gw.url("/fo/input/4")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let input = response.bytes().await.expect("body").to_vec();
    let mut at = 0;
    let sections: Vec<&[u8]> = (0..6).map(|_| item(&input, &mut at)).collect();
    assert_eq!(at, input.len(), "six sections and nothing else");
    let fan_out = sections[5];
    assert_eq!(u32::from_le_bytes(fan_out[..4].try_into().expect("count")), 2);
    let mut at = 4;
    let (down_entry, user_entry) = (item(fan_out, &mut at), item(fan_out, &mut at));
    assert_eq!(at, fan_out.len(), "two entries and nothing else");

    // In name order: `down` first, an error of case 2 (`connect`).
    let mut e = 0;
    assert_eq!(item(down_entry, &mut e), b"down");
    assert_eq!(&down_entry[e..e + 2], &[1, 2], "tag 1 (error), case 2 (connect)");
    e += 2;
    assert!(!item(down_entry, &mut e).is_empty(), "the reason");
    assert_eq!(e, down_entry.len());

    let mut e = 0;
    assert_eq!(item(user_entry, &mut e), b"user");
    assert_eq!(user_entry[e], 0, "tag 0 (response)");
    assert_eq!(u16::from_le_bytes([user_entry[e + 1], user_entry[e + 2]]), 200);
    e += 3;
    let headers = u32::from_le_bytes(user_entry[e..e + 4].try_into().expect("count"));
    e += 4;
    for _ in 0..headers * 2 {
        item(user_entry, &mut e);
    }
    let body: serde_json::Value = serde_json::from_slice(item(user_entry, &mut e)).expect("JSON");
    assert_eq!(
        (&body["id"], &body["name"]),
        (&serde_json::json!(4), &serde_json::json!("user-4"))
    );
    assert_eq!(e, user_entry.len());
}

// Multi-threaded: `exchange` blocks its thread while the upstream, in this
// runtime, answers.
#[tokio::test(flavor = "multi_thread")]
async fn headers_for_the_clients_response_are_bounded_checked_and_framed_by_the_gateway() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(ConfigDir::single(&raw2_api("r2", &echo, None)));

    let (status, _, body) = get_json(&gw.url("/r2/response-header-flood")).await;
    assert_gateway_error(status, &body, 500, "plugin failed");
    gw.wait_for_log("at most 10000 are read");

    // A value with CR LF: refused, never written; the stream holds exactly
    // one response per request.
    for message in exchange(&gw, &["/r2/response-header-split", "/r2/response-header-split"]) {
        assert_eq!(message.status, 500);
        assert!(message.header("x-split").is_none() && message.header("x-forged").is_none());
    }

    // Framing and connection headers are the gateway's: dropped, the rest kept.
    let messages = exchange(&gw, &["/r2/response-header-framing", "/r2/response-header-framing"]);
    for message in &messages {
        assert_eq!(message.status, 200);
        assert_eq!(message.header("x-kept"), Some("yes"));
        assert!(message.header("transfer-encoding").is_none());
        assert_eq!(message.header("content-length"), Some(&*message.body.len().to_string()));
        assert_no_hop_headers(message);
    }
}

#[tokio::test]
async fn an_auth_functions_alias_and_changes_are_checked_like_every_outcome() {
    let (recorder, received) = recorder();
    let up = upstream(recorder).await;
    let apis = [
        ("alias.yaml", raw2_api("alias", &up, Some("auth-alias-control"))),
        (
            "anywhere.yaml",
            raw2_api("anywhere", &up, Some("auth-upstream-anywhere")),
        ),
        ("framing.yaml", raw2_api("framing", &up, Some("auth-framing"))),
    ];
    let apis: Vec<(&str, &str)> = apis.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let gw = Gateway::start(ConfigDir::new("apis: [apis/]\n", &apis));

    let (status, _, body) = get_json(&gw.url("/alias/x")).await;
    assert_gateway_error(status, &body, 500, "plugin failed");
    let log = gw.wait_for_log("invalid alias");
    assert!(!log.lines().any(|line| line.starts_with("forged log line")), "{log}");

    let (status, _, body) = get_json(&gw.url("/anywhere/x")).await;
    assert_gateway_error(status, &body, 500, "plugin failed");
    gw.wait_for_log("169.254.169.254");

    let (status, headers, _) = get_with(&gw.url("/framing/x"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-auth-kept"], "yes");
    assert_ne!(headers["content-length"], "999");
    assert_eq!(
        received.lock().expect("lock").len(),
        1,
        "only the accepted request reached the upstream"
    );
}
