//! Learning-rate schedules as in HF `transformers` (`get_cosine_schedule_with_warmup` and its
//! linear and constant siblings), so a step of ours has the learning rate the paper's trainer
//! gave it: linear warmup over `ceil(warmup_ratio · total)` steps from 0, then decay to 0.

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
}

impl Schedule {
    /// `schedule` is the manifest's name (`cosine`, `linear`, `constant`).
    pub fn new(
        schedule: &str,
        peak_lr: f64,
        warmup_ratio: f64,
        total_steps: u64,
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
        Ok(Self {
            peak_lr,
            // HF TrainingArguments.get_warmup_steps: ceil(ratio * total).
            warmup_steps: (warmup_ratio * total_steps as f64).ceil() as u64,
            total_steps,
            decay,
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
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
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
        let s = Schedule::new("cosine", 1.0, 0.03, 100).unwrap();
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
        let s = Schedule::new("linear", 2.0, 0.1, 10).unwrap();
        assert_eq!(s.lr(1), 2.0);
        assert!((s.lr(5) - 2.0 * 5.0 / 9.0).abs() < 1e-12);
        let c = Schedule::new("constant", 2.0, 0.0, 10).unwrap();
        assert_eq!(c.lr(9), 2.0);
        assert!(Schedule::new("step", 1.0, 0.0, 10).is_err());
    }
}
