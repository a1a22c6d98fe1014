//! Append-only logs with compare-and-swap appends: the storage under release channels.
//!
//! A log is a file of lines (one JSON record each). Its *head* is the BLAKE3 of its last
//! line, and an append names the head it was computed against: when another writer got
//! there first the append is refused with the new head, so two CI runners promoting at
//! once never lose a record (one wins, the other re-reads and retries). The store keeps
//! what a single user's channels write (`<store>/logs/`); `mlbuild cache serve` keeps the
//! shared ones with the same code, behind HTTP (`ETag` / `If-Match`). The log knows
//! nothing of what its lines mean: records, signatures and the chain through them are
//! `mlbuild-release`'s. Main types: [`AppendLog`], [`LocalLogs`], [`LogName`].

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mlbuild_digest::Digest;

use crate::lock::{flock, Mode};
use crate::StoreError;

/// The longest line a log accepts: a record with its metrics, gate results and
/// signature is a few KiB; a megabyte is generous and bounds what a server holds per
/// request.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A log's name: `NAMESPACE/LOG`, each part lowercase ASCII letters, digits, `.`, `_`
/// and `-`, starting with a letter or digit, at most 64 bytes: safe as a file name and
/// in a URL path without escaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogName {
    namespace: String,
    log: String,
}

impl LogName {
    pub fn new(namespace: &str, log: &str) -> Result<LogName, String> {
        for (what, part) in [("namespace", namespace), ("log name", log)] {
            if !is_valid_part(part) {
                return Err(format!(
                    "invalid {what} `{part}`: use 1-64 lowercase letters, digits, `.`, `_` or `-`, starting with a letter or digit"
                ));
            }
        }
        Ok(LogName {
            namespace: namespace.to_owned(),
            log: log.to_owned(),
        })
    }

    /// Parses `NAMESPACE/LOG` (a URL path's tail).
    pub fn parse(text: &str) -> Result<LogName, String> {
        match text.split_once('/') {
            Some((ns, log)) => LogName::new(ns, log),
            None => Err(format!("`{text}` is not `NAMESPACE/LOG`")),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn log(&self) -> &str {
        &self.log
    }
}

impl fmt::Display for LogName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.log)
    }
}

/// Whether `part` may be one half of a [`LogName`].
pub fn is_valid_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// The hash that names a line: BLAKE3 of its bytes, without the newline.
pub fn line_hash(line: &str) -> Digest {
    Digest::of_bytes(line.as_bytes())
}

/// What an append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// The line is the new head.
    Done { head: Digest },
    /// The log's head is not the one the caller expected (someone appended first); the
    /// log is unchanged. `head` is the current head (`None`: the log is empty).
    Conflict { head: Option<Digest> },
}

/// A problem reaching or reading a log (not a conflict, which is [`Appended::Conflict`]).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LogError {
    pub message: String,
}

impl LogError {
    pub fn new(message: impl Into<String>) -> Self {
        LogError {
            message: message.into(),
        }
    }
}

impl From<StoreError> for LogError {
    fn from(e: StoreError) -> Self {
        LogError::new(e.to_string())
    }
}

/// Where logs live: the local store, or a shared server.
pub trait AppendLog: Send + Sync {
    /// Every line, oldest first (an absent log is empty).
    fn read(&self, name: &LogName) -> Result<Vec<String>, LogError>;
    /// Appends `line` (one line, no newline) when the head is `expected` (`None`: only
    /// to an empty log).
    fn append(
        &self,
        name: &LogName,
        expected: Option<&Digest>,
        line: &str,
    ) -> Result<Appended, LogError>;
    /// Every log there is, for gc roots and listings.
    fn list(&self) -> Result<Vec<LogName>, LogError>;
    /// Where the logs are, for messages: `the local store`, `http://cache:8080`.
    fn describe(&self) -> String;
}

/// Checks a line before it is appended: one line of at most [`MAX_LINE_BYTES`].
pub fn check_line(line: &str) -> Result<(), String> {
    if line.is_empty() {
        return Err("an empty line".into());
    }
    if line.len() > MAX_LINE_BYTES {
        return Err(format!(
            "a line of {} bytes (at most {MAX_LINE_BYTES})",
            line.len()
        ));
    }
    if line.contains(['\n', '\r']) {
        return Err("a line break inside the line".into());
    }
    Ok(())
}

/// Logs in a directory: `DIR/NAMESPACE/LOG.jsonl`, appended under an exclusive `flock`
/// of `DIR/NAMESPACE/LOG.lock`. Used by the store and by the cache server.
#[derive(Clone, Debug)]
pub struct LocalLogs {
    dir: PathBuf,
}

impl LocalLogs {
    pub fn new(dir: impl Into<PathBuf>) -> LocalLogs {
        LocalLogs { dir: dir.into() }
    }

