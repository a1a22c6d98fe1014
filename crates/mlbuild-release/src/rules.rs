//! A channel's rules, checked for one promotion.
//!
//! Every rule is checked, not just up to the first failure, so a refused promotion names
//! everything that stands in its way at once. The facts about the artifact (signature,
//! provenance, metrics) are established by [`crate::artifact`]; the channel's history by
//! [`crate::chain`]. Main types: [`Candidate`], [`RuleOutcome`].

use std::collections::BTreeMap;

use mlbuild_workspace::{ChannelSettings, Threshold};
use serde::Serialize;

use crate::chain::ChannelState;
use crate::record::{short_id, ApprovalRef, ArtifactRef, GateCheck};

/// What was established about the artifact offered for promotion.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub artifact: ArtifactRef,
    /// The key id `model.sig` verified with, or why it did not.
    pub signature: Result<String, String>,
    /// The SHA-256 of signed provenance whose subjects match the artifact, or why not.
    pub provenance: Result<String, String>,
    /// The model's metrics, or why they could not be read.
    pub metrics: Result<BTreeMap<String, f64>, String>,
}

/// One rule's verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleOutcome {
    /// `signature`, `provenance`, `from`, `gate`, `approvals`, `promoter`, `rollout`,
    /// `new`.
    pub rule: String,
    pub passed: bool,
    pub detail: String,
}

/// Everything a promotion decided.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub outcomes: Vec<RuleOutcome>,
    pub gates: Vec<GateCheck>,
    pub approvals: Vec<ApprovalRef>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.passed)
    }

    fn rule(&mut self, rule: &str, passed: bool, detail: String) {
        self.outcomes.push(RuleOutcome {
            rule: rule.to_owned(),
            passed,
            detail,
        });
    }
}

/// Checks `candidate` against `settings` for a promotion into a channel in `state`;
/// `from_state` is the state of the channel named by `from`; `approver_ids` and
/// `promoter_ids` are the key ids of the channel's `approvers` and `promoters`;
/// `actor` the key id of the promoter.
pub fn check_promotion(
    settings: &ChannelSettings,
    state: &ChannelState,
    from_state: Option<&ChannelState>,
    candidate: &Candidate,
    approver_ids: &[String],
    promoter_ids: &[String],
    actor: &str,
) -> Verdict {
    let mut v = Verdict::default();
    let channel = &settings.name;
    match &candidate.signature {
        Ok(key) => v.rule(
            "signature",
            true,
            format!("`model.sig` verifies with key {}", short_id(key)),
        ),
        Err(why) => v.rule("signature", false, why.clone()),
    }
    match &candidate.provenance {
        Ok(sha) => v.rule(
            "provenance",
            true,
            format!(
                "signed provenance sha256:{} names every file of the artifact",
                &sha[..12.min(sha.len())]
            ),
        ),
        Err(why) => v.rule("provenance", false, why.clone()),
    }
    if !promoter_ids.is_empty() {
        let ok = promoter_ids.iter().any(|k| k == actor);
        v.rule(
            "promoter",
            ok,
            if ok {
                format!("key {} is among `promoters`", short_id(actor))
            } else {
                format!(
                    "key {} is not among the channel's `promoters`",
                    short_id(actor)
                )
            },
        );
    }
    if let Some(from) = &settings.from {
        let held = from_state.is_some_and(|s| s.ever_held(&candidate.artifact));
        v.rule(
            "from",
            held,
            if held {
                format!(
                    "{} was promoted to `{from}` first",
                    candidate.artifact.short()
                )
            } else {
                format!(
                    "{} was never promoted to `{from}`; promote it there first",
                    candidate.artifact.short()
                )
            },
        );
    }
    if let Some(rollout) = &state.rollout {
        v.rule(
            "rollout",
            false,
            format!(
                "the {} rollout of generation {} is under way: `mlbuild rollout advance {channel}` or `mlbuild rollout abort {channel}` first",
                rollout.strategy, rollout.generation
            ),
        );
    }
    if let Some(latest) = state.latest() {
        if latest.artifact.sha256 == candidate.artifact.sha256 {
            v.rule(
                "new",
                false,
                format!(
                    "{} is already generation {} of `{channel}`",
                    candidate.artifact.short(),
                    latest.number
                ),
            );
        }
    }
    let current = state.serving();
    if !settings.gates.is_empty() {
        match &candidate.metrics {
            Err(why) => v.rule("gate", false, why.clone()),
            Ok(metrics) => {
                for gate in &settings.gates {
                    let Some(&actual) = metrics.get(&gate.metric) else {
                        v.rule(
                            "gate",
                            false,
                            format!(
                                "`{}`: the model has no metric `{}` (it has {})",
                                gate.text,
                                gate.metric,
                                names(metrics)
                            ),
                        );
                        continue;
                    };
                    let (threshold, current_value) = match &gate.threshold {
                        Threshold::Number(n) => (Some(*n), None),
                        Threshold::Baseline { metric, adjust } => match current {
                            None => (None, None),
                            Some(cur) => match cur.metrics.get(metric) {
                                Some(&c) => (Some(adjust.map_or(c, |a| a.apply(c))), Some(c)),
                                None => {
                                    v.rule("gate", false, format!(
                                        "`{}`: the current model (generation {}) recorded no metric `{metric}`",
                                        gate.text, cur.number
                                    ));
                                    continue;
                                }
                            },
                        },
                    };
                    // Against an empty channel, a `current.` gate has nothing to beat.
                    let passed = threshold.is_none_or(|t| gate.op.holds(actual, t));
                    let detail = match (threshold, current_value) {
                        (None, _) => format!(
                            "`{}`: {} = {actual}; the channel is empty, nothing to compare with",
                            gate.text, gate.metric
                        ),
                        (Some(t), Some(c)) => format!(
                            "`{}`: {} = {actual} {} {t} (current model: {c})",
                            gate.text,
                            gate.metric,
                            if passed { "satisfies" } else { "fails" }
                        ),
                        (Some(t), None) => format!(
                            "`{}`: {} = {actual} {} {t}",
                            gate.text,
                            gate.metric,
                            if passed { "satisfies" } else { "fails" }
                        ),
                    };
                    v.rule("gate", passed, detail);
                    v.gates.push(GateCheck {
                        gate: gate.text.clone(),
                        metric: gate.metric.clone(),
                        op: gate.op.as_str().to_owned(),
                        actual,
                        threshold,
                        current: current_value,
                        passed,
                    });
                }
            }
        }
    }
    if settings.approvals > 0 {
        let valid: Vec<(String, String)> = state
            .approvers_of(&candidate.artifact)
            .into_iter()
            .filter(|(key, _)| approver_ids.contains(key))
            .collect();
        let enough = valid.len() >= settings.approvals as usize;
        v.rule(
            "approvals",
            enough,
            format!(
                "{} of {} required approvals by `approvers`{}",
                valid.len(),
                settings.approvals,
                if enough {
                    String::new()
                } else {
                    format!(
                        ": `mlbuild approve {} --channel {channel} --key KEY`",
                        candidate.artifact.short()
                    )
                }
            ),
        );
        v.approvals = valid
            .into_iter()
            .map(|(key_id, record)| ApprovalRef { key_id, record })
            .collect();
    }
    v
}

fn names(metrics: &BTreeMap<String, f64>) -> String {
    if metrics.is_empty() {
        return "no numeric metrics".to_owned();
    }
    metrics
        .keys()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
