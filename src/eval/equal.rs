//! `math_equal`: the reference's verdict on a normalised prediction against a gold answer.
//!
//! The checks run in the reference's order, and each returns early as it does: equal
//! strings; a multiple-choice letter; numbers (both parse as floats after dropping commas,
//! `%` allowed) compared against gold, gold/100 and gold*100 with relative tolerance 1e-4 —
//! so `50` equals `0.5`; bracket-insensitive string equality; tuples and intervals
//! element-wise (brackets ignored, so `(1,2]` equals `[1,2)`); matrices cell-wise;
//! equations as `lhs - rhs` up to sign; `k = v` against `v`; and last the symbolic
//! comparison of [`super::latex`]. [`Rules::strict`] turns the two quirks off.

use std::sync::LazyLock;

use regex::Regex;

use super::extract::choice_answer_clean;
use super::latex::{parse_answer, value::parsed_equal};
use super::pynum::{is_close, py_float};

static BRACKETED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\(|\[).+(\)|\])").unwrap_or_else(|e| unreachable!("{e}")));
static BRACED_LIST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{.*,.*\}").unwrap_or_else(|e| unreachable!("{e}")));

/// Which of the reference's rules apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Off by default (faithful, as the paper's numbers were produced). When on: `50` no
    /// longer equals `0.5` (no percentage rule), an interval's open and closed ends are
    /// told apart, and a comma counts only as a thousands separator (`1,2` is not `12`).
    pub strict: bool,
}

/// `parse_digits`: Python `float()` after removing commas, or a `%`-suffixed number / 100.
pub fn parse_digits(s: &str) -> Option<f64> {
    let s = s.replace(',', "");
    if let Some(v) = py_float(&s) {
        return Some(v);
    }
    let num = s.strip_suffix('%')?;
    let num = num.strip_suffix('\\').unwrap_or(num);
    py_float(num).map(|v| v / 100.0)
}

/// How deep tuple/matrix recursion may go. Python's own recursion limit stops the
/// reference somewhere past this; a nesting this deep is never a real answer.
const MAX_NESTING: usize = 64;

/// `math_equal(prediction, reference)` with the reference's defaults.
pub fn math_equal(pred: &str, gold: &str, rules: Rules) -> bool {
    equal_at(pred, gold, rules, 0)
}

fn equal_at(pred: &str, gold: &str, rules: Rules, depth: usize) -> bool {
    if depth > MAX_NESTING {
        return false;
    }
    let math_equal = |a: &str, b: &str, rules: Rules| equal_at(a, b, rules, depth + 1);
    if pred.trim().to_lowercase() == gold.trim().to_lowercase() {
        return true;
    }
    if ["A", "B", "C", "D", "E"].contains(&gold) && choice_answer_clean(pred) == gold {
        return true;
    }
    let read = |s: &str| {
        if rules.strict && !commas_group_thousands(s) {
            return None;
        }
        parse_digits(s)
    };
    if let (Some(p), Some(g)) = (read(pred), read(gold)) {
        let candidates: &[f64] = if rules.strict {
            &[g]
        } else {
            &[g / 100.0, g, g * 100.0]
        };
        return candidates.iter().any(|c| is_close(*c, p, 1e-4));
    }
    if pred.is_empty() {
        return false;
    }
    let gold = gold.trim();
    let pred = pred.trim();
    let gold_owned;
    let gold = if pred.contains("pmatrix") && !gold.contains("pmatrix") {
        gold_owned = braces_to_pmatrix(gold);
        gold_owned.as_str()
    } else {
        gold
    };

    if bracket_free_equal(pred, gold) {
        return true;
    }
    if BRACKETED.is_match(pred) && BRACKETED.is_match(gold) {
        let same_ends = pred.chars().next() == gold.chars().next()
            && pred.chars().last() == gold.chars().last();
        if !rules.strict || same_ends {
            let inner = |s: &str| -> Vec<String> {
                let mut c = s.chars();
                c.next();
                c.next_back();
                c.as_str().split(',').map(str::to_string).collect()
            };
            let (pp, gp) = (inner(pred), inner(gold));
            if pp.len() == gp.len() && pp.iter().zip(&gp).all(|(a, b)| math_equal(a, b, rules)) {
                return true;
            }
        }
    }
    if let Some(true) = matrix_equal(pred, gold, &|a, b| math_equal(a, b, rules)) {
        return true;
    }
    let (pe, ge) = (pred.matches('=').count(), gold.matches('=').count());
    if pe == 1 && ge == 1 {
        let as_difference = |s: &str| {
            let (l, r) = s.split_once('=').unwrap_or((s, ""));
            format!("{} - ({})", l.trim(), r.trim())
        };
        let (p, g) = (as_difference(pred), as_difference(gold));
        if symbolic_equal(&p, &g) || symbolic_equal(&format!("-({p})"), &g) {
            return true;
        }
    } else if pe == 1 && ge == 0 {
        let (lhs, rhs) = pred.split_once('=').unwrap_or((pred, ""));
        if lhs.trim().chars().count() <= 2 && math_equal(rhs, gold, rules) {
            return true;
        }
    } else if ge == 1 && pe == 0 {
        let (lhs, rhs) = gold.split_once('=').unwrap_or((gold, ""));
        if lhs.trim().chars().count() <= 2 && math_equal(pred, rhs, rules) {
            return true;
        }
    }
    symbolic_equal(pred, gold)
}

