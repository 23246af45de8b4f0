//! Token selections of the baselines (paper §4.1 and Appendix C.3): Entropy (highest-entropy
//! tokens), Attention (tokens that receive the most attention), Random, and Number (numeric
//! tokens, optionally only among the critical ones: CFT-Number).
//!
//! Entropy, Attention and Random select as many tokens as the matched CFT method marks
//! critical, so the overall fraction matches CFT's exactly. By default they do so in each
//! example, which also copies how CFT's tokens spread over examples; Entropy and Attention
//! can instead rank all tokens of D_correct together ([`top_global`], `match_scope =
//! "global"`), which matches only the overall fraction, as a score threshold would. Ties
//! break towards the earlier example and position, so a selection is a pure function of its
//! inputs.

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

/// One 0/1 mask per example with the `count` highest-`score` tokens of all examples together
/// set: the top share of D_correct, wherever it falls.
pub fn top_global(scores: &[Vec<f32>], count: usize) -> Vec<Vec<f32>> {
    // (example, position) of every token, best first; the sort is stable, so ties keep
    // example and position order.
    let mut order: Vec<(usize, usize)> = scores
        .iter()
        .enumerate()
        .flat_map(|(e, s)| (0..s.len()).map(move |t| (e, t)))
        .collect();
    order.sort_by(|&(ea, ta), &(eb, tb)| scores[eb][tb].total_cmp(&scores[ea][ta]));
    let mut masks: Vec<Vec<f32>> = scores.iter().map(|s| vec![0.0; s.len()]).collect();
    for &(e, t) in order.iter().take(count) {
        masks[e][t] = 1.0;
    }
    masks
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
    fn top_global_ranks_all_examples_together() {
        // Three selected tokens overall: the flat example gets none, the peaked one two.
        let scores = vec![vec![0.5, 0.5, 0.5], vec![0.9, 0.1, 0.8], vec![0.6, 0.2]];
        let masks = top_global(&scores, 3);
        assert_eq!(
            masks,
            [vec![0.0, 0.0, 0.0], vec![1.0, 0.0, 1.0], vec![1.0, 0.0]]
        );
        // Ties go to the earlier example, then the earlier position.
        let masks = top_global(&scores, 5);
        assert_eq!(
            masks,
            [vec![1.0, 1.0, 0.0], vec![1.0, 0.0, 1.0], vec![1.0, 0.0]]
        );
        let everything = top_global(&scores, 100);
        assert!(everything.iter().flatten().all(|m| *m == 1.0));
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
