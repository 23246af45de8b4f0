//! The grader never panics on arbitrary text: model outputs can be degenerate (unbalanced
//! braces, repeated `\frac{`, stray Unicode), and one bad response must not take down a stage
//! that grades thousands. How fast it grades such text is `cargo bench --bench grader`.

mod latex_soup;

use cft::eval::{Benchmark, grade};

#[test]
fn random_latex_soup_never_panics() {
    for (bench, response, gold) in latex_soup::cases(4000) {
        let _ = grade(bench, &response, &gold);
        let _ = grade(bench, &gold, &response);
    }
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
