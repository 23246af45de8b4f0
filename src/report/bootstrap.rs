//! Paired bootstrap confidence intervals for the accuracy difference between a method and the
//! baseline (the paper reports none).
//!
//! Both models answered the same questions, so the questions are resampled, not the two
//! results independently: a question that is hard for both moves both means together and
//! cancels out of the difference, which gives the narrower, correct interval. The interval is
//! the percentile interval of the resampled differences. Each replicate's per-benchmark
//! differences are kept, so the interval of the benchmark average reuses them (benchmarks are
//! resampled independently of each other, as they are independent samples).

use crate::rng::Rng;

/// A percentile interval, in the same unit as the point estimate.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// `replicates` resampled mean differences `mean(a*) - mean(b*)` of paired 0/1 outcomes
/// (`pairs[i] = (method correct, baseline correct)` on question i). Empty without pairs.
pub fn replicates(pairs: &[(bool, bool)], replicates: u64, rng: &mut Rng) -> Vec<f64> {
    let n = pairs.len() as u64;
    if n == 0 {
        return Vec::new();
    }
    // Only the sign of each question's difference matters: -1, 0 or +1.
    let diffs: Vec<i64> = pairs
        .iter()
        .map(|&(a, b)| i64::from(a) - i64::from(b))
        .collect();
    (0..replicates)
        .map(|_| {
            let sum: i64 = (0..n).map(|_| diffs[rng.range(0, n - 1) as usize]).sum();
            sum as f64 / n as f64
        })
        .collect()
}

/// The central `confidence` interval of `values` (percentile method, nearest rank).
pub fn percentile_interval(values: &[f64], confidence: f64) -> Option<Interval> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    let last = sorted.len() - 1;
    let at = |q: f64| sorted[((q * last as f64).round() as usize).min(last)];
    Some(Interval {
        low: at(tail),
        high: at(1.0 - tail),
    })
}

/// Element-wise mean of equally long replicate vectors (the benchmark average's replicates).
pub fn mean_of(series: &[Vec<f64>]) -> Vec<f64> {
    let Some(first) = series.first() else {
        return Vec::new();
    };
    if series.iter().any(|s| s.len() != first.len()) {
        return Vec::new();
    }
    (0..first.len())
        .map(|r| series.iter().map(|s| s[r]).sum::<f64>() / series.len() as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_results_give_a_zero_interval() {
        let pairs = vec![(true, true), (false, false), (true, true)];
        let reps = replicates(&pairs, 50, &mut Rng::new(1));
        let i = percentile_interval(&reps, 0.95).unwrap();
        assert_eq!((i.low, i.high), (0.0, 0.0));
    }

    /// A synthetic case with a known difference: the method is right with probability 0.65,
    /// the baseline with 0.55, on questions whose difficulty they partly share. The 95%
    /// interval should contain the true difference (0.10) in about 95% of repetitions.
    #[test]
    fn interval_covers_a_known_difference_at_its_level() {
        let (trials, questions) = (200, 300);
        let mut data = Rng::new(2024);
        let mut boot = Rng::new(7);
        let mut covered = 0;
        let mut widths = 0.0;
        for _ in 0..trials {
            let pairs: Vec<(bool, bool)> = (0..questions)
                .map(|_| {
                    let shared = data.unit();
                    let own = data.unit();
                    // Half the questions: one difficulty for both models.
                    let u_base = if data.unit() < 0.5 { shared } else { own };
                    (shared < 0.65, u_base < 0.55)
                })
                .collect();
            let reps = replicates(&pairs, 400, &mut boot);
            let i = percentile_interval(&reps, 0.95).unwrap();
            widths += i.high - i.low;
            if i.low <= 0.10 && 0.10 <= i.high {
                covered += 1;
            }
        }
        let coverage = covered as f64 / trials as f64;
        assert!((0.90..=0.99).contains(&coverage), "coverage {coverage}");
        // Pairing narrows the interval below the unpaired one (about ±0.078 here).
        assert!(
            widths / (trials as f64) < 2.0 * 0.078,
            "width {}",
            widths / trials as f64
        );
    }

    #[test]
    fn same_seed_same_interval() {
        let pairs: Vec<(bool, bool)> = (0..40).map(|i| (i % 3 == 0, i % 4 == 0)).collect();
        let a = replicates(&pairs, 200, &mut Rng::new(9));
        let b = replicates(&pairs, 200, &mut Rng::new(9));
        assert_eq!(a, b);
    }
}
