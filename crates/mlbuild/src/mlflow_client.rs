//! A small blocking client for the MLflow tracking server's REST API (2.x and 3.x).
//!
//! `mlbuild mlflow export` needs a dozen endpoints: experiments, runs, batches of params
//! and metrics, the artifact proxy and the model registry. The official clients are
//! Python and Java only, so this speaks the documented JSON API over `ureq` directly.
//! Every failure names the endpoint and carries MLflow's own `error_code` and `message`,
//! so a 4xx reads as what the server objected to. Main type: [`MlflowClient`].

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// What went wrong talking to the tracking server.
#[derive(Debug)]
pub enum MlflowError {
    /// No HTTP response: connection refused, DNS, timeout.
    Unreachable { url: String, detail: String },
    /// The server answered with a status other than 2xx.
    Status {
        endpoint: String,
        status: u16,
        /// MLflow's `error_code` (`INVALID_PARAMETER_VALUE`, `RESOURCE_ALREADY_EXISTS`, ...).
        code: Option<String>,
        message: String,
    },
    /// A 2xx whose body is not what the API documents.
    Protocol { endpoint: String, detail: String },
}

impl MlflowError {
    /// MLflow's `error_code`, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            MlflowError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for MlflowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MlflowError::Unreachable { url, detail } => {
                write!(f, "MLflow tracking server `{url}` is unreachable: {detail}")
            }
            MlflowError::Status {
                endpoint,
                status,
                code,
                message,
            } => {
                write!(f, "MLflow refused `{endpoint}` with HTTP {status}")?;
                if let Some(code) = code {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            MlflowError::Protocol { endpoint, detail } => {
                write!(f, "unexpected answer from MLflow `{endpoint}`: {detail}")
            }
        }
    }
}

impl std::error::Error for MlflowError {}

pub type Result<T> = std::result::Result<T, MlflowError>;

/// A run as `runs/create` and `runs/search` describe it.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub run_id: String,
    pub artifact_uri: String,
    /// `RUNNING`, `FINISHED`, `FAILED`, ...
    pub status: String,
    /// The `mlflow.parentRunId` tag: the run this one is a child of.
    pub parent_run_id: Option<String>,
}

/// One tracking server.
pub struct MlflowClient {
    base: String,
    agent: ureq::Agent,
}

/// The most params `runs/log-batch` takes in one request (MLflow's documented limit).
pub const MAX_PARAMS_PER_BATCH: usize = 100;
/// The most metrics `runs/log-batch` takes in one request.
pub const MAX_METRICS_PER_BATCH: usize = 1000;

