//! Pass@N (paper Eq. 10) from `n` samples per question, with the unbiased estimator of
//! Chen et al. (2021): `1 − C(n−c, N) / C(n, N)`, the probability that a random subset of
//! `N` of the `n` samples holds at least one of the `c` correct ones.
//!
//! Taking the first `N` samples instead would make the curve depend on sample order; the
//! estimator uses all `n` samples for every `N`, which is why one sampling run (n = 20)
//! gives the whole of Figure 2.

/// Pass@N of one question with `c` correct samples out of `n`; `None` unless `1 <= N <= n`
/// and `c <= n`.
pub fn pass_at(n: u64, c: u64, big_n: u64) -> Option<f64> {
    if big_n == 0 || big_n > n || c > n {
        return None;
    }
    if n - c < big_n {
        return Some(1.0);
    }
    // C(n-c, N) / C(n, N) = prod_{i = n-c+1}^{n} (1 - N / i): no factorials, no overflow.
    let miss: f64 = ((n - c + 1)..=n)
        .map(|i| 1.0 - big_n as f64 / i as f64)
        .product();
    Some(1.0 - miss)
}

/// Mean Pass@N over questions, for N = 1..=n; each question is `(n, c)` with the same `n`.
/// Empty when there are no questions or their sample counts differ.
pub fn pass_at_curve(questions: &[(u64, u64)]) -> Vec<f64> {
    let Some(&(n, _)) = questions.first() else {
        return Vec::new();
    };
    if questions.iter().any(|&(m, c)| m != n || c > n) {
        return Vec::new();
    }
    (1..=n)
        .map(|big_n| {
            let sum: f64 = questions
                .iter()
                .filter_map(|&(n, c)| pass_at(n, c, big_n))
                .sum();
            sum / questions.len() as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn matches_hand_computed_binomials() {
        // n=5, c=2, N=1: 1 - C(3,1)/C(5,1) = 1 - 3/5
        assert!(close(pass_at(5, 2, 1).unwrap(), 0.4));
        // n=5, c=2, N=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
        assert!(close(pass_at(5, 2, 2).unwrap(), 0.7));
        // n=5, c=2, N=3: 1 - C(3,3)/C(5,3) = 1 - 1/10
        assert!(close(pass_at(5, 2, 3).unwrap(), 0.9));
        // n=5, c=2, N=4: C(3,4) = 0
        assert!(close(pass_at(5, 2, 4).unwrap(), 1.0));
        // n=20, c=1, N=10: 1 - C(19,10)/C(20,10) = 1 - 92378/184756 = 0.5
        assert!(close(pass_at(20, 1, 10).unwrap(), 0.5));
        // n=20, c=3, N=5: 1 - C(17,5)/C(20,5) = 1 - 6188/15504
        assert!(close(pass_at(20, 3, 5).unwrap(), 1.0 - 6188.0 / 15504.0));
        // Pass@1 is the fraction of correct samples.
        assert!(close(pass_at(20, 7, 1).unwrap(), 7.0 / 20.0));
        assert_eq!(pass_at(4, 0, 4), Some(0.0));
        assert_eq!(pass_at(4, 4, 1), Some(1.0));
        assert_eq!(pass_at(4, 1, 5), None);
        assert_eq!(pass_at(4, 1, 0), None);
    }

    #[test]
    fn curve_averages_questions_and_rises() {
        let curve = pass_at_curve(&[(4, 0), (4, 1), (4, 4)]);
        assert_eq!(curve.len(), 4);
        // N=1: (0 + 1/4 + 1) / 3; N=2: (0 + 1/2 + 1) / 3; N=4: (0 + 1 + 1) / 3
        assert!(close(curve[0], 1.25 / 3.0));
        assert!(close(curve[1], 1.5 / 3.0));
        assert!(close(curve[3], 2.0 / 3.0));
        assert!(curve.windows(2).all(|w| w[0] <= w[1]));
        assert!(pass_at_curve(&[(4, 1), (5, 1)]).is_empty());
    }
}
