//! Rendering a channel's state as the deployment of a serving engine.
//!
//! mlbuild does not serve models: it says what should be served, in the resource the
//! team's engine reads. KServe's `InferenceService` splits traffic between its newest and
//! its previous revision with `canaryTrafficPercent`; Seldon Core 2 splits it with an
//! `Experiment` of weighted `candidates` and copies it with `mirror` (shadow). Models are
//! referenced as `oci://REPO:CHANNEL-GENERATION`, the tags `mlbuild push --channel`
//! writes. Main function: [`render`].

use serde_json::{json, Value};

use crate::chain::{ChannelState, Generation};

/// The engines a channel renders for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Kserve,
    Seldon,
}

/// What a rendering needs besides the state.
pub struct Target<'a> {
    pub channel: &'a str,
    /// The Kubernetes resource name (a DNS-1035 label).
    pub name: &'a str,
    /// `oci://HOST/REPO` the channel's generations are pushed to.
    pub oci: &'a str,
    /// KServe's `modelFormat.name`, Seldon's `requirements`.
    pub model_format: Option<&'a str>,
}

/// The storage URI of a generation: the tag `mlbuild push --channel` gives it.
pub fn storage_uri(oci: &str, channel: &str, generation: u64) -> String {
    format!(
        "{}:{}",
        oci.trim_end_matches('/'),
        generation_tag(channel, generation)
    )
}

/// `production-3`: the OCI tag of generation 3 of `production`.
pub fn generation_tag(channel: &str, generation: u64) -> String {
    format!("{channel}-{generation}")
}

/// Whether `name` is a DNS-1035 label, as Kubernetes requires of these resources' names.
pub fn is_resource_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The YAML documents (`---`-separated) deploying `state` on `engine`.
pub fn render(engine: Engine, state: &ChannelState, t: &Target<'_>) -> Result<String, String> {
    let Some(serving) = state.serving() else {
        return Err(format!(
            "channel `{}` holds no model yet: promote one first",
            t.channel
        ));
    };
    if !is_resource_name(t.name) {
        return Err(format!(
            "`{}` is not a Kubernetes resource name: use lowercase letters, digits and `-`, starting with a letter (at most 63)",
            t.name
        ));
    }
    // The rolled-out generation takes part only once its rollout started.
    let rolling = state
        .rollout
        .as_ref()
        .filter(|r| r.step.is_some())
        .and_then(|r| Some((r, state.generation(r.generation)?)));
    let docs: Vec<Value> = match engine {
        Engine::Kserve => {
            let (generation, canary) = match rolling {
                None => (serving, None),
                Some((r, candidate)) => match r.strategy.as_str() {
                    "shadow" => {
                        return Err("KServe's InferenceService has no shadow (mirrored) traffic: render the shadow rollout with `--format seldon`".to_owned())
                    }
                    _ => (candidate, state.rollout_percent()),
                },
            };
            let mut model =
                json!({ "storageUri": storage_uri(t.oci, t.channel, generation.number) });
            if let Some(format) = t.model_format {
                model["modelFormat"] = json!({ "name": format });
            } else {
                return Err("KServe needs the model's format (`modelFormat.name`): set `model_format` in the channel's table or pass `--model-format`".to_owned());
            }
            let mut predictor = json!({ "model": model });
            if let Some(percent) = canary {
                predictor["canaryTrafficPercent"] = json!(percent);
            }
            vec![json!({
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": { "name": t.name, "annotations": annotations(t.channel, generation) },
                "spec": { "predictor": predictor },
            })]
        }
        Engine::Seldon => {
            let model = |g: &Generation| {
                let mut spec = json!({ "storageUri": storage_uri(t.oci, t.channel, g.number) });
                if let Some(format) = t.model_format {
                    spec["requirements"] = json!([format]);
                }
                json!({
                    "apiVersion": "mlops.seldon.io/v1alpha1",
                    "kind": "Model",
                    "metadata": { "name": format!("{}-g{}", t.name, g.number), "annotations": annotations(t.channel, g) },
                    "spec": spec,
                })
            };
            let mut docs = vec![model(serving)];
            if let Some((r, candidate)) = rolling {
                docs.push(model(candidate));
                let stable_name = format!("{}-g{}", t.name, serving.number);
                let candidate_name = format!("{}-g{}", t.name, candidate.number);
                let percent = state.rollout_percent().unwrap_or(0);
                let spec = match r.strategy.as_str() {
                    "shadow" => json!({
                        "default": stable_name,
                        "candidates": [{ "name": stable_name, "weight": 100 }],
                        "mirror": { "name": candidate_name, "percent": 100 },
                    }),
                    _ => json!({
                        "default": stable_name,
                        "candidates": [
                            { "name": stable_name, "weight": 100 - percent },
                            { "name": candidate_name, "weight": percent },
                        ],
                    }),
                };
                docs.push(json!({
                    "apiVersion": "mlops.seldon.io/v1alpha1",
                    "kind": "Experiment",
                    "metadata": { "name": t.name, "annotations": { "mlbuild.dev/channel": t.channel, "mlbuild.dev/rollout": r.strategy } },
                    "spec": spec,
                }));
            }
            docs
        }
    };
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml_ng::to_string(doc).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn annotations(channel: &str, g: &Generation) -> Value {
    json!({
        "mlbuild.dev/channel": channel,
        "mlbuild.dev/generation": g.number.to_string(),
        "mlbuild.dev/sha256": g.artifact.sha256,
        "mlbuild.dev/blake3": g.artifact.blake3,
        "mlbuild.dev/target": g.artifact.label,
    })
}
