//! The per-token training objectives, each in one function named after the paper.
//!
//! All three are sums of `-w_t · s_t · log p(y_t | x, y_<t)` over response positions, divided
//! by a denominator that [`Normalization`] chooses per micro-batch: the whole optimiser
//! batch's weight sum (gradient accumulation then gives exactly the gradient of the batch
//! loss), each micro-batch's own (OpenRLHF), or D_correct's (Eq. 8). The per-position weight
//! `w_t` is 0 on prompt and padding positions, so prompt tokens never carry loss; the weight
//! sum is what each equation divides by.

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
}

/// What the loss of an optimiser step is divided by (stage param `loss_normalization`): a
/// weight sum `Σ w_t`, which is the number of response tokens for SFT and DFT (Eq. 1; their
/// weights are 1 on every response token) and `Σ c_t` for the weighted objective (Eq. 8; the
/// number of critical tokens for 0/1 weights, the weight sum for Graded's 1 and 2), over a
/// set this enum chooses. The three differ as soon as micro-batches carry different weight sums: with micro-batches of 3
/// and 1 weighted tokens, a token of the second gets gradient weight 1/2 under `MicroBatch`,
/// 1/4 under `Batch`, and 1/Z under `Dataset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// Each micro-batch is divided by its own weight sum and the step averages its
    /// micro-batches, as OpenRLHF trains: `SFTTrainer.fit` calls `SFTLoss` (`models/loss.py`,
    /// `masked_mean(-logps, loss_mask, dim=None)`: the micro-batch's token mean) per
    /// micro-batch, and DeepSpeed's `engine.backward` scales each by 1 / gradient accumulation
    /// steps (data-parallel ranks are averaged the same way).
    MicroBatch,
    /// Every micro-batch is divided by the optimiser batch's weight sum, so accumulation
    /// reproduces the full-batch gradient of Eq. 1 / Eq. 8 restricted to the batch.
    Batch,
    /// Every micro-batch is divided by the weight sum over all of D_correct, Eq. 8's
    /// denominator `Z`: the step losses of one epoch add up to Eq. 8 over the dataset.
    Dataset,
}

impl Normalization {
    /// The denominator of each micro-batch of one optimiser step, given each micro-batch's
    /// weight sum and D_correct's. A sum below 1 counts as 1: a micro-batch without weighted tokens then adds 0 to the loss, where OpenRLHF's
    /// `masked_mean` would give 0/0 = NaN, and under `MicroBatch` it still counts in the
    /// average, as DeepSpeed's fixed 1 / accumulation-steps scale counts it.
    pub fn denominators(self, micro_sums: &[f32], dataset_sum: f32) -> Vec<f32> {
        let micro_batches = micro_sums.len() as f32;
        let batch_sum: f32 = micro_sums.iter().sum();
        micro_sums
            .iter()
            .map(|sum| match self {
                Self::MicroBatch => sum.max(1.0) * micro_batches,
                Self::Batch => batch_sum.max(1.0),
                Self::Dataset => dataset_sum.max(1.0),
            })
            .collect()
    }
}

