//! `eval`: answer extraction, grading and the benchmarks of the paper's tables.
//!
//! Every accuracy the paper reports, and the correctness check inside the greedy and rollout
//! stages, goes through [`grade`]. It re-implements the Qwen2.5-Math evaluation harness (the
//! one the paper follows) rather than inventing a cleaner grader, because a cleaner grader
//! would give different numbers: extraction ([`extract`]), normalisation ([`normalize`]),
//! equivalence ([`equal`], with [`latex`] standing in for sympy). Its quirks are kept by
//! default and listed in [`equal::Rules`]; `strict` turns them off.

pub mod benchmarks;
pub mod equal;
pub mod extract;
pub mod latex;
pub mod normalize;
pub mod pass_at;
pub mod pynum;
pub mod records;
pub mod templates;
pub mod units;
pub mod words;

pub use benchmarks::{Benchmark, LoadError, Problem, load_benchmark, parse_gold};
pub use equal::Rules;
pub use templates::{PromptTemplate, render_prompt};

/// The grader's answer for one response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// The extracted, normalised prediction (the reference's `pred`).
    pub pred: String,
    pub correct: bool,
}

/// Grades `response` against `gold` (the gold answer as [`load_benchmark`] returns it, i.e.
/// already normalised the way the harness's `parse_ground_truth` does), faithfully.
pub fn grade(benchmark: Benchmark, response: &str, gold: &str) -> Verdict {
    grade_with(benchmark, response, gold, Rules::default())
}

/// [`grade`] with an explicit choice of rules.
pub fn grade_with(benchmark: Benchmark, response: &str, gold: &str, rules: Rules) -> Verdict {
    let pred = match benchmark.multiple_choice() {
        true => extract::extract_choice_prediction(response),
        false => extract::extract_prediction(response, benchmark.skips_units()),
    };
    let correct = equal::math_equal(&pred, gold, rules);
    Verdict { pred, correct }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grade_boxed_fraction() {
        let v = grade(
            Benchmark::Math,
            "So we get $\\boxed{\\dfrac{1}{2}}$.",
            "\\frac{1}{2}",
        );
        assert_eq!(v.pred, "\\frac{1}{2}");
        assert!(v.correct);
    }

    #[test]
    fn grade_gsm8k_last_number() {
        let v = grade(Benchmark::Gsm8k, "She pays 3 * 6 = 18 dollars", "18");
        assert!(v.correct);
        let v = grade(Benchmark::Gsm8k, "The answer is 19.", "18");
        assert!(!v.correct);
    }
}
