//! `latex2sympy`: the harness's third parser, reached when sympy's `parse_latex` and
//! `parse_expr` both fail.
//!
//! Only the inputs that get this far matter, and in practice they are few: matrices
//! (`\begin{pmatrix}…`), a trailing `\%` or `$`, and lists separated by `,` or `;` that
//! contain LaTeX (`\frac{\pi}{9}; \frac{5\pi}{9}`). Everything else that latex2sympy
//! would accept has already been accepted by one of the first two parsers.

use super::expr::{Expr, Number, Parsed, RelOp};
use super::parser::parse_latex;

/// The few inputs that only `latex2sympy` (the harness's third parser) accepts:
/// `\begin{pmatrix}…\end{pmatrix}`, a trailing `\%`, a trailing `$`.
pub fn parse_latex2sympy(s: &str) -> Option<Parsed> {
    let t = s.trim();
    if let Some(body) = t
        .strip_prefix("\\begin{pmatrix}")
        .and_then(|b| b.strip_suffix("\\end{pmatrix}"))
    {
        let mut rows = Vec::new();
        for line in body.split("\\\\").map(str::trim).filter(|l| !l.is_empty()) {
            let mut row = Vec::new();
            for cell in line.split('&') {
                match parse_latex(cell)? {
                    Parsed::Expr(e) => row.push(e),
                    _ => return None,
                }
            }
            rows.push(row);
        }
        let width = rows.first().map(Vec::len)?;
        return rows
            .iter()
            .all(|r| r.len() == width)
            .then_some(Parsed::Matrix(rows));
    }
    if let Some(num) = t.strip_suffix("\\%") {
        return match parse_latex(num)? {
            Parsed::Expr(e) => Some(Parsed::Expr(Expr::quotient(e, Expr::Num(Number::int(100))))),
            _ => None,
        };
    }
    if let Some(num) = t.strip_suffix('$') {
        return parse_latex(num);
    }
    latex_list(t)
}

/// latex2sympy's `relation_list`: items separated by `,` or by `;` (whichever comes first;
/// the list ends where the other separator appears), optionally inside `[…]` or `{…}`.
/// An `a = b` item stands for `b`.
fn latex_list(t: &str) -> Option<Parsed> {
    let inner = [('[', ']'), ('{', '}')]
        .iter()
        .find_map(|&(o, c)| {
            let body = t.strip_prefix(o)?.strip_suffix(c)?;
            balanced(body).then_some(body)
        })
        .unwrap_or(t);
    // pieces between top-level separators, up to the first separator of the other kind
    let mut items = Vec::new();
    let (mut depth, mut start, mut sep) = (0i32, 0usize, None);
    for (i, c) in inner.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' | ';' if depth == 0 => {
                if sep.is_some_and(|s| s != c) {
                    break;
                }
                sep = Some(c);
                items.push(&inner[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    sep?;
    let end = inner[start..]
        .find([',', ';'])
        .filter(|_| balanced(&inner[start..]))
        .map_or(inner.len(), |i| start + i);
    items.push(&inner[start..end]);
    let parsed = items
        .into_iter()
        .map(|item| match parse_latex(item)? {
            Parsed::Rel(RelOp::Eq, _, rhs) => Some(Parsed::Expr(rhs)),
            p => Some(p),
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Parsed::Seq(super::expr::SeqKind::List, parsed))
}

fn balanced(s: &str) -> bool {
    let mut depth = 0i32;
    for c in s.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    depth == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latex2sympy_lists() {
        let list = |s: &str| match parse_latex2sympy(s) {
            Some(Parsed::Seq(_, v)) => v.len(),
            _ => 0,
        };
        assert_eq!(list("a;b"), 2);
        assert_eq!(list("{1,2}"), 2);
        assert_eq!(list("3,4,5"), 3);
        assert_eq!(list("x+1;\\frac{\\pi}{9},\\frac{5\\pi}{9}"), 2);
        assert_eq!(list("5"), 0);
    }
}
