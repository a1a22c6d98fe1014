//! Verifying a channel's log and replaying it into the channel's state.
//!
//! A reader trusts nothing it has not checked: every line's signature, its position
//! (`seq`), its link to the line before (`prev`), and that each record is a legal move
//! from the state the ones before it left (a generation number that follows on, a
//! rollout step only during a rollout). The first record that fails is named with why,
//! so `mlbuild channel verify` tells an edited record from a deleted or reordered one.
//! Main types: [`Chain`], [`ChannelState`], [`ChainError`].

use mlbuild_digest::Digest;
use mlbuild_store::logs::line_hash;

use crate::record::{self, ArtifactRef, LineProblem, Record, RecordKind, RolloutState};

/// The first bad record of a log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record {position} of channel `{channel}` {problem}")]
pub struct ChainError {
    pub channel: String,
    /// 1-based line number in the log.
    pub position: usize,
    pub problem: String,
}

/// One generation: a model the channel held.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub number: u64,
    /// The record that made it.
    pub seq: u64,
    pub kind: RecordKind,
    pub artifact: ArtifactRef,
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub time: String,
    pub actor: String,
    pub reason: Option<String>,
}

/// A channel as its log leaves it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelState {
    pub generations: Vec<Generation>,
    /// The rollout staged or under way, if any.
    pub rollout: Option<RolloutState>,
    /// Approvals recorded: (subject, approver key id, record hash).
    pub approvals: Vec<(String, String, String)>,
    /// The hash of the last line (`None`: empty log).
    pub head: Option<Digest>,
    /// Records in the log.
    pub len: u64,
}

impl ChannelState {
    /// The newest generation.
    pub fn latest(&self) -> Option<&Generation> {
        self.generations.last()
    }

    pub fn generation(&self, number: u64) -> Option<&Generation> {
        self.generations.iter().find(|g| g.number == number)
    }

    /// The model serving all traffic: the newest generation, or while a rollout of it
    /// is staged or under way, the one it replaces. `current.METRIC` in gates and
    /// `baseline = "channel:NAME"` compare against it.
    pub fn serving(&self) -> Option<&Generation> {
        match &self.rollout {
            Some(r) => self.generation(r.stable),
            None => self.latest(),
        }
    }

    /// Whether `artifact` was ever one of this channel's generations.
    pub fn ever_held(&self, artifact: &ArtifactRef) -> bool {
        self.generations
            .iter()
            .any(|g| g.artifact.sha256 == artifact.sha256)
    }

    /// Distinct approver key ids that approved `artifact`.
    pub fn approvers_of(&self, artifact: &ArtifactRef) -> Vec<(String, String)> {
        let mut seen: Vec<(String, String)> = Vec::new();
        for (subject, key, hash) in &self.approvals {
            if artifact.matches(subject) && !seen.iter().any(|(k, _)| k == key) {
                seen.push((key.clone(), hash.clone()));
            }
        }
        seen
    }

    /// Percent of traffic the rolled-out generation receives now (`None`: no rollout).
    pub fn rollout_percent(&self) -> Option<u32> {
        let r = self.rollout.as_ref()?;
        Some(match (r.strategy.as_str(), r.step) {
            (_, None) => 0,
            ("canary", Some(i)) => r.steps.get(i).copied().unwrap_or(100),
            // A shadow receives a copy of the traffic and serves none; a blue-green
            // candidate is deployed beside the stable one with none until it switches.
            _ => 0,
        })
    }
}

/// A verified log: its records with their hashes, and the state they lead to.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    pub records: Vec<(Record, Digest)>,
    pub state: ChannelState,
}

/// Verifies every line of `channel`'s log, in order.
pub fn verify(channel: &str, lines: &[String]) -> Result<Chain, ChainError> {
    let mut chain = Chain::default();
    for (i, line) in lines.iter().enumerate() {
        let position = i + 1;
        let fail = |problem: String| ChainError {
            channel: channel.to_owned(),
            position,
            problem,
        };
        let record = record::open(line).map_err(|p| match p {
            LineProblem::Malformed(why) => fail(format!("is damaged: {why} (edited or truncated)")),
            LineProblem::BadSignature(why) => {
                fail(format!("was edited after it was signed: {why}"))
            }
        })?;
        if record.channel != channel {
            return Err(fail(format!(
                "belongs to channel `{}`, not this one (copied from another log)",
                record.channel
            )));
        }
        if record.seq != position as u64 {
            // The record that belongs here further down means the log was reordered.
            let later = lines[i + 1..]
                .iter()
                .position(|l| record::open(l).is_ok_and(|r| r.seq == position as u64));
            if let Some(offset) = later {
                return Err(fail(format!(
                    "is numbered {}, and record {position} is at line {}: records are out of order",
                    record.seq,
                    position + offset + 1
                )));
            }
            return Err(fail(if record.seq > position as u64 {
                format!(
                    "is numbered {}: {} record(s) before it are missing (deleted)",
                    record.seq,
                    record.seq - position as u64
                )
            } else {
                format!(
                    "is numbered {}: records are out of order or duplicated",
                    record.seq
                )
            }));
        }
        let expected_prev = chain.state.head.map(|d| d.to_hex());
        if record.prev != expected_prev {
            return Err(fail(
                "does not link to the record before it (a record was replaced, deleted or moved)"
                    .to_owned(),
            ));
        }
        let hash = line_hash(line);
        apply(&mut chain.state, &record, &hash).map_err(fail)?;
        chain.state.head = Some(hash);
        chain.state.len = position as u64;
        chain.records.push((record, hash));
    }
    Ok(chain)
}

