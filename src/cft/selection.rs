//! Token selections of the baselines (paper §4.1 and Appendix C.3): Entropy (highest-entropy
//! tokens), Attention (tokens that receive the most attention), Random, and Number (numeric
//! tokens, optionally only among the critical ones: CFT-Number).
//!
//! Entropy, Attention and Random select, in each example, as many tokens as the matched CFT
//! method marks critical there — so the overall fraction matches CFT's exactly, and so does
//! how the selected tokens spread over examples. Ties break towards the earlier position, so
//! a selection is a pure function of its inputs.

use crate::rng::Rng;

/// A 0/1 mask with the `count` highest-`score` positions set.
pub fn top(scores: &[f32], count: usize) -> Vec<f32> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut mask = vec![0.0; scores.len()];
    for &i in order.iter().take(count) {
        mask[i] = 1.0;
    }
    mask
}

/// `count` positions out of `len`, uniformly, from the example's own random stream.
pub fn random(len: usize, count: usize, seed: u64, example: u64) -> Vec<f32> {
    let mut rng = Rng::stream(seed, &format!("selection/random/{example}"));
    let mut order: Vec<usize> = (0..len).collect();
    rng.shuffle(&mut order);
    let mut mask = vec![0.0; len];
    for &i in order.iter().take(count) {
        mask[i] = 1.0;
    }
    mask
}

/// How many tokens a CFT weight vector marks (any nonzero weight counts once).
pub fn count_marked(weights: &[f32]) -> usize {
    weights.iter().filter(|w| **w != 0.0).count()
}

/// Numeric tokens, optionally restricted to those a CFT method marks.
pub fn numbers(is_number: &[bool], within: Option<&[f32]>) -> Vec<f32> {
    is_number
        .iter()
        .enumerate()
        .map(|(t, n)| {
            let inside = within.is_none_or(|w| w.get(t).is_some_and(|x| *x != 0.0));
            f32::from(u8::from(*n && inside))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_picks_the_highest_scores_and_breaks_ties_early() {
        assert_eq!(top(&[0.1, 0.9, 0.5, 0.9], 2), [0.0, 1.0, 0.0, 1.0]);
        assert_eq!(top(&[0.5, 0.5, 0.5], 1), [1.0, 0.0, 0.0]);
        assert_eq!(top(&[0.5, 0.1], 5), [1.0, 1.0]);
    }

    #[test]
    fn random_selects_exactly_count_and_is_reproducible() {
        let a = random(50, 7, 1, 3);
        assert_eq!(count_marked(&a), 7);
        assert_eq!(a, random(50, 7, 1, 3));
        assert_ne!(a, random(50, 7, 1, 4));
    }

    #[test]
    fn numbers_within_critical() {
        let is_num = [true, false, true, true];
        assert_eq!(numbers(&is_num, None), [1.0, 0.0, 1.0, 1.0]);
        assert_eq!(
            numbers(&is_num, Some(&[1.0, 1.0, 0.0, 2.0])),
            [1.0, 0.0, 0.0, 1.0]
        );
    }
}
