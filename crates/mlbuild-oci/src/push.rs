//! Pushing a signed artifact: one image layer per file, the signature and provenance
//! attached as referrers, the tag written last.
//!
//! Every layer and the manifest are computed before the first request, so a reference
//! pinned to a digest is checked before anything is sent, and the same artifact always
//! gives the same manifest digest. Blobs the registry has are skipped (`HEAD`). The order
//! of writes is what makes a failure harmless: blobs, then the manifest by digest, then
//! the referrers, and the tag last, so a registry that goes down mid-push leaves
//! unreferenced blobs (garbage its collector removes), never a tag naming half an
//! artifact. Main types: [`Artifact`], [`Pushed`].

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mlbuild_rules::archive::{self, ExtractLimits};
use mlbuild_rules::package::{self, PackageError, MANIFEST_FILE};
use mlbuild_sign::model::SIGNATURE_FILE;
use serde::Serialize;
use sha2::Digest as _;

use crate::client::Registry;
use crate::reference::Reference;
use crate::spec::{self, ContainerConfig, Descriptor, ImageConfig, Index, Manifest, RootFs};
use crate::OciError;

/// zstd level of the layers: level 1 compresses model weights as well as higher levels
/// (they barely compress at all) and JSON about as well as level 3, at a third more speed
/// (docs/package.md has the measurements).
const LAYER_ZSTD_LEVEL: i32 = 1;

/// A signed artifact directory, ready to push.
pub struct Artifact {
    dir: PathBuf,
    /// The name in `manifest.json` (the target's name).
    pub name: String,
    /// Relative paths of every file, sorted by bytes, with (BLAKE3 hex, executable).
    files: Vec<(String, String, bool)>,
    /// The signed provenance (`NAME.intoto.jsonl`), when there is one.
    pub provenance: Option<PathBuf>,
    /// Manifest annotations and config labels (`dev.mlbuild.*`).
    pub annotations: BTreeMap<String, String>,
    /// Keeps an unpacked archive alive.
    _unpacked: Option<tempfile::TempDir>,
}

impl Artifact {
    /// Opens an artifact: a directory holding `manifest.json` and `model.sig`, or a
    /// `.tar.zst` of one (unpacked with the hostile-archive-safe extractor). The files
    /// must match `manifest.json`. The provenance is looked for as `NAME.intoto.jsonl`
    /// beside the path and one directory up (where a build writes it); its action key
    /// and target become annotations, and so does the archive's BLAKE3 for a `.tar.zst`.
    pub fn open(path: &Path) -> Result<Artifact, OciError> {
        let meta = fs::metadata(path).map_err(|e| OciError::io("read", path, e))?;
        let not_artifact = |reason: &str| OciError::NotAnArtifact {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let mut annotations = BTreeMap::new();
        let (dir, unpacked) = if meta.is_dir() {
            (path.to_path_buf(), None)
        } else if is_tar_zst(path) {
            let tmp = tempfile::Builder::new()
                .prefix("mlbuild-push-")
                .tempdir()
                .map_err(|e| {
                    OciError::io("create a temporary directory in", &std::env::temp_dir(), e)
                })?;
            let dest = cap_std::fs::Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority())
                .map_err(|e| OciError::io("open", tmp.path(), e))?;
            archive::extract(path, &dest, &ExtractLimits::default())
                .map_err(|e| not_artifact(&e.to_string()))?;
            annotations.insert(spec::BLAKE3.to_string(), blake3_file(path)?);
            (tmp.path().to_path_buf(), Some(tmp))
        } else {
            return Err(not_artifact("it is neither a directory nor a `.tar.zst`"));
        };
        if !dir.join(MANIFEST_FILE).is_file() {
            return Err(not_artifact("it holds no `manifest.json`"));
        }
        if !dir.join(SIGNATURE_FILE).is_file() {
            return Err(OciError::Unsigned {
                path: path.to_path_buf(),
            });
        }
        let manifest = match package::check_manifest(&dir) {
            Ok(manifest) => manifest,
            Err(PackageError::ManifestMismatch { problems, .. }) => {
                return Err(OciError::Modified {
                    path: path.to_path_buf(),
                    problems: problems.iter().map(|p| p.to_string()).collect(),
                })
            }
            Err(e) => return Err(not_artifact(&e.to_string())),
        };
        let mut files: Vec<(String, String, bool)> = manifest
            .files
            .iter()
            .map(|f| (f.path.clone(), f.blake3.clone(), f.executable))
            .collect();
        for own in [MANIFEST_FILE, SIGNATURE_FILE] {
            files.push((own.to_string(), blake3_file(&dir.join(own))?, false));
        }
        files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

        if let Some(signer) = signer_key_id(&dir.join(SIGNATURE_FILE)) {
            annotations.insert(spec::SIGNER.to_string(), signer);
        }
        let mut artifact = Artifact {
            dir,
            name: manifest.name.clone(),
            files,
            provenance: None,
            annotations,
            _unpacked: unpacked,
        };
        let beside = format!("{}.intoto.jsonl", manifest.name);
        let provenance = path
            .parent()
            .into_iter()
            .flat_map(|p| {
                [
                    p.join(&beside),
                    p.parent().map(|q| q.join(&beside)).unwrap_or_default(),
                ]
            })
            .find(|p| p.is_file());
        artifact.set_provenance(provenance);
        Ok(artifact)
    }

