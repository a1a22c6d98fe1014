//! The parse cache: an unchanged workspace is decoded from one file instead of re-parsed.
//!
//! Parsing and checking every `BUILD.toml` was a third of a 10,000-target no-op build
//! (~50 of ~155 ms). What loading produces depends only on what [`CacheKey`] hashes: the
//! running mlbuild binary, the workspace root, `MLBUILD.toml` (its text and what it parsed
//! to, which includes the machine's default capacity and the home directory of `~/`), the
//! `--set` overrides, and the name and full text of every `BUILD.toml` found; plus the full
//! text of every params file the load read, recorded in the entry and re-hashed on each
//! hit. Files are read and hashed, never judged by their stat (an edit within one mtime
//! tick would be missed), so a hit returns exactly what parsing would have.
//!
//! One entry per workspace, `<dir>/<hash of the root>`: a header (key, params files and
//! their digests, the payload's digest, each package's length), then one postcard blob
//! per package, decoded in parallel. Anything unexpected (another format, a bad digest, a
//! decode error, packages that do not line up) is a miss, and writing is best effort: the
//! cache can make loading faster, never wrong and never failing.
//!
//! postcard is not self-describing, so `toml::Value`s (params, sweep values) are stored as
//! [`StoredValue`], which keeps every TOML type, datetimes included, exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::WorkspaceConfig;
use crate::package::Package;
use crate::params_file::ParamOverride;
use crate::source::SourceText;

/// The first bytes of an entry; bump the digit when the layout of [`Header`] changes (the
/// encoding of [`Package`] is covered by the binary's identity in the key).
const MAGIC: &[u8; 8] = b"MLBPRS01";

/// Whether a load used the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// No cache directory, or the binary cannot identify itself.
    Off,
    /// Decoded from the cache.
    Hit,
    /// Parsed (and, when that succeeded, written to the cache).
    Miss,
}

#[derive(Serialize, Deserialize)]
struct Header {
    key: [u8; 32],
    /// The workspace root, so `mlbuild gc` can drop entries of workspaces that are gone.
    root: PathBuf,
    /// Every params file the load read (workspace-relative) and the BLAKE3 of its text.
    params_files: Vec<(String, [u8; 32])>,
    /// BLAKE3 of everything after the header.
    payload: [u8; 32],
    /// Each package's encoded length, in package order.
    package_lens: Vec<u64>,
}

/// Where one workspace's entry lives and the key it must carry.
pub(crate) struct CacheKey {
    path: PathBuf,
    key: [u8; 32],
}

impl CacheKey {
    /// `None` when the running binary cannot be identified: without that, an entry
    /// written by another version could be taken for this one's.
    pub(crate) fn new(
        dir: &Path,
        root: &Path,
        config_source: &SourceText,
        config: &WorkspaceConfig,
        overrides: &[ParamOverride],
        build_files: &[Arc<SourceText>],
    ) -> Option<CacheKey> {
        let mut h = blake3::Hasher::new();
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(MAGIC);
        field(&binary_identity()?);
        field(root.as_os_str().as_encoded_bytes());
        field(config_source.text.as_bytes());
        field(format!("{config:?}").as_bytes());
        field(format!("{overrides:?}").as_bytes());
        for source in build_files {
            field(source.name.as_bytes());
            field(source.text.as_bytes());
        }
        let name = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
        Some(CacheKey {
            path: dir.join(&name.as_str()[..32]),
            key: *h.finalize().as_bytes(),
        })
    }

    /// The packages of a matching entry, with `build_files` (in package order) attached
    /// as their sources; `None` on any mismatch.
    pub(crate) fn read(
        &self,
        root: &Path,
        build_files: &[Arc<SourceText>],
    ) -> Option<BTreeMap<String, Package>> {
        let bytes = std::fs::read(&self.path).ok()?;
        let (header, payload) = split_entry(&bytes)?;
        if header.key != self.key || header.package_lens.len() != build_files.len() {
            return None;
        }
        for (rel, digest) in &header.params_files {
            let text = std::fs::read(root.join(rel)).ok()?;
            if blake3::hash(&text).as_bytes() != digest {
                return None;
            }
        }
        if blake3::hash(payload).as_bytes() != &header.payload {
            return None;
        }
        let mut blobs = Vec::with_capacity(header.package_lens.len());
        let mut rest = payload;
        for &len in &header.package_lens {
            let len = usize::try_from(len).ok().filter(|&l| l <= rest.len())?;
            let (blob, tail) = rest.split_at(len);
            blobs.push(blob);
            rest = tail;
        }
        if !rest.is_empty() {
            return None;
        }
        let decoded = crate::workspace::parallel_map(&blobs, 8, |blob| {
            postcard::from_bytes::<Package>(blob).ok()
        });
        let mut packages = BTreeMap::new();
        for (package, source) in decoded.into_iter().zip(build_files) {
            let mut package = package?;
            if !same_file(&package, source) {
                return None;
            }
            package.source = Arc::clone(source);
            for target in package.targets.values_mut() {
                target.source = Arc::clone(source);
            }
            packages.insert(package.name.clone(), package);
        }
        Some(packages)
    }