/// Whether every comma in `s` separates thousands (`1,234,567.5`); strict mode reads only
/// such numbers, where the reference turns `1,2` into `12`.
fn commas_group_thousands(s: &str) -> bool {
    let s = s.trim();
    if !s.contains(',') {
        return true;
    }
    let int = s.trim_start_matches('-').split('.').next().unwrap_or("");
    let mut groups = int.split(',');
    let first = groups.next().unwrap_or("");
    (1..=3).contains(&first.len())
        && first.bytes().all(|b| b.is_ascii_digit())
        && groups.all(|g| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit()))
}

/// `str_to_pmatrix`: `{1,2},{3,4}`-style gold answers read as matrices.
fn braces_to_pmatrix(s: &str) -> String {
    BRACED_LIST
        .find_iter(s.trim())
        .map(|m| {
            let inner = m.as_str().trim_matches(|c| c == '{' || c == '}');
            format!(
                "\\begin{{pmatrix}}{}\\end{{pmatrix}}",
                inner.replace(',', "\\")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Equal once brackets are ignored (outer `[]()` stripped when the kinds allow, `{}()` dropped).
fn bracket_free_equal(pred: &str, gold: &str) -> bool {
    let strip_outer = (pred.starts_with('[') && pred.ends_with(']') && !gold.starts_with('('))
        || (pred.starts_with('(') && pred.ends_with(')') && !gold.starts_with('['));
    let brackets: &[char] = &['[', ']', '(', ')'];
    let (mut p, mut g) = (pred, gold);
    if strip_outer {
        p = p.trim_matches(brackets);
        g = g.trim_matches(brackets);
    }
    let drop = |s: &str| s.replace(['{', '}', '(', ')'], "").to_lowercase();
    drop(p) == drop(g)
}

/// Cell-wise comparison of two `pmatrix`/`bmatrix` answers; `None` when they are not both matrices.
fn matrix_equal(pred: &str, gold: &str, cell_equal: &dyn Fn(&str, &str) -> bool) -> Option<bool> {
    const BEGIN: usize = "\\begin{pmatrix}".len();
    const END: usize = "\\end{pmatrix}".len();
    let is_matrix = |s: &str| {
        (s.starts_with("\\begin{pmatrix}") || s.starts_with("\\begin{bmatrix}"))
            && (s.ends_with("\\end{pmatrix}") || s.ends_with("\\end{bmatrix}"))
    };
    if !is_matrix(pred) || !is_matrix(gold) {
        return None;
    }
    let rows = |s: &str| -> Vec<String> {
        s.get(BEGIN..s.len().saturating_sub(END))
            .unwrap_or("")
            .split("\\\\")
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let (pr, gr) = (rows(pred), rows(gold));
    if pr.len() != gr.len() {
        return Some(false);
    }
    for (p, g) in pr.iter().zip(&gr) {
        let (pc, gc): (Vec<&str>, Vec<&str>) = (p.split('&').collect(), g.split('&').collect());
        if pc.len() != gc.len() || !pc.iter().zip(&gc).all(|(a, b)| cell_equal(a, b)) {
            return Some(false);
        }
    }
    Some(true)
}

/// `symbolic_equal`: parse both sides (LaTeX, then Python syntax, then latex2sympy) and compare.
pub fn symbolic_equal(a: &str, b: &str) -> bool {
    match (parse_answer(a), parse_answer(b)) {
        (Some(x), Some(y)) => parsed_equal(&x, &y, 1e-4),
        (None, None) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(p: &str, g: &str) -> bool {
        math_equal(p, g, Rules::default())
    }

    #[test]
    fn numbers_with_tolerance_and_commas() {
        assert!(eq("1000", "1,000"));
        assert!(eq("3.14159", "3.1416"));
        assert!(!eq("3.15", "3.14"));
        assert!(eq("0.1", "10\\%"));
    }

    #[test]
    fn commas_are_dropped_unless_strict() {
        assert!(eq("12", "1,2"), "the reference drops every comma");
        assert!(!math_equal("12", "1,2", Rules { strict: true }));
        assert!(math_equal("1234567", "1,234,567", Rules { strict: true }));
    }

    #[test]
    fn percentage_rule_is_faithful_by_default() {
        assert!(eq("50", "0.5"));
        assert!(eq("0.5", "50"));
        assert!(!math_equal("50", "0.5", Rules { strict: true }));
    }

    #[test]
    fn fractions_against_decimals() {
        assert!(eq("\\frac{1}{2}", "0.5"));
        assert!(
            !eq("0.333", "\\frac{1}{3}"),
            "0.1% off is outside the 1e-4 tolerance"
        );
        assert!(eq("\\frac{3}{4}", "\\frac{6}{8}"));
    }

    #[test]
    fn tuples_and_intervals() {
        assert!(eq("(1,4.5)", "(1,\\frac{9}{2})"));
        assert!(
            eq("(1,2]", "(1,2)"),
            "open and closed ends are not told apart"
        );
        assert!(!math_equal("(1,2]", "(1,2)", Rules { strict: true }));
        assert!(!eq("(2,1)", "(1,2)"));
        assert!(eq("(0.6,2.6667]", "(\\frac{3}{5},\\frac{8}{3}]"));
    }

    #[test]
    fn matrices_cell_wise() {
        assert!(eq(
            "\\begin{pmatrix}0.5&1\\\\2&3\\end{pmatrix}",
            "\\begin{pmatrix}\\frac{1}{2}&1\\\\2&3\\end{pmatrix}"
        ));
        assert!(!eq(
            "\\begin{pmatrix}1&1\\\\2&3\\end{pmatrix}",
            "\\begin{pmatrix}1&2\\\\2&3\\end{pmatrix}"
        ));
    }

    #[test]
    fn equations() {
        assert!(eq("-34x-45y+20z-100=0", "34x+45y-20z+100=0"));
        assert!(eq("k=5", "5"));
        assert!(eq("2x+y=3", "y=3-2x"));
    }

    #[test]
    fn symbolic() {
        assert!(eq("\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}"));
        assert!(eq("\\sec^2(y)", "\\tan^2(y)+1"));
        assert!(!eq("x+1", "x+2n+1"));
        assert!(eq(
            "\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{2\\sqrt{33}+15}",
            "\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{15+2\\sqrt{33}}"
        ));
    }

    #[test]
    fn choice_letters() {
        assert!(eq("(B)", "B"));
        assert!(!eq("(C)", "B"));
    }
}
