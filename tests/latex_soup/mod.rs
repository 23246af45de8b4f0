//! Random LaTeX soup: degenerate model output (unbalanced braces, repeated `\frac{`, stray
//! Unicode) from a fixed stream, shared by `tests/grader_robustness.rs`, which checks the
//! grader never panics on it, and `benches/grader.rs`, which times grading it.

use cft::eval::Benchmark;

const PIECES: &[&str] = &[
    "\\frac",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "\\boxed{",
    "\\sqrt",
    "^",
    "_",
    "=",
    ",",
    ";",
    "x",
    "y",
    "2",
    "0",
    ".",
    "-",
    "+",
    "\\infty",
    "\\pi",
    "\\left(",
    "\\right)",
    "\\text{",
    "%",
    "$",
    "\\\\",
    "&",
    "\\begin{pmatrix}",
    "\\end{pmatrix}",
    "The answer is ",
    "e",
    "d",
    "\\sum_{k=1}^{",
    "!",
    "|",
    "<",
    "\\le",
    "π",
    "°",
    "答案是",
    " ",
    "\n",
    "\\cup",
    "'",
    "five",
    "\\dfrac12",
    "1,000",
];

/// splitmix64: a fixed stream of pseudo-random numbers without a dependency.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_text(state: &mut u64, max_pieces: u64) -> String {
    let n = next(state) % max_pieces;
    (0..n)
        .map(|_| PIECES[(next(state) % PIECES.len() as u64) as usize])
        .collect()
}

/// `n` (benchmark, response, gold) triples, cycling through the benchmarks: a `\boxed{}` of
/// up to 11 pieces against a gold answer of up to 7. The same `n` gives the same triples.
pub fn cases(n: usize) -> Vec<(Benchmark, String, String)> {
    let mut state = 7;
    (0..n)
        .map(|i| {
            let bench = Benchmark::ALL[i % Benchmark::ALL.len()];
            let response = format!("\\boxed{{{}}}", random_text(&mut state, 12));
            let gold = random_text(&mut state, 8);
            (bench, response, gold)
        })
        .collect()
}
