//! [`Sketch`]: a constant-memory quantile sketch with a relative-error guarantee.
//!
//! Quantiles, histograms, PSI and KS must come from one streaming pass in bounded memory.
//! Like DDSketch (Masson, Rim, Lee, VLDB 2019) the sketch counts values per bucket on a
//! fixed logarithmic grid, so every quantile read from it is within a relative error of
//! the true value at that rank. The grid is log-linear, as in HdrHistogram and DDSketch's
//! fast mappings: each power of two is split into [`SUB_BUCKETS`] = 64 equal-width
//! buckets, so a value's bucket is read straight from the bits of its `f64` (exponent and
//! top 6 mantissa bits) with no logarithm, and a bucket's representative (its midpoint)
//! is within `1/128` ([`ALPHA`], 0.78%) of every value in it. Negative values use a
//! mirrored store; `|x|` below `f64::MIN_POSITIVE` counts as zero. Each store keeps at most
//! [`MAX_BUCKETS`] contiguous buckets (32 KiB); past that the buckets of the smallest
//! magnitudes are merged, which only loses accuracy for values more than `2^64 ≈ 10^19`
//! times smaller than the largest one.
//!
//! All sketches share the same grid, so two datasets' counts can be compared bucket by
//! bucket: this is how `drift` computes PSI and KS without a second pass. Bucket bounds
//! and representatives are exact bit manipulations, identical on every platform.

/// log2 of the number of buckets per power of two.
const SUB_BITS: u32 = 6;
/// Buckets per power of two.
pub const SUB_BUCKETS: u32 = 1 << SUB_BITS;
/// Largest relative error of a bucket's representative: half a bucket's width over the
/// smallest value of its power of two.
pub const ALPHA: f64 = 1.0 / (2 * SUB_BUCKETS) as f64;
/// Most buckets one sign's store keeps (64 powers of two).
pub const MAX_BUCKETS: usize = 64 * SUB_BUCKETS as usize;

/// Keeps bucket codes of the two signs apart while preserving value order.
const SIGN_BIAS: i64 = 1 << 40;

/// The bucket of a normal positive `a`: biased exponent, then the top mantissa bits.
#[inline]
fn key_of(a: f64) -> i32 {
    (a.to_bits() >> (52 - SUB_BITS)) as i32
}

/// The midpoint of bucket `key`.
fn midpoint(key: i32) -> f64 {
    let lower = f64::from_bits((key as u64) << (52 - SUB_BITS));
    let octave = f64::from_bits(((key as u64) >> SUB_BITS) << 52);
    lower + octave * ALPHA
}

/// Counts per bucket of one sign, over a contiguous range of bucket indexes.
#[derive(Clone, Debug, Default)]
struct Store {
    offset: i32,
    counts: Vec<u64>,
}

impl Store {
    fn add(&mut self, mut key: i32) {
        if self.counts.is_empty() {
            self.offset = key;
            self.counts.push(1);
            return;
        }
        let hi = self.offset + self.counts.len() as i32 - 1;
        if key > hi {
            let grow = (key - hi) as usize;
            self.counts.resize(self.counts.len() + grow, 0);
            if self.counts.len() > MAX_BUCKETS {
                // Collapse the smallest magnitudes into the lowest bucket that stays.
                let drop = self.counts.len() - MAX_BUCKETS;
                let merged: u64 = self.counts[..=drop].iter().sum();
                self.counts.drain(..drop);
                self.counts[0] = merged;
                self.offset += drop as i32;
            }
        } else if key < self.offset {
            let lowest_allowed = hi - MAX_BUCKETS as i32 + 1;
            key = key.max(lowest_allowed);
            if key < self.offset {
                let grow = (self.offset - key) as usize;
                let mut counts = vec![0; grow];
                counts.append(&mut self.counts);
                self.counts = counts;
                self.offset = key;
            }
        }
        self.counts[(key - self.offset) as usize] += 1;
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A quantile sketch of the finite values seen; see the module docs for the guarantee.
#[derive(Clone, Debug)]
pub struct Sketch {
    pos: Store,
    neg: Store,
    zero: u64,
    count: u64,
    min: f64,
    max: f64,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::new()
    }
}

/// One non-empty bucket: its order-preserving code, representative value and count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Orders buckets like their values; equal across sketches for the same bucket.
    pub code: i64,
    pub value: f64,
    pub count: u64,
}