    /// Attaches (or, with `None`, detaches) the signed provenance, taking the action key
    /// and target it records as annotations.
    pub fn set_provenance(&mut self, provenance: Option<PathBuf>) {
        if let Some(path) = &provenance {
            if let Some((key, target)) = provenance_facts(path) {
                self.annotations.insert(spec::ACTION_KEY.to_string(), key);
                self.annotations.insert(spec::TARGET.to_string(), target);
            }
        }
        self.provenance = provenance;
    }

    /// The directory holding the artifact's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    /// The reference pushed to, pinned to the digest.
    pub reference: String,
    /// The model manifest's digest.
    pub digest: String,
    /// The tag written, if any.
    pub tag: Option<String>,
    /// Blobs uploaded, and blobs the registry already had.
    pub uploaded: usize,
    pub skipped: usize,
    /// Bytes of the uploaded blobs.
    pub uploaded_bytes: u64,
    /// The attached signature and provenance manifests.
    pub referrers: Vec<Referrer>,
    /// Whether the registry indexed them itself (referrers API); otherwise they are
    /// listed in the index tagged `sha256-<hex>` of the model manifest.
    pub referrers_api: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Referrer {
    pub artifact_type: String,
    pub digest: String,
}

/// A blob ready to upload.
enum Blob {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Pushes `artifact` to `reference` (its tag, or `latest` when neither tag nor digest is
/// given; a digest in the reference must be the manifest's).
pub fn push(
    registry: &Registry,
    reference: &Reference,
    artifact: &Artifact,
) -> Result<Pushed, OciError> {
    let staging = tempfile::Builder::new()
        .prefix("mlbuild-oci-layers-")
        .tempdir()
        .map_err(|e| OciError::io("create a temporary directory in", &std::env::temp_dir(), e))?;

    // Everything is computed first: the layers, the config and the manifest.
    let mut blobs: Vec<(String, Blob, u64)> = Vec::new();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, (rel, blake3, executable)) in artifact.files.iter().enumerate() {
        let out = staging.path().join(format!("layer-{i}"));
        let layer = write_layer(&artifact.dir.join(rel), rel, *executable, &out)?;
        layers.push(Descriptor {
            media_type: spec::LAYER_MEDIA_TYPE.to_string(),
            digest: layer.digest.clone(),
            size: layer.size,
            artifact_type: None,
            annotations: BTreeMap::from([
                (spec::TITLE.to_string(), rel.clone()),
                (spec::BLAKE3.to_string(), blake3.clone()),
            ]),
        });
        diff_ids.push(layer.diff_id);
        blobs.push((layer.digest, Blob::File(out), layer.size));
    }
    let mut annotations = artifact.annotations.clone();
    annotations.insert(spec::TITLE.to_string(), artifact.name.clone());
    let config = ImageConfig {
        // Model files run anywhere; runtimes want some platform, and a fixed one keeps
        // the digest the same whichever machine pushes.
        architecture: "amd64".to_string(),
        os: "linux".to_string(),
        config: ContainerConfig {
            labels: annotations.clone(),
        },
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids,
        },
    };
    let config_bytes = serde_json::to_vec(&config).expect("plain data serializes");
    let config_descriptor = descriptor(spec::CONFIG_MEDIA_TYPE, &config_bytes);
    blobs.push((
        config_descriptor.digest.clone(),
        Blob::Bytes(config_bytes),
        config_descriptor.size,
    ));
    let manifest = Manifest {
        schema_version: 2,
        media_type: spec::MANIFEST_MEDIA_TYPE.to_string(),
        artifact_type: None,
        config: config_descriptor,
        layers,
        subject: None,
        annotations,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("plain data serializes");
    let subject = descriptor(spec::MANIFEST_MEDIA_TYPE, &manifest_bytes);
    if let Some(pinned) = &reference.digest {
        if *pinned != subject.digest {
            return Err(OciError::PinnedDigest {
                expected: pinned.clone(),
                actual: subject.digest,
            });
        }
    }

    // The attachments: model.sig and the provenance, each an artifact whose subject is
    // the model manifest.
    let signature = fs::read(artifact.dir.join(SIGNATURE_FILE))
        .map_err(|e| OciError::io("read", &artifact.dir.join(SIGNATURE_FILE), e))?;
    let mut attachments = vec![(
        spec::SIGNATURE_ARTIFACT_TYPE,
        spec::SIGNATURE_ARTIFACT_TYPE,
        SIGNATURE_FILE.to_string(),
        signature,
    )];
    if let Some(path) = &artifact.provenance {
        let bytes = fs::read(path).map_err(|e| OciError::io("read", path, e))?;
        attachments.push((
            spec::PROVENANCE_ARTIFACT_TYPE,
            spec::DSSE_MEDIA_TYPE,
            format!("{}.intoto.jsonl", artifact.name),
            bytes,
        ));
    }
    let empty = spec::empty_config();
    blobs.push((
        empty.digest.clone(),
        Blob::Bytes(spec::EMPTY_JSON.to_vec()),
        empty.size,
    ));
    let mut referrer_manifests = Vec::new();
    for (artifact_type, media_type, title, bytes) in attachments {
        let mut layer = descriptor(media_type, &bytes);
        layer.annotations.insert(spec::TITLE.to_string(), title);
        blobs.push((layer.digest.clone(), Blob::Bytes(bytes), layer.size));
        let referrer = Manifest {
            schema_version: 2,
            media_type: spec::MANIFEST_MEDIA_TYPE.to_string(),
            artifact_type: Some(artifact_type.to_string()),
            config: empty.clone(),
            layers: vec![layer],
            subject: Some(subject.clone()),
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&referrer).expect("plain data serializes");
        let mut d = descriptor(spec::MANIFEST_MEDIA_TYPE, &bytes);
        d.artifact_type = Some(artifact_type.to_string());
        referrer_manifests.push((d, bytes));
    }

    // Then the writes, the tag last.
    let (mut uploaded, mut skipped, mut uploaded_bytes) = (0, 0, 0);
    let mut seen = std::collections::HashSet::new();
    for (digest, blob, size) in &blobs {
        if !seen.insert(digest.clone()) {
            continue;
        }
        let sent = match blob {
            Blob::File(path) => registry.put_blob_file(digest, path)?,
            Blob::Bytes(bytes) => registry.put_blob_bytes(digest, bytes)?,
        };
        if sent {
            uploaded += 1;
            uploaded_bytes += size;
        } else {
            skipped += 1;
        }
    }
    registry.put_manifest(&subject.digest, spec::MANIFEST_MEDIA_TYPE, &manifest_bytes)?;
    let mut referrers_api = true;
    let mut referrers = Vec::new();
    for (d, bytes) in &referrer_manifests {
        let indexed = registry.put_manifest(&d.digest, spec::MANIFEST_MEDIA_TYPE, bytes)?;
        referrers_api &= indexed.is_some();
        referrers.push(Referrer {
            artifact_type: d.artifact_type.clone().unwrap_or_default(),
            digest: d.digest.clone(),
        });
    }
    if !referrers_api {
        let descriptors: Vec<Descriptor> = referrer_manifests.into_iter().map(|(d, _)| d).collect();
        update_referrers_tag(registry, &subject.digest, descriptors)?;
    }
    let tag = reference.tag_or_default().map(str::to_string);
    if let Some(tag) = &tag {
        registry.put_manifest(tag, spec::MANIFEST_MEDIA_TYPE, &manifest_bytes)?;
    }
    Ok(Pushed {
        reference: reference.with_digest(&subject.digest).to_string(),
        digest: subject.digest,
        tag,
        uploaded,
        skipped,
        uploaded_bytes,
        referrers,
        referrers_api,
    })
}

/// The referrers tag schema (distribution spec v1.1) for registries without the
/// referrers API: the index tagged `sha256-<hex>` lists the subject's referrers. Ours
/// are added to what is there, replacing entries with the same digest.
fn update_referrers_tag(
    registry: &Registry,
    subject: &str,
    ours: Vec<Descriptor>,
) -> Result<(), OciError> {
    let tag = spec::referrers_tag(subject);
    let mut index = match registry.get_manifest(&tag)? {
        Some(fetched) if fetched.media_type == spec::INDEX_MEDIA_TYPE => {
            serde_json::from_slice::<Index>(&fetched.bytes).map_err(|e| OciError::Protocol {
                repository: registry.shown().to_string(),
                detail: format!("the referrers index `{tag}` is malformed: {e}"),
            })?
        }
        _ => Index::empty(),
    };
    index
        .manifests
        .retain(|m| !ours.iter().any(|o| o.digest == m.digest));
    index.manifests.extend(ours);
    index.media_type = spec::INDEX_MEDIA_TYPE.to_string();
    let bytes = serde_json::to_vec(&index).expect("plain data serializes");
    registry.put_manifest(&tag, spec::INDEX_MEDIA_TYPE, &bytes)?;
    Ok(())
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: spec::sha256_digest(bytes),
        size: bytes.len() as u64,
        artifact_type: None,
        annotations: BTreeMap::new(),
    }
}

/// A layer written to disk.
struct Layer {
    /// sha256 of the compressed bytes: the blob's name.
    digest: String,
    size: u64,
    /// sha256 of the uncompressed tar: the image config's `diff_ids`.
    diff_id: String,
}

/// A writer that hashes (SHA-256) and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        hasher: sha2::Sha256::new(),
        len: 0,
    }
}

