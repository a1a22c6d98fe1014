//! `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`: the registry references `mlbuild push` and
//! `mlbuild pull` take, checked against the OCI distribution spec's grammar.
//!
//! A registry answers a malformed name with a terse `NAME_INVALID` long after the upload
//! started, or not at all (a `:` in the wrong place silently becomes a port), so every
//! part is checked here, before anything is built or sent, with a message naming the part
//! that is wrong. Main type: [`Reference`].

use std::fmt;
use std::sync::OnceLock;

use regex::Regex;

use crate::OciError;

/// The scheme every reference starts with (KServe's storage URIs use it too).
pub const SCHEME: &str = "oci://";

/// The tag a reference without tag or digest means, as `docker pull` reads it.
pub const DEFAULT_TAG: &str = "latest";

/// Longest repository name the distribution spec guarantees registries accept.
const MAX_NAME: usize = 255;

/// A parsed `oci://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host`, `host:port` or `[v6]:port`, as typed.
    pub registry: String,
    /// The repository: lowercase path components, e.g. `models/fraud`.
    pub repository: String,
    /// The tag, when one was given (see [`Reference::tag_or_default`]).
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, when one was given.
    pub digest: Option<String>,
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid pattern"))
}

/// One path component of a repository name (distribution spec).
fn component_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
}

fn tag_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
}

fn host_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$",
    )
}

fn digest_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^sha256:[0-9a-f]{64}$")
}