    /// Store `packages` (parsed from `build_files`, having read `params_files`), best
    /// effort: a failure only costs the next load a parse.
    pub(crate) fn write(
        &self,
        root: &Path,
        packages: &BTreeMap<String, Package>,
        params_files: &[String],
    ) {
        let _ = self.try_write(root, packages, params_files);
    }

    fn try_write(
        &self,
        root: &Path,
        packages: &BTreeMap<String, Package>,
        params_files: &[String],
    ) -> Option<()> {
        // Sources are re-attached per package on a hit; a target holding another file's
        // text could not be restored, so such a workspace is not cached.
        let shared = packages.values().all(|p| {
            p.targets
                .values()
                .all(|t| Arc::ptr_eq(&t.source, &p.source))
        });
        if !shared {
            return None;
        }
        let mut payload = Vec::new();
        let mut package_lens = Vec::with_capacity(packages.len());
        for package in packages.values() {
            let before = payload.len();
            payload = postcard::to_extend(package, payload).ok()?;
            package_lens.push((payload.len() - before) as u64);
        }
        let params_files = params_files
            .iter()
            .map(|rel| {
                let text = std::fs::read(root.join(rel)).ok()?;
                Some((rel.clone(), *blake3::hash(&text).as_bytes()))
            })
            .collect::<Option<Vec<_>>>()?;
        let header = Header {
            key: self.key,
            root: root.to_path_buf(),
            params_files,
            payload: *blake3::hash(&payload).as_bytes(),
            package_lens,
        };
        let header = postcard::to_allocvec(&header).ok()?;
        let mut entry = Vec::with_capacity(MAGIC.len() + 8 + header.len() + payload.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&(header.len() as u64).to_le_bytes());
        entry.extend_from_slice(&header);
        entry.extend_from_slice(&payload);

        let dir = self.path.parent()?;
        std::fs::create_dir_all(dir).ok()?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            self.path.file_name()?.to_string_lossy(),
            std::process::id()
        ));
        if std::fs::write(&tmp, &entry).is_err() || std::fs::rename(&tmp, &self.path).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return None;
        }
        Some(())
    }
}

/// A decoded package belongs to the build file at the same position.
fn same_file(package: &Package, source: &SourceText) -> bool {
    let expected = if package.name.is_empty() {
        crate::workspace::BUILD_FILE.to_owned()
    } else {
        format!("{}/{}", package.name, crate::workspace::BUILD_FILE)
    };
    source.name == expected
}

fn split_entry(bytes: &[u8]) -> Option<(Header, &[u8])> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (len, rest) = rest.split_at_checked(8)?;
    let len = usize::try_from(u64::from_le_bytes(len.try_into().ok()?)).ok()?;
    let (header, payload) = rest.split_at_checked(len)?;
    Some((postcard::from_bytes(header).ok()?, payload))
}

/// Removes the entries in `dir` whose workspace no longer exists, and any that cannot be
/// read; returns how many (with `dry_run`, only counts them). For `mlbuild gc`: entries
/// of live workspaces are a few MB at most and are replaced, not accumulated, on every
/// change.
pub fn prune_parse_cache(dir: &Path, dry_run: bool) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry?.path();
        let live = std::fs::read(&path).ok().is_some_and(|bytes| {
            split_entry(&bytes).is_some_and(|(header, _)| {
                header.root.join(crate::workspace::WORKSPACE_FILE).is_file()
            })
        });
        if !live && dry_run {
            removed += 1;
        } else if !live {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// The running binary's version, path and file identity: an entry written by any other
/// build of mlbuild, whose parser or encoding may differ, never matches.
#[cfg(unix)]
fn binary_identity() -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::env::current_exe().ok()?;
    let m = std::fs::metadata(&exe).ok()?;
    Some(
        format!(
            "{}\0{}\0{} {} {} {}.{} {}.{}",
            env!("CARGO_PKG_VERSION"),
            exe.display(),
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )
        .into_bytes(),
    )
}

