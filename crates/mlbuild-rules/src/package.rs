//! The `package` kind: assembles declared files into a signed, reproducible artifact.
//!
//! `mlbuild rule package --name NAME --out DIR --file DEST=SRC...` copies each source to
//! `DIR/NAME/DEST`, writes `DIR/NAME/manifest.json` (every file's size, SHA-256 and BLAKE3,
//! nothing run-dependent), signs the directory into `DIR/NAME/model.sig` when a key is
//! given, and archives the directory as `DIR/NAME.tar.zst` with [`crate::archive`]. The same
//! inputs therefore give the same bytes on every machine, which is what lets the cache share
//! artifacts and `mlbuild audit` prove them reproducible. Main types: [`PackageSpec`],
//! [`Manifest`], [`PackageError`].

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::archive::{self, ArchiveError};

/// The manifest's file name, at the artifact root.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The signature's file name, at the artifact root (the OpenSSF `model_signing` name).
pub const SIGNATURE_FILE: &str = "model.sig";
/// The version of the manifest format; bumped on any incompatible change.
pub const MANIFEST_VERSION: u32 = 1;
/// The environment variable holding the signing key's PEM text (a secret: never written
/// to disk, never in the key or logs).
pub const SIGNING_KEY_ENV: &str = "MLBUILD_SIGNING_KEY_PEM";

/// An error of the package rule; [`PackageError::is_bad_input`] picks the exit code.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PackageError {
    /// Malformed command line.
    #[error("{0}")]
    #[diagnostic(help(
        "usage: mlbuild rule package --name NAME --out DIR --file DEST=SRC [--file DEST=SRC]..."
    ))]
    Usage(String),
    /// The artifact name is not a plain file name.
    #[error("invalid artifact name `{name}`: {reason}")]
    BadName { name: String, reason: &'static str },
    /// A destination path inside the artifact is not allowed.
    #[error("invalid destination `{dest}`: {reason}")]
    BadDest { dest: String, reason: String },
    /// A declared source does not exist.
    #[error("source `{}` of `{dest}` does not exist", src.display())]
    MissingSource { dest: String, src: PathBuf },
    /// A source is (or contains) a symlink or special file.
    #[error("source `{}` is {what}; artifacts hold only regular files and directories", path.display())]
    UnsupportedSource { path: PathBuf, what: &'static str },
    /// `SOURCE_DATE_EPOCH` is not a number of seconds.
    #[error("`SOURCE_DATE_EPOCH` is `{value}`, not a non-negative integer")]
    BadEpoch { value: String },
    /// The signing key in the environment is not usable.
    #[error("`{SIGNING_KEY_ENV}` does not hold a usable signing key")]
    BadKey {
        #[source]
        source: mlbuild_sign::SignError,
    },
    /// The artifact directory already exists (outputs must start empty).
    #[error("`{}` already exists", path.display())]
    Exists { path: PathBuf },
    /// Reading a source or writing the artifact failed.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the archive failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Archive(#[from] ArchiveError),
    /// `manifest.json` is missing, unreadable or not in the manifest format.
    #[error("`{}` is not a valid artifact manifest: {reason}", path.display())]
    BadManifest { path: PathBuf, reason: String },
    /// An artifact directory does not hold exactly what its manifest lists.
    #[error("`{}` does not match its manifest: {}", dir.display(), summary(problems))]
    ManifestMismatch {
        dir: PathBuf,
        problems: Vec<ManifestProblem>,
    },
    /// Signing failed.
    #[error("cannot sign `{}`", dir.display())]
    Sign {
        dir: PathBuf,
        #[source]
        source: mlbuild_sign::SignError,
    },
}

impl PackageError {
    /// Whether the error is the user's input (exit code 2) rather than a failure while
    /// writing the artifact (exit code 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            PackageError::Usage(_)
                | PackageError::BadName { .. }
                | PackageError::BadDest { .. }
                | PackageError::MissingSource { .. }
                | PackageError::UnsupportedSource { .. }
                | PackageError::BadEpoch { .. }
                | PackageError::BadKey { .. }
                | PackageError::Exists { .. }
        )
    }
}

