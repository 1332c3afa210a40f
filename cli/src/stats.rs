//! The one summary of timing samples, used by both benchmarks, their tables, JSON and plots.
//!
//! - `median` and `min` of the samples (each sample: seconds per call);
//! - `p10` and `p90`: the 10th and 90th percentiles, linearly interpolated between the closest
//!   ranks (numpy's default: position `p (n - 1)` in the sorted samples);
//! - `spread = (p90 - p10) / median`, the relative width of the middle 80%: 0.05 means that most
//!   samples lie within ±2.5% of the median. With 3 samples it spans 80% of the range.

use serde::Serialize;

/// Summary of a non-empty list of samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// 10th percentile.
    pub p10: f64,
    /// 90th percentile.
    pub p90: f64,
    /// `(p90 - p10) / median`.
    pub spread: f64,
}

/// The `p`-quantile (`0..=1`) of sorted samples, linear between the closest ranks.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = p.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The summary of `samples`, or `None` when there are none (non-finite samples are left out).
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = quantile(&v, 0.5);
    let (p10, p90) = (quantile(&v, 0.1), quantile(&v, 0.9));
    Some(Summary {
        n: v.len(),
        median,
        min: v[0],
        max: v[v.len() - 1],
        p10,
        p90,
        spread: if median > 0.0 {
            (p90 - p10) / median
        } else {
            0.0
        },
    })
}

impl Summary {
    /// The same summary with every time multiplied by `k` (seconds to milliseconds: 1e3).
    pub fn scaled(&self, k: f64) -> Summary {
        Summary {
            median: self.median * k,
            min: self.min * k,
            max: self.max * k,
            p10: self.p10 * k,
            p90: self.p90 * k,
            ..*self
        }
    }
}
