//! The private wire protocol between [`crate::run`] and the re-executed sandbox init.
//!
//! The init program runs in a fresh process with an empty environment, so everything it
//! needs travels over two inherited pipes: the spec (JSON, [`InitSpec`]) in, and short
//! status records ([`Record`]) out, which let the parent tell a failed setup or a missing
//! command apart from an action that merely exited non-zero.

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Set (to `"<spec fd>,<status fd>,<parent pid>"`; `0,0,…`: one socket on stdin) only in
/// the environment of the init program.
pub(crate) const INIT_ENV: &str = "MLBUILD_SANDBOX_INIT";

/// Passed as argv[1] so a program that does not call `maybe_run_init` (e.g. a libtest
/// harness) fails fast on an unknown flag instead of doing its normal work.
pub(crate) const INIT_ARG: &str = "--mlbuild-sandbox-init";

/// Exit code of the action process when `execve` fails, as shells use.
pub(crate) const EXEC_FAILED_CODE: i32 = 127;

/// The spec as the init sees it. Paths travel as bytes so non-UTF-8 paths survive.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitSpec {
    pub argv: Vec<String>,
    pub cwd: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub exec_root: Vec<u8>,
    pub writable: Vec<Vec<u8>>,
    pub tmp_dir: Vec<u8>,
    pub expose_readonly: Vec<Vec<u8>>,
    pub hide: Vec<Vec<u8>>,
    /// `(host, inside, writable)`.
    pub binds: Vec<(Vec<u8>, Vec<u8>, bool)>,
    pub network: bool,
}

pub(crate) fn path_bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

pub(crate) fn bytes_path(b: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsString::from_vec(b.to_vec()))
}

/// One status record; each is written as a single line (tag byte + text) with one
/// `write` (< PIPE_BUF, hence atomic).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// The init started and understood the protocol.
    Hello,
    /// Building the sandbox failed; the action never ran.
    SetupFailed(String),
    /// `execve` of the action failed (missing command, not executable).
    ExecFailed(String),
    /// The action was killed by this signal (the init itself can only exit).
    Signaled(i32),
    /// The action exited with this code; everything in the sandbox is dead. Sent before
    /// the outer init exits, because that exit tears the namespaces down (milliseconds
    /// of RCU waits) and the parent need not wait for it.
    Finished(i32),
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (tag, text) = match self {
            Record::Hello => ('I', String::new()),
            Record::SetupFailed(m) => ('S', m.clone()),
            Record::ExecFailed(m) => ('E', m.clone()),
            Record::Signaled(s) => ('K', s.to_string()),
            Record::Finished(c) => ('X', c.to_string()),
        };
        // Keep records single-line and short enough for an atomic pipe write.
        let mut text: String = text.replace('\n', " ");
        if text.len() > 3000 {
            let mut cut = 3000;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        format!("{tag}{text}\n").into_bytes()
    }

    pub(crate) fn decode_all(bytes: &[u8]) -> Vec<Record> {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter_map(|line| {
                let mut chars = line.chars();
                let tag = chars.next()?;
                let text = chars.as_str().to_string();
                match tag {
                    'I' => Some(Record::Hello),
                    'S' => Some(Record::SetupFailed(text)),
                    'E' => Some(Record::ExecFailed(text)),
                    'K' => text.parse().ok().map(Record::Signaled),
                    'X' => text.parse().ok().map(Record::Finished),
                    _ => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Hello,
            Record::SetupFailed("mounting `/x`\nfailed".into()),
            Record::ExecFailed("command not found: `/nope`".into()),
            Record::Signaled(9),
            Record::Finished(3),
        ];
        let bytes: Vec<u8> = records.iter().flat_map(Record::encode).collect();
        let decoded = Record::decode_all(&bytes);
        assert_eq!(decoded[0], Record::Hello);
        assert_eq!(
            decoded[1],
            Record::SetupFailed("mounting `/x` failed".into())
        );
        assert_eq!(decoded[2], records[2]);
        assert_eq!(decoded[3], Record::Signaled(9));
        assert_eq!(decoded[4], Record::Finished(3));
    }

    #[test]
    fn non_utf8_paths_survive() {
        let p = bytes_path(b"/tmp/\xff\xfe");
        assert_eq!(path_bytes(&p), b"/tmp/\xff\xfe");
    }
}
