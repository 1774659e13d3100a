//! Fetching one plugin from its registry: the manifest (checked against the
//! reference's digest), the component (from a wasm artifact's layer or
//! unpacked from an image layer's `plugin.wasm`, checked against the layer's
//! digest and the size cap) and the cosign signatures stored beside it.

use futures_util::StreamExt as _;
use oci_client::Reference;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use sha2::{Digest as _, Sha256};

use super::cache::{Record, Signature};
use super::client::Connection;
use crate::text::hex;

/// Layer media types that are the component itself: the CNCF wasm
/// artifact's, and the older wasm-to-oci and Solo spellings Istio reads.
const WASM_LAYERS: &[&str] = &[
    super::WASM_LAYER_MEDIA_TYPE,
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];
/// Image layers, which hold the component as `plugin.wasm`.
const TAR_LAYERS: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
const MANIFEST_TYPES: &[&str] = &[
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
];
/// Signatures are small JSON documents; more or larger ones are not.
const MAX_SIGNATURES: usize = 32;
const MAX_PAYLOAD_BYTES: u64 = 64 << 10;

/// Why a fetch failed: `Unreachable` may fall back to the cache.
#[derive(Debug)]
pub enum Failure {
    Unreachable(String),
    /// The registry answered that the manifest or tag does not exist.
    NotFound(String),
    Refused(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Unreachable(m) | Failure::NotFound(m) | Failure::Refused(m) => m,
        }
    }
}

pub(super) fn classify(e: oci_client::errors::OciDistributionError) -> Failure {
    use oci_client::errors::OciDistributionError as E;
    match &e {
        E::RequestError(r) if r.is_timeout() => {
            Failure::Unreachable(format!("no answer within plugin_registries.pull_timeout_ms: {e}"))
        }
        E::RequestError(r) if r.is_connect() => Failure::Unreachable(format!("unreachable: {e}")),
        E::ImageManifestNotFoundError(_) => Failure::NotFound(format!("not found: {e}")),
        E::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|x| x.code == oci_client::errors::OciErrorCode::ManifestUnknown) =>
        {
            Failure::NotFound(format!("not found in the registry: {e}"))
        }
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => {
            Failure::Refused(format!("the registry refused the credentials: {e}"))
        }
        _ => Failure::Refused(e.to_string()),
    }
}

/// The manifest `reference` names, and its digest (computed here, and
/// checked against the reference's own digest when it has one).
pub async fn manifest(conn: &Connection, reference: &Reference) -> Result<(OciImageManifest, String), Failure> {
    let (bytes, _) = conn
        .client
        .pull_manifest_raw(reference, &conn.auth, MANIFEST_TYPES)
        .await
        .map_err(|e| match e {
            oci_client::errors::OciDistributionError::DigestError(d) => Failure::Refused(format!(
                "digest mismatch: the manifest the registry sent is not {} ({d})",
                reference.digest().unwrap_or_default()
            )),
            e => classify(e),
        })?;
    let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
    if let Some(expected) = reference.digest()
        && expected != digest
    {
        return Err(Failure::Refused(format!(
            "digest mismatch: the registry sent manifest {digest} for {expected}"
        )));
    }
    let manifest: OciImageManifest = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::Refused(format!(
            "not a single image manifest ({e}); an image index is not a plugin: name one manifest by digest"
        ))
    })?;
    Ok((manifest, digest))
}

