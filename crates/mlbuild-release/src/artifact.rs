//! Establishing the facts about an artifact offered to a channel: its digests, whether
//! its `model.sig` verifies, whether signed provenance names it, and its metrics.
//!
//! The artifact is the package's `.tar.zst` as a blob of the store, unpacked with the
//! hostile-archive-safe extractor into a temporary directory that lives as long as the
//! [`Unpacked`] value. Main functions: [`digests`], [`unpack`], [`check_signature`],
//! [`check_provenance`], [`read_metrics`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use mlbuild_rules::archive::{self, ExtractLimits};
use mlbuild_sign::model::{self, SIGNATURE_FILE};
use mlbuild_sign::PublicKey;
use sha2::{Digest as _, Sha256};

/// SHA-256 and BLAKE3 (hex) and size of a file, in one read.
pub fn digests(path: &Path) -> std::io::Result<(String, String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut sha = Sha256::new();
    let mut b3 = blake3_hasher();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        b3.update(&buf[..n]);
        size += n as u64;
    }
    Ok((
        hex::encode(sha.finalize()),
        b3.finalize().to_hex().to_string(),
        size,
    ))
}

fn blake3_hasher() -> blake3::Hasher {
    blake3::Hasher::new()
}

/// An artifact unpacked into a temporary directory.
pub struct Unpacked {
    dir: tempfile::TempDir,
}

impl Unpacked {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Unpacks `archive` (a `.tar.zst`), refusing hostile entries and bombs.
pub fn unpack(archive: &Path, scratch: &Path) -> Result<Unpacked, String> {
    std::fs::create_dir_all(scratch)
        .map_err(|e| format!("cannot create `{}`: {e}", scratch.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("release-")
        .tempdir_in(scratch)
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let dest = cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority())
        .map_err(|e| format!("cannot open a temporary directory: {e}"))?;
    archive::extract(archive, &dest, &ExtractLimits::default())
        .map_err(|e| format!("the artifact cannot be unpacked: {e}"))?;
    Ok(Unpacked { dir })
}

/// The first of `keys` that `model.sig` in `dir` verifies with.
pub fn check_signature(dir: &Path, keys: &[PublicKey]) -> Result<PublicKey, String> {
    let sig = dir.join(SIGNATURE_FILE);
    if !sig.is_file() {
        return Err(format!("the artifact is unsigned: it holds no `{SIGNATURE_FILE}` (configure a signing key and build again)"));
    }
    if keys.is_empty() {
        return Err("no key to check `model.sig` against: list the channel's `signers`, or configure the signing key".to_owned());
    }
    let mut reasons = Vec::new();
    for key in keys {
        match model::verify_dir(dir, &sig, key) {
            Ok(_) => return Ok(key.clone()),
            Err(e) => reasons.push(format!(
                "key {}: {e}",
                crate::record::short_id(&key.key_id())
            )),
        }
    }
    Err(format!(
        "`model.sig` does not verify with any of the channel's signers ({})",
        reasons.join("; ")
    ))
}

/// Checks signed provenance (`provenance`, a `.intoto.jsonl` file) against the artifact:
/// signed by one of `keys`, with a subject `NAME.tar.zst` of the archive's SHA-256 and a
/// subject `NAME/PATH` for every file of `dir` with its SHA-256. Returns the provenance
/// file's SHA-256.
pub fn check_provenance(
    provenance: &Path,
    keys: &[PublicKey],
    archive_name: &str,
    archive_sha256: &str,
    dir: &Path,
) -> Result<String, String> {
    let bytes = std::fs::read(provenance).map_err(|e| {
        format!(
            "no signed provenance at `{}` ({e}): configure a signing key and build again",
            provenance.display()
        )
    })?;
    let mut statement = None;
    for key in keys {
        if let Ok(s) = mlbuild_sign::provenance::verify(&bytes, key) {
            statement = Some(s);
            break;
        }
    }
    let Some(statement) = statement else {
        return Err(format!(
            "the provenance `{}` is not signed by any of the channel's signers",
            provenance.display()
        ));
    };
    let subjects: BTreeMap<String, String> = statement
        .subject
        .iter()
        .filter_map(|s| Some((s.name.clone()?, s.digest.get("sha256")?.clone())))
        .collect();
    if subjects.get(archive_name).map(String::as_str) != Some(archive_sha256) {
        return Err(format!("the provenance does not name `{archive_name}` with the artifact's sha256 (it describes another build)"));
    }
    let name = archive_name
        .strip_suffix(".tar.zst")
        .unwrap_or(archive_name);
    for (rel, sha) in files(dir)? {
        if rel == SIGNATURE_FILE {
            continue;
        }
        let subject = format!("{name}/{rel}");
        if subjects.get(&subject) != Some(&sha) {
            return Err(format!(
                "the provenance does not name `{subject}` with its sha256"
            ));
        }
    }
    let (sha, _, _) =
        digests(provenance).map_err(|e| format!("cannot read the provenance: {e}"))?;
    Ok(sha)
}

/// Every regular file under `dir`, relative POSIX path and SHA-256.
fn files(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read `{}`: {e}", d.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let rel = path
                    .strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .replace('\\', "/");
                let sha =
                    model::sha256_file(&path).map_err(|e| format!("cannot read `{rel}`: {e}"))?;
                out.push((rel, sha));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The numeric leaves of the JSON file `rel` inside `dir`, nested keys joined with `.`.
pub fn read_metrics(dir: &Path, rel: &str) -> Result<BTreeMap<String, f64>, String> {
    let path = dir.join(rel);
    let bytes = std::fs::read(&path).map_err(|_| {
        format!("the artifact holds no metrics file `{rel}` (set the channel's `metrics` to the JSON file inside the artifact)")
    })?;
    mlbuild_store::parse_metrics(&bytes)
        .map_err(|e| format!("metrics file `{rel}` is not a JSON object of metrics: {e}"))
}
