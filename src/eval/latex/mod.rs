//! LaTeX answers as mathematical objects, standing in for sympy in the reference grader.
//!
//! The harness's `symbolic_equal` tries three parsers in turn — sympy's `parse_latex`, then
//! `parse_expr` (Python syntax), then `latex2sympy` — and compares what comes out by
//! structure, by `simplify(a - b) == 0`, and numerically (relative tolerance 1e-4). Rust has
//! no computer algebra system, so this module parses into a small expression tree
//! ([`expr::Expr`]) with the same quirks as those parsers (a prefix is parsed and the rest
//! ignored, `\pi` is a plain symbol, `ab` is `a*b`), and [`value`] decides equivalence by
//! exact rational arithmetic where the expression allows it and by evaluating both sides
//! at pseudo-random points otherwise.

pub mod complex;
pub mod expr;
mod functions;
pub mod latex2sympy;
pub mod lexer;
pub mod parser;
pub mod pyexpr;
pub mod value;

pub use expr::{Expr, Parsed, RelOp};

/// `_parse` of the reference's `symbolic_equal`: the first parser that accepts the text,
/// first with `\\` read as `\`, then as written; `None` where all fail (sympy keeps the string).
pub fn parse_answer(s: &str) -> Option<Parsed> {
    let single = s.replace("\\\\", "\\");
    if let Some(p) = parser::parse_latex(&single).or_else(|| parser::parse_latex(s)) {
        return Some(p);
    }
    if let Some(p) = pyexpr::parse_expr(&single).or_else(|| pyexpr::parse_expr(s)) {
        return Some(p);
    }
    latex2sympy::parse_latex2sympy(&single).or_else(|| latex2sympy::parse_latex2sympy(s))
}
