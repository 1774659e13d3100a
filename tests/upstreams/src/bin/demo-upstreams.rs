//! The example upstream services of the demo configuration (demo/), on fixed
//! loopback ports. `cargo xtask demo` starts this beside the gateway.

use portcullis_upstreams::{echo, records, spawn};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let services = [
        ("127.0.0.1:9001", "orders (echo)", echo("orders")),
        ("127.0.0.1:9002", "users (records)", records("users-service")),
        ("127.0.0.1:9003", "inventory (records)", records("inventory-service")),
        ("127.0.0.1:9004", "pricing (records)", records("pricing-service")),
        ("127.0.0.1:9011", "shop-eu (echo)", echo("shop-eu")),
        ("127.0.0.1:9012", "shop-us (echo)", echo("shop-us")),
        ("127.0.0.1:9013", "shop-eu-2 (echo)", echo("shop-eu-2")),
    ];
    for (addr, name, app) in services {
        let bound = spawn(addr, app)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start {name} on {addr}: {e} (is another demo still running?)"))?;
        eprintln!("upstream {name:<22} http://{bound}");
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
