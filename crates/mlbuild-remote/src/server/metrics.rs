//! Counters behind `/metrics` (Prometheus text format) and `/status` (JSON).
//!
//! Plain atomics: every request touches a few of them, and a lock would serialise the
//! server on bookkeeping. Main type: [`Metrics`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::server::storage::Usage;
use crate::wire::Kind;

/// Why an upload was refused.
#[derive(Clone, Copy, Debug)]
pub enum Rejection {
    DigestMismatch,
    Malformed,
    TooLarge,
    /// Refused because the client already has as many uploads in flight as it may.
    Busy,
    /// No part of the body arrived within the idle timeout.
    Stalled,
}

const METHODS: [&str; 4] = ["GET", "HEAD", "PUT", "OTHER"];
const REJECTIONS: [&str; 5] = [
    "digest_mismatch",
    "malformed",
    "too_large",
    "busy",
    "stalled",
];

#[derive(Default)]
pub struct Metrics {
    /// [method][kind]; kind 2 is every other path (`/metrics`, `/status`, unknown).
    requests: [[AtomicU64; 3]; 4],
    hits: [AtomicU64; 2],
    misses: [AtomicU64; 2],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    evictions: AtomicU64,
    rejected: [AtomicU64; 5],
    unauthorized: AtomicU64,
    bad_requests: AtomicU64,
}

fn kind_index(kind: Option<Kind>) -> usize {
    match kind {
        Some(Kind::Cas) => 0,
        Some(Kind::Ac) => 1,
        None => 2,
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Metrics {
    pub fn request(&self, method: &str, kind: Option<Kind>) {
        let m = METHODS.iter().position(|m| *m == method).unwrap_or(3);
        add(&self.requests[m][kind_index(kind)], 1);
    }
    pub fn hit(&self, kind: Kind) {
        add(&self.hits[kind_index(Some(kind))], 1);
    }
    pub fn miss(&self, kind: Kind) {
        add(&self.misses[kind_index(Some(kind))], 1);
    }
    pub fn bytes_in(&self, n: u64) {
        add(&self.bytes_in, n);
    }
    pub fn bytes_out(&self, n: u64) {
        add(&self.bytes_out, n);
    }
    pub fn evicted(&self, n: u64) {
        add(&self.evictions, n);
    }
    pub fn rejected(&self, why: Rejection) {
        add(&self.rejected[why as usize], 1);
    }
    pub fn unauthorized(&self) {
        add(&self.unauthorized, 1);
    }
    pub fn bad_request(&self) {
        add(&self.bad_requests, 1);
    }

    /// Hits and misses of action-cache lookups: the number that says whether the cache
    /// saves builds (a CAS miss after an AC hit cannot happen on this server).
    pub fn ac_hits_misses(&self) -> (u64, u64) {
        (get(&self.hits[1]), get(&self.misses[1]))
    }

    pub fn render_prometheus(&self, usage: Usage, max_size: u64) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP mlbuild_cache_{name} {help}");
            let _ = writeln!(out, "# TYPE mlbuild_cache_{name} {kind}");
        };
        family(
            "requests_total",
            "counter",
            "HTTP requests by method and path kind.",
        );
        for (m, method) in METHODS.iter().enumerate() {
            for (k, kind) in ["cas", "ac", "other"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "mlbuild_cache_requests_total{{method=\"{method}\",kind=\"{kind}\"}} {}",
                    get(&self.requests[m][k])
                );
            }
        }
        let per_kind = |out: &mut String, name: &str, help: &str, c: &[AtomicU64; 2]| {
            let _ = writeln!(out, "# HELP mlbuild_cache_{name} {help}");
            let _ = writeln!(out, "# TYPE mlbuild_cache_{name} counter");
            for (k, kind) in ["cas", "ac"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "mlbuild_cache_{name}{{kind=\"{kind}\"}} {}",
                    get(&c[k])
                );
            }
        };
        per_kind(
            &mut out,
            "hits_total",
            "GET/HEAD requests served.",
            &self.hits,
        );
        per_kind(
            &mut out,
            "misses_total",
            "GET/HEAD requests answered 404.",
            &self.misses,
        );
        let mut single = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP mlbuild_cache_{name} {help}");
            let _ = writeln!(out, "# TYPE mlbuild_cache_{name} {kind}");
            let _ = writeln!(out, "mlbuild_cache_{name} {v}");
        };
        single(
            "received_bytes_total",
            "counter",
            "Request body bytes received (on the wire).",
            get(&self.bytes_in),
        );
        single(
            "sent_bytes_total",
            "counter",
            "Response body bytes sent (on the wire).",
            get(&self.bytes_out),
        );
        single(
            "evictions_total",
            "counter",
            "Objects evicted to stay under the size bound.",
            get(&self.evictions),
        );
        single(
            "unauthorized_total",
            "counter",
            "Requests refused for a missing or insufficient token.",
            get(&self.unauthorized),
        );
        single(
            "bad_requests_total",
            "counter",
            "Requests with a malformed path or key.",
            get(&self.bad_requests),
        );
        single("size_bytes", "gauge", "Bytes stored.", usage.bytes);
        single("max_size_bytes", "gauge", "The size bound.", max_size);
        let _ = writeln!(
            out,
            "# HELP mlbuild_cache_rejected_uploads_total Uploads refused, by reason."
        );
        let _ = writeln!(out, "# TYPE mlbuild_cache_rejected_uploads_total counter");
        for (i, reason) in REJECTIONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "mlbuild_cache_rejected_uploads_total{{reason=\"{reason}\"}} {}",
                get(&self.rejected[i])
            );
        }
        let _ = writeln!(out, "# HELP mlbuild_cache_entries Objects stored, by kind.");
        let _ = writeln!(out, "# TYPE mlbuild_cache_entries gauge");
        let _ = writeln!(
            out,
            "mlbuild_cache_entries{{kind=\"cas\"}} {}",
            usage.cas_entries
        );
        let _ = writeln!(
            out,
            "mlbuild_cache_entries{{kind=\"ac\"}} {}",
            usage.ac_entries
        );
        out
    }

    pub fn status_json(&self, usage: Usage, max_size: u64, uptime_secs: u64) -> serde_json::Value {
        let (hits, misses) = self.ac_hits_misses();
        let lookups = hits + misses;
        serde_json::json!({
            "server": "mlbuild-cache",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": uptime_secs,
            "entries": { "cas": usage.cas_entries, "ac": usage.ac_entries },
            "size_bytes": usage.bytes,
            "max_size_bytes": max_size,
            "ac_hits": hits,
            "ac_misses": misses,
            "hit_rate": if lookups == 0 { None } else { Some(hits as f64 / lookups as f64) },
            "cas_hits": get(&self.hits[0]),
            "cas_misses": get(&self.misses[0]),
            "received_bytes": get(&self.bytes_in),
            "sent_bytes": get(&self.bytes_out),
            "evictions": get(&self.evictions),
            "rejected_uploads": self.rejected.iter().map(get).sum::<u64>(),
            "unauthorized": get(&self.unauthorized),
        })
    }
}
