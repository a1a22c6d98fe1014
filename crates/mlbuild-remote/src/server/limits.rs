//! What one client of the cache server may hold at once.
//!
//! A crashed or suspended CI runner leaves uploads half sent; without bounds, each held a
//! blocking thread waiting for bytes that never come, and a few hundred of them took the
//! whole blocking pool, so reads timed out for everyone. Uploads in flight are now
//! counted per client address, per token and in total, and refused with 503 beyond
//! that; each body also has an idle timeout. Reads never wait on uploads.
//! Main types: [`Limits`], [`Uploads`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bounds on uploads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest blob accepted (also bounded by the cache's size); longer announced
    /// uploads get 413 before their body is read.
    pub max_blob_size: u64,
    /// An upload that receives nothing for this long is answered 408 and dropped.
    pub body_idle_timeout: Duration,
    /// Uploads in flight from one client address.
    pub uploads_per_address: usize,
    /// Uploads in flight with one token (anonymous uploads share the empty token).
    pub uploads_per_token: usize,
    /// Uploads in flight in all. Each holds one blocking thread while it receives.
    pub uploads_total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blob_size: u64::MAX,
            body_idle_timeout: Duration::from_secs(30),
            uploads_per_address: 32,
            uploads_per_token: 64,
            uploads_total: 128,
        }
    }
}

#[derive(Default, Debug)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    by_token: HashMap<String, usize>,
}

/// The uploads in flight.
pub(crate) struct Uploads {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

/// One upload's place; given back when dropped (however the request ends).
#[derive(Debug)]
pub(crate) struct UploadSlot {
    counts: Arc<Mutex<Counts>>,
    address: IpAddr,
    token: String,
}

impl Uploads {
    pub(crate) fn new(limits: &Limits) -> Uploads {
        Uploads {
            limits: limits.clone(),
            counts: Arc::new(Mutex::new(Counts::default())),
        }
    }

    /// A slot for an upload from `address` with `token`, or why there is none.
    pub(crate) fn acquire(&self, address: IpAddr, token: &str) -> Result<UploadSlot, String> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let by_address = counts.by_address.get(&address).copied().unwrap_or(0);
        let by_token = counts.by_token.get(token).copied().unwrap_or(0);
        if by_address >= self.limits.uploads_per_address {
            return Err(format!(
                "{by_address} uploads from {address} are in flight already; retry when one ends"
            ));
        }
        if by_token >= self.limits.uploads_per_token {
            return Err(format!(
                "{by_token} uploads with this token are in flight already; retry when one ends"
            ));
        }
        if counts.total >= self.limits.uploads_total {
            return Err(
                "the server is receiving as many uploads as it takes; retry shortly".into(),
            );
        }
        counts.total += 1;
        *counts.by_address.entry(address).or_default() += 1;
        *counts.by_token.entry(token.to_owned()).or_default() += 1;
        Ok(UploadSlot {
            counts: Arc::clone(&self.counts),
            address,
            token: token.to_owned(),
        })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&self.address);
            }
        }
        if let Some(n) = counts.by_token.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                counts.by_token.remove(&self.token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_address_token_and_in_total_and_given_back() {
        let limits = Limits {
            uploads_per_address: 2,
            uploads_per_token: 3,
            uploads_total: 4,
            ..Limits::default()
        };
        let uploads = Uploads::new(&limits);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let a1 = uploads.acquire(a, "t").unwrap();
        let _a2 = uploads.acquire(a, "t").unwrap();
        assert!(uploads
            .acquire(a, "u")
            .unwrap_err()
            .contains("from 10.0.0.1"));
        let _b1 = uploads.acquire(b, "t").unwrap();
        assert!(uploads.acquire(b, "t").unwrap_err().contains("this token"));
        let _b2 = uploads.acquire(b, "u").unwrap();
        assert!(uploads
            .acquire(c, "v")
            .unwrap_err()
            .contains("as many uploads"));
        drop(a1);
        uploads.acquire(c, "v").unwrap();
    }
}
