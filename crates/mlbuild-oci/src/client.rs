//! A blocking client for one repository of an OCI distribution registry: the handful of
//! endpoints a push and a pull need, on `ureq`.
//!
//! Blocking because a push is a sequence (blobs, then manifests, then the tag) that gains
//! nothing from an async runtime, and because the release-channel code calls it from
//! plain threads. Every registry error is turned into a message that says which request
//! failed and what the registry answered (its `errors[].message` when it sent one).
//! Main type: [`Registry`].

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use ureq::http::Response;
use ureq::Body;

use crate::reference::Reference;
use crate::spec::{
    Index, DOCKER_LIST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
};
use crate::OciError;

/// Largest manifest or index read (the distribution spec suggests registries accept at
/// least 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Speak plain HTTP even to a registry that is not on this machine.
    pub plain_http: bool,
    /// How fast a registry that is down is noticed.
    pub connect_timeout: Duration,
    /// Longest wait for a response, and for each read or write of a body.
    pub io_timeout: Duration,
    /// User name and password for HTTP Basic authentication, sent with every request.
    pub credentials: Option<(String, String)>,
}

/// The environment variables [`ClientOptions::with_env_credentials`] reads.
pub const USERNAME_ENV: &str = "MLBUILD_OCI_USERNAME";
pub const PASSWORD_ENV: &str = "MLBUILD_OCI_PASSWORD";

impl ClientOptions {
    /// Takes the credentials from [`USERNAME_ENV`] and [`PASSWORD_ENV`] when both are set
    /// (the environment, not a flag, so a password never shows in `ps` or shell history).
    pub fn with_env_credentials(mut self) -> ClientOptions {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        if let (Some(user), Some(password)) = (var(USERNAME_ENV), var(PASSWORD_ENV)) {
            self.credentials = Some((user, password));
        }
        self
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            plain_http: false,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(60),
            credentials: None,
        }
    }
}

/// One repository of a registry.
pub struct Registry {
    /// `http(s)://host[:port]`.
    base: String,
    repository: String,
    /// `host[:port]/repo`, for messages.
    shown: String,
    agent: ureq::Agent,
    /// The `Authorization` header value, when credentials were given.
    auth: Option<String>,
}

/// A manifest or index as the registry returned it: its bytes are what its digest covers.
pub struct Fetched {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Registry {
    /// A client for `reference`'s repository; nothing is contacted yet. Loopback
    /// registries are spoken to in plain HTTP, others in HTTPS unless
    /// [`ClientOptions::plain_http`].
    pub fn new(reference: &Reference, options: &ClientOptions) -> Registry {
        let scheme = if options.plain_http || reference.is_loopback() {
            "http"
        } else {
            "https"
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_recv_response(Some(options.io_timeout))
            .timeout_per_read(Some(options.io_timeout))
            .timeout_per_write(Some(options.io_timeout))
            .user_agent(concat!("mlbuild/", env!("CARGO_PKG_VERSION")))
            .build();
        Registry {
            base: format!("{scheme}://{}", reference.registry),
            repository: reference.repository.clone(),
            shown: format!("{}/{}", reference.registry, reference.repository),
            agent: ureq::Agent::new_with_config(config),
            auth: options.credentials.as_ref().map(|(user, password)| {
                use base64::Engine as _;
                let pair = format!("{user}:{password}");
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }),
        }
    }

    fn get(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.authorized(self.agent.get(url))
    }

    fn head(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.authorized(self.agent.head(url))
    }

    fn post(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.authorized(self.agent.post(url))
    }

    fn put(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.authorized(self.agent.put(url))
    }

    /// Adds the credentials. ureq drops the header on redirects (blob downloads are
    /// often redirected to object storage, which must not see them).
    fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.auth {
            Some(auth) => req.header("authorization", auth),
            None => req,
        }
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repository)
    }

