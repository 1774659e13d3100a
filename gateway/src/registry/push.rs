//! Writing to a registry: a component as the CNCF wasm OCI artifact
//! (`portcullis plugin push`), and a cosign signature of a manifest stored
//! where cosign stores it (`portcullis plugin sign`).

use std::collections::BTreeMap;

use oci_client::Reference;
use oci_client::RegistryOperation;
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use sha2::{Digest as _, Sha256};

use super::client::Connection;
use super::pull::{self, Failure};
use super::{WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use crate::text::hex;

/// Annotations `plugin push` writes from `plugin inspect`.
pub const CONTRACT_ANNOTATION: &str = "dev.portcullis.plugin.contract";
pub const FUNCTIONS_ANNOTATION: &str = "dev.portcullis.plugin.functions";

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn descriptor(media_type: &str, bytes: &[u8], annotations: Option<BTreeMap<String, String>>) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.to_owned(),
        digest: digest_of(bytes),
        size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        urls: None,
        annotations,
        artifact_type: None,
    }
}

async fn authenticate(conn: &Connection, reference: &Reference) -> Result<(), Failure> {
    conn.client
        .auth(reference, &conn.auth, RegistryOperation::Push)
        .await
        .map(|_| ())
        .map_err(pull::classify)
}

/// Uploads `blobs` and then `manifest`; returns the manifest's digest.
async fn upload(
    conn: &Connection,
    reference: &Reference,
    blobs: &[&[u8]],
    manifest: &OciImageManifest,
) -> Result<String, Failure> {
    authenticate(conn, reference).await?;
    for bytes in blobs {
        conn.client
            .push_blob(reference, bytes.to_vec(), &digest_of(bytes))
            .await
            .map_err(pull::classify)?;
    }
    let body = serde_json::to_vec(manifest).map_err(|e| Failure::Refused(e.to_string()))?;
    let digest = digest_of(&body);
    conn.client
        .push_manifest_raw(reference, body, http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE))
        .await
        .map_err(pull::classify)?;
    Ok(digest)
}

/// What `plugin inspect` says of a component, written as annotations.
#[derive(Debug, Clone)]
pub struct Described {
    pub file_name: String,
    pub contract: String,
    pub functions: Vec<String>,
}

/// Pushes `wasm` to `reference` (a tag) as a wasm OCI artifact; returns the
/// manifest's digest. The manifest carries no timestamp, so pushing the same
/// component twice gives the same digest.
pub async fn artifact(
    conn: &Connection,
    reference: &Reference,
    wasm: &[u8],
    described: &Described,
) -> Result<String, Failure> {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [digest_of(wasm)],
        "component": { "exports": described.functions },
    }))
    .map_err(|e| Failure::Refused(e.to_string()))?;
    let annotations = BTreeMap::from([
        ("org.opencontainers.image.title".to_owned(), described.file_name.clone()),
        (CONTRACT_ANNOTATION.to_owned(), described.contract.clone()),
        (FUNCTIONS_ANNOTATION.to_owned(), described.functions.join(",")),
    ]);
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
        config: descriptor(WASM_CONFIG_MEDIA_TYPE, &config, None),
        layers: vec![descriptor(WASM_LAYER_MEDIA_TYPE, wasm, None)],
        subject: None,
        artifact_type: None,
        annotations: Some(annotations),
    };
    upload(conn, reference, &[&config, wasm], &manifest).await
}

/// Signs the manifest `manifest_digest` of `reference`'s repository with
/// `key`, in cosign's format: the simple-signing payload as a layer of the
/// manifest tagged `sha256-<hex>.sig`, its signature in the layer's
/// annotation. Signatures already there are kept. Returns the signature
/// tag's reference.
pub async fn sign(
    conn: &Connection,
    reference: &Reference,
    manifest_digest: &str,
    key: &crate::cosign::SigningKey,
) -> Result<String, Failure> {
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    let payload = crate::cosign::image_payload(&repository, manifest_digest);
    let signature = key.sign(&payload).map_err(Failure::Refused)?;
    let tag = Reference::with_tag(
        reference.registry().to_owned(),
        reference.repository().to_owned(),
        pull::signature_tag(manifest_digest),
    );
    authenticate(conn, &tag).await?;
    let mut layers = match pull::manifest(conn, &tag).await {
        Ok((existing, _)) => existing.layers,
        Err(Failure::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let layer = descriptor(
        crate::cosign::SIMPLE_SIGNING_MEDIA_TYPE,
        &payload,
        Some(BTreeMap::from([(
            crate::cosign::SIGNATURE_ANNOTATION.to_owned(),
            signature,
        )])),
    );
    if !layers
        .iter()
        .any(|l| l.digest == layer.digest && l.annotations == layer.annotations)
    {
        layers.push(layer);
    }
    // The image config cosign writes for a signature: its layers' digests
    // as the root filesystem, and no dates.
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .map_err(|e| Failure::Refused(e.to_string()))?;
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
        config: descriptor(oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE, &config, None),
        layers,
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    upload(conn, &tag, &[&config, &payload], &manifest).await?;
    Ok(tag.whole())
}
