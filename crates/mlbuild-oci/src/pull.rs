//! Pulling a signed artifact: download into a staging directory, check every digest and
//! the signature, and only then move the files into place.
//!
//! A registry is not trusted: the manifest fetched by digest must hash to it, every blob
//! must hash to its descriptor's digest and size, every layer is unpacked by the
//! hostile-archive-safe extractor (no links, no `..`, bounded size) and must hold exactly
//! the file its title names, and the files together must verify against `model.sig` with
//! the key the user gave. The staging directory sits beside the destination, so the last
//! step is one rename: on any failure the destination is as it was. Main function:
//! [`pull()`].

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use mlbuild_rules::archive::{self, EntryKind, ExtractLimits};
use mlbuild_sign::model::{self, VerifyError, SIGNATURE_FILE};
use mlbuild_sign::PublicKey;
use serde::Serialize;
use sha2::Digest as _;

use crate::client::Registry;
use crate::reference::Reference;
use crate::spec::{self, Index, Manifest};
use crate::OciError;

/// Largest signature or provenance attachment read.
const MAX_ATTACHMENT_BYTES: u64 = 16 << 20;

/// What to pull besides the model.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Also fetch the attached provenance, verify it with the same key, and write it here.
    pub provenance: Option<PathBuf>,
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct Pulled {
    /// The reference pulled, pinned to the manifest's digest.
    pub reference: String,
    pub digest: String,
    /// Files written (the signature included).
    pub files: usize,
    /// The key the signature verified with.
    pub key_id: String,
    /// Where the provenance was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<PathBuf>,
    /// The manifest's `dev.mlbuild.*` annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Pulls `reference` into `dest` (which must not exist, or be an empty directory) after
/// verifying it with `key`.
pub fn pull(
    registry: &Registry,
    reference: &Reference,
    key: &PublicKey,
    dest: &Path,
    options: &PullOptions,
) -> Result<Pulled, OciError> {
    check_destination(dest)?;
    // The staging directory goes beside the destination, so the last step is a rename.
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(OciError::MissingParent { path: parent });
    }
    if let Some(path) = options.provenance.as_deref().filter(|p| p.exists()) {
        return Err(OciError::DestinationExists {
            path: path.to_path_buf(),
        });
    }
    let shown = reference.to_string();
    let fetched = registry
        .get_manifest(reference.manifest_reference())?
        .ok_or_else(|| OciError::NotFound {
            reference: shown.clone(),
        })?;
    let not_model = |reason: String| OciError::NotAModel {
        reference: shown.clone(),
        reason,
    };
    if fetched.media_type != spec::MANIFEST_MEDIA_TYPE {
        return Err(not_model(format!(
            "its manifest is `{}`, not an OCI image manifest",
            fetched.media_type
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&fetched.bytes)
        .map_err(|e| not_model(format!("its manifest is malformed: {e}")))?;
    if manifest.config.media_type != spec::CONFIG_MEDIA_TYPE {
        return Err(not_model(format!(
            "its config is `{}`, not an image config",
            manifest.config.media_type
        )));
    }
    let mut titles = Vec::new();
    for layer in &manifest.layers {
        if layer.media_type != spec::LAYER_MEDIA_TYPE {
            return Err(not_model(format!(
                "layer {} is `{}`; mlbuild writes `{}`",
                layer.digest,
                layer.media_type,
                spec::LAYER_MEDIA_TYPE
            )));
        }
        let title = layer
            .annotations
            .get(spec::TITLE)
            .ok_or_else(|| not_model(format!("layer {} has no `{}`", layer.digest, spec::TITLE)))?;
        titles.push(title.clone());
    }
    if !titles.iter().any(|t| t == SIGNATURE_FILE) {
        return Err(not_model(format!(
            "it has no `{SIGNATURE_FILE}` layer, so it cannot be verified"
        )));
    }

    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string());
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.mlbuild-pull-"))
        .tempdir_in(&parent)
        .map_err(|e| OciError::io("create a staging directory in", &parent, e))?;

    // The config is small: read it whole and check it.
    let config = read_blob(registry, &manifest.config, MAX_ATTACHMENT_BYTES)?;
    serde_json::from_slice::<spec::ImageConfig>(&config)
        .map_err(|e| not_model(format!("its image config is malformed: {e}")))?;

    let root = cap_std::fs::Dir::open_ambient_dir(staging.path(), cap_std::ambient_authority())
        .map_err(|e| OciError::io("open", staging.path(), e))?;
    for (layer, title) in manifest.layers.iter().zip(&titles) {
        let mut body = Hashing {
            inner: registry
                .get_blob(&layer.digest)?
                .take(layer.size.saturating_add(1)),
            hasher: sha2::Sha256::new(),
            len: 0,
        };
        let report = archive::extract_reader(&mut body, &root, &ExtractLimits::default());
        // Whatever the extractor left unread still counts toward the digest.
        io::copy(&mut body, &mut io::sink()).map_err(|e| OciError::Unreachable {
            registry: registry.shown().to_string(),
            what: format!("GET blob {}", layer.digest),
            error: e.to_string(),
        })?;
        let actual = format!("sha256:{}", hex::encode(body.hasher.finalize()));
        if actual != layer.digest || body.len != layer.size {
            return Err(OciError::DigestMismatch {
                repository: registry.shown().to_string(),
                what: format!("layer `{title}` ({})", layer.digest),
                actual,
            });
        }
        let report = report.map_err(|e| not_model(format!("layer `{title}`: {e}")))?;
        let expected = format!("{}/{title}", spec::MODEL_ROOT);
        let files: Vec<&str> = report
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.path.as_str())
            .collect();
        let stray = report.entries.iter().find(|e| {
            !(e.path == spec::MODEL_ROOT || e.path.starts_with(&format!("{}/", spec::MODEL_ROOT)))
        });
        if files != [expected.as_str()] || stray.is_some() {
            return Err(not_model(format!(
                "layer `{title}` holds {:?}, not just `{expected}`",
                report.entries.iter().map(|e| &e.path).collect::<Vec<_>>()
            )));
        }
    }

    let models = staging.path().join(spec::MODEL_ROOT);
    let verified = match model::verify_dir(&models, &models.join(SIGNATURE_FILE), key) {
        Ok(verified) => verified,
        Err(VerifyError::Signature { source, .. }) => {
            return Err(OciError::Verification {
                reference: shown,
                detail: format!("`{SIGNATURE_FILE}`: {source}"),
            })
        }
        Err(VerifyError::Files { problems, .. }) => {
            return Err(OciError::Verification {
                reference: shown,
                detail: problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            })
        }
    };

    // The provenance is fetched and verified before anything is moved into place.
    let provenance = match &options.provenance {
        Some(path) => Some((
            path,
            fetch_provenance(registry, &fetched.digest, key, &shown, &verified)?,
        )),
        None => None,
    };

    // `rename` replaces an empty directory, and fails on anything else: a destination
    // created meanwhile is never merged into.
    fs::rename(&models, dest).map_err(|e| OciError::io("move the verified files to", dest, e))?;
    if let Some((path, bytes)) = &provenance {
        write_new(path, bytes)?;
    }
    let annotations = manifest
        .annotations
        .into_iter()
        .filter(|(k, _)| k.starts_with("dev.mlbuild."))
        .collect();
    Ok(Pulled {
        reference: reference.with_digest(&fetched.digest).to_string(),
        digest: fetched.digest,
        files: titles.len(),
        key_id: verified.key_id,
        provenance: provenance.map(|(p, _)| p.clone()),
        annotations,
    })
}

/// `dest` must not exist, or be an empty directory.
fn check_destination(dest: &Path) -> Result<(), OciError> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(OciError::io("read", dest, e)),
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dest).map_err(|e| OciError::io("read", dest, e))?;
            match entries.next() {
                None => Ok(()),
                Some(_) => Err(OciError::DestinationExists {
                    path: dest.to_path_buf(),
                }),
            }
        }
        Ok(_) => Err(OciError::DestinationExists {
            path: dest.to_path_buf(),
        }),
    }
}