    fn unreachable(&self, what: &str, e: ureq::Error) -> OciError {
        OciError::Unreachable {
            registry: self.base.clone(),
            what: what.to_string(),
            error: e.to_string(),
        }
    }

    /// The error for an unexpected status: the registry's own message when it sent one.
    fn refused(&self, what: &str, resp: Response<Body>) -> OciError {
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let text = resp
            .into_body()
            .with_config()
            .limit(64 << 10)
            .read_to_string()
            .unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                let errors = v.get("errors")?.as_array()?;
                let parts: Vec<String> = errors
                    .iter()
                    .map(|e| {
                        let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                        let message = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                        format!("{code}: {message}")
                    })
                    .collect();
                (!parts.is_empty()).then(|| parts.join("; "))
            })
            .unwrap_or_else(|| text.trim().chars().take(300).collect::<String>());
        let hint = match status {
            401 if challenge.starts_with("bearer") => " (the registry wants a bearer-token exchange, which mlbuild does not do yet)",
            401 if self.auth.is_some() => " (the registry refused the credentials in `MLBUILD_OCI_USERNAME` and `MLBUILD_OCI_PASSWORD`)",
            401 => " (set `MLBUILD_OCI_USERNAME` and `MLBUILD_OCI_PASSWORD` to log in)",
            403 => " (the credentials do not allow this)",
            _ => "",
        };
        let detail = format!("{detail}{hint}");
        OciError::Refused {
            repository: self.shown.clone(),
            what: what.to_string(),
            status,
            detail,
        }
    }

    /// Whether the repository holds blob `digest` (`HEAD /v2/<name>/blobs/<digest>`).
    pub fn has_blob(&self, digest: &str) -> Result<bool, OciError> {
        let what = format!("HEAD blob {digest}");
        let resp = self
            .head(&self.url(&format!("blobs/{digest}")))
            .call()
            .map_err(|e| self.unreachable(&what, e))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.refused(&what, resp)),
        }
    }

    /// Uploads a blob from `bytes` unless the repository has it; returns whether it was
    /// uploaded.
    pub fn put_blob_bytes(&self, digest: &str, bytes: &[u8]) -> Result<bool, OciError> {
        if self.has_blob(digest)? {
            return Ok(false);
        }
        self.upload(digest, |req| req.send(bytes))?;
        Ok(true)
    }

    /// Uploads the blob in file `path` (whose digest is `digest`) unless the repository
    /// has it; returns whether it was uploaded.
    pub fn put_blob_file(&self, digest: &str, path: &Path) -> Result<bool, OciError> {
        if self.has_blob(digest)? {
            return Ok(false);
        }
        let file = File::open(path).map_err(|e| OciError::io("read", path, e))?;
        self.upload(digest, |req| req.send(file))?;
        Ok(true)
    }

    /// A monolithic upload: `POST` opens an upload session, one `PUT` with the digest
    /// sends the bytes and completes it. The registry checks the digest and refuses a
    /// mismatch, so a blob is never stored under the wrong name.
    fn upload(
        &self,
        digest: &str,
        send: impl FnOnce(
            ureq::RequestBuilder<ureq::typestate::WithBody>,
        ) -> Result<Response<Body>, ureq::Error>,
    ) -> Result<(), OciError> {
        let what = format!("POST a blob upload for {digest}");
        let resp = self
            .post(&self.url("blobs/uploads/"))
            .send_empty()
            .map_err(|e| self.unreachable(&what, e))?;
        if resp.status().as_u16() != 202 {
            return Err(self.refused(&what, resp));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| OciError::Protocol {
                repository: self.shown.clone(),
                detail: "the upload session has no `Location` header".to_string(),
            })?;
        // The location may be absolute or relative to the registry, and may carry a query.
        let mut url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(digest);
        let what = format!("PUT blob {digest}");
        let req = self
            .put(&url)
            .header("content-type", "application/octet-stream");
        let resp = send(req).map_err(|e| self.unreachable(&what, e))?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            _ => Err(self.refused(&what, resp)),
        }
    }

    /// `PUT /v2/<name>/manifests/<reference>`; returns the `OCI-Subject` header, which a
    /// registry with the referrers API sends when it indexed the manifest's subject.
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<String>, OciError> {
        let what = format!("PUT manifest {reference}");
        let resp = self
            .put(&self.url(&format!("manifests/{reference}")))
            .header("content-type", media_type)
            .send(bytes)
            .map_err(|e| self.unreachable(&what, e))?;
        match resp.status().as_u16() {
            201 | 200 | 204 => Ok(resp
                .headers()
                .get("oci-subject")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            _ => Err(self.refused(&what, resp)),
        }
    }

    /// `GET /v2/<name>/manifests/<reference>`; `None` when the registry has no such
    /// manifest (or tag). A reference that is a digest is checked against the bytes.
    pub fn get_manifest(&self, reference: &str) -> Result<Option<Fetched>, OciError> {
        let what = format!("GET manifest {reference}");
        let accept = [
            MANIFEST_MEDIA_TYPE,
            INDEX_MEDIA_TYPE,
            DOCKER_MANIFEST_MEDIA_TYPE,
            DOCKER_LIST_MEDIA_TYPE,
        ]
        .join(", ");
        let resp = self
            .get(&self.url(&format!("manifests/{reference}")))
            .header("accept", &accept)
            .call()
            .map_err(|e| self.unreachable(&what, e))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.refused(&what, resp)),
        }
        let header_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let bytes = resp
            .into_body()
            .with_config()
            .limit(MAX_MANIFEST_BYTES)
            .read_to_vec()
            .map_err(|e| self.unreachable(&what, e))?;
        let digest = crate::spec::sha256_digest(&bytes);
        if reference.starts_with("sha256:") && reference != digest {
            return Err(OciError::DigestMismatch {
                repository: self.shown.clone(),
                what: format!("manifest {reference}"),
                actual: digest,
            });
        }
        // The document's own `mediaType` wins over the header, which some registries
        // set to whatever the client accepted first.
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
            .or(header_type)
            .unwrap_or_default();
        Ok(Some(Fetched {
            media_type,
            bytes,
            digest,
        }))
    }

    /// `GET /v2/<name>/blobs/<digest>`: the body as a reader, for the caller to hash as
    /// it streams.
    pub fn get_blob(&self, digest: &str) -> Result<ureq::BodyReader<'static>, OciError> {
        let what = format!("GET blob {digest}");
        let resp = self
            .get(&self.url(&format!("blobs/{digest}")))
            .call()
            .map_err(|e| self.unreachable(&what, e))?;
        if resp.status().as_u16() != 200 {
            return Err(self.refused(&what, resp));
        }
        Ok(resp.into_body().into_reader())
    }

    /// The referrers of `digest` by the referrers API; `None` when the registry has no
    /// referrers API (it answers 404, as distribution 2.8 does).
    pub fn referrers(&self, digest: &str) -> Result<Option<Index>, OciError> {
        let what = format!("GET referrers of {digest}");
        let resp = self
            .get(&self.url(&format!("referrers/{digest}")))
            .header("accept", INDEX_MEDIA_TYPE)
            .call()
            .map_err(|e| self.unreachable(&what, e))?;
        let is_index = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(INDEX_MEDIA_TYPE));
        match resp.status().as_u16() {
            200 if is_index => {}
            200 | 404 => return Ok(None),
            _ => return Err(self.refused(&what, resp)),
        }
        let bytes = resp
            .into_body()
            .with_config()
            .limit(MAX_MANIFEST_BYTES)
            .read_to_vec()
            .map_err(|e| self.unreachable(&what, e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| OciError::Protocol {
                repository: self.shown.clone(),
                detail: format!("the referrers of {digest} are not an image index: {e}"),
            })
    }

    /// `host[:port]/repo`, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}
