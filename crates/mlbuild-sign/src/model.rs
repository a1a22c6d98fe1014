//! Signing and verifying a directory in the OpenSSF `model_signing` format.
//!
//! A signed artifact is a directory plus `model.sig`: a sigstore bundle whose DSSE envelope
//! holds an in-toto statement of predicate type [`PREDICATE_TYPE`] listing the SHA-256 of
//! every file (the "files" serialization). Using that format, rather than one of our own,
//! lets anyone check an mlbuild artifact with `model_signing verify key`, and lets mlbuild
//! check models signed by that tool. Entry points: [`sign_dir`], [`verify_dir`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::bundle::{public_key_hint, Bundle, BUNDLE_MEDIA_TYPE};
use crate::dsse::Envelope;
use crate::intoto::{ResourceDescriptor, Statement, PAYLOAD_TYPE, STATEMENT_TYPE};
use crate::{PrivateKey, PublicKey, SignError};

/// The predicate type of `model_signing` v1.0 signatures.
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";

/// The conventional name of the signature file, inside the signed directory.
pub const SIGNATURE_FILE: &str = "model.sig";

/// Paths `model_signing` leaves out of every signature (and ignores when verifying, whatever
/// the signature says), so we must leave them out too or the tool would report them
/// missing. They are recorded in the signature's `ignore_paths`.
pub const GIT_PATHS: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];

/// The predicate of a model signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPredicate {
    pub serialization: Serialization,
    pub resources: Vec<ModelResource>,
}

/// How the directory was turned into resources; we write and read `method = "files"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serialization {
    pub method: String,
    pub hash_type: String,
    pub allow_symlinks: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_paths: Vec<String>,
}

/// One file of a signed directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelResource {
    /// Relative POSIX path.
    pub name: String,
    pub algorithm: String,
    /// Lowercase hex.
    pub digest: String,
}

/// What a successful [`verify_dir`] established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedModel {
    /// The model name recorded at signing (the signed directory's name; informative only).
    pub name: String,
    /// [`PublicKey::key_id`] of the key the signature verified with.
    pub key_id: String,
    /// Every signed file, sorted as in the signature, with its SHA-256.
    pub files: Vec<ModelResource>,
    /// Paths the signature leaves out (the signature file, git metadata).
    pub ignored_paths: Vec<String>,
}

/// Why a directory failed verification.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum VerifyError {
    /// The signature itself is unreadable, malformed, or not made by the given key.
    #[error("`{}`: {source}", .signature.display())]
    Signature {
        signature: PathBuf,
        #[source]
        source: SignError,
    },
    /// The signature is good but the directory's files do not match it.
    #[error("`{}` does not match its signature: {}", .dir.display(), problem_summary(.problems))]
    Files {
        dir: PathBuf,
        problems: Vec<FileProblem>,
    },
}

/// One file that does not match the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum FileProblem {
    /// The file's content changed after signing.
    #[error("`{path}`: modified ({algorithm} signed {expected}, found {actual})")]
    Modified {
        path: String,
        algorithm: String,
        expected: String,
        actual: String,
    },
    /// A signed file is gone.
    #[error("`{path}`: missing (signed, but not in the directory)")]
    Missing { path: String },
    /// A file that the signature does not cover.
    #[error("`{path}`: extra file (not covered by the signature)")]
    Extra { path: String },
    /// Something other than a regular file or directory.
    #[error("`{path}`: {what}, which a signed directory may not hold")]
    Unsupported { path: String, what: &'static str },
    /// The file could not be read.
    #[error("`{path}`: cannot be read: {error}")]
    Unreadable { path: String, error: String },
}

impl FileProblem {
    /// The relative path of the file concerned.
    pub fn path(&self) -> &str {
        match self {
            FileProblem::Modified { path, .. }
            | FileProblem::Missing { path }
            | FileProblem::Extra { path }
            | FileProblem::Unsupported { path, .. }
            | FileProblem::Unreadable { path, .. } => path,
        }
    }
}

fn problem_summary(problems: &[FileProblem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => format!("{} files differ", many.len()),
    }
}