/// A difference between an artifact directory and its `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestProblem {
    /// Listed in the manifest, absent from the directory.
    Missing { path: String },
    /// In the directory, not listed.
    Extra { path: String },
    /// Size or digest differs from the manifest.
    Modified { path: String },
    /// The execute bit differs from the manifest.
    Mode { path: String },
}

impl ManifestProblem {
    /// The relative path of the file concerned.
    pub fn path(&self) -> &str {
        match self {
            ManifestProblem::Missing { path }
            | ManifestProblem::Extra { path }
            | ManifestProblem::Modified { path }
            | ManifestProblem::Mode { path } => path,
        }
    }
}

impl std::fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestProblem::Missing { path } => write!(f, "`{path}` is missing"),
            ManifestProblem::Extra { path } => write!(f, "`{path}` is not in the manifest"),
            ManifestProblem::Modified { path } => write!(f, "`{path}` was modified"),
            ManifestProblem::Mode { path } => write!(f, "`{path}` changed its execute bit"),
        }
    }
}

fn summary(problems: &[ManifestProblem]) -> String {
    match problems {
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
        [] => "no problems".into(),
    }
}

/// Reads `dir/manifest.json` and checks that `dir` holds exactly the files it lists, with
/// the listed sizes, digests and execute bits (`model.sig` aside). Every difference is
/// collected in [`PackageError::ManifestMismatch`], in path order. This is the integrity
/// check of an unsigned artifact; a signature check (which also covers the manifest) is
/// [`mlbuild_sign::model::verify_dir`].
pub fn check_manifest(dir: &Path) -> Result<Manifest, PackageError> {
    let path = dir.join(MANIFEST_FILE);
    let bad = |reason: String| PackageError::BadManifest {
        path: path.clone(),
        reason,
    };
    let text = fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let recorded: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if recorded.manifest_version != MANIFEST_VERSION {
        return Err(bad(format!(
            "manifest_version {} is not supported (expected {MANIFEST_VERSION})",
            recorded.manifest_version
        )));
    }
    let actual = Manifest::of_dir(&recorded.name, dir)?;
    let want: BTreeMap<&str, &ManifestFile> = recorded
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let have: BTreeMap<&str, &ManifestFile> =
        actual.files.iter().map(|f| (f.path.as_str(), f)).collect();
    if want.len() != recorded.files.len() {
        return Err(bad("a path is listed twice".into()));
    }
    let mut problems = Vec::new();
    let paths: std::collections::BTreeSet<&str> = want.keys().chain(have.keys()).copied().collect();
    for p in paths {
        let path = p.to_string();
        match (want.get(p), have.get(p)) {
            (Some(_), None) => problems.push(ManifestProblem::Missing { path }),
            (None, Some(_)) => problems.push(ManifestProblem::Extra { path }),
            (Some(w), Some(h)) => {
                if (w.size, &w.sha256, &w.blake3) != (h.size, &h.sha256, &h.blake3) {
                    problems.push(ManifestProblem::Modified { path });
                } else if w.executable != h.executable {
                    problems.push(ManifestProblem::Mode { path });
                }
            }
            (None, None) => unreachable!("path from one of the two maps"),
        }
    }
    if problems.is_empty() {
        Ok(recorded)
    } else {
        Err(PackageError::ManifestMismatch {
            dir: dir.to_path_buf(),
            problems,
        })
    }
}

/// `manifest.json`: every file of the artifact except the manifest and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub manifest_version: u32,
    /// The artifact (target) name.
    pub name: String,
    /// Sorted by path (byte order).
    pub files: Vec<ManifestFile>,
}

/// One file of the artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Relative POSIX path inside the artifact.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Whether the file is executable (mode 0755 in the archive, else 0644).
    pub executable: bool,
    /// Lowercase hex SHA-256 (what `sha256sum` and `model_signing` compute).
    pub sha256: String,
    /// Lowercase hex BLAKE3 (what the mlbuild store keys blobs by).
    pub blake3: String,
}

