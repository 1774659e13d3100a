//! `watch: true`: a node reloads by itself when its files change, once they
//! have settled; a broken change keeps the running configuration serving.

use std::time::{Duration, Instant};

use crate::support::{ConfigDir, Gateway, get_json, upstream, upstreams};

/// Polls `GET /svc/x` until the echo upstream named `name` answers it.
async fn wait_until_served_by(gw: &Gateway, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = get_json(&gw.url("/svc/x")).await;
        if status == 200 && body["upstream"] == name {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} {body} instead of {name}; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watched_configuration_reloads_when_its_files_change() {
    let one = upstream(upstreams::echo("one")).await;
    let two = upstream(upstreams::echo("two")).await;
    let api = |upstream: &str| format!("id: svc\nlisten_path: /svc/\nupstream: {upstream}\n");
    let gw = Gateway::start(ConfigDir::new(
        "apis: [apis/]\nwatch: true\n",
        &[("api.yaml", &api(&one))],
    ));
    wait_until_served_by(&gw, "one").await;

    gw.config.write_api("api.yaml", &api(&two));
    wait_until_served_by(&gw, "two").await;
    gw.wait_for_log("trigger=file change");

    // A broken file is refused; the running configuration keeps serving.
    gw.config
        .write_api("api.yaml", "id: svc\nlisten_path: /svc/\nupstream: [\n");
    gw.wait_for_log("reload failed; the previous configuration keeps serving");
    wait_until_served_by(&gw, "two").await;

    // A new API file in the watched directory is picked up.
    gw.config.write_api("api.yaml", &api(&one));
    gw.config.write_api(
        "more.yaml",
        &format!("id: more\nlisten_path: /more/\nupstream: {two}\n"),
    );
    wait_until_served_by(&gw, "one").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&gw.url("/more/x")).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "more.yaml was not loaded; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Kubernetes ConfigMap volume: each file is a symlink through `..data`,
/// and an update swaps `..data` to a new directory in one rename.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let one = upstream(upstreams::echo("one")).await;
    let two = upstream(upstreams::echo("two")).await;
    let files = |upstream: &str| {
        [
            ("gateway.yaml", "apis: ['*.api.yaml']\nwatch: true\n".to_owned()),
            (
                "svc.api.yaml",
                format!("id: svc\nlisten_path: /svc/\nupstream: {upstream}\n"),
            ),
        ]
    };
    let config = ConfigDir::new("apis: []\n", &[]);
    let dir = config.dir.path().to_owned();
    std::fs::remove_file(dir.join("gateway.yaml")).expect("rm");
    let version = |name: &str, upstream: &str| {
        std::fs::create_dir(dir.join(name)).expect("mkdir");
        for (file, text) in files(upstream) {
            std::fs::write(dir.join(name).join(file), text).expect("write");
        }
    };
    version("..v1", &one);
    symlink("..v1", dir.join("..data")).expect("symlink");
    for (file, _) in files(&one) {
        symlink(format!("..data/{file}"), dir.join(file)).expect("symlink");
    }
    let gw = Gateway::start(config);
    wait_until_served_by(&gw, "one").await;

    version("..v2", &two);
    symlink("..v2", dir.join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    std::fs::remove_dir_all(dir.join("..v1")).expect("rm old");
    wait_until_served_by(&gw, "two").await;
}
