use std::ops::Range;

use super::*;

fn pairs(fields: &[(&'static str, &'static str)]) -> impl ExactSizeIterator<Item = (&'static str, &'static str)> {
    fields.iter().copied()
}

/// Every section written with every kind of field, as the gateway writes
/// them.
fn everything() -> Vec<u8> {
    let mut w = Writer::default();
    RequestSection {
        method: "POST",
        path: "/orders/42",
        upstream_path: "/42",
        query: "a=1&b=%20",
        client_addr: "127.0.0.1:5000",
        request_id: "req-1",
        headers: pairs(&[("host", "example"), ("x-two", "1"), ("x-two", "2")]),
        params: pairs(&[("id", "42")]),
        body: Some(&b"{\"n\":1}"[..]),
    }
    .write(&mut w);
    SessionSection {
        key_id: "key-1",
        alias: Some("Ada"),
        rate: 10,
        per: 60,
        quota_max: 1000,
        quota_remaining: -1,
        quota_renewal_seconds: 3600,
        metadata: pairs(&[("tier", "gold")]),
        tags: ["a", "b"].into_iter(),
        expires: Some(-5),
    }
    .write(&mut w);
    ResponseSection::write(
        Some(ResponseSection {
            status: 201,
            headers: pairs(&[("content-type", "text/plain")]),
            body: b"made",
        }),
        &mut w,
    );
    ApiSection {
        id: "orders",
        name: "Orders",
        listen_path: "/orders/",
        upstream: "http://127.0.0.1:9000",
        config: "{}",
    }
    .write(&mut w);
    write_config(&mut w, "{\"k\":\"v\"}");
    write_fan_out(
        &mut w,
        [
            (
                "user",
                FanOutEntry::Response(ResponseSection {
                    status: 200,
                    headers: pairs(&[("x", "y")]),
                    body: b"{}",
                }),
            ),
            (
                "stock",
                FanOutEntry::Error {
                    case: http_error::CONNECT,
                    detail: "refused",
                },
            ),
        ]
        .into_iter(),
    );
    w.into_bytes()
}

#[test]
fn what_is_written_reads_back() {
    let input = everything();
    let sections = Sections::split(&input).expect("sections");

    let request = RequestRanges::read(&input, &sections).expect("request");
    let t = |range: &Range<usize>| text(&input, range);
    assert_eq!(
        [
            &request.method,
            &request.path,
            &request.upstream_path,
            &request.query,
            &request.client_addr,
            &request.request_id
        ]
        .map(t),
        ["POST", "/orders/42", "/42", "a=1&b=%20", "127.0.0.1:5000", "req-1"]
    );
    let headers: Vec<(&str, &str)> = request.headers.iter().map(|(n, v)| (t(n), t(v))).collect();
    assert_eq!(headers, [("host", "example"), ("x-two", "1"), ("x-two", "2")]);
    let params: Vec<(&str, &str)> = request.params.iter().map(|(n, v)| (t(n), t(v))).collect();
    assert_eq!(params, [("id", "42")]);
    assert_eq!(request.body.map(|b| &input[b]), Some(&b"{\"n\":1}"[..]));

    assert_eq!(
        OwnedSession::read(&input, &sections).expect("session"),
        OwnedSession {
            key_id: "key-1".into(),
            alias: Some("Ada".into()),
            rate: 10,
            per: 60,
            quota_max: 1000,
            quota_remaining: -1,
            quota_renewal_seconds: 3600,
            metadata: vec![("tier".into(), "gold".into())],
            tags: vec!["a".into(), "b".into()],
            expires: Some(-5),
        }
    );
    assert_eq!(
        OwnedResponse::read(&input, &sections).expect("response"),
        OwnedResponse {
            status: 201,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"made".to_vec(),
        }
    );
    assert_eq!(
        OwnedApi::read(&input, &sections).expect("api"),
        OwnedApi {
            id: "orders".into(),
            name: "Orders".into(),
            listen_path: "/orders/".into(),
            upstream: "http://127.0.0.1:9000".into(),
            config: "{}".into(),
        }
    );
    assert_eq!(config(&input, &sections), Ok("{\"k\":\"v\"}"));
    let fanned = read_fan_out(&input, &sections).expect("fan-out");
    assert_eq!(fanned.len(), 2);
    assert_eq!(fanned[0].0, "user");
    assert_eq!(fanned[0].1.as_ref().map(|r| r.status), Ok(200));
    assert_eq!(
        fanned[1],
        ("stock".into(), Err((http_error::CONNECT, "refused".into())))
    );
}

#[test]
fn absent_options_and_empty_sections_read_back() {
    let mut w = Writer::default();
    RequestSection {
        method: "GET",
        path: "/",
        upstream_path: "/",
        query: "",
        client_addr: "",
        request_id: "",
        headers: pairs(&[]),
        params: pairs(&[]),
        body: None,
    }
    .write(&mut w);
    SessionSection {
        key_id: "",
        alias: None,
        rate: 0,
        per: 0,
        quota_max: -1,
        quota_remaining: -1,
        quota_renewal_seconds: 0,
        metadata: pairs(&[]),
        tags: std::iter::empty(),
        expires: None,
    }
    .write(&mut w);
    ResponseSection::<std::iter::Empty<(&str, &str)>>::write(None, &mut w);
    ApiSection {
        id: "",
        name: "",
        listen_path: "",
        upstream: "",
        config: "",
    }
    .write(&mut w);
    write_config(&mut w, "");
    write_fan_out::<std::iter::Empty<(&str, &str)>>(&mut w, std::iter::empty());
    let input = w.into_bytes();
    let sections = Sections::split(&input).expect("sections");
    assert_eq!(RequestRanges::read(&input, &sections).expect("request").body, None);
    let session = OwnedSession::read(&input, &sections).expect("session");
    assert_eq!((session.alias, session.expires, session.tags.len()), (None, None, 0));
    assert!(sections.response.is_empty());
    assert_eq!(read_fan_out(&input, &sections), Ok(Vec::new()));
}

#[test]
fn a_buffer_from_a_gateway_without_fan_out_reads() {
    // 0.2.0 gateways wrote five sections.
    let mut input = everything();
    let sections = Sections::split(&input).expect("sections");
    input.truncate(sections.config.end);
    let five = Sections::split(&input).expect("five sections");
    assert!(five.fan_out.is_empty());
    assert_eq!(read_fan_out(&input, &five), Ok(Vec::new()));
}

#[test]
fn every_truncation_and_every_lying_count_is_an_error() {
    let input = everything();
    for cut in 0..input.len() {
        let short = &input[..cut];
        let read = Sections::split(short).and_then(|s| {
            RequestRanges::read(short, &s)?;
            OwnedSession::read(short, &s)?;
            OwnedApi::read(short, &s)?;
            read_fan_out(short, &s)
        });
        // Cut at a section boundary after the config, the buffer is one of
        // a gateway without fan-out: that one reads.
        if read.is_ok() {
            assert_eq!(
                cut,
                Sections::split(&input).expect("sections").config.end,
                "cut at {cut}"
            );
        }
    }
    // A request section whose method claims 4 GiB, then four empty ones.
    let mut lying = Writer::default();
    lying.section(|w| w.u32(u32::MAX));
    for _ in 0..4 {
        lying.section(|_| {});
    }
    let input = lying.into_bytes();
    let sections = Sections::split(&input).expect("five sections");
    assert!(RequestRanges::read(&input, &sections).is_err());
    let mut many = Writer::default();
    many.len(1 << 30);
    let input = many.into_bytes();
    assert_eq!(Reader::new(&input, 0..input.len()).count(8), Err(Malformed("count")));
}
