//! [`TopK`]: bounded counting of the most frequent values of a column (Misra-Gries).
//!
//! Top values and the categorical distributions `drift` compares must fit in constant
//! memory whatever the column's cardinality. Misra-Gries keeps at most [`CAPACITY`]
//! counters: while there are fewer distinct values than that, counts are exact; after
//! that, when a new value finds no free counter every counter is decremented, so each
//! reported count is an underestimate by at most `n / (CAPACITY + 1)` and every value more
//! frequent than that is guaranteed to be kept. [`TopK::is_exact`] says which case applies.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Most distinct values tracked per column.
pub const CAPACITY: usize = 1024;

/// Values up to this many bytes are stored inline, without an allocation.
const INLINE: usize = 30;

/// A tracked value. High-cardinality columns churn through counters (every miss inserts or
/// evicts), so short values, which categorical values nearly always are, live inline.
#[derive(Clone, Debug)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(v: &[u8]) -> Key {
        if v.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..v.len()].copy_from_slice(v);
            Key::Inline {
                len: v.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(v.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

// Hash, Eq and Borrow all go through the byte slice, so lookups by `&[u8]` work.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

type Map = HashMap<Key, u64, foldhash::fast::FixedState>;

/// Misra-Gries counters over byte-string values.
#[derive(Clone, Debug, Default)]
pub struct TopK {
    counts: Map,
    total: u64,
    decremented: bool,
}

impl TopK {
    pub fn new() -> TopK {
        TopK::default()
    }

    #[inline]
    pub fn add(&mut self, value: &[u8]) {
        self.total += 1;
        if let Some(c) = self.counts.get_mut(value) {
            *c += 1;
            return;
        }
        if self.counts.len() < CAPACITY {
            self.counts.insert(Key::new(value), 1);
            return;
        }
        // No free counter: the new value and one occurrence of every tracked value cancel.
        self.decremented = true;
        self.counts.retain(|_, c| {
            *c -= 1;
            *c > 0
        });
    }

    /// Count `value` `n` times at once (Misra-Gries with weights: when no counter is free,
    /// every counter and `n` drop by the smallest of them and `n` until one side is used up).
    pub fn add_count(&mut self, value: &[u8], mut n: u64) {
        if n == 0 {
            return;
        }
        self.total += n;
        if let Some(c) = self.counts.get_mut(value) {
            *c += n;
            return;
        }
        if self.counts.len() >= CAPACITY {
            let m = self.counts.values().copied().min().unwrap_or(0).min(n);
            self.decremented = true;
            self.counts.retain(|_, c| {
                *c -= m;
                *c > 0
            });
            n -= m;
        }
        if n > 0 && self.counts.len() < CAPACITY {
            self.counts.insert(Key::new(value), n);
        }
    }

    /// Values counted (including those no counter kept).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether the counts are exact (the column had at most [`CAPACITY`] distinct values).
    pub fn is_exact(&self) -> bool {
        !self.decremented
    }

    /// Number of distinct values, when exact.
    pub fn distinct(&self) -> Option<u64> {
        self.is_exact().then_some(self.counts.len() as u64)
    }

    /// Tracked values by descending count, ties by ascending bytes (deterministic).
    pub fn sorted(&self) -> Vec<(&[u8], u64)> {
        let mut v: Vec<(&[u8], u64)> = self
            .counts
            .iter()
            .map(|(k, c)| (k.as_bytes(), *c))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_capacity() {
        let mut t = TopK::new();
        for v in ["b", "a", "b", "c", "b", "a"] {
            t.add(v.as_bytes());
        }
        assert!(t.is_exact());
        assert_eq!(t.distinct(), Some(3));
        let top: Vec<_> = t
            .sorted()
            .into_iter()
            .map(|(k, c)| (k.to_vec(), c))
            .collect();
        assert_eq!(
            top,
            vec![(b"b".to_vec(), 3), (b"a".to_vec(), 2), (b"c".to_vec(), 1)]
        );
    }

    #[test]
    fn weighted_counts_add_up() {
        let mut t = TopK::new();
        t.add(b"a");
        t.add_count(b"b", 5);
        t.add_count(b"a", 2);
        t.add_count(b"c", 0);
        assert_eq!(t.total(), 8);
        let top: Vec<_> = t
            .sorted()
            .into_iter()
            .map(|(k, c)| (k.to_vec(), c))
            .collect();
        assert_eq!(top, vec![(b"b".to_vec(), 5), (b"a".to_vec(), 3)]);
        // Past capacity the heavy value survives and the light ones are cancelled.
        let mut full = TopK::new();
        for i in 0..CAPACITY {
            full.add(i.to_string().as_bytes());
        }
        full.add_count(b"heavy", 10);
        assert!(!full.is_exact());
        assert_eq!(full.sorted()[0], (&b"heavy"[..], 9));
    }

    #[test]
    fn keeps_heavy_hitters_past_capacity() {
        let mut t = TopK::new();
        let n = 50_000u64;
        for i in 0..n {
            if i % 3 == 0 {
                t.add(b"heavy");
            } else {
                t.add(i.to_string().as_bytes());
            }
        }
        assert!(!t.is_exact());
        assert_eq!(t.distinct(), None);
        let (k, c) = t.sorted()[0];
        assert_eq!(k, b"heavy");
        let exact = n.div_ceil(3);
        assert!(c <= exact && c + n / (CAPACITY as u64 + 1) >= exact, "{c}");
        assert!(t.counts.len() <= CAPACITY);
    }
}
