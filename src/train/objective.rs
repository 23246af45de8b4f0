//! The per-token training objectives, each in one function named after the paper.
//!
//! All three are sums of `-w_t · s_t · log p(y_t | x, y_<t)` over response positions, divided
//! by a denominator fixed for the whole optimiser batch (not per micro-batch), so that
//! gradient accumulation over micro-batches gives exactly the gradient of the batch loss. The
//! per-position weight `w_t` is 0 on prompt and padding positions, so prompt tokens never
//! carry loss; the denominator is what each equation divides by.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Which loss a `train` stage optimises (stage param `objective`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Eq. 1: every response token.
    Sft,
    /// Eq. 8: tokens weighted by the criticality (or selection) stage.
    Weighted,
    /// Wu et al. 2025a (DFT): each token scaled by its own stopped probability.
    Dft,
}

impl Objective {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sft" => Some(Self::Sft),
            "weighted" | "cft" => Some(Self::Weighted),
            "dft" => Some(Self::Dft),
            _ => None,
        }
    }

    /// The loss of one micro-batch, given the token log-probs and per-position weights
    /// (`1` on response tokens for SFT and DFT; `c_t` for the weighted objective), divided by
    /// `denominator`, the batch's [`Objective::denominator`].
    ///
    /// # Shapes
    /// - `log_probs`, `weights`: `[b, t]` → `[1]`
    pub fn loss<B: Backend>(
        self,
        log_probs: Tensor<B, 2>,
        weights: Tensor<B, 2>,
        denominator: f32,
    ) -> Tensor<B, 1> {
        match self {
            Self::Sft => sft_loss(log_probs, weights, denominator),
            Self::Weighted => critical_loss(log_probs, weights, denominator),
            Self::Dft => dft_loss(log_probs, weights, denominator),
        }
    }

    /// What the batch loss is divided by: the number of response tokens for SFT and DFT
    /// (Eq. 1), the sum of the weights `Σ c_t` for the weighted objective (Eq. 8; the number
    /// of critical tokens for 0/1 weights, the weight sum for Graded's 1 and 2). The weights
    /// passed for SFT and DFT are 1 on every response token, so both are `Σ w_t`.
    pub fn denominator(self, batch_weights: impl IntoIterator<Item = f32>) -> f32 {
        batch_weights.into_iter().sum::<f32>().max(1.0)
    }
}

/// `log p(y_t | x, y_<t)` of each target token, in f32.
///
/// # Shapes
/// - `logits`: `[b, t, vocab]`; `targets`: `[b, t]` → `[b, t]`
pub fn target_log_probs<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
) -> Tensor<B, 2> {
    let [b, t, _] = logits.dims();
    log_softmax(logits, 2)
        .gather(2, targets.unsqueeze_dim(2)) // [b, t, 1]
        .reshape([b, t])
}

/// Eq. 1 (SFT): `L = -1/|y| Σ_t log p(y_t | x, y_<t)` over all response tokens. `mask` is 1
/// on response positions and 0 on prompt and padding positions.
pub fn sft_loss<B: Backend>(
    log_probs: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    denominator: f32,
) -> Tensor<B, 1> {
    weighted_nll(log_probs, mask, denominator)
}

/// Eq. 8 (CFT): `L = -1/Σ c_t Σ_t c_t log p(y_t | x, y_<t)`: cross-entropy on the critical
/// tokens only (`c_t = 1`; Graded: 1 or 2), normalised by the weight sum. A position with
/// `c_t = 0` contributes nothing, so its logits receive exactly zero gradient (Eq. 9).
pub fn critical_loss<B: Backend>(
    log_probs: Tensor<B, 2>,
    weights: Tensor<B, 2>,
    denominator: f32,
) -> Tensor<B, 1> {
    weighted_nll(log_probs, weights, denominator)
}

