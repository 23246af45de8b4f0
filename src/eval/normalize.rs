//! `strip_string`: the answer normalisation of the Qwen2.5-Math harness.
//!
//! Both the extracted prediction and (for most benchmarks) the gold answer pass through
//! this before they are compared, so its quirks are part of what "correct" means in the
//! paper's tables: `\text{...}` at the end is dropped as a unit, `%` and `^\circ` vanish,
//! number words become digits, a short `k=` prefix is cut, `a/b` becomes `\frac{a}{b}`.
//! The steps run in the reference's order; each is a small function so that a test can
//! pin it down.

use std::sync::LazyLock;

use regex::Regex;

use super::pynum::py_int;
use super::units::remove_units;
use super::words::convert_word_number;

macro_rules! re {
    ($name:ident, $pat:expr) => {
        static $name: LazyLock<Regex> =
            LazyLock::new(|| Regex::new($pat).unwrap_or_else(|e| unreachable!("{e}")));
    };
}

re!(ARRAY_BEGIN, r"\\begin\{array\}\{.*?\}");
re!(ARRAY_END, r"\\end\{array\}");
re!(TRAILING_TEXT, r"\\text\{.*?\}$");
re!(TEXT, r"\\text\{(.*?)\}");
re!(MBOX, r"\\mbox\{.*?\}");
re!(ZEROS_MID, r"(\d+)\.0*([^\d])");
re!(ZEROS_END, r"(\d+)\.0*$");
re!(SQRT_BARE, r"\\sqrt(\w+)");

/// `strip_string(string, skip_unit)` of the reference.
pub fn strip_string(input: &str, skip_unit: bool) -> String {
    let mut s = input.trim().replace('\n', "");
    s = s.trim_end_matches('.').to_string();
    s = s.replace("\\!", "");

    // matrices: arrays and bmatrix are read as pmatrix
    s = ARRAY_BEGIN.replace_all(&s, r"\begin{pmatrix}").into_owned();
    s = ARRAY_END.replace_all(&s, r"\end{pmatrix}").into_owned();
    s = s.replace("bmatrix", "pmatrix");

    s = s.replace("tfrac", "frac").replace("dfrac", "frac");
    s = s
        .replace("\\neq", "\\ne")
        .replace("\\leq", "\\le")
        .replace("\\geq", "\\ge");
    s = s
        .replace("\\left", "")
        .replace("\\right", "")
        .replace("\\{", "{")
        .replace("\\}", "}");

    // a trailing \text{...} is a unit, unless it is the whole answer
    let cut = TRAILING_TEXT.replace(&s, "").trim().to_string();
    if !cut.is_empty() && cut != s {
        s = cut;
    }
    if !skip_unit {
        s = remove_units(&s);
    }

    s = s.replace("^{\\circ}", "").replace("^\\circ", "");
    s = s.replace("\\$", "").replace('$', "");
    s = s.replace("\\(", "").replace("\\)", "");
    s = convert_word_number(&s);
    s = TEXT.replace_all(&s, "${1}").into_owned();
    for key in [
        "x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to",
    ] {
        s = s.replace(key, "");
    }
    s = s.replace("\\emptyset", "{}");
    s = s.replace("(-\\infty,\\infty)", "\\mathbb{R}");
    s = s.replace("\\%", "").replace('%', "");
    s = s.replace(" .", " 0.").replace("{.", "{0.");
    // (The reference's "strip enclosing brackets if alphanumeric" test can never pass.)
    s = s.replace("infinity", "\\infty");
    if !s.contains("\\infty") {
        s = s.replace("inf", "\\infty");
    }
    s = s.replace("+\\inity", "\\infty");
    s = s.replace("and", "").replace("\\mathbf", "");
    s = MBOX.replace_all(&s, "").into_owned();
    if s.contains('j') && !s.contains('i') {
        s = s.replace('j', "i");
    }
    s = ZEROS_MID.replace_all(&s, "${1}${2}").into_owned();
    s = ZEROS_END.replace_all(&s, "${1}").into_owned();
    if s.is_empty() {
        return s;
    }
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    // a short "k = " prefix
    let parts: Vec<&str> = s.split('=').collect();
    if parts.len() == 2 && parts[0].chars().count() <= 2 {
        s = parts[1].to_string();
    }
    s = SQRT_BARE.replace_all(&s, r"\sqrt{${1}}").into_owned();
    s = s.replace(' ', "");
    s = fix_fracs(&s);
    fix_a_slash_b(&s)
}