impl Manifest {
    /// The JSON text written to `manifest.json`: pretty-printed, fixed field order, sorted
    /// files, trailing newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("manifest serializes");
        text.push('\n');
        text
    }

    /// Recomputes the manifest of an artifact directory (every regular file except the
    /// root's `manifest.json` and `model.sig`), e.g. to compare with the recorded one.
    pub fn of_dir(name: &str, dir: &Path) -> Result<Manifest, PackageError> {
        let mut files = Vec::new();
        list_files(dir, "", &mut files)?;
        let mut entries = Vec::new();
        for (rel, path, executable) in files {
            if rel == MANIFEST_FILE || rel == SIGNATURE_FILE {
                continue;
            }
            let file = fs::File::open(&path).map_err(io_err("read", &path))?;
            let (size, sha256, blake3) =
                hash_copy(file, io::sink()).map_err(io_err("read", &path))?;
            entries.push(ManifestFile {
                path: rel,
                size,
                executable,
                sha256,
                blake3,
            });
        }
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        Ok(Manifest {
            manifest_version: MANIFEST_VERSION,
            name: name.to_string(),
            files: entries,
        })
    }
}

/// What to package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    /// Artifact name: the directory `out/<name>/` and the archive `out/<name>.tar.zst`.
    pub name: String,
    /// The action's output directory.
    pub out: PathBuf,
    /// Destination path inside the artifact -> source path (a file or a directory).
    pub files: BTreeMap<String, PathBuf>,
    /// mtime of every archive entry.
    pub source_date_epoch: u64,
}

/// What [`package`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packaged {
    pub dir: PathBuf,
    pub archive: PathBuf,
    pub manifest: Manifest,
    pub signed: bool,
}

/// Assembles, signs (when `key` is given) and archives the artifact described by `spec`.
pub fn package(
    spec: &PackageSpec,
    key: Option<&mlbuild_sign::PrivateKey>,
) -> Result<Packaged, PackageError> {
    check_name(&spec.name)?;
    if spec.files.is_empty() {
        return Err(PackageError::Usage(
            "no `--file` given: nothing to package".into(),
        ));
    }
    let entries = check_files(&spec.files)?;

    let dir = spec.out.join(&spec.name);
    if fs::symlink_metadata(&dir).is_ok() {
        return Err(PackageError::Exists { path: dir });
    }
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;

    let mut files = Vec::new();
    for (dest, src) in &entries {
        copy_source(src, &dir, dest, &mut files)?;
    }
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        name: spec.name.clone(),
        files,
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    fs::write(&manifest_path, manifest.to_json()).map_err(io_err("write", &manifest_path))?;
    set_mode(&manifest_path, false)?;

    if let Some(key) = key {
        sign(&dir, key)?;
    }

    let archive = spec.out.join(format!("{}.tar.zst", spec.name));
    let tmp = spec.out.join(format!(".{}.tar.zst.tmp", spec.name));
    let file = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    archive::write_tar_zst(&dir, &mut writer, spec.source_date_epoch)?;
    let file = writer
        .into_inner()
        .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err("write", &tmp))?;
    drop(file);
    // Never a half-written archive under the real name.
    fs::rename(&tmp, &archive).map_err(io_err("write", &archive))?;

    Ok(Packaged {
        dir,
        archive,
        manifest,
        signed: key.is_some(),
    })
}

/// Signs `dir` into `dir/model.sig` (OpenSSF `model_signing` format: SHA-256 of every file,
/// the manifest included). ECDSA signing is deterministic (RFC 6979), so a signed artifact
/// is as reproducible as an unsigned one for a given key.
fn sign(dir: &Path, key: &mlbuild_sign::PrivateKey) -> Result<(), PackageError> {
    let signature = dir.join(SIGNATURE_FILE);
    mlbuild_sign::model::sign_dir(dir, key, &signature).map_err(|source| PackageError::Sign {
        dir: dir.to_path_buf(),
        source,
    })?;
    set_mode(&signature, false)
}

