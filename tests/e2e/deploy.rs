//! The deployment examples in `deploy/` stay true: their gateway
//! configurations load (`portcullis validate`), and the Kubernetes
//! manifest's probes and ports match the configuration it carries.

use std::path::Path;
use std::process::Command;

use crate::support::{Wasm, plugin, repo_root};

/// Where the image keeps its bundled plugin; the examples name it.
const IMAGE_PLUGIN: &str = "/etc/portcullis/plugins/hello.wasm";

/// Writes `files` (name, text) into a fresh directory, the image's plugin
/// path pointed at the built plugin, and validates `gateway.yaml` there.
fn validates(files: &[(String, String)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let text = text.replace(IMAGE_PLUGIN, &plugin(Wasm::Hello).display().to_string());
        std::fs::write(path, text).expect("write");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["validate", "--config"])
        .arg(dir.path().join("gateway.yaml"))
        .env("PORTCULLIS_ADMIN_SECRET", "a-secret-of-sixteen-characters")
        .output()
        .expect("run validate");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains("/hello/{name}") || summary.contains("/{name}"),
        "{summary}"
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_compose_configuration_loads() {
    let config = repo_root().join("deploy/compose/config");
    validates(&[
        ("gateway.yaml".into(), read(&config.join("gateway.yaml"))),
        ("apis/hello.yaml".into(), read(&config.join("apis/hello.yaml"))),
    ]);
    let compose = read(&repo_root().join("deploy/compose/compose.yaml"));
    assert!(compose.contains("/etc/portcullis/conf/gateway.yaml"), "{compose}");
    assert!(compose.contains("PORTCULLIS_LOG_FORMAT: json"), "{compose}");
}

#[test]
fn the_kubernetes_configmap_loads_and_the_probes_ask_the_admin_listener_for_readiness_and_liveness() {
    let text = read(&repo_root().join("deploy/kubernetes/portcullis.yaml"));
    let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .collect();
    let of_kind = |kind: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("a {kind}"))
    };
    let data = of_kind("ConfigMap")["data"].as_mapping().expect("data");
    let files: Vec<(String, String)> = data
        .iter()
        .map(|(k, v)| (k.as_str().expect("name").into(), v.as_str().expect("text").into()))
        .collect();
    validates(&files);
    let gateway = &files
        .iter()
        .find(|(name, _)| name == "gateway.yaml")
        .expect("gateway.yaml")
        .1;
    assert!(gateway.contains("admin_listen: 0.0.0.0:9900"), "{gateway}");

    let container = &of_kind("Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][2], "/etc/portcullis/conf/gateway.yaml");
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/portcullis/conf");
    let admin_port = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("admin port");
    assert_eq!(admin_port["containerPort"], 9900);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let env = container["env"].as_sequence().expect("env");
    assert!(
        env.iter()
            .any(|e| e["name"] == "PORTCULLIS_LOG_FORMAT" && e["value"] == "json"),
        "JSON logs: {env:?}"
    );
}
