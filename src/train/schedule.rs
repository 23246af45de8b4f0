//! Learning-rate schedules as in HF `transformers` (`get_cosine_schedule_with_warmup` and its
//! linear and constant siblings), so a step of ours has the learning rate the paper's trainer
//! gave it: linear warmup over `ceil(warmup_ratio · total)` steps from 0, then decay to 0, or,
//! for the cosine, to a floor of `min_lr_ratio · peak`
//! (`get_cosine_with_min_lr_schedule_with_warmup`, the `cosine_with_min_lr` that OpenRLHF's
//! `cli/train_sft.py` asks for with `min_lr = 0.1 · learning_rate`).

use super::TrainError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decay {
    Cosine,
    Linear,
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub decay: Decay,
    /// The cosine ends at `min_lr_ratio · peak_lr` instead of 0 (transformers' `min_lr_rate`).
    pub min_lr_ratio: f64,
}

impl Schedule {
    /// `schedule` is the manifest's name (`cosine`, `linear`, `constant`); `min_lr_ratio` in
    /// [0, 1) is the cosine's floor (0: decay to 0).
    pub fn new(
        schedule: &str,
        peak_lr: f64,
        warmup_ratio: f64,
        total_steps: u64,
        min_lr_ratio: f64,
    ) -> Result<Self, TrainError> {
        let decay = match schedule {
            "cosine" => Decay::Cosine,
            "linear" => Decay::Linear,
            "constant" => Decay::Constant,
            other => {
                return Err(TrainError::Setting {
                    name: "schedule".into(),
                    message: format!("unknown schedule {other:?} (cosine, linear, constant)"),
                });
            }
        };
        if !(0.0..1.0).contains(&min_lr_ratio) || (min_lr_ratio > 0.0 && decay != Decay::Cosine) {
            return Err(TrainError::Setting {
                name: "min_lr_ratio".into(),
                message: format!(
                    "{min_lr_ratio} with schedule {schedule:?}: a floor in [0, 1) of the cosine only"
                ),
            });
        }
        Ok(Self {
            peak_lr,
            // HF TrainingArguments.get_warmup_steps: ceil(ratio * total).
            warmup_steps: (warmup_ratio * total_steps as f64).ceil() as u64,
            total_steps,
            decay,
            min_lr_ratio,
        })
    }

    /// The learning rate of optimiser step `step` (0-based), HF's `lr_lambda(step) · peak`.
    pub fn lr(&self, step: u64) -> f64 {
        let (s, w, n) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < self.warmup_steps {
            return self.peak_lr * s / w.max(1.0);
        }
        let progress = (s - w) / (n - w).max(1.0);
        let factor = match self.decay {
            // transformers' _get_cosine_schedule_with_warmup_lr_lambda: the half cosine,
            // rescaled onto [min_lr_rate, 1].
            Decay::Cosine => {
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                cosine * (1.0 - self.min_lr_ratio) + self.min_lr_ratio
            }
            Decay::Linear => ((n - s) / (n - w).max(1.0)).max(0.0),
            Decay::Constant => 1.0,
        };
        self.peak_lr * factor.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_with_warmup_matches_transformers() {
        // 100 steps, 3% warmup -> 3 warmup steps; values of HF's lambda by hand.
        let s = Schedule::new("cosine", 1.0, 0.03, 100, 0.0).unwrap();
        assert_eq!(s.warmup_steps, 3);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(1) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.lr(3), 1.0);
        let mid = 3 + 97 / 2;
        let expect = 0.5 * (1.0 + (std::f64::consts::PI * (mid - 3) as f64 / 97.0).cos());
        assert!((s.lr(mid) - expect).abs() < 1e-12);
        assert!(s.lr(99) < 1e-3);
    }

    #[test]
    fn linear_and_constant() {
        let s = Schedule::new("linear", 2.0, 0.1, 10, 0.0).unwrap();
        assert_eq!(s.lr(1), 2.0);
        assert!((s.lr(5) - 2.0 * 5.0 / 9.0).abs() < 1e-12);
        let c = Schedule::new("constant", 2.0, 0.0, 10, 0.0).unwrap();
        assert_eq!(c.lr(9), 2.0);
        assert!(Schedule::new("step", 1.0, 0.0, 10, 0.0).is_err());
    }

    /// OpenRLHF's recipe: 3% warmup, cosine to 0.1 × peak. With 60 steps warmup is
    /// ceil(0.03 · 60) = 2 steps (OpenRLHF: `math.ceil(max_steps * lr_warmup_ratio)`); then
    /// lr = peak · (0.1 + 0.9 · ½(1 + cos(π (s − 2) / 58))), by hand at a few steps.
    #[test]
    fn cosine_with_min_lr_matches_transformers_by_hand() {
        let peak = 2e-5;
        let s = Schedule::new("cosine", peak, 0.03, 60, 0.1).unwrap();
        assert_eq!(s.warmup_steps, 2);
        let close = |step: u64, want: f64| {
            let got = s.lr(step);
            assert!(
                (got - want).abs() <= 1e-12 * peak,
                "step {step}: {got} vs {want}"
            );
        };
        // warmup starts from 0, not from the floor
        close(0, 0.0);
        close(1, peak * 0.5);
        close(2, peak);
        // halfway through the decay (s = 31: progress 1/2) the cosine term is 1/2:
        // 0.1 + 0.9 · 0.5 = 0.55
        close(31, peak * 0.55);
        // the last step (s = 59: progress 57/58): 0.1 + 0.9 · ½(1 + cos(57π/58))
        let last = 0.1 + 0.9 * 0.5 * (1.0 + (57.0 * std::f64::consts::PI / 58.0).cos());
        close(59, peak * last);
        assert!(s.lr(59) > 0.1 * peak && s.lr(59) < 0.101 * peak);
        // where the plain cosine reaches 0, the floor holds: 0.1 · peak
        close(60, peak * 0.1);
        let plain = Schedule::new("cosine", peak, 0.03, 60, 0.0).unwrap();
        assert_eq!(plain.lr(60), 0.0);
        assert!(plain.lr(59) < 0.001 * peak);
    }

    #[test]
    fn a_floor_is_refused_outside_the_cosine() {
        let err = Schedule::new("linear", 1.0, 0.0, 10, 0.1).unwrap_err();
        assert!(err.to_string().contains("min_lr_ratio"), "{err}");
        assert!(Schedule::new("cosine", 1.0, 0.0, 10, 1.0).is_err());
    }
}