impl Sketch {
    pub fn new() -> Sketch {
        Sketch {
            pos: Store::default(),
            neg: Store::default(),
            zero: 0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Add a finite value (callers reject NaN and infinities before).
    #[inline]
    pub fn add(&mut self, x: f64) {
        debug_assert!(x.is_finite());
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        let a = x.abs();
        if a < f64::MIN_POSITIVE {
            self.zero += 1;
        } else {
            let key = key_of(a);
            if x > 0.0 {
                self.pos.add(key);
            } else {
                self.neg.add(key);
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The exact smallest value added.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// The exact largest value added.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    fn representative(&self, key: i32) -> f64 {
        midpoint(key)
    }

    /// The non-empty buckets in ascending order of value.
    pub fn buckets(&self) -> Vec<Bucket> {
        let mut out = Vec::new();
        for (i, &c) in self.neg.counts.iter().enumerate().rev() {
            if c > 0 {
                let key = self.neg.offset + i as i32;
                out.push(Bucket {
                    code: -(SIGN_BIAS + i64::from(key)),
                    value: -self.representative(key),
                    count: c,
                });
            }
        }
        if self.zero > 0 {
            out.push(Bucket {
                code: 0,
                value: 0.0,
                count: self.zero,
            });
        }
        for (i, &c) in self.pos.counts.iter().enumerate() {
            if c > 0 {
                let key = self.pos.offset + i as i32;
                out.push(Bucket {
                    code: SIGN_BIAS + i64::from(key),
                    value: self.representative(key),
                    count: c,
                });
            }
        }
        debug_assert_eq!(
            out.iter().map(|b| b.count).sum::<u64>(),
            self.pos.total() + self.neg.total() + self.zero
        );
        out
    }

    /// The bucket holding the value of 0-based rank `floor(q * (n - 1))`, or `None` if empty.
    pub fn quantile_bucket(&self, q: f64) -> Option<Bucket> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).floor() as u64;
        let mut seen = 0;
        for b in self.buckets() {
            seen += b.count;
            if seen > rank {
                return Some(b);
            }
        }
        None
    }

    /// The `q`-quantile (0..=1), within relative error [`ALPHA`] of the exact value at rank
    /// `floor(q * (n - 1))`, clamped to the exact min and max.
    /// `q <= 0` and `q >= 1` give the exact min and max.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if q <= 0.0 {
            return self.min();
        }
        if q >= 1.0 {
            return self.max();
        }
        let b = self.quantile_bucket(q)?;
        Some(b.value.clamp(self.min, self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_relative_error() {
        let mut s = Sketch::new();
        let mut values: Vec<f64> = (0..10_000)
            .map(|i| ((i * 7919) % 10_000) as f64 * 0.37 - 700.0)
            .collect();
        for &v in &values {
            s.add(v);
        }
        values.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0] {
            let exact = values[(q * (values.len() - 1) as f64).floor() as usize];
            let est = s.quantile(q).unwrap();
            assert!(
                (est - exact).abs() <= ALPHA * exact.abs() + 1e-12,
                "q={q}: {est} vs {exact}"
            );
        }
        assert_eq!(s.quantile(0.0), Some(-700.0));
    }

    #[test]
    fn buckets_are_ordered_and_complete() {
        let mut s = Sketch::new();
        for v in [-5.0, -0.5, 0.0, 0.0, 1e-320, 0.5, 5.0, 5.01] {
            s.add(v);
        }
        let b = s.buckets();
        assert!(b
            .windows(2)
            .all(|w| w[0].code < w[1].code && w[0].value < w[1].value));
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 8);
        // 5.0 and 5.01 share the bucket [5, 5.0625).
        assert_eq!(b.last().unwrap().count, 2);
        assert_eq!(b.iter().find(|b| b.code == 0).unwrap().count, 3);
    }

    #[test]
    fn representatives_are_within_alpha_of_their_bucket() {
        for x in [
            1e-300, 0.001, 0.7, 1.0, 1.015625, 5.0, 5.06249, 123456.789, 1e300,
        ] {
            let rep = midpoint(key_of(x));
            assert!((rep - x).abs() <= ALPHA * x, "{x}: {rep}");
        }
        // Keys are monotonic in the value.
        assert!(key_of(1.0) < key_of(1.015625) && key_of(1.015625) < key_of(2.0));
        assert_eq!(key_of(1.0), key_of(1.0156));
    }

    #[test]
    fn memory_stays_bounded_over_a_huge_range() {
        let mut s = Sketch::new();
        for e in -300..300 {
            s.add(10f64.powi(e));
            s.add(-(10f64.powi(e)));
        }
        assert!(s.pos.counts.len() <= MAX_BUCKETS && s.neg.counts.len() <= MAX_BUCKETS);
        assert_eq!(s.pos.total() + s.neg.total() + s.zero, s.count());
        // The largest values keep their accuracy.
        assert_eq!(s.quantile(1.0), Some(10f64.powi(299)));
        // Rank floor(0.999 * 1199) = 1197 of 1200 sorted values is the third largest, 1e297.
        let q = s.quantile(0.999).unwrap();
        assert!((q / 1e297 - 1.0).abs() <= ALPHA, "{q}");
    }
}
