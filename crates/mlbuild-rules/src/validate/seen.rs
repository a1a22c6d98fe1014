//! [`Seen`]: the set of 128-bit value hashes behind the `unique` rule.
//!
//! It is the one structure of `validate` that grows with the data (16 bytes per distinct
//! value), and on large files its random accesses were the largest cost of validation:
//! a general hash set touches a control byte and then a bucket, two cache misses per row.
//! The hashes are already uniform, so this open-addressing table with linear probing uses
//! their low bits as the slot and stores them in place: one cache miss per insert, and a
//! collision usually continues in the same cache line.

/// An insert-only set of non-zero 128-bit hashes (0 marks an empty slot; a hash of 0 is
/// stored as 1, which merges two of 2^128 values).
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen {
    slots: Vec<u128>,
    len: usize,
}

impl Seen {
    /// Make room for `n` values in total without growing.
    pub(crate) fn reserve(&mut self, n: usize) {
        let want = n.saturating_mul(4) / 3 + 1;
        if want > self.slots.len() {
            self.resize(want.next_power_of_two());
        }
    }

    /// Insert `h`; false if it was already there.
    #[inline]
    pub(crate) fn insert(&mut self, h: u128) -> bool {
        let h = h.max(1);
        // Keep the load at most 3/4, where linear probing stays short.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize((self.slots.len() * 2).max(1024));
        }
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                self.slots[i] = h;
                self.len += 1;
                return true;
            }
            if s == h {
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    fn resize(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, vec![0; capacity]);
        let mask = capacity - 1;
        for h in old.into_iter().filter(|&h| h != 0) {
            let mut i = (h as usize) & mask;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = h;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_repeats_across_growth() {
        let mut s = Seen::default();
        for i in 0..10_000u128 {
            assert!(s.insert(xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())));
        }
        assert_eq!(s.len(), 10_000);
        for i in (0..10_000u128).step_by(7) {
            assert!(!s.insert(xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())));
        }
        // Colliding low bits probe onward; 0 is stored as 1.
        let mut t = Seen::default();
        t.reserve(10);
        assert!(t.insert(5 << 64) && t.insert(5 << 65) && t.insert(0));
        assert!(!t.insert(5 << 64) && !t.insert(5 << 65) && !t.insert(1));
        assert_eq!(t.len(), 3);
    }
}