/// Writes the layer of one file: a tar holding `models/<rel>` (mode 0644 or 0755, owner
/// 0, mtime 0: the same bytes on every machine), zstd-compressed, streamed from the file.
fn write_layer(src: &Path, rel: &str, executable: bool, out: &Path) -> Result<Layer, OciError> {
    let write_err = |e: io::Error| OciError::io("write", out, e);
    let file = File::open(src).map_err(|e| OciError::io("read", src, e))?;
    let size = file
        .metadata()
        .map_err(|e| OciError::io("read", src, e))?
        .len();
    let sink = hashing(File::create_new(out).map_err(write_err)?);
    let mut encoder =
        zstd::stream::write::Encoder::new(sink, LAYER_ZSTD_LEVEL).map_err(write_err)?;
    encoder.include_checksum(true).map_err(write_err)?;
    let mut tar = tar::Builder::new(hashing(encoder));
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(if executable { 0o755 } else { 0o644 });
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(
        &mut header,
        format!("{}/{rel}", spec::MODEL_ROOT),
        file.take_exact(size),
    )
    .map_err(|e| OciError::io("read", src, e))?;
    let uncompressed = tar.into_inner().map_err(write_err)?;
    let diff_id = format!("sha256:{}", hex::encode(uncompressed.hasher.finalize()));
    let mut compressed = uncompressed.inner.finish().map_err(write_err)?;
    compressed.flush().map_err(write_err)?;
    Ok(Layer {
        digest: format!("sha256:{}", hex::encode(compressed.hasher.finalize())),
        size: compressed.len,
        diff_id,
    })
}

