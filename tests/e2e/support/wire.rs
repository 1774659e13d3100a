//! Reading HTTP/1.1 messages off the wire, strictly: framing that is
//! ambiguous, missing or inconsistent with the bytes fails the test. Shared
//! by the end-to-end tests and the gateway's generative boundary test.
#![allow(dead_code, reason = "two test crates include this file, each uses part of it")]

/// One response as read off the wire.
#[derive(Debug)]
pub struct Message {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses consecutive HTTP/1.1 responses; panics on anything malformed or
/// left over.
pub fn split_responses(mut rest: &[u8]) -> Vec<Message> {
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "malformed response head ({other:?}) at:\n{}",
                String::from_utf8_lossy(rest)
            ),
        };
        let status = response.code.expect("status");
        let headers = owned(response.headers);
        let bodiless = status == 204 || status == 304;
        let (body, used) = framed_body(&headers, &rest[head_len..], bodiless);
        rest = &rest[head_len + used..];
        messages.push(Message { status, headers, body });
    }
    messages
}

/// One request as read off the wire.
#[derive(Debug)]
pub struct RequestMessage {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Parses consecutive HTTP/1.1 requests; panics on anything malformed or
/// left over.
pub fn split_requests(mut rest: &[u8]) -> Vec<RequestMessage> {
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 256];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "malformed request head ({other:?}) at:\n{}",
                String::from_utf8_lossy(rest)
            ),
        };
        let (method, target) = (
            request.method.expect("method").to_owned(),
            request.path.expect("target").to_owned(),
        );
        let headers = owned(request.headers);
        let (body, used) = framed_body(&headers, &rest[head_len..], true);
        rest = &rest[head_len + used..];
        messages.push(RequestMessage {
            method,
            target,
            headers,
            body,
        });
    }
    messages
}

fn owned(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// The body that `headers` frame at the start of `rest`, and the bytes it
/// took. A message without framing has none when `bodiless` (a 204 or 304,
/// or a request); a response without framing fails.
fn framed_body(headers: &[(String, String)], rest: &[u8], bodiless: bool) -> (Vec<u8>, usize) {
    let get = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let (lengths, encodings) = (get("content-length"), get("transfer-encoding"));
    assert!(
        lengths.len() <= 1 && (lengths.is_empty() || encodings.is_empty()),
        "ambiguous framing: {headers:?}"
    );
    if encodings == ["chunked"] {
        return dechunk(rest);
    }
    assert!(encodings.is_empty(), "unexpected transfer-encoding {encodings:?}");
    let len: usize = match lengths.first() {
        Some(len) => len.parse().expect("numeric content-length"),
        None if bodiless => 0,
        None => panic!("a message without framing: {headers:?}"),
    };
    assert!(rest.len() >= len, "body shorter than its content-length");
    (rest[..len].to_vec(), len)
}

fn dechunk(mut rest: &[u8]) -> (Vec<u8>, usize) {
    let start = rest.len();
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).expect("ascii").trim(), 16)
            .expect("hex chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            assert!(rest.starts_with(b"\r\n"), "no trailers expected");
            rest = &rest[2..];
            return (body, start - rest.len());
        }
        body.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n", "chunk terminator");
        rest = &rest[size + 2..];
    }
}