/// The entry point of `mlbuild rule package ARGS...`: parses `args`, reads
/// `SOURCE_DATE_EPOCH` and [`SIGNING_KEY_ENV`] from the environment, packages, and reports
/// on stderr (one line, and one more when the artifact is unsigned).
pub fn run(args: &[String]) -> Result<(), PackageError> {
    let mut spec = parse_args(args)?;
    spec.source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| PackageError::BadEpoch { value })?,
        Err(_) => 0,
    };
    let key = match std::env::var(SIGNING_KEY_ENV) {
        Ok(pem) if !pem.trim().is_empty() => Some(
            mlbuild_sign::PrivateKey::from_pem(&pem)
                .map_err(|source| PackageError::BadKey { source })?,
        ),
        _ => None,
    };
    let done = package(&spec, key.as_ref())?;
    let bytes: u64 = done.manifest.files.iter().map(|f| f.size).sum();
    eprintln!("{}", packaged(&spec.name, done.manifest.files.len(), bytes));
    if !done.signed {
        eprintln!(
            "warning: artifact `{}` is unsigned (no signing key configured)",
            spec.name
        );
    }
    Ok(())
}

/// Parses `--name NAME --out DIR --file DEST=SRC...` (also `--flag=value`).
pub fn parse_args(args: &[String]) -> Result<PackageSpec, PackageError> {
    let mut name = None;
    let mut out = None;
    let mut files = BTreeMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| PackageError::Usage(format!("`{flag}` needs a value")))
        };
        match flag {
            "--name" => name = Some(value()?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--file" => {
                let v = value()?;
                let Some((dest, src)) = v.split_once('=') else {
                    return Err(PackageError::Usage(format!(
                        "`--file {v}` is not of the form DEST=SRC"
                    )));
                };
                if files.insert(dest.to_string(), PathBuf::from(src)).is_some() {
                    return Err(PackageError::BadDest {
                        dest: dest.to_string(),
                        reason: "declared twice".into(),
                    });
                }
            }
            other => {
                return Err(PackageError::Usage(format!(
                    "unexpected argument `{other}`"
                )))
            }
        }
    }
    Ok(PackageSpec {
        name: name.ok_or_else(|| PackageError::Usage("missing `--name`".into()))?,
        out: out.ok_or_else(|| PackageError::Usage("missing `--out`".into()))?,
        files,
        source_date_epoch: 0,
    })
}

/// Validates the declared files before anything is written, so a typo is reported alone:
/// every destination (a trailing `/` is allowed for a directory source and dropped), no
/// destination twice, none below another (`a` would be a file and a directory), every
/// source present. Returns the destinations as they will be written.
fn check_files(
    files: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<String, PathBuf>, PackageError> {
    let mut entries = BTreeMap::new();
    for (dest, src) in files {
        let (clean, wants_dir) = match dest.strip_suffix('/') {
            Some(clean) if !clean.is_empty() => (clean, true),
            _ => (dest.as_str(), false),
        };
        check_dest(clean).map_err(|e| match e {
            PackageError::BadDest { reason, .. } => PackageError::BadDest {
                dest: dest.clone(),
                reason,
            },
            other => other,
        })?;
        let meta = fs::metadata(src).map_err(|_| PackageError::MissingSource {
            dest: dest.clone(),
            src: src.clone(),
        })?;
        if wants_dir && !meta.is_dir() {
            return Err(PackageError::BadDest {
                dest: dest.clone(),
                reason: format!("ends with `/` but `{}` is not a directory", src.display()),
            });
        }
        if entries.insert(clean.to_string(), src.clone()).is_some() {
            return Err(PackageError::BadDest {
                dest: dest.clone(),
                reason: "declared twice".into(),
            });
        }
    }
    for dest in entries.keys() {
        let mut end = 0;
        while let Some(i) = dest[end..].find('/') {
            let parent = &dest[..end + i];
            if entries.contains_key(parent) {
                return Err(PackageError::BadDest {
                    dest: dest.clone(),
                    reason: format!("`{parent}` is also declared"),
                });
            }
            end += i + 1;
        }
    }
    Ok(entries)
}

fn check_name(name: &str) -> Result<(), PackageError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name == "." || name == ".." {
        "not a file name"
    } else if name.contains('/') || name.contains('\0') {
        "contains `/` or NUL"
    } else if name.starts_with('.') {
        "starts with `.`"
    } else {
        return Ok(());
    };
    Err(PackageError::BadName {
        name: name.to_string(),
        reason,
    })
}