/// Reads exactly `len` bytes, or fails: a file that changed size while it was archived
/// must not produce a layer that disagrees with its tar header.
trait TakeExact: io::Read + Sized {
    fn take_exact(self, len: u64) -> Exact<Self> {
        Exact {
            inner: self,
            left: len,
        }
    }
}

impl<R: io::Read> TakeExact for R {}

struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: io::Read> io::Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being pushed",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn is_tar_zst(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".tar.zst") || n.ends_with(".tzst"))
}

fn blake3_file(path: &Path) -> Result<String, OciError> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_mmap(path)
        .map_err(|e| OciError::io("read", path, e))?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// The key id `model.sig` names (informative: a pull verifies with the key it is given).
fn signer_key_id(path: &Path) -> Option<String> {
    let bundle: mlbuild_sign::bundle::Bundle =
        serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    let keyid = bundle.dsse_envelope.signatures.first()?.keyid.clone();
    (!keyid.is_empty()).then_some(keyid)
}

/// The action key and target label a provenance file records.
fn provenance_facts(path: &Path) -> Option<(String, String)> {
    let envelope: mlbuild_sign::dsse::Envelope =
        serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    let statement: serde_json::Value = serde_json::from_slice(&envelope.payload).ok()?;
    let definition = statement.get("predicate")?.get("buildDefinition")?;
    let key = definition
        .get("internalParameters")?
        .get("actionKey")?
        .as_str()?;
    let target = definition
        .get("externalParameters")?
        .get("target")?
        .as_str()?;
    Some((key.to_string(), target.to_string()))
}
