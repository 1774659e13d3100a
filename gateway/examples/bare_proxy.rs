//! The floor of the HTTP stack under `portcullis serve`: a reverse proxy on
//! one tokio thread, hyper's HTTP/1 server and the gateway's own pooled
//! upstream client, and nothing else (no routing, request ids, forwarded
//! headers, metrics, spans or plugins). `docs/benchmarks.md` compares it
//! with scenario S1.
//!
//! ```sh
//! cargo run --profile dist -p portcullis --example bare_proxy -- 127.0.0.1:19001 http://127.0.0.1:18080
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use http::Uri;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_proxy LISTEN_ADDR UPSTREAM_URL";
    let listen: SocketAddr = args.next().context(usage)?.parse().context("LISTEN_ADDR")?;
    let upstream: Uri = args.next().context(usage)?.parse().context("UPSTREAM_URL")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: Uri) -> anyhow::Result<()> {
    let client = portcullis::upstream::pooled_client::<Incoming>(
        Duration::from_secs(5),
        Duration::from_secs(60),
        &portcullis::tls::ClientTls::system(),
    );
    let listener = TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (client, upstream) = (client.clone(), upstream.clone());
        let service = service_fn(move |mut request: http::Request<Incoming>| {
            let mut uri = upstream.clone().into_parts();
            uri.path_and_query = request.uri().path_and_query().cloned();
            let client = client.clone();
            async move {
                *request.uri_mut() = Uri::from_parts(uri)?;
                anyhow::Ok(client.request(request).await?)
            }
        });
        tokio::spawn(async move {
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection: {e}");
            }
        });
    }
}