/// A destination must be a clean relative path that cannot leave the artifact directory
/// or replace the manifest or signature.
fn check_dest(dest: &str) -> Result<(), PackageError> {
    let bad = |reason: &str| {
        Err(PackageError::BadDest {
            dest: dest.to_string(),
            reason: reason.to_string(),
        })
    };
    if dest.is_empty() {
        return bad("empty path");
    }
    if dest.starts_with('/') {
        return bad("absolute path; destinations are relative to the artifact");
    }
    if dest.contains('\0') {
        return bad("contains NUL");
    }
    for part in dest.split('/') {
        match part {
            ".." => return bad("contains `..`"),
            "" | "." => return bad("contains an empty or `.` component"),
            _ => {}
        }
    }
    if dest == MANIFEST_FILE || dest == SIGNATURE_FILE {
        return bad("reserved for the artifact's manifest and signature");
    }
    let first = dest.split('/').next().unwrap_or_default();
    if mlbuild_sign::model::GIT_PATHS.contains(&first) {
        // `model_signing` never signs these, so the file would ship unsigned.
        return bad("git metadata paths are left out of model signatures");
    }
    Ok(())
}

/// Copies `src` (a file, or a directory recursively) to `dir/dest`, hashing as it copies,
/// and records each file in `files`.
fn copy_source(
    src: &Path,
    dir: &Path,
    dest: &str,
    files: &mut Vec<ManifestFile>,
) -> Result<(), PackageError> {
    // The declared source itself may be a link (the sandbox may link inputs); what is
    // inside a declared directory must be plain files and directories.
    let meta = fs::metadata(src).map_err(io_err("read", src))?;
    if meta.is_dir() {
        let target = dir.join(dest);
        fs::create_dir_all(&target).map_err(io_err("create", &target))?;
        let mut inner = Vec::new();
        list_files(src, "", &mut inner)?;
        if inner.is_empty() {
            return Err(PackageError::BadDest {
                dest: dest.to_string(),
                reason: format!("source directory `{}` holds no files", src.display()),
            });
        }
        for (rel, path, _) in inner {
            copy_file(&path, dir, &format!("{dest}/{rel}"), files)?;
        }
        Ok(())
    } else if meta.is_file() {
        copy_file(src, dir, dest, files)
    } else {
        Err(PackageError::UnsupportedSource {
            path: src.to_path_buf(),
            what: "a special file",
        })
    }
}

fn copy_file(
    src: &Path,
    dir: &Path,
    dest: &str,
    files: &mut Vec<ManifestFile>,
) -> Result<(), PackageError> {
    let target = dir.join(dest);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    let input = fs::File::open(src).map_err(io_err("read", src))?;
    let executable = input
        .metadata()
        .map_err(io_err("read", src))?
        .permissions()
        .mode()
        & 0o111
        != 0;
    let output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                PackageError::BadDest {
                    dest: dest.to_string(),
                    reason: "declared twice (through a directory source)".into(),
                }
            } else {
                io_err("create", &target)(e)
            }
        })?;
    let mut output = BufWriter::with_capacity(1 << 20, output);
    let (size, sha256, blake3) = hash_copy(input, &mut output).map_err(io_err("copy", src))?;
    output.flush().map_err(io_err("write", &target))?;
    drop(output);
    set_mode(&target, executable)?;
    files.push(ManifestFile {
        path: dest.to_string(),
        size,
        executable,
        sha256,
        blake3,
    });
    Ok(())
}

fn set_mode(path: &Path, executable: bool) -> Result<(), PackageError> {
    let mode = if executable { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

/// Copies `input` to `output`, returning size, SHA-256 and BLAKE3 (hex) of what was copied:
/// one read of the data for both digests and the copy.
fn hash_copy(mut input: impl Read, mut output: impl Write) -> io::Result<(u64, String, String)> {
    let mut sha = sha2::Sha256::new();
    let mut b3 = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha.update(&buf[..n]);
        b3.update(&buf[..n]);
        output.write_all(&buf[..n])?;
        size += n as u64;
    }
    let sha256: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, sha256, b3.finalize().to_hex().to_string()))
}