/// Applies one record to the state, refusing a move the rules of the log forbid.
pub(crate) fn apply(state: &mut ChannelState, r: &Record, hash: &Digest) -> Result<(), String> {
    let next = state.latest().map_or(1, |g| g.number + 1);
    if r.kind.is_generation() {
        let Some(artifact) = r.artifact.clone() else {
            return Err(format!("is a {} without an artifact", r.kind.as_str()));
        };
        if r.generation != Some(next) {
            return Err(format!(
                "claims generation {} where {next} comes next",
                r.generation.map_or("none".to_owned(), |g| g.to_string())
            ));
        }
        if r.previous.as_ref().map(|a| &a.sha256) != state.latest().map(|g| &g.artifact.sha256) {
            return Err("names a previous artifact the channel did not hold".to_owned());
        }
        match r.kind {
            RecordKind::Promote if state.rollout.is_some() => {
                return Err("promotes while a rollout is under way".to_owned());
            }
            RecordKind::RolloutAbort => {
                let Some(rollout) = &state.rollout else {
                    return Err("aborts a rollout that is not under way".to_owned());
                };
                let stable = state.generation(rollout.stable).map(|g| &g.artifact.sha256);
                if stable != Some(&artifact.sha256) {
                    return Err(
                        "aborts a rollout to another artifact than the stable one".to_owned()
                    );
                }
            }
            _ => {}
        }
        state.rollout = match (r.kind, &r.rollout) {
            (RecordKind::Promote, Some(rollout)) => {
                if rollout.generation != next
                    || rollout.step.is_some()
                    || state.generation(rollout.stable).is_none()
                {
                    return Err("stages a rollout that does not match its generation".to_owned());
                }
                Some(rollout.clone())
            }
            (_, None) => None,
            (_, Some(_)) => return Err(format!("is a {} carrying a rollout", r.kind.as_str())),
        };
        state.generations.push(Generation {
            number: next,
            seq: r.seq,
            kind: r.kind,
            artifact,
            metrics: r.metrics.clone(),
            time: r.time.clone(),
            actor: r.actor.key_id.clone(),
            reason: r.reason.clone(),
        });
        return Ok(());
    }
    match r.kind {
        RecordKind::Approve => {
            let Some(subject) = &r.subject else {
                return Err("is an approval of nothing".to_owned());
            };
            state
                .approvals
                .push((subject.clone(), r.actor.key_id.clone(), hash.to_hex()));
        }
        RecordKind::RolloutStart | RecordKind::RolloutAdvance => {
            let Some(current) = state.rollout.clone() else {
                return Err(format!("is a {} with no rollout staged", r.kind.as_str()));
            };
            let expected_step = match (r.kind, current.step) {
                (RecordKind::RolloutStart, None) => 0,
                (RecordKind::RolloutStart, Some(_)) => {
                    return Err("starts a rollout that already started".to_owned())
                }
                (_, None) => return Err("advances a rollout that has not started".to_owned()),
                (_, Some(step)) => step + 1,
            };
            let last = if current.strategy == "canary" {
                current.steps.len().saturating_sub(1)
            } else {
                1
            };
            match &r.rollout {
                // The last step: the new model serves everything; the rollout is over.
                None if expected_step >= last && r.kind == RecordKind::RolloutAdvance => {
                    state.rollout = None;
                }
                Some(next_state)
                    if next_state.step == Some(expected_step)
                        && expected_step < last.max(1)
                        && next_state.generation == current.generation
                        && next_state.stable == current.stable
                        && next_state.strategy == current.strategy
                        && next_state.steps == current.steps =>
                {
                    state.rollout = Some(next_state.clone());
                }
                _ => {
                    return Err(format!(
                        "is a {} out of step with its rollout",
                        r.kind.as_str()
                    ))
                }
            }
        }
        _ => unreachable!("generations are handled above"),
    }
    Ok(())
}
