//! The grader never panics and stays fast on arbitrary text: model outputs can be
//! degenerate (unbalanced braces, repeated `\frac{`, stray Unicode), and one bad response
//! must not take down a stage that grades thousands.

use cft::eval::{Benchmark, grade};

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

#[test]
fn random_latex_soup_never_panics() {
    let mut state = 7;
    let start = std::time::Instant::now();
    for i in 0..4000 {
        let bench = Benchmark::ALL[i % Benchmark::ALL.len()];
        let response = format!("\\boxed{{{}}}", random_text(&mut state, 12));
        let gold = random_text(&mut state, 8);
        let _ = grade(bench, &response, &gold);
        let _ = grade(bench, &gold, &response);
    }
    // generous bound for a debug build; the release build grades thousands per 0.1 s
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
}

#[test]
fn degenerate_nesting_is_bounded() {
    let cases = [
        format!("\\boxed{{{}}}", "x(".repeat(400)),
        format!("\\boxed{{{}1{}}}", "(".repeat(3000), ")".repeat(3000)),
        format!("\\boxed{{{}}}", "\\frac{".repeat(2000)),
        format!("\\boxed{{{}}}", "\\sin(".repeat(300)),
        "1".repeat(100_000),
        format!("\\boxed{{{}x}}", "-".repeat(3000)),
        format!("\\boxed{{x{}}}", "^2".repeat(3000)),
        format!("\\boxed{{x{}}}", "!".repeat(3000)),
        format!("\\boxed{{{}}}", vec!["x"; 3000].join("*")),
        format!("\\boxed{{{}}}", vec!["x"; 3000].join("/")),
    ];
    for response in &cases {
        let v = grade(Benchmark::Math, response, "x+1");
        assert!(!v.correct);
    }
}