/// Lists the regular files below `dir` as (relative path, absolute path, executable),
/// refusing symlinks and special files.
fn list_files(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(String, PathBuf, bool)>,
) -> Result<(), PackageError> {
    let entries = fs::read_dir(dir).map_err(io_err("read", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read", dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(PackageError::UnsupportedSource {
                path,
                what: "named in non-UTF-8",
            });
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(io_err("read", &path))?;
        if meta.is_dir() {
            list_files(&path, &rel, out)?;
        } else if meta.is_file() {
            out.push((rel, path, meta.permissions().mode() & 0o111 != 0));
        } else {
            let what = if meta.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "a special file"
            };
            return Err(PackageError::UnsupportedSource { path, what });
        }
    }
    Ok(())
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PackageError {
    let path = path.to_path_buf();
    move |source| PackageError::Io {
        action,
        path,
        source,
    }
}

/// `packaged `fraud`: 3 files, 1.2 MB, archive `fraud.tar.zst``, the size in the decimal
/// units every mlbuild command prints.
fn packaged(name: &str, files: usize, bytes: u64) -> String {
    format!(
        "packaged `{name}`: {files} files, {}, archive `{name}.tar.zst`",
        bytesize::ByteSize(bytes).display().si()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_line_prints_a_readable_size() {
        assert_eq!(
            packaged("fraud", 3, 1_234_567),
            "packaged `fraud`: 3 files, 1.2 MB, archive `fraud.tar.zst`"
        );
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_both_flag_forms() {
        let spec = parse_args(&args(&[
            "--name",
            "fraud",
            "--out=o",
            "--file",
            "model.json=../m/model.json",
            "--file=a/b.txt=x=y",
        ]))
        .unwrap();
        assert_eq!(spec.name, "fraud");
        assert_eq!(spec.out, PathBuf::from("o"));
        assert_eq!(spec.files["model.json"], PathBuf::from("../m/model.json"));
        // Only the first `=` splits DEST from SRC.
        assert_eq!(spec.files["a/b.txt"], PathBuf::from("x=y"));
    }

    #[test]
    fn rejects_bad_command_lines() {
        for (line, want) in [
            (&["--out", "o", "--file", "a=b"][..], "missing `--name`"),
            (&["--name", "n", "--file", "a=b"], "missing `--out`"),
            (&["--name"], "`--name` needs a value"),
            (
                &["--name", "n", "--out", "o", "--file", "ab"],
                "not of the form",
            ),
            (&["--name", "n", "--bogus"], "unexpected argument `--bogus`"),
            (
                &[
                    "--name", "n", "--out", "o", "--file", "a=b", "--file", "a=c",
                ],
                "declared twice",
            ),
        ] {
            let err = parse_args(&args(line)).unwrap_err();
            assert!(err.to_string().contains(want), "{line:?}: {err}");
            assert!(err.is_bad_input());
        }
    }

    #[test]
    fn destination_table() {
        for ok in ["model.json", "a/b/c.txt", "serve.py", "dir.d/x"] {
            assert!(check_dest(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            "manifest.json",
            "model.sig",
            ".gitignore",
            ".git/config",
        ] {
            assert!(check_dest(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn declared_files_are_checked_together() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("f"), b"x").unwrap();
        fs::create_dir(tmp.path().join("d")).unwrap();
        let files = |list: &[(&str, &str)]| -> BTreeMap<String, PathBuf> {
            list.iter()
                .map(|(d, s)| (d.to_string(), tmp.path().join(s)))
                .collect()
        };
        let ok = check_files(&files(&[("a", "f"), ("plots/", "d"), ("a.txt", "f")])).unwrap();
        assert_eq!(ok.keys().collect::<Vec<_>>(), ["a", "a.txt", "plots"]);
        for (list, bad) in [
            (&[("a", "f"), ("a.txt", "f"), ("a/b", "f")][..], "a/b"),
            (&[("plots", "d"), ("plots/", "d")], "plots/"),
            (&[("x/", "f")], "x/"),
            (&[("/", "d")], "/"),
        ] {
            match check_files(&files(list)) {
                Err(PackageError::BadDest { dest, .. }) => assert_eq!(dest, bad, "{list:?}"),
                other => panic!("{list:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn name_table() {
        assert!(check_name("fraud").is_ok());
        for bad in ["", ".", "..", "a/b", ".hidden"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