    /// The file holding `name`'s lines.
    pub fn path(&self, name: &LogName) -> PathBuf {
        self.dir
            .join(&name.namespace)
            .join(format!("{}.jsonl", name.log))
    }

    /// The current head of `name`.
    pub fn head(&self, name: &LogName) -> Result<Option<Digest>, LogError> {
        Ok(self.read(name)?.last().map(|l| line_hash(l)))
    }

    fn read_file(path: &Path) -> Result<Vec<String>, LogError> {
        match fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| LogError::new(format!("log `{}` is not UTF-8", path.display())))?;
                Ok(text
                    .split('\n')
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(LogError::new(format!(
                "cannot read log `{}`: {e}",
                path.display()
            ))),
        }
    }
}

impl AppendLog for LocalLogs {
    fn read(&self, name: &LogName) -> Result<Vec<String>, LogError> {
        LocalLogs::read_file(&self.path(name))
    }

    fn append(
        &self,
        name: &LogName,
        expected: Option<&Digest>,
        line: &str,
    ) -> Result<Appended, LogError> {
        check_line(line).map_err(|why| LogError::new(format!("cannot append {why}")))?;
        let path = self.path(name);
        let parent = path.parent().expect("a log path has a directory");
        fs::create_dir_all(parent)
            .map_err(|e| LogError::new(format!("cannot create `{}`: {e}", parent.display())))?;
        let _lock = flock(&path.with_extension("lock"), Mode::Exclusive)?;
        let lines = LocalLogs::read_file(&path)?;
        let head = lines.last().map(|l| line_hash(l));
        if head.as_ref() != expected {
            return Ok(Appended::Conflict { head });
        }
        // One `write` of line and newline on an `O_APPEND` file, then `fsync`: a crash
        // leaves the line whole or absent, and a torn tail (no newline) is what a reader
        // would reject as a truncated record.
        let mut file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| LogError::new(format!("cannot open `{}`: {e}", path.display())))?;
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| LogError::new(format!("cannot append to `{}`: {e}", path.display())))?;
        Ok(Appended::Done {
            head: line_hash(line),
        })
    }

    fn list(&self) -> Result<Vec<LogName>, LogError> {
        let mut names = Vec::new();
        let Ok(namespaces) = fs::read_dir(&self.dir) else {
            return Ok(names);
        };
        for ns in namespaces.flatten() {
            let Ok(files) = fs::read_dir(ns.path()) else {
                continue;
            };
            for file in files.flatten() {
                let file_name = file.file_name();
                let Some(log) = file_name.to_str().and_then(|n| n.strip_suffix(".jsonl")) else {
                    continue;
                };
                if let Ok(name) = LogName::new(&ns.file_name().to_string_lossy(), log) {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn describe(&self) -> String {
        format!("`{}`", self.dir.display())
    }
}

impl crate::Store {
    /// The store's own logs (`<store>/logs/`), for a single user's release channels.
    pub fn logs(&self) -> LocalLogs {
        LocalLogs::new(self.root().join("logs"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_is_compare_and_swap_on_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LocalLogs::new(dir.path());
        let name = LogName::new("ws", "prod").unwrap();
        assert_eq!(logs.read(&name).unwrap(), Vec::<String>::new());
        let first = match logs.append(&name, None, "{\"a\":1}").unwrap() {
            Appended::Done { head } => head,
            other => panic!("{other:?}"),
        };
        // A writer that still believes the log is empty loses, and learns the head.
        assert_eq!(
            logs.append(&name, None, "{\"b\":2}").unwrap(),
            Appended::Conflict { head: Some(first) }
        );
        assert!(matches!(
            logs.append(&name, Some(&first), "{\"b\":2}").unwrap(),
            Appended::Done { .. }
        ));
        assert_eq!(logs.read(&name).unwrap(), ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(logs.list().unwrap(), std::slice::from_ref(&name));
        assert!(logs.append(&name, None, "two\nlines").is_err());
    }

    #[test]
    fn concurrent_appends_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LocalLogs::new(dir.path());
        let name = LogName::new("ws", "prod").unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let (logs, name) = (&logs, &name);
                s.spawn(move || loop {
                    let head = logs.head(name).unwrap();
                    if let Appended::Done { .. } =
                        logs.append(name, head.as_ref(), &format!("{t}")).unwrap()
                    {
                        break;
                    }
                });
            }
        });
        let mut lines = logs.read(&name).unwrap();
        lines.sort();
        assert_eq!(lines, ["0", "1", "2", "3", "4", "5", "6", "7"]);
    }

    #[test]
    fn names_are_checked() {
        assert!(LogName::new("fraud-example", "production").is_ok());
        for bad in ["", "Prod", "../x", "a/b", ".hidden", &"x".repeat(65)] {
            assert!(LogName::new("ws", bad).is_err(), "{bad}");
        }
        assert_eq!(
            LogName::parse("ws/prod").unwrap(),
            LogName::new("ws", "prod").unwrap()
        );
    }
}
