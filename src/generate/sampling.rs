//! How the next token is chosen from a row's distribution: greedy, or sampled with
//! temperature, top-k and top-p from the request's own seeded generator.
//!
//! Each request owns its random stream (SplitMix64 seeded with its seed, one draw per step),
//! so what it samples does not depend on which other requests share its batch or in which row
//! it sits. Candidates are ordered by probability, then by id, so equal inputs give equal picks.

use super::GenerateError;

/// The decoding rule of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    Greedy,
    Sample {
        /// Divides the logits; must be > 0.
        temperature: f32,
        /// Nucleus: keep the most likely tokens until their mass reaches `top_p` (1.0: all).
        top_p: f32,
        /// Keep only the `top_k` most likely tokens (0: no limit).
        top_k: usize,
        seed: u64,
    },
}

impl Decoding {
    pub fn validate(&self) -> Result<(), GenerateError> {
        match *self {
            Decoding::Greedy => Ok(()),
            Decoding::Sample {
                temperature, top_p, ..
            } => {
                if !(temperature > 0.0 && temperature.is_finite()) {
                    return Err(GenerateError::InvalidDecoding(format!(
                        "temperature must be > 0, got {temperature}"
                    )));
                }
                if !(top_p > 0.0 && top_p <= 1.0) {
                    return Err(GenerateError::InvalidDecoding(format!(
                        "top_p must be in (0, 1], got {top_p}"
                    )));
                }
                Ok(())
            }
        }
    }

    pub fn is_greedy(&self) -> bool {
        matches!(self, Decoding::Greedy)
    }
}

/// SplitMix64: tiny, fast, and stable across platforms and crate versions.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Samples a token id from one row of log-probabilities with `temperature`, `top_k`, `top_p`,
/// using one uniform draw `u` in `[0, 1)`.
pub fn sample_from_logprobs(
    logprobs: &[f32],
    temperature: f32,
    top_k: usize,
    top_p: f32,
    u: f64,
) -> u32 {
    let ids = (0u32..).zip(logprobs.iter().copied());
    sample_from_candidates(ids, temperature, top_k, top_p, u)
}

/// [`sample_from_logprobs`] given only some of the row's `(id, log-probability)` pairs. With
/// `top_k > 0` the row's `top_k` most likely tokens (in any order) are all it reads, so a
/// device that computed them sends those alone and the pick is the same.
pub fn sample_from_candidates(
    logprobs: impl Iterator<Item = (u32, f32)>,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    u: f64,
) -> u32 {
    // 1. temperature-scaled weights, stable against overflow
    let mut candidates = weights(logprobs, temperature);
    // 2. most likely first, ties by id
    if top_k > 0 && top_k < candidates.len() {
        candidates.select_nth_unstable_by(top_k - 1, by_weight);
        candidates.truncate(top_k);
    }
    candidates.sort_unstable_by(by_weight);
    // 3. nucleus: the shortest head whose mass reaches top_p (the token that crosses stays)
    let total: f64 = candidates.iter().map(|c| c.1).sum();
    let keep = match top_p < 1.0 {
        true => nucleus(&candidates, total, top_p).unwrap_or(candidates.len()),
        false => candidates.len(),
    };
    candidates.truncate(keep);
    draw(&candidates, u)
}

/// `exp(lp / temperature - max)` of each `(id, lp)` in f64, the zero ones left out.
fn weights(logprobs: impl Iterator<Item = (u32, f32)>, temperature: f32) -> Vec<(u32, f64)> {
    let scaled: Vec<(u32, f64)> = logprobs
        .map(|(id, l)| (id, l as f64 / temperature as f64))
        .collect();
    let max = scaled.iter().map(|c| c.1).fold(f64::NEG_INFINITY, f64::max);
    scaled
        .into_iter()
        .map(|(id, s)| (id, (s - max).exp()))
        .filter(|&(_, w)| w > 0.0)
        .collect()
}

/// Heaviest first, ties by id.
fn by_weight(a: &(u32, f64), b: &(u32, f64)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// How many of `candidates` (most likely first) the nucleus keeps: the shortest head whose
/// mass, each weight divided by `total`, reaches `top_p`; `None` when they never reach it.
fn nucleus(candidates: &[(u32, f64)], total: f64, top_p: f32) -> Option<usize> {
    let mut mass = 0.0;
    for (i, c) in candidates.iter().enumerate() {
        mass += c.1 / total;
        if mass >= top_p as f64 {
            return Some(i + 1);
        }
    }
    None
}

/// Step 4, the inverse CDF of `u` over the kept candidates.
fn draw(candidates: &[(u32, f64)], u: f64) -> u32 {
    let total: f64 = candidates.iter().map(|c| c.1).sum();
    let target = u * total;
    let mut acc = 0.0;
    for &(id, w) in candidates {
        acc += w;
        if target < acc {
            return id;
        }
    }
    candidates.last().map(|c| c.0).unwrap_or(0)
}

/// A nucleus draw (`top_p` < 1, no `top_k`) from the row's most likely tokens alone (`head`,
/// log-probabilities, most likely first), given `row_total`, the sum over the whole row of
/// `exp(lp / temperature - max)` (the device's f32 sum): the pick [`sample_from_logprobs`]
/// makes from the whole row, or `None` when the head does not reach `top_p` (then the caller
/// reads the whole row). The total is the only number not computed as the host computes it:
/// a pick can differ only when the nucleus' mass falls within about 1e-7 of `top_p`.
pub fn sample_nucleus_from_head(
    head: impl Iterator<Item = (u32, f32)>,
    row_total: f64,
    temperature: f32,
    top_p: f32,
    u: f64,
) -> Option<u32> {
    let mut candidates = weights(head, temperature);
    candidates.sort_unstable_by(by_weight);
    let keep = nucleus(&candidates, row_total, top_p)?;
    // A token outside the head may weigh as much as the head's last one, and sort (by id)
    // among those kept: then the row decides.
    let last = candidates.last().map_or(0.0, |c| c.1);
    if keep == candidates.len() || candidates[keep - 1].1 == last {
        return None;
    }
    candidates.truncate(keep);
    Some(draw(&candidates, u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_one_is_greedy_and_top_p_truncates() {
        let lp: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        for u in [0.0, 0.3, 0.99] {
            assert_eq!(sample_from_logprobs(&lp, 1.0, 1, 1.0, u), 0);
            // top_p 0.7: {0.5, 0.3} remain; u=0.99 picks the second
            assert!(sample_from_logprobs(&lp, 1.0, 0, 0.7, u) <= 1);
        }
        assert_eq!(sample_from_logprobs(&lp, 1.0, 0, 1.0, 0.99), 3);
    }

    #[test]
    fn a_seed_gives_the_same_stream() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        for _ in 0..5 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(SplitMix64::new(8).next_u64(), SplitMix64::new(7).next_u64());
    }
}