#[cfg(not(unix))]
fn binary_identity() -> Option<Vec<u8>> {
    None
}

/// A `toml::Value` in a form postcard can encode (`toml::Value`'s own serde form relies
/// on a self-describing format).
#[derive(Serialize, Deserialize)]
enum StoredValue {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    /// RFC 3339 text; `toml::value::Datetime` prints and parses it losslessly.
    Datetime(String),
    Array(Vec<StoredValue>),
    Table(Vec<(String, StoredValue)>),
}

impl From<&toml::Value> for StoredValue {
    fn from(v: &toml::Value) -> StoredValue {
        match v {
            toml::Value::String(s) => StoredValue::String(s.clone()),
            toml::Value::Integer(i) => StoredValue::Integer(*i),
            toml::Value::Float(f) => StoredValue::Float(*f),
            toml::Value::Boolean(b) => StoredValue::Boolean(*b),
            toml::Value::Datetime(d) => StoredValue::Datetime(d.to_string()),
            toml::Value::Array(a) => StoredValue::Array(a.iter().map(StoredValue::from).collect()),
            toml::Value::Table(t) => StoredValue::Table(
                t.iter()
                    .map(|(k, v)| (k.clone(), StoredValue::from(v)))
                    .collect(),
            ),
        }
    }
}

impl StoredValue {
    fn into_toml<E: serde::de::Error>(self) -> Result<toml::Value, E> {
        Ok(match self {
            StoredValue::String(s) => toml::Value::String(s),
            StoredValue::Integer(i) => toml::Value::Integer(i),
            StoredValue::Float(f) => toml::Value::Float(f),
            StoredValue::Boolean(b) => toml::Value::Boolean(b),
            StoredValue::Datetime(d) => toml::Value::Datetime(d.parse().map_err(E::custom)?),
            StoredValue::Array(a) => toml::Value::Array(
                a.into_iter()
                    .map(StoredValue::into_toml)
                    .collect::<Result<_, E>>()?,
            ),
            StoredValue::Table(t) => toml::Value::Table(
                t.into_iter()
                    .map(|(k, v)| Ok((k, v.into_toml()?)))
                    .collect::<Result<_, E>>()?,
            ),
        })
    }
}

/// Deserializes a map from its entries in one go: `BTreeMap`'s bulk build fills every
/// node, where inserting one by one (serde's way) leaves them half empty, and a package's
/// targets are large enough (~1 KiB each) for that to double the memory a load touches.
pub(crate) fn bulk_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    Ok(Vec::<(String, V)>::deserialize(d)?.into_iter().collect())
}

fn store_map(map: &BTreeMap<String, toml::Value>) -> Vec<(&str, StoredValue)> {
    map.iter()
        .map(|(k, v)| (k.as_str(), StoredValue::from(v)))
        .collect()
}

/// `#[serde(with)]` for `BTreeMap<String, toml::Value>` (a target's params).
pub(crate) mod values {
    use super::*;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, toml::Value>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        store_map(map).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, toml::Value>, D::Error> {
        Vec::<(String, StoredValue)>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.into_toml()?)))
            .collect()
    }
}

/// `#[serde(with)]` for `Option<BTreeMap<String, toml::Value>>` (a variant's values).
pub(crate) mod optional_values {
    use super::*;

    pub fn serialize<S: Serializer>(
        map: &Option<BTreeMap<String, toml::Value>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.as_ref().map(|m| store_map(m)).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BTreeMap<String, toml::Value>>, D::Error> {
        Option::<Vec<(String, StoredValue)>>::deserialize(d)?
            .map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(k, v)| Ok((k, v.into_toml()?)))
                    .collect()
            })
            .transpose()
    }
}

/// `#[serde(with)]` for `BTreeMap<String, Vec<toml::Value>>` (a sweep's axes).
pub(crate) mod value_lists {
    use super::*;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<toml::Value>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, values)| {
                let values: Vec<StoredValue> = values.iter().map(StoredValue::from).collect();
                (k.as_str(), values)
            })
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<toml::Value>>, D::Error> {
        Vec::<(String, Vec<StoredValue>)>::deserialize(d)?
            .into_iter()
            .map(|(k, values)| {
                let values = values
                    .into_iter()
                    .map(StoredValue::into_toml)
                    .collect::<Result<_, D::Error>>()?;
                Ok((k, values))
            })
            .collect()
    }
}