/// `\frac12` → `\frac{1}{2}`, `\frac1b` → `\frac{1}{b}`, `\frac1{72}` → `\frac{1}{72}`.
pub fn fix_fracs(s: &str) -> String {
    let mut pieces = s.split("\\frac");
    let mut out = pieces.next().unwrap_or("").to_string();
    for sub in pieces {
        out.push_str("\\frac");
        let chars: Vec<char> = sub.chars().collect();
        if chars.first() == Some(&'{') {
            out.push_str(sub);
            continue;
        }
        if chars.len() < 2 {
            return s.to_string();
        }
        let (a, b) = (chars[0], chars[1]);
        let rest: String = chars[2..].iter().collect();
        if b != '{' {
            out.push_str(&format!("{{{a}}}{{{b}}}{rest}"));
        } else {
            out.push_str(&format!("{{{a}}}{b}{rest}"));
        }
    }
    out
}

/// `3/4` → `\frac{3}{4}` when both sides are plain integers (or contain `sqrt`).
pub fn fix_a_slash_b(s: &str) -> String {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() != 2 {
        return s.to_string();
    }
    let side = |p: &str| -> Option<String> {
        if p.contains("sqrt") {
            Some(p.to_string())
        } else {
            py_int(p).map(|v| v.to_string())
        }
    };
    match (side(parts[0]), side(parts[1])) {
        (Some(a), Some(b)) if format!("{a}/{b}") == s => format!("\\frac{{{a}}}{{{b}}}"),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(s: &str) -> String {
        strip_string(s, false)
    }

    #[test]
    fn fracs_are_braced() {
        assert_eq!(st("\\frac12"), "\\frac{1}{2}");
        assert_eq!(st("\\dfrac{3}{4}"), "\\frac{3}{4}");
        assert_eq!(st("\\tfrac1{72}"), "\\frac{1}{72}");
        assert_eq!(st("3/4"), "\\frac{3}{4}");
        assert_eq!(st("03/4"), "03/4");
    }

    #[test]
    fn left_right_and_braces_go() {
        assert_eq!(st("\\left( 1, 2 \\right)"), "(1,2)");
        assert_eq!(st("\\{1,2\\}"), "{1,2}");
    }

    #[test]
    fn units_and_text_go() {
        assert_eq!(st("5 \\text{ cm}"), "5");
        assert_eq!(st("12 dollars"), "12dollars");
        assert_eq!(st("\\text{Evelyn}"), "Evelyn");
        assert_eq!(st("10 \\mbox{ m}"), "10");
    }

    #[test]
    fn percent_degree_dollar_go() {
        assert_eq!(st("50\\%"), "50");
        assert_eq!(st("30^\\circ"), "30");
        assert_eq!(st("45^{\\circ}"), "45");
        assert_eq!(st("\\$18"), "18");
    }

    #[test]
    fn prefixes_and_words() {
        assert_eq!(st("x = 5"), "5");
        assert_eq!(st("k=3"), "3");
        assert_eq!(st("five"), "5");
        assert_eq!(st("y=2x+1"), "2x+1");
    }

    #[test]
    fn trailing_zeros_and_dots() {
        assert_eq!(st("12.000"), "12");
        assert_eq!(st("12.50"), "12.50");
        assert_eq!(st("3.0 + x"), "3+x");
        assert_eq!(st(".5"), "0.5");
        assert_eq!(st("7."), "7");
    }

    #[test]
    fn sqrt_infinity_matrices() {
        assert_eq!(st("2\\sqrt3"), "2\\sqrt{3}");
        assert_eq!(st("(-\\infty,\\infty)"), "\\mathbb{R}");
        assert_eq!(st("(0, inf)"), "(0,\\infty)");
        assert_eq!(
            st("\\begin{bmatrix}1&2\\end{bmatrix}"),
            "\\begin{pmatrix}1&2\\end{pmatrix}"
        );
    }

    #[test]
    fn j_becomes_i_without_i() {
        assert_eq!(st("3+2j"), "3+2i");
    }
}