impl MlflowClient {
    /// A client for the server at `tracking_uri` (`http://` or `https://`).
    pub fn new(tracking_uri: &str) -> std::result::Result<MlflowClient, String> {
        let base = tracking_uri.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "tracking URI `{tracking_uri}` must start with `http://` or `https://` \
                 (mlbuild talks to a tracking server, not to a local `mlruns` directory)"
            ));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_per_write(Some(Duration::from_secs(60)))
            .user_agent(concat!("mlbuild/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(MlflowClient {
            base,
            agent: ureq::Agent::new_with_config(config),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, e: ureq::Error) -> MlflowError {
        MlflowError::Unreachable {
            url: self.base.clone(),
            detail: e.to_string(),
        }
    }

    /// Reads a response: its JSON body on 2xx, else an [`MlflowError::Status`] with
    /// MLflow's error fields when the body has them.
    fn answer(
        &self,
        endpoint: &str,
        resp: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value> {
        let mut resp = resp.map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return Ok(body.unwrap_or(Value::Null));
        }
        let field = |name: &str| {
            body.as_ref()
                .and_then(|b| b.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Err(MlflowError::Status {
            endpoint: endpoint.to_owned(),
            status,
            code: field("error_code"),
            message: field("message").unwrap_or_else(|| first_line(&text)),
        })
    }

    fn post(&self, endpoint: &str, body: &Value) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let resp = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes());
        self.answer(endpoint, resp)
    }

    fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let mut req = self.agent.get(&url);
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        self.answer(endpoint, req.call())
    }

    /// The id of experiment `name`, created when it does not exist.
    pub fn experiment_id(&self, name: &str) -> Result<String> {
        let endpoint = "experiments/get-by-name";
        match self.get(endpoint, &[("experiment_name", name)]) {
            Ok(body) => str_at(&body, &["experiment", "experiment_id"], endpoint),
            Err(e) if e.code() == Some("RESOURCE_DOES_NOT_EXIST") => {
                let endpoint = "experiments/create";
                let body = self.post(endpoint, &json!({ "name": name }))?;
                str_at(&body, &["experiment_id"], endpoint)
            }
            Err(e) => Err(e),
        }
    }

    /// Active runs of `experiment_id` matching `filter` (MLflow's search syntax).
    pub fn search_runs(&self, experiment_id: &str, filter: &str) -> Result<Vec<RunInfo>> {
        let endpoint = "runs/search";
        let body = self.post(
            endpoint,
            &json!({
                "experiment_ids": [experiment_id],
                "filter": filter,
                "run_view_type": "ACTIVE_ONLY",
                "max_results": 100,
            }),
        )?;
        let runs = body.get("runs").and_then(Value::as_array);
        runs.into_iter()
            .flatten()
            .map(|run| run_info(run, endpoint))
            .collect()
    }

    /// Starts a run with `tags`.
    pub fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time_ms: i64,
        tags: &[(String, String)],
    ) -> Result<RunInfo> {
        let endpoint = "runs/create";
        let body = self.post(
            endpoint,
            &json!({
                "experiment_id": experiment_id,
                "run_name": run_name,
                "start_time": start_time_ms,
                "tags": key_values(tags),
            }),
        )?;
        let run = body.get("run").ok_or_else(|| MlflowError::Protocol {
            endpoint: endpoint.to_owned(),
            detail: "no `run` in the answer".to_owned(),
        })?;
        run_info(run, endpoint)
    }

    /// Logs params and metrics, in as many batches as MLflow's limits need (one for most
    /// targets: every request is a round trip, and an export makes several per target).
    pub fn log_batch(
        &self,
        run_id: &str,
        params: &[(String, String)],
        metrics: &[(String, f64)],
        timestamp_ms: i64,
    ) -> Result<()> {
        let mut params = params.chunks(MAX_PARAMS_PER_BATCH);
        let mut metrics = metrics.chunks(MAX_METRICS_PER_BATCH);
        loop {
            let (p, m) = (params.next(), metrics.next());
            if p.is_none() && m.is_none() {
                return Ok(());
            }
            let metrics: Vec<Value> = m
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": v, "timestamp": timestamp_ms, "step": 0 }))
                .collect();
            self.post(
                "runs/log-batch",
                &json!({
                    "run_id": run_id,
                    "params": key_values(p.unwrap_or_default()),
                    "metrics": metrics,
                }),
            )?;
        }
    }

    /// Ends a run as `FINISHED`.
    pub fn finish_run(&self, run_id: &str, end_time_ms: i64) -> Result<()> {
        self.post(
            "runs/update",
            &json!({ "run_id": run_id, "status": "FINISHED", "end_time": end_time_ms }),
        )?;
        Ok(())
    }

    /// Deletes a run (moves it to MLflow's trash).
    pub fn delete_run(&self, run_id: &str) -> Result<()> {
        self.post("runs/delete", &json!({ "run_id": run_id }))?;
        Ok(())
    }

    /// Uploads the file at `local` as artifact `path` of a run whose artifact URI is
    /// `artifact_uri`, through the server's artifact proxy (`mlflow server
    /// --serve-artifacts`, the default since MLflow 2.0).
    pub fn upload_artifact(&self, artifact_uri: &str, path: &str, local: &Path) -> Result<()> {
        let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
            return Err(MlflowError::Protocol {
                endpoint: "mlflow-artifacts".to_owned(),
                detail: format!(
                    "the run's artifact URI is `{artifact_uri}`, which the server does not \
                     proxy: start `mlflow server` with `--serve-artifacts` (its default) and \
                     without a `--default-artifact-root` outside it"
                ),
            });
        };
        // `mlflow-artifacts:/1/abc/artifacts` or `mlflow-artifacts://host/1/abc/artifacts`.
        let rest = match rest.strip_prefix("//") {
            Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
            None => rest.trim_start_matches('/'),
        };
        let endpoint = format!("mlflow-artifacts/artifacts/{rest}/{path}");
        let url = format!("{}/api/2.0/{endpoint}", self.base);
        let file = std::fs::File::open(local).map_err(|e| MlflowError::Protocol {
            endpoint: endpoint.clone(),
            detail: format!("cannot read `{}`: {e}", local.display()),
        })?;
        let resp = self
            .agent
            .put(&url)
            .header("content-type", "application/octet-stream")
            .send(file);
        self.answer(&endpoint, resp).map(drop)
    }

    /// Creates registered model `name`; one that exists already is fine.
    pub fn ensure_registered_model(&self, name: &str) -> Result<()> {
        match self.post("registered-models/create", &json!({ "name": name })) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The versions of registered model `name` made from run `run_id`.
    pub fn model_versions_of_run(&self, name: &str, run_id: &str) -> Result<Vec<String>> {
        let endpoint = "model-versions/search";
        let filter = format!("name = '{}' and run_id = '{}'", quote(name), quote(run_id));
        let body = self.get(endpoint, &[("filter", &filter)])?;
        let versions = body.get("model_versions").and_then(Value::as_array);
        Ok(versions
            .into_iter()
            .flatten()
            .filter(|v| v.get("name").and_then(Value::as_str) == Some(name))
            .filter_map(|v| v.get("version").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    /// Registers a model version of `name` whose files are at `source`, made by `run_id`.
    pub fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        description: &str,
        tags: &[(String, String)],
    ) -> Result<String> {
        let endpoint = "model-versions/create";
        let body = self.post(
            endpoint,
            &json!({
                "name": name,
                "source": source,
                "run_id": run_id,
                "description": description,
                "tags": key_values(tags),
            }),
        )?;
        str_at(&body, &["model_version", "version"], endpoint)
    }
}

/// A string literal's body for MLflow's filter syntax (single-quoted).
pub fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn key_values(pairs: &[(String, String)]) -> Vec<Value> {
    pairs
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect()
}

fn run_info(run: &Value, endpoint: &str) -> Result<RunInfo> {
    let info = run.get("info").unwrap_or(&Value::Null);
    Ok(RunInfo {
        run_id: str_at(info, &["run_id"], endpoint)?,
        artifact_uri: str_at(info, &["artifact_uri"], endpoint)?,
        status: info
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        parent_run_id: run
            .pointer("/data/tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|t| t.get("key").and_then(Value::as_str) == Some("mlflow.parentRunId"))
            .and_then(|t| t.get("value").and_then(Value::as_str))
            .map(str::to_owned),
    })
}

fn str_at(body: &Value, path: &[&str], endpoint: &str) -> Result<String> {
    let mut v = body;
    for key in path {
        v = v.get(key).unwrap_or(&Value::Null);
    }
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| MlflowError::Protocol {
            endpoint: endpoint.to_owned(),
            detail: format!("no `{}` in the answer", path.join(".")),
        })
}

/// The first line of a non-JSON error body (an HTML page from a proxy, say), kept short.
fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_non_http_tracking_uri() {
        assert!(MlflowClient::new("file:///tmp/mlruns").is_err());
        assert!(MlflowClient::new("localhost:5000").is_err());
        assert_eq!(
            MlflowClient::new("http://127.0.0.1:5000/").unwrap().base(),
            "http://127.0.0.1:5000"
        );
    }

    #[test]
    fn quotes_filter_strings() {
        assert_eq!(quote("//m:t[a=1]"), "//m:t[a=1]");
        assert_eq!(quote("it's"), "it\\'s");
    }

    #[test]
    fn errors_name_the_endpoint_and_mlflow_code() {
        let e = MlflowError::Status {
            endpoint: "runs/create".into(),
            status: 400,
            code: Some("INVALID_PARAMETER_VALUE".into()),
            message: "bad".into(),
        };
        assert_eq!(
            e.to_string(),
            "MLflow refused `runs/create` with HTTP 400 INVALID_PARAMETER_VALUE: bad"
        );
    }
}