impl Reference {
    /// Parses `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`.
    pub fn parse(text: &str) -> Result<Reference, OciError> {
        let bad = |reason: String| OciError::BadReference {
            reference: text.to_string(),
            reason,
        };
        let rest = text.strip_prefix(SCHEME).ok_or_else(|| {
            bad(format!(
                "it must start with `{SCHEME}`, as in `oci://registry.example/models/fraud:v1`"
            ))
        })?;
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("it names no repository after the registry host".to_string()))?;
        if host.is_empty() {
            return Err(bad("it names no registry host".to_string()));
        }
        if !host_re().is_match(host) {
            return Err(bad(format!(
                "`{host}` is not a registry host: a domain name, IPv4 or `[IPv6]` address, with an optional `:PORT`"
            )));
        }
        if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad(format!("`{port}` is not a port number")));
            }
        }
        let (name_tag, digest) = match path.split_once('@') {
            Some((name_tag, digest)) => (name_tag, Some(digest)),
            None => (path, None),
        };
        if let Some(digest) = digest {
            if !digest_re().is_match(digest) {
                return Err(bad(format!(
                    "`{digest}` is not a digest: write `sha256:` and 64 lowercase hex digits"
                )));
            }
        }
        // A `:` after the last `/` starts the tag (earlier ones cannot occur: the host
        // took the first `/`).
        let (repository, tag) = match name_tag.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag)),
            None => (name_tag, None),
        };
        if repository.is_empty() {
            return Err(bad(
                "it names no repository after the registry host".to_string()
            ));
        }
        if repository.len() > MAX_NAME {
            return Err(bad(format!(
                "the repository name is {} bytes long; registries accept at most {MAX_NAME}",
                repository.len()
            )));
        }
        for component in repository.split('/') {
            if !component_re().is_match(component) {
                let hint = if component.chars().any(|c| c.is_ascii_uppercase()) {
                    " (repository names are lowercase)"
                } else {
                    ""
                };
                return Err(bad(format!(
                    "`{component}` is not a valid repository path component{hint}: use lowercase letters and digits, separated by `.`, `_`, `__` or `-`"
                )));
            }
        }
        if let Some(tag) = tag {
            if !tag_re().is_match(tag) {
                return Err(bad(format!(
                    "`{tag}` is not a valid tag: up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
                )));
            }
        }
        Ok(Reference {
            registry: host.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// The tag, or [`DEFAULT_TAG`] when neither tag nor digest was given.
    pub fn tag_or_default(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => Some(tag),
            (None, None) => Some(DEFAULT_TAG),
            (None, Some(_)) => None,
        }
    }

    /// What to ask the registry for: the digest when given (it pins the content), else
    /// the tag.
    pub fn manifest_reference(&self) -> &str {
        match &self.digest {
            Some(digest) => digest,
            None => self
                .tag_or_default()
                .expect("a tag when there is no digest"),
        }
    }

    /// The host without the port, for deciding whether it is loopback.
    pub fn host(&self) -> &str {
        let r = &self.registry;
        if let Some(end) = r.find(']') {
            return &r[..=end];
        }
        r.split(':').next().unwrap_or(r)
    }

    /// Whether the registry is on this machine (`localhost`, `127.0.0.0/8`, `[::1]`):
    /// such registries are spoken to in plain HTTP, as docker and skopeo do.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host == "localhost"
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository pinned to `digest`.
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_what_the_spec_allows() {
        for (text, registry, repository, tag, digest) in [
            (
                "oci://localhost:5000/fraud:v1",
                "localhost:5000",
                "fraud",
                Some("v1"),
                None,
            ),
            (
                "oci://ghcr.io/acme/models/fraud",
                "ghcr.io",
                "acme/models/fraud",
                None,
                None,
            ),
            (
                "oci://127.0.0.1:5000/a.b_c__d-e--f:V_1.0-rc",
                "127.0.0.1:5000",
                "a.b_c__d-e--f",
                Some("V_1.0-rc"),
                None,
            ),
            (
                "oci://[::1]:5000/m:production",
                "[::1]:5000",
                "m",
                Some("production"),
                None,
            ),
            (
                &format!("oci://reg.example/m@{D}"),
                "reg.example",
                "m",
                None,
                Some(D),
            ),
            (
                &format!("oci://reg.example/m:v2@{D}"),
                "reg.example",
                "m",
                Some("v2"),
                Some(D),
            ),
        ] {
            let r = Reference::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(r.registry, registry, "{text}");
            assert_eq!(r.repository, repository, "{text}");
            assert_eq!(r.tag.as_deref(), tag, "{text}");
            assert_eq!(r.digest.as_deref(), digest, "{text}");
            assert_eq!(r.to_string(), text, "round trip");
        }
    }

    #[test]
    fn refuses_with_the_part_that_is_wrong() {
        for (text, says) in [
            ("oci://", "no repository"),
            ("oci:///repo", "no registry host"),
            ("oci://host", "no repository"),
            ("oci://host/", "no repository"),
            ("docker://host/repo", "must start with `oci://`"),
            ("host/repo:v1", "must start with `oci://`"),
            ("oci://host/Models:v1", "repository names are lowercase"),
            (
                "oci://host/models//fraud",
                "`` is not a valid repository path component",
            ),
            ("oci://host/-models", "`-models` is not a valid"),
            ("oci://host/models:bad!tag", "`bad!tag` is not a valid tag"),
            ("oci://host/models:.hidden", "`.hidden` is not a valid tag"),
            ("oci://host/models:", "`` is not a valid tag"),
            ("oci://host/models@sha256:abc", "is not a digest"),
            ("oci://host/models@md5:0123", "is not a digest"),
            ("oci://host:99999/models", "`99999` is not a port"),
            ("oci://host:0/models", "`0` is not a port"),
            ("oci://ho_st/models", "`ho_st` is not a registry host"),
        ] {
            let err = Reference::parse(text).expect_err(text).to_string();
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.contains(&format!("`{text}`")), "{text}: {err}");
        }
        let long = format!("oci://h/{}", "a".repeat(256));
        assert!(Reference::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("at most 255"));
    }

    #[test]
    fn loopback_and_defaults() {
        let r = Reference::parse("oci://127.0.0.2:5000/m").unwrap();
        assert!(r.is_loopback());
        assert_eq!(r.manifest_reference(), "latest");
        assert!(Reference::parse("oci://localhost/m").unwrap().is_loopback());
        assert!(Reference::parse("oci://[::1]:80/m").unwrap().is_loopback());
        assert!(!Reference::parse("oci://ghcr.io/m").unwrap().is_loopback());
        let pinned = Reference::parse(&format!("oci://h/m:v1@{D}")).unwrap();
        assert_eq!(pinned.manifest_reference(), D);
        assert_eq!(
            pinned.with_tag("production").to_string(),
            "oci://h/m:production"
        );
    }
}
