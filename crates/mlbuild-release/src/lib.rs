//! Release channels: where a signed artifact goes after it is built, and every move it
//! makes, verified, signed and replayable.
//!
//! A channel (`staging`, `production`) is an append-only log of signed records
//! ([`record`]), each naming the one before it by hash. Promotions, approvals, rollbacks
//! and rollout steps are records; the channel's state is what replaying them gives
//! ([`chain`]), and a reader verifies the whole chain before it trusts the head. The log
//! lives in the store for one user, or on the cache server for a team
//! ([`mlbuild_store::logs`]), and an append is a compare-and-swap on the head, so
//! concurrent promoters never lose a record. Rules ([`rules`]) decide what may enter a
//! channel; [`render`] turns a channel into a KServe or Seldon deployment.
//! Main type: [`ChannelLog`].

pub mod artifact;
pub mod chain;
pub mod record;
pub mod render;
pub mod rules;

use std::time::{Duration, SystemTime};

use mlbuild_digest::Digest;
use mlbuild_sign::PrivateKey;
use mlbuild_store::logs::{AppendLog, Appended, LogError, LogName};

pub use chain::{Chain, ChainError, ChannelState, Generation};
pub use record::{ArtifactRef, Record, RecordKind};
pub use rules::{Candidate, RuleOutcome, Verdict};

/// Why a channel operation did not happen. Nothing was appended in any case.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0}")]
    Log(#[from] LogError),
    /// The log does not verify: the operation refuses to build on it.
    #[error("{0}")]
    Chain(#[from] ChainError),
    /// The channel's rules refused the move.
    #[error("refused")]
    Refused(Vec<RuleOutcome>),
    /// The move makes no sense in the channel's state (no rollout to advance, ...).
    #[error("{0}")]
    Invalid(String),
    /// Other writers kept appending first.
    #[error("channel `{channel}` kept moving: {attempts} attempts lost the race; its head is now {head}")]
    Busy {
        channel: String,
        attempts: u32,
        head: String,
    },
}

/// How often an append is retried when another writer got there first. Each retry
/// re-reads and re-verifies the log and re-checks the rules against the new head.
pub const APPEND_ATTEMPTS: u32 = 32;

/// One channel's log in one place.
pub struct ChannelLog<'a> {
    logs: &'a dyn AppendLog,
    name: LogName,
    channel: String,
}

impl<'a> ChannelLog<'a> {
    /// The log of `channel` in `namespace` (the workspace's name) on `logs`.
    pub fn new(
        logs: &'a dyn AppendLog,
        namespace: &str,
        channel: &str,
    ) -> Result<ChannelLog<'a>, ReleaseError> {
        let name = LogName::new(namespace, channel).map_err(ReleaseError::Invalid)?;
        Ok(ChannelLog {
            logs,
            name,
            channel: channel.to_owned(),
        })
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Where the log lives, for messages.
    pub fn describe(&self) -> String {
        format!("log `{}` on {}", self.name, self.logs.describe())
    }

    /// Reads and verifies the whole log.
    pub fn read(&self) -> Result<Chain, ReleaseError> {
        let lines = self.logs.read(&self.name)?;
        Ok(chain::verify(&self.channel, &lines)?)
    }

    /// Appends the record `make` builds from the verified chain, signed with `key`;
    /// `make` fills in everything but `seq`, `prev`, `channel` and `format`. When another
    /// writer appended first, the log is read, verified and `make` asked again (so rules
    /// are checked against the new head), up to [`APPEND_ATTEMPTS`] times.
    pub fn append(
        &self,
        key: &PrivateKey,
        mut make: impl FnMut(&Chain) -> Result<Record, ReleaseError>,
    ) -> Result<(Record, Digest), ReleaseError> {
        let mut head = None;
        for attempt in 0..APPEND_ATTEMPTS {
            if attempt > 0 {
                // Spread the retries of writers that collided.
                let jitter = (SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
                    % 20) as u64;
                std::thread::sleep(Duration::from_millis(
                    5 * u64::from(attempt.min(10)) + jitter,
                ));
            }
            let chain = self.read()?;
            let mut record = make(&chain)?;
            record.format = record::FORMAT.to_owned();
            record.channel = self.channel.clone();
            record.seq = chain.state.len + 1;
            record.prev = chain.state.head.map(|d| d.to_hex());
            // The record must be a legal move: checked here as readers will check it.
            let mut check = chain.state.clone();
            chain::apply(&mut check, &record, &Digest::of_bytes(b""))
                .map_err(|why| ReleaseError::Invalid(format!("the record {why}")))?;
            let line = record.sign(key);
            match self
                .logs
                .append(&self.name, chain.state.head.as_ref(), &line)?
            {
                Appended::Done { head } => return Ok((record, head)),
                Appended::Conflict { head: now } => head = now,
            }
        }
        Err(ReleaseError::Busy {
            channel: self.channel.clone(),
            attempts: APPEND_ATTEMPTS,
            head: head.map_or("empty".to_owned(), |d| d.to_hex()),
        })
    }
}

/// A record with everything but the chain fields, for `make` in [`ChannelLog::append`].
pub fn new_record(kind: RecordKind, key: &PrivateKey, reason: Option<String>) -> Record {
    Record {
        format: String::new(),
        channel: String::new(),
        seq: 0,
        prev: None,
        kind,
        generation: None,
        artifact: None,
        previous: None,
        subject: None,
        actor: Record::actor(&key.public_key()),
        time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        reason,
        metrics: Default::default(),
        gates: Vec::new(),
        approvals: Vec::new(),
        rollout: None,
    }
}

/// The namespace of a workspace's channel logs: its `[workspace] name`, else its
/// directory's name, lowercased with anything a log name cannot hold made `-`.
pub fn namespace(workspace_name: Option<&str>, root: &std::path::Path) -> String {
    let raw = workspace_name
        .map(str::to_owned)
        .or_else(|| root.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "workspace".to_owned());
    let mut out: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.starts_with(['.', '_', '-']) {
        out.remove(0);
    }
    out.truncate(64);
    if out.is_empty() {
        out = "workspace".to_owned();
    }
    out
}