/// Signs every regular file under `dir` with `key` and writes the bundle to
/// `signature_path` (normally `dir/model.sig`).
///
/// Files are hashed with SHA-256 and listed sorted by path, so the same directory and key
/// always give the same bytes. The signature file itself and [`GIT_PATHS`] are left out,
/// as `model_signing` does; symbolic links and special files are refused. An existing
/// signature file is replaced atomically.
pub fn sign_dir(dir: &Path, key: &PrivateKey, signature_path: &Path) -> Result<(), SignError> {
    let bytes = signature_bytes(dir, key, signature_path)?;
    write_atomically(signature_path, &bytes)
}

/// The bytes [`sign_dir`] writes, for callers that store the signature elsewhere.
pub fn signature_bytes(
    dir: &Path,
    key: &PrivateKey,
    signature_path: &Path,
) -> Result<Vec<u8>, SignError> {
    let root = fs::canonicalize(dir).map_err(|e| SignError::io("open directory", dir, e))?;
    if !root.is_dir() {
        return Err(SignError::io(
            "sign",
            dir,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let mut ignore: Vec<Vec<String>> = GIT_PATHS.iter().map(|p| vec![(*p).to_owned()]).collect();
    if let Some(inside) = relative_signature_path(&root, signature_path) {
        ignore.push(inside);
    }
    let resources = hash_tree(&root, &ignore)?
        .into_iter()
        .map(|(name, digest)| ModelResource {
            name,
            algorithm: "sha256".into(),
            digest,
        })
        .collect::<Vec<_>>();

    let mut ignore_paths: Vec<String> = ignore.iter().map(|p| p.join("/")).collect();
    ignore_paths.sort();
    ignore_paths.dedup();
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let statement = Statement::new(
        vec![ResourceDescriptor::named(
            name,
            "sha256",
            root_digest(&resources)?,
        )],
        PREDICATE_TYPE,
        ModelPredicate {
            serialization: Serialization {
                method: "files".into(),
                hash_type: "sha256".into(),
                allow_symlinks: false,
                ignore_paths,
            },
            resources,
        },
    );
    let payload = serde_json::to_vec(&statement).expect("statements always serialize");
    let envelope = Envelope::sign(PAYLOAD_TYPE, payload, key);
    let bundle = Bundle::new(envelope, &key.public_key());
    let mut bytes = serde_json::to_vec(&bundle).expect("bundles always serialize");
    bytes.push(b'\n');
    Ok(bytes)
}

/// Every regular file under `dir` except `ignore`d paths (component lists), as relative
/// POSIX path and SHA-256 hex, sorted like `model_signing` sorts them. Symbolic links and
/// special files are refused; files are hashed in parallel.
pub(crate) fn hash_tree(
    dir: &Path,
    ignore: &[Vec<String>],
) -> Result<Vec<(String, String)>, SignError> {
    let walk = walk(dir, ignore);
    if let Some((path, what)) = walk.unsupported.into_iter().next() {
        return Err(SignError::UnsupportedFile {
            path: dir.join(path),
            what,
        });
    }
    walk.files
        .into_par_iter()
        .map(|rel| {
            let path = dir.join(&rel);
            match sha256_file(&path) {
                Ok(digest) => Ok((rel, digest)),
                Err(e) => Err(SignError::io("read", path, e)),
            }
        })
        .collect()
}

/// Checks that `signature_path` is a `model_signing` signature made by `key` and that
/// `dir` holds exactly the signed files with the signed content.
///
/// Every problem is collected, not just the first: each modified, missing, extra or
/// unsupported file is reported by its relative path. Accepts signatures written by
/// [`sign_dir`] and by `model_signing sign key` (files serialization, SHA-256).
pub fn verify_dir(
    dir: &Path,
    signature_path: &Path,
    key: &PublicKey,
) -> Result<VerifiedModel, VerifyError> {
    let signature_error = |source: SignError| VerifyError::Signature {
        signature: signature_path.to_owned(),
        source,
    };
    let (statement, predicate) = read_signature(signature_path, key).map_err(signature_error)?;
    let root = fs::canonicalize(dir)
        .map_err(|e| SignError::io("open directory", dir, e))
        .map_err(signature_error)?;

    let mut ignore = Vec::new();
    for path in &predicate.serialization.ignore_paths {
        match normal_components(Path::new(path)) {
            Some(components) if !components.is_empty() => ignore.push(components),
            Some(_) => {
                return Err(signature_error(format_error(
                    signature_path,
                    "`ignore_paths` names the whole directory, so nothing would be checked",
                )))
            }
            // Paths outside the directory ignore nothing, as in `model_signing`.
            None => {}
        }
    }
    if let Some(inside) = relative_signature_path(&root, signature_path) {
        ignore.push(inside);
    }

    let walk = walk(&root, &ignore);
    let mut problems: Vec<FileProblem> = walk
        .unsupported
        .into_iter()
        .map(|(path, what)| FileProblem::Unsupported { path, what })
        .collect();
    let expected: BTreeMap<&str, &ModelResource> = predicate
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r))
        .collect();
    let present: BTreeSet<&str> = walk.files.iter().map(String::as_str).collect();
    let checked: Vec<FileProblem> = walk
        .files
        .par_iter()
        .filter_map(|rel| match expected.get(rel.as_str()) {
            None => Some(FileProblem::Extra { path: rel.clone() }),
            Some(resource) => match sha256_file(&root.join(rel)) {
                Ok(actual) if actual == resource.digest => None,
                Ok(actual) => Some(FileProblem::Modified {
                    path: rel.clone(),
                    algorithm: resource.algorithm.clone(),
                    expected: resource.digest.clone(),
                    actual,
                }),
                Err(e) => Some(FileProblem::Unreadable {
                    path: rel.clone(),
                    error: e.to_string(),
                }),
            },
        })
        .collect();
    problems.extend(checked);
    problems.extend(
        expected
            .keys()
            .filter(|name| !present.contains(*name))
            .map(|name| FileProblem::Missing {
                path: (*name).to_owned(),
            }),
    );
    if !problems.is_empty() {
        problems.sort_by(|a, b| path_order(a.path(), b.path()));
        return Err(VerifyError::Files {
            dir: dir.to_owned(),
            problems,
        });
    }
    Ok(VerifiedModel {
        name: statement
            .subject
            .first()
            .and_then(|s| s.name.clone())
            .unwrap_or_default(),
        key_id: key.key_id(),
        files: predicate.resources,
        ignored_paths: predicate.serialization.ignore_paths,
    })
}

/// Reads and authenticates a signature file, returning the checked statement.
fn read_signature(
    signature_path: &Path,
    key: &PublicKey,
) -> Result<(Statement<serde_json::Value>, ModelPredicate), SignError> {
    let text =
        fs::read(signature_path).map_err(|e| SignError::io("read signature", signature_path, e))?;
    let bundle: Bundle = serde_json::from_slice(&text).map_err(|e| {
        format_error(
            signature_path,
            &format!("not a sigstore bundle with a DSSE envelope ({e})"),
        )
    })?;
    if bundle.media_type != BUNDLE_MEDIA_TYPE {
        return Err(format_error(
            signature_path,
            &format!(
                "bundle media type is `{}`, expected `{BUNDLE_MEDIA_TYPE}`",
                bundle.media_type
            ),
        ));
    }
    // The hint names the signing key; a mismatch is the common "wrong key" case and deserves
    // a clearer message than a failed signature check.
    if let Some(hint) = bundle.key_hint() {
        if hint != public_key_hint(key) {
            let given = key.key_id();
            // The hint is a hash of the signer's PEM text, which no tool prints; our own
            // envelopes also record the signer's key id, the name `mlbuild key generate`
            // prints. It is only a claim, so it is shown only when it looks like one.
            let signed_with = bundle
                .dsse_envelope
                .signatures
                .iter()
                .map(|s| s.keyid.as_str())
                .find(|id| is_key_id(id) && *id != given)
                .map(str::to_owned);
            return Err(SignError::KeyMismatch { signed_with, given });
        }
    }
    let payload = bundle.dsse_envelope.verify(key)?;
    if bundle.dsse_envelope.payload_type != PAYLOAD_TYPE {
        return Err(format_error(
            signature_path,
            &format!(
                "payload type is `{}`, expected `{PAYLOAD_TYPE}`",
                bundle.dsse_envelope.payload_type
            ),
        ));
    }
    let statement: Statement<serde_json::Value> = serde_json::from_slice(payload).map_err(|e| {
        format_error(
            signature_path,
            &format!("signed payload is not an in-toto statement ({e})"),
        )
    })?;
    if statement.type_ != STATEMENT_TYPE {
        return Err(format_error(
            signature_path,
            &format!(
                "statement type is `{}`, expected `{STATEMENT_TYPE}`",
                statement.type_
            ),
        ));
    }
    if statement.predicate_type != PREDICATE_TYPE {
        return Err(format_error(
            signature_path,
            &format!(
                "predicate type is `{}`; only `{PREDICATE_TYPE}` is supported",
                statement.predicate_type
            ),
        ));
    }
    let predicate: ModelPredicate = serde_json::from_value(statement.predicate.clone())
        .map_err(|e| format_error(signature_path, &format!("malformed predicate ({e})")))?;
    let serialization = &predicate.serialization;
    if serialization.method != "files" || serialization.hash_type != "sha256" {
        return Err(format_error(
            signature_path,
            &format!(
                "serialization `{}` with `{}` is not supported; sign with the default (files, sha256)",
                serialization.method, serialization.hash_type
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for resource in &predicate.resources {
        if resource.algorithm != "sha256" {
            return Err(format_error(
                signature_path,
                &format!(
                    "resource `{}` uses `{}`, expected `sha256`",
                    resource.name, resource.algorithm
                ),
            ));
        }
        if !seen.insert(resource.name.as_str()) {
            return Err(format_error(
                signature_path,
                &format!("resource `{}` is listed twice", resource.name),
            ));
        }
    }
    // The subject digest commits to the resource list; `model_signing` checks it too.
    let expected_root = statement
        .subject
        .first()
        .and_then(|s| s.digest.get("sha256"))
        .ok_or_else(|| {
            format_error(
                signature_path,
                "the statement has no subject with a sha256 digest",
            )
        })?;
    if *expected_root != root_digest(&predicate.resources)? {
        return Err(format_error(
            signature_path,
            "the subject digest does not match the listed resources",
        ));
    }
    Ok((statement, predicate))
}

/// Whether `id` has the shape of a [`PublicKey::key_id`]: 64 lowercase hex digits.
fn is_key_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn format_error(path: &Path, reason: &str) -> SignError {
    SignError::Format {
        origin: format!("`{}`", path.display()),
        reason: reason.to_owned(),
    }
}

/// SHA-256 over the concatenated raw digests, in listed order: the statement's subject.
fn root_digest(resources: &[ModelResource]) -> Result<String, SignError> {
    let mut hasher = Sha256::new();
    for resource in resources {
        let raw = hex::decode(&resource.digest).map_err(|_| SignError::Format {
            origin: "model signature".into(),
            reason: format!("digest of `{}` is not hex", resource.name),
        })?;
        hasher.update(&raw);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The SHA-256 of a file's content, hex, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What a directory holds, relative to its root, minus ignored paths.
struct Walk {
    /// Regular files, as POSIX paths, sorted like `model_signing` sorts them.
    files: Vec<String>,
    /// Symbolic links, special files and unreadable or non-UTF-8 entries.
    unsupported: Vec<(String, &'static str)>,
}

fn walk(root: &Path, ignore: &[Vec<String>]) -> Walk {
    let mut out = Walk {
        files: Vec::new(),
        unsupported: Vec::new(),
    };
    let mut stack: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let path = dir.iter().fold(root.to_owned(), |p, c| p.join(c));
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(_) => {
                out.unsupported
                    .push((dir.join("/"), "an unreadable directory"));
                continue;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else {
                out.unsupported
                    .push((dir.join("/"), "an unreadable directory"));
                continue;
            };
            let mut rel = dir.clone();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                let lossy = entry.file_name().to_string_lossy().into_owned();
                rel.push(lossy);
                out.unsupported
                    .push((rel.join("/"), "a name that is not UTF-8"));
                continue;
            };
            rel.push(name);
            if ignore.iter().any(|prefix| rel.starts_with(prefix)) {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(rel),
                Ok(t) if t.is_file() => out.files.push(rel.join("/")),
                Ok(t) if t.is_symlink() => out.unsupported.push((rel.join("/"), "a symbolic link")),
                Ok(_) => out.unsupported.push((rel.join("/"), "a special file")),
                Err(_) => out.unsupported.push((rel.join("/"), "unreadable")),
            }
        }
    }
    out.files.sort_by(|a, b| path_order(a, b));
    out.unsupported.sort_by(|a, b| path_order(&a.0, &b.0));
    out
}

/// Python's `PurePosixPath` order, which `model_signing` sorts resources by: component by
/// component, so `a/b` sorts before `a-c` although `-` is before `/` in bytes.
fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// The signature file's path relative to `root`, if it lies inside it.
fn relative_signature_path(root: &Path, signature_path: &Path) -> Option<Vec<String>> {
    let file_name = signature_path.file_name()?;
    let parent = match signature_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = fs::canonicalize(parent).ok()?;
    let full = parent.join(file_name);
    let rel = full.strip_prefix(root).ok()?;
    normal_components(rel).filter(|c| !c.is_empty())
}

/// The components of a relative path, `None` if it is absolute or climbs out with `..`.
fn normal_components(path: &Path) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SignError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| SignError::io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        SignError::io("write", path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("m/sub")).unwrap();
        fs::write(root.join("m/model.json"), b"{\"w\": [1, 2]}").unwrap();
        fs::write(root.join("m/sub/b.bin"), b"\x00\x01").unwrap();
        fs::write(root.join("m/a-c"), b"dash").unwrap();
        fs::create_dir_all(root.join("m/a")).unwrap();
        fs::write(root.join("m/a/b"), b"slash").unwrap();
        dir
    }

    fn sign(dir: &Path, key: &PrivateKey) -> PathBuf {
        let sig = dir.join(SIGNATURE_FILE);
        sign_dir(dir, key, &sig).unwrap();
        sig
    }

    fn problems(err: VerifyError) -> Vec<String> {
        match err {
            VerifyError::Files { problems, .. } => problems.iter().map(|p| p.to_string()).collect(),
            other => panic!("expected file problems, got {other}"),
        }
    }

    #[test]
    fn signed_dir_verifies_and_lists_files_in_python_path_order() {
        let tmp = model();
        let dir = tmp.path().join("m");
        let key = PrivateKey::generate();
        let sig = sign(&dir, &key);
        let verified = verify_dir(&dir, &sig, &key.public_key()).unwrap();
        let names: Vec<&str> = verified.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a/b", "a-c", "model.json", "sub/b.bin"]);
        assert_eq!(verified.name, "m");
        assert_eq!(
            verified.files[1].digest,
            hex::encode(Sha256::digest(b"dash"))
        );
        assert!(verified.ignored_paths.contains(&"model.sig".to_owned()));
    }

    #[test]
    fn signing_is_deterministic() {
        let tmp = model();
        let dir = tmp.path().join("m");
        let key = PrivateKey::generate();
        let first = fs::read(sign(&dir, &key)).unwrap();
        // Re-signing with the old signature present gives the same bytes: it is ignored.
        let second = fs::read(sign(&dir, &key)).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn every_problem_is_reported_by_path() {
        let tmp = model();
        let dir = tmp.path().join("m");
        let key = PrivateKey::generate();
        let sig = sign(&dir, &key);
        fs::write(dir.join("model.json"), b"{\"w\": [1, 3]}").unwrap();
        fs::remove_file(dir.join("sub/b.bin")).unwrap();
        fs::write(dir.join("sub/new.txt"), b"new").unwrap();
        let found = problems(verify_dir(&dir, &sig, &key.public_key()).unwrap_err());
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with("`model.json`: modified (sha256 signed "),
            "{found:?}"
        );
        assert_eq!(
            found[1],
            "`sub/b.bin`: missing (signed, but not in the directory)"
        );
        assert_eq!(
            found[2],
            "`sub/new.txt`: extra file (not covered by the signature)"
        );
    }

    #[test]
    fn wrong_key_is_rejected() {
        let tmp = model();
        let dir = tmp.path().join("m");
        let signer = PrivateKey::generate();
        let sig = sign(&dir, &signer);
        let other = PrivateKey::generate().public_key();
        let err = verify_dir(&dir, &sig, &other).unwrap_err();
        let VerifyError::Signature { source, .. } = &err else {
            panic!("{err}");
        };
        assert!(matches!(source, SignError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("model.sig"), "{err}");
        // Both keys by the id `mlbuild key generate` prints, not by `model_signing`'s hint.
        assert_eq!(
            source.to_string(),
            format!(
                "signed with another key: the signature names key `{}`, the given public key is `{}`",
                signer.public_key().key_id(),
                other.key_id()
            )
        );
    }

    #[test]
    fn forged_payload_fails_the_signature_even_without_a_hint() {
        let tmp = model();
        let dir = tmp.path().join("m");
        let key = PrivateKey::generate();
        let sig = sign(&dir, &key);
        let mut bundle: Bundle = serde_json::from_slice(&fs::read(&sig).unwrap()).unwrap();
        bundle.verification_material.public_key = None;
        let text = String::from_utf8(bundle.dsse_envelope.payload.clone()).unwrap();
        bundle.dsse_envelope.payload = text.replace("\"a-c\"", "\"a-d\"").into_bytes();
        fs::write(&sig, serde_json::to_vec(&bundle).unwrap()).unwrap();
        let err = verify_dir(&dir, &sig, &key.public_key()).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Signature {
                    source: SignError::BadSignature { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn symlinks_are_refused_when_signing_and_reported_when_verifying() {
        let tmp = model();
        let dir = tmp.path().join("m");
        let key = PrivateKey::generate();
        let sig = sign(&dir, &key);
        std::os::unix::fs::symlink("model.json", dir.join("link")).unwrap();
        let found = problems(verify_dir(&dir, &sig, &key.public_key()).unwrap_err());
        assert_eq!(
            found,
            ["`link`: a symbolic link, which a signed directory may not hold"]
        );
        let err = sign_dir(&dir, &key, &sig).unwrap_err().to_string();
        assert!(
            err.contains("link") && err.contains("symbolic link"),
            "{err}"
        );
    }

    #[test]
    fn git_paths_are_left_out_like_model_signing_does() {
        let tmp = model();
        let dir = tmp.path().join("m");
        fs::write(dir.join(".gitattributes"), b"*.bin lfs").unwrap();
        let key = PrivateKey::generate();
        let sig = sign(&dir, &key);
        let verified = verify_dir(&dir, &sig, &key.public_key()).unwrap();
        assert!(verified.files.iter().all(|f| f.name != ".gitattributes"));
        assert!(verified
            .ignored_paths
            .contains(&".gitattributes".to_owned()));
    }

    #[test]
    fn signature_outside_the_dir_covers_every_file() {
        let tmp = model();
        let dir = tmp.path().join("m");
        let key = PrivateKey::generate();
        let sig = tmp.path().join("m.sig");
        sign_dir(&dir, &key, &sig).unwrap();
        let verified = verify_dir(&dir, &sig, &key.public_key()).unwrap();
        assert_eq!(verified.files.len(), 4);
        assert!(!verified.ignored_paths.contains(&"model.sig".to_owned()));
        // A model.sig inside would now be an extra file.
        fs::write(dir.join("model.sig"), b"x").unwrap();
        let found = problems(verify_dir(&dir, &sig, &key.public_key()).unwrap_err());
        assert_eq!(
            found,
            ["`model.sig`: extra file (not covered by the signature)"]
        );
    }

    #[test]
    fn garbage_signature_is_a_clear_error() {
        let tmp = model();
        let dir = tmp.path().join("m");
        let sig = dir.join("model.sig");
        fs::write(&sig, b"not json").unwrap();
        let err = verify_dir(&dir, &sig, &PrivateKey::generate().public_key())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.sig") && err.contains("not a sigstore bundle"),
            "{err}"
        );
        let err = verify_dir(
            &dir,
            &dir.join("absent.sig"),
            &PrivateKey::generate().public_key(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("absent.sig"), "{err}");
    }
}