/// `log p(y_t | x, y_<t)` of each target token, in f32, from the logits of
/// [`CausalLm::forward`](crate::model::CausalLm::forward): the per-token term that every
/// objective weights (SFT: all ones, CFT: the critical mask).
///
/// # Shapes
/// - `logits`: `[b, t, vocab]`; `targets`: `[b, t]` → `[b, t]`
pub fn target_log_probs<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
) -> Tensor<B, 2> {
    // On rows `[b·t, vocab]`, which flex broadcasts row by row (a 3-D broadcast goes an
    // element at a time, in the forward pass and the backward one).
    let [b, t, v] = logits.dims();
    log_softmax(logits.reshape([b * t, v]), 1)
        .gather(1, targets.reshape([b * t, 1])) // [b·t, 1]
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

    /// Two micro-batches of one step, A with 3 weighted tokens and B with 1, out of a dataset
    /// whose weight sum is 8. Each normalisation's loss and logit gradients against the hand
    /// values: with a = -ln 3/4, b = -ln 1/4,
    /// micro-batch ½((2a + b)/3 + b/1), batch (2a + 2b)/4, dataset (2a + 2b)/8; the target
    /// logit of a weighted position gets c · (p − 1) with c = 1/6 and 1/2 (micro-batch, A and
    /// B), 1/4 (batch), 1/8 (dataset).
    #[test]
    fn the_three_normalisations_by_hand() {
        let device = Default::default();
        let l3 = 3f32.ln();
        // A: targets with p = 3/4, 1/4, 3/4; B: p = 1/4 (weighted), then an unweighted one
        let a_logits = || logits(vec![0.0, l3, 0.0, l3, 0.0, l3], [1, 3, 2]);
        let b_logits = || logits(vec![0.0, l3, 0.0, l3], [1, 2, 2]);
        let targets = |v: Vec<i64>| {
            let n = v.len();
            Tensor::<AB, 2, Int>::from_data(TensorData::new(v, [1, n]), &device)
        };
        let weights = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<AB, 2>::from_data(TensorData::new(v, [1, n]), &device)
        };
        let (a, b) = (-(0.75f64).ln(), -(0.25f64).ln());
        let cases = [
            (
                Normalization::MicroBatch,
                0.5 * ((2.0 * a + b) / 3.0 + b),
                [1.0 / 6.0, 0.5],
            ),
            (
                Normalization::Batch,
                (2.0 * a + 2.0 * b) / 4.0,
                [0.25, 0.25],
            ),
            (
                Normalization::Dataset,
                (2.0 * a + 2.0 * b) / 8.0,
                [0.125, 0.125],
            ),
        ];
        for (norm, want_loss, [coef_a, coef_b]) in cases {
            let d = norm.denominators(&[3.0, 1.0], 8.0);
            let (xa, xb) = (a_logits(), b_logits());
            let la = target_log_probs(xa.clone(), targets(vec![1, 0, 1]));
            let lb = target_log_probs(xb.clone(), targets(vec![0, 1]));
            let loss_a = Objective::Weighted.loss(la, weights(vec![1.0, 1.0, 1.0]), d[0]);
            let loss_b = Objective::Weighted.loss(lb, weights(vec![1.0, 0.0]), d[1]);
            let loss = loss_a + loss_b;
            let got = loss.clone().into_scalar().elem::<f32>() as f64;
            assert!(
                (got - want_loss).abs() < 1e-6,
                "{norm:?}: loss {got} vs {want_loss}"
            );
            let grads = loss.backward();
            let ga = xa
                .grad(&grads)
                .unwrap()
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            let gb = xb
                .grad(&grads)
                .unwrap()
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            // A position 0: target 1 (p 3/4): d/dz_1 = c (3/4 - 1), d/dz_0 = c (1/4)
            let close = |g: f32, want: f64| (g as f64 - want).abs() < 1e-6;
            assert!(
                close(ga[1], coef_a * -0.25) && close(ga[0], coef_a * 0.25),
                "{norm:?} A: {ga:?}"
            );
            // A position 1: target 0 (p 1/4)
            assert!(close(ga[2], coef_a * -0.75), "{norm:?} A: {ga:?}");
            // B position 0: target 0 (p 1/4); position 1 is unweighted: no gradient
            assert!(
                close(gb[0], coef_b * -0.75) && close(gb[1], coef_b * 0.75),
                "{norm:?} B: {gb:?}"
            );
            assert_eq!(&gb[2..], &[0.0, 0.0], "{norm:?} B: {gb:?}");
        }
    }

    /// A micro-batch without weighted tokens adds nothing (OpenRLHF would divide 0 by 0) and
    /// still counts in the micro-batch average.
    #[test]
    fn an_unweighted_micro_batch_counts_as_zero() {
        assert_eq!(
            Normalization::MicroBatch.denominators(&[3.0, 0.0], 8.0),
            vec![6.0, 2.0]
        );
        assert_eq!(
            Normalization::Batch.denominators(&[0.0, 0.0], 8.0),
            vec![1.0, 1.0]
        );
    }
}