/// Reads a blob whole, at most `max` bytes, checking its digest.
pub async fn blob(
    conn: &Connection,
    reference: &Reference,
    layer: &OciDescriptor,
    max: u64,
) -> Result<Vec<u8>, Failure> {
    let declared = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if declared > max {
        return Err(Failure::Refused(format!(
            "layer {} is {declared} bytes, above plugin_registries.max_plugin_bytes ({max})",
            layer.digest
        )));
    }
    let mut stream = conn.client.pull_blob_stream(reference, layer).await.map_err(classify)?;
    let mut bytes = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if e.to_string().to_ascii_lowercase().contains("digest") {
                Failure::Refused(format!(
                    "tampered layer: {} does not have the digest its manifest gives it ({e})",
                    layer.digest
                ))
            } else {
                Failure::Unreachable(format!("reading layer {}: {e}", layer.digest))
            }
        })?;
        if (bytes.len() + chunk.len()) as u64 > declared {
            return Err(Failure::Refused(format!(
                "layer {} sent more than the {declared} bytes its manifest declares",
                layer.digest
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    let actual = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
    if actual != layer.digest {
        return Err(Failure::Refused(format!(
            "tampered layer: {} arrived with digest {actual}",
            layer.digest
        )));
    }
    Ok(bytes)
}

/// The component of a fetched manifest.
pub async fn component(
    conn: &Connection,
    reference: &Reference,
    manifest: &OciImageManifest,
    max: u64,
) -> Result<Vec<u8>, Failure> {
    if let Some(layer) = manifest
        .layers
        .iter()
        .find(|l| WASM_LAYERS.contains(&l.media_type.as_str()))
    {
        return blob(conn, reference, layer, max).await;
    }
    match manifest.layers.as_slice() {
        [layer] if TAR_LAYERS.contains(&layer.media_type.as_str()) => {
            let gzipped = layer.media_type.ends_with("gzip");
            let bytes = blob(conn, reference, layer, max).await?;
            tokio::task::spawn_blocking(move || unpack(&bytes, gzipped, max))
                .await
                .map_err(|e| Failure::Refused(e.to_string()))?
                .map_err(Failure::Refused)
        }
        layers => {
            let types: Vec<&str> = layers.iter().map(|l| l.media_type.as_str()).collect();
            Err(Failure::Refused(format!(
                "no plugin in this manifest: expected a layer of type application/wasm, or one image layer holding plugin.wasm; found [{}]",
                types.join(", ")
            )))
        }
    }
}

/// `plugin.wasm` from an image layer (a tar, gzipped or not), at most `max`
/// bytes unpacked.
pub fn unpack(layer: &[u8], gzipped: bool, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let reader: Box<dyn std::io::Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(layer))
    } else {
        Box::new(layer)
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("the image layer is not a tar: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("the image layer is not a tar: {e}"))?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let name = path.to_string_lossy();
        if name.trim_start_matches("./").trim_start_matches('/') != "plugin.wasm" {
            continue;
        }
        if entry.size() > max {
            return Err(format!(
                "plugin.wasm is {} bytes, above plugin_registries.max_plugin_bytes ({max})",
                entry.size()
            ));
        }
        let mut bytes = Vec::new();
        entry
            .take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("unpacking plugin.wasm: {e}"))?;
        if bytes.len() as u64 > max {
            return Err(format!(
                "plugin.wasm is above plugin_registries.max_plugin_bytes ({max})"
            ));
        }
        return Ok(bytes);
    }
    Err("the image layer holds no plugin.wasm".into())
}

/// The tag cosign stores a manifest's signatures under.
pub fn signature_tag(manifest_digest: &str) -> String {
    manifest_digest.replacen(':', "-", 1) + ".sig"
}

/// The cosign signatures stored for `manifest_digest` in `reference`'s
/// repository; none when there is no signature tag.
pub async fn signatures(
    conn: &Connection,
    reference: &Reference,
    manifest_digest: &str,
) -> Result<Vec<Signature>, Failure> {
    let tag = Reference::with_tag(
        reference.registry().to_owned(),
        reference.repository().to_owned(),
        signature_tag(manifest_digest),
    );
    let (manifest, _) = match manifest(conn, &tag).await {
        Ok(found) => found,
        Err(Failure::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == crate::cosign::SIMPLE_SIGNING_MEDIA_TYPE)
        .take(MAX_SIGNATURES)
    {
        let Some(signature) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::cosign::SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        let payload = blob(conn, &tag, layer, MAX_PAYLOAD_BYTES).await?;
        found.push(Signature {
            payload: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, payload),
            signature: signature.clone(),
        });
    }
    Ok(found)
}

/// What one online fetch found.
#[derive(Debug)]
pub struct Fetched {
    pub manifest: String,
    pub wasm: Vec<u8>,
    pub record: Record,
}

/// Fetches `reference` whole: manifest, component and, when `want_signatures`,
/// its signatures.
pub async fn fetch(
    conn: &Connection,
    reference: &Reference,
    max: u64,
    want_signatures: bool,
) -> Result<Fetched, Failure> {
    let (manifest, digest) = manifest(conn, reference).await?;
    let wasm = component(conn, reference, &manifest, max).await?;
    let signatures = if want_signatures {
        Some(signatures(conn, reference, &digest).await?)
    } else {
        None
    };
    Ok(Fetched {
        record: Record {
            wasm: hex(&Sha256::digest(&wasm)),
            signatures,
        },
        manifest: digest,
        wasm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(name: &str, contents: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, contents).expect("append");
        builder.into_inner().expect("tar")
    }

    #[test]
    fn unpacks_plugin_wasm_from_an_image_layer_within_the_cap() {
        let layer = tar_with("plugin.wasm", b"\0asm....");
        assert_eq!(unpack(&layer, false, 1024).expect("found"), b"\0asm....");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &layer).expect("gzip");
        assert_eq!(
            unpack(&gz.finish().expect("gz"), true, 1024).expect("found"),
            b"\0asm...."
        );
        assert!(
            unpack(&layer, false, 4)
                .expect_err("too big")
                .contains("max_plugin_bytes")
        );
        let other = tar_with("etc/passwd", b"root");
        assert!(
            unpack(&other, false, 1024)
                .expect_err("absent")
                .contains("no plugin.wasm")
        );
        assert!(unpack(b"not a tar at all, not at all", false, 1024).is_err());
    }

    #[test]
    fn signature_tags_are_cosigns() {
        assert_eq!(signature_tag("sha256:abcd"), "sha256-abcd.sig");
    }
}