/// DFT (Wu et al. 2025a): `L = -1/|y| Σ_t sg(p(y_t)) log p(y_t)`: each token's loss scaled by
/// its own probability, with the gradient stopped through the scale.
pub fn dft_loss<B: Backend>(
    log_probs: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    denominator: f32,
) -> Tensor<B, 1> {
    let scale = log_probs.clone().detach().exp();
    weighted_nll(log_probs, mask * scale, denominator)
}

/// `-Σ w ⊙ log p / denominator`.
fn weighted_nll<B: Backend>(
    log_probs: Tensor<B, 2>,
    weights: Tensor<B, 2>,
    denominator: f32,
) -> Tensor<B, 1> {
    (log_probs * weights).sum().neg() / denominator
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type AB = Autodiff<Flex>;

    fn logits(values: Vec<f32>, shape: [usize; 3]) -> Tensor<AB, 3> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default()).require_grad()
    }

    /// Eq. 9: a position with c_t = 0 gets exactly zero gradient on all of its logits; a
    /// critical position gets a nonzero one.
    #[test]
    fn non_critical_logits_get_exactly_zero_gradient() {
        let (b, t, v) = (2, 4, 5);
        let values: Vec<f32> = (0..b * t * v)
            .map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.0)
            .collect();
        let weights = [0.0, 1.0, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0];
        let targets: Vec<i64> = (0..b * t).map(|i| (i % v) as i64).collect();
        let device = Default::default();
        for objective in [Objective::Weighted, Objective::Sft, Objective::Dft] {
            let x = logits(values.clone(), [b, t, v]);
            let targets =
                Tensor::<AB, 2, Int>::from_data(TensorData::new(targets.clone(), [b, t]), &device);
            let w = Tensor::<AB, 2>::from_data(TensorData::new(weights.to_vec(), [b, t]), &device);
            let lp = target_log_probs(x.clone(), targets);
            let loss = objective.loss(lp, w, 4.0);
            let grads = loss.backward();
            let g = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            for (pos, w) in weights.iter().enumerate() {
                let row = &g[pos * v..(pos + 1) * v];
                if *w == 0.0 {
                    assert!(
                        row.iter().all(|x| *x == 0.0),
                        "{objective:?} pos {pos}: {row:?}"
                    );
                } else {
                    assert!(row.iter().any(|x| *x != 0.0), "{objective:?} pos {pos}");
                }
            }
        }
    }

    /// The loss values against a hand computation on a 2-token vocabulary.
    #[test]
    fn loss_values_by_hand() {
        // One row, two positions, logits [0, ln 3] -> p(1) = 3/4, p(0) = 1/4.
        let l3 = 3f32.ln();
        let device = Default::default();
        let x = logits(vec![0.0, l3, 0.0, l3], [1, 2, 2]);
        let targets =
            Tensor::<AB, 2, Int>::from_data(TensorData::new(vec![1i64, 0], [1, 2]), &device);
        let lp = target_log_probs(x, targets);
        let w = |v: Vec<f32>| Tensor::<AB, 2>::from_data(TensorData::new(v, [1, 2]), &device);
        let value = |t: Tensor<AB, 1>| t.into_scalar().elem::<f32>() as f64;
        let (lp1, lp0) = ((0.75f64).ln(), (0.25f64).ln());
        // SFT over both: -(ln .75 + ln .25) / 2
        let sft = value(sft_loss(lp.clone(), w(vec![1.0, 1.0]), 2.0));
        assert!((sft + (lp1 + lp0) / 2.0).abs() < 1e-6, "{sft}");
        // Graded weights 2 and 1, normalised by the weight sum 3
        let cft = value(critical_loss(lp.clone(), w(vec![2.0, 1.0]), 3.0));
        assert!((cft + (2.0 * lp1 + lp0) / 3.0).abs() < 1e-6, "{cft}");
        // DFT: -(0.75 ln .75 + 0.25 ln .25) / 2
        let dft = value(dft_loss(lp, w(vec![1.0, 1.0]), 2.0));
        assert!(
            (dft + (0.75 * lp1 + 0.25 * lp0) / 2.0).abs() < 1e-6,
            "{dft}"
        );
    }
}