/// Reads a whole blob of at most `max` bytes and checks its digest and size.
fn read_blob(
    registry: &Registry,
    descriptor: &spec::Descriptor,
    max: u64,
) -> Result<Vec<u8>, OciError> {
    if descriptor.size > max {
        return Err(OciError::Protocol {
            repository: registry.shown().to_string(),
            detail: format!(
                "blob {} is {} bytes; at most {max} are read",
                descriptor.digest, descriptor.size
            ),
        });
    }
    let mut bytes = Vec::new();
    registry
        .get_blob(&descriptor.digest)?
        .take(descriptor.size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| OciError::Unreachable {
            registry: registry.shown().to_string(),
            what: format!("GET blob {}", descriptor.digest),
            error: e.to_string(),
        })?;
    let actual = spec::sha256_digest(&bytes);
    if actual != descriptor.digest || bytes.len() as u64 != descriptor.size {
        return Err(OciError::DigestMismatch {
            repository: registry.shown().to_string(),
            what: format!("blob {}", descriptor.digest),
            actual,
        });
    }
    Ok(bytes)
}

/// The provenance attached to `subject`: found by the referrers API or the fallback tag,
/// verified with `key`, and required to name the files the signature verified.
fn fetch_provenance(
    registry: &Registry,
    subject: &str,
    key: &PublicKey,
    shown: &str,
    verified: &model::VerifiedModel,
) -> Result<Vec<u8>, OciError> {
    let index = match registry.referrers(subject)? {
        Some(index) => index,
        None => match registry.get_manifest(&spec::referrers_tag(subject))? {
            Some(fetched) => {
                serde_json::from_slice::<Index>(&fetched.bytes).map_err(|e| OciError::Protocol {
                    repository: registry.shown().to_string(),
                    detail: format!("the referrers index of {subject} is malformed: {e}"),
                })?
            }
            None => Index::empty(),
        },
    };
    let fail = |detail: String| OciError::Verification {
        reference: shown.to_string(),
        detail,
    };
    let mut last_error = None;
    for candidate in index
        .manifests
        .iter()
        .filter(|m| m.artifact_type.as_deref() == Some(spec::PROVENANCE_ARTIFACT_TYPE))
    {
        let Some(fetched) = registry.get_manifest(&candidate.digest)? else {
            continue;
        };
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&fetched.bytes) else {
            continue;
        };
        if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(subject) {
            continue;
        }
        let Some(layer) = manifest.layers.first() else {
            continue;
        };
        let bytes = read_blob(registry, layer, MAX_ATTACHMENT_BYTES)?;
        match mlbuild_sign::provenance::verify(&bytes, key) {
            Ok(statement) => {
                // Every signed file must be a subject of the provenance, with its digest.
                let subjects = serde_json::to_value(&statement.subject).unwrap_or_default();
                let names: Vec<(String, String)> = subjects
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| {
                        Some((
                            s.get("name")?.as_str()?.to_string(),
                            s.get("digest")?.get("sha256")?.as_str()?.to_string(),
                        ))
                    })
                    .collect();
                let missing = verified.files.iter().find(|f| {
                    !names
                        .iter()
                        .any(|(n, d)| n.ends_with(&format!("/{}", f.name)) && *d == f.digest)
                });
                match missing {
                    None => return Ok(bytes),
                    Some(f) => {
                        last_error = Some(format!(
                            "the provenance does not describe `{}` as pulled",
                            f.name
                        ))
                    }
                }
            }
            Err(e) => last_error = Some(format!("provenance: {e}")),
        }
    }
    Err(fail(last_error.unwrap_or_else(|| {
        "no provenance is attached to it (`--provenance` needs one)".to_string()
    })))
}

/// Writes `bytes` to a new file `path` (never over an existing one), through a temporary
/// name in the same directory.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    if path.exists() {
        return Err(OciError::DestinationExists {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| OciError::io("write", path, e))?;
    io::Write::write_all(&mut tmp, bytes).map_err(|e| OciError::io("write", path, e))?;
    tmp.persist_noclobber(path)
        .map_err(|e| OciError::io("write", path, e.error))?;
    Ok(())
}

/// A reader that hashes (SHA-256) and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
    len: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}
