//! Grading speed on degenerate text: the 4,000 random LaTeX-soup pairs of
//! `tests/grader_robustness.rs`, each graded both ways (8,000 grades). `cargo bench --bench
//! grader` prints the median of 5 rounds after one untimed warm-up.

#[path = "../tests/latex_soup/mod.rs"]
mod latex_soup;

use std::time::Instant;

use cft::eval::grade;

const PAIRS: usize = 4000;
const ROUNDS: usize = 5;

fn main() {
    let cases = latex_soup::cases(PAIRS);
    let round = || {
        let t = Instant::now();
        for (bench, response, gold) in &cases {
            std::hint::black_box(grade(*bench, response, gold));
            std::hint::black_box(grade(*bench, gold, response));
        }
        t.elapsed().as_secs_f64()
    };
    round();
    let mut times: Vec<f64> = (0..ROUNDS).map(|_| round()).collect();
    times.sort_by(f64::total_cmp);
    let median = times[ROUNDS / 2];
    println!(
        "grade {} random LaTeX-soup pairs both ways: {:.3} s (median of {ROUNDS}; {:.1} µs per grade)",
        PAIRS,
        median,
        median * 1e6 / (2 * PAIRS) as f64
    );
}
