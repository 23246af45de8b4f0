//! sympy's `parse_expr`: Python syntax, the harness's second parser.
//!
//! It is reached only when the LaTeX parser fails, which in practice means tuples, lists and
//! sets (`(1, 2)`, `[1, 2]`, `{1, 2}`) and numbers such as `.5`. Names become symbols except
//! sympy's constants (`pi`, `E`, `I`, `oo`); `name(args)` is a known function or an unknown
//! one; the whole input must parse, as Python's parser requires.

use super::expr::{Expr, Func, Number, Parsed, SeqKind};

#[derive(Debug, Clone, PartialEq)]
enum T {
    Num(String),
    Name(String),
    Op(&'static str),
}

fn lex(s: &str) -> Option<Vec<T>> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.' || c[i] == '_') {
                i += 1;
            }
            if i < c.len() && (c[i] == 'e' || c[i] == 'E') {
                let mut j = i + 1;
                if j < c.len() && (c[j] == '+' || c[j] == '-') {
                    j += 1;
                }
                if j < c.len() && c[j].is_ascii_digit() {
                    i = j;
                    while i < c.len() && c[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text: String = c[start..i].iter().filter(|x| **x != '_').collect();
            if text.matches('.').count() > 1 {
                return None;
            }
            out.push(T::Num(text));
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(T::Name(c[start..i].iter().collect()));
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let op = match (two.as_str(), ch) {
                ("**", _) => "**",
                (_, '+') => "+",
                (_, '-') => "-",
                (_, '*') => "*",
                (_, '/') => "/",
                (_, '(') => "(",
                (_, ')') => ")",
                (_, '[') => "[",
                (_, ']') => "]",
                (_, '{') => "{",
                (_, '}') => "}",
                (_, ',') => ",",
                _ => return None,
            };
            i += op.len();
            out.push(T::Op(op));
        }
    }
    Some(out)
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "is", "if", "else", "for", "lambda", "None", "True", "False", "def",
    "class", "return", "import", "from", "as", "with", "while", "pass", "del",
];

/// sympy's `parse_expr`; `None` where it raises.
pub fn parse_expr(s: &str) -> Option<Parsed> {
    let toks = lex(s)?;
    if toks.len() > 4000 {
        return None; // no real answer is this long; bounds the work and the nesting
    }
    let mut p = Py {
        t: &toks,
        pos: 0,
        depth: 0,
    };
    let first = p.item()?;
    let out = if p.eat(",") {
        let mut items = vec![first];
        while p.pos < toks.len() {
            items.push(p.item()?);
            if !p.eat(",") {
                break;
            }
        }
        Parsed::Seq(SeqKind::Tuple, items)
    } else {
        first
    };
    (p.pos == toks.len()).then_some(out)
}

struct Py<'a> {
    t: &'a [T],
    pos: usize,
    /// Nesting so far; deeper than [`MAX_DEPTH`] fails rather than overflow the stack.
    depth: u32,
}

const MAX_DEPTH: u32 = 100;

impl Py<'_> {
    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.t.get(self.pos), Some(T::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// An expression or a bracketed sequence.
    fn item(&mut self) -> Option<Parsed> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let out = self.item_inner();
        self.depth -= 1;
        out
    }

    fn item_inner(&mut self) -> Option<Parsed> {
        let save = self.pos;
        for (open, close, kind) in [
            ("(", ")", SeqKind::Tuple),
            ("[", "]", SeqKind::List),
            ("{", "}", SeqKind::Set),
        ] {
            if self.eat(open) {
                let mut items = Vec::new();
                let mut trailing_comma = false;
                while !self.eat(close) {
                    items.push(self.item()?);
                    trailing_comma = self.eat(",");
                    if !trailing_comma && !self.eat(close) {
                        return None;
                    } else if !trailing_comma {
                        break;
                    }
                }
                let is_seq = kind != SeqKind::Tuple || items.len() != 1 || trailing_comma;
                if is_seq {
                    if self.pos < self.t.len()
                        && !matches!(
                            self.t.get(self.pos),
                            Some(T::Op(","))
                                | Some(T::Op(")"))
                                | Some(T::Op("]"))
                                | Some(T::Op("}"))
                        )
                    {
                        return None;
                    }
                    return Some(Parsed::Seq(kind, items));
                }
                self.pos = save;
                break;
            }
        }
        self.sum().map(Parsed::Expr)
    }

    fn sum(&mut self) -> Option<Expr> {
        let mut terms = vec![self.term()?];
        loop {
            if self.eat("+") {
                terms.push(self.term()?);
            } else if self.eat("-") {
                terms.push(Expr::Neg(Box::new(self.term()?)));
            } else {
                break;
            }
        }
        Some(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Add(terms)
        })
    }

    fn term(&mut self) -> Option<Expr> {
        let mut factors = vec![self.unary()?];
        loop {
            if self.eat("*") {
                factors.push(self.unary()?);
            } else if self.eat("/") {
                factors.push(Expr::recip(self.unary()?));
            } else {
                break;
            }
        }
        Some(if factors.len() == 1 {
            factors.remove(0)
        } else {
            Expr::Mul(factors)
        })
    }

    fn unary(&mut self) -> Option<Expr> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let out = self.unary_inner();
        self.depth -= 1;
        out
    }

    fn unary_inner(&mut self) -> Option<Expr> {
        if self.eat("-") {
            return Some(Expr::Neg(Box::new(self.unary()?)));
        }
        if self.eat("+") {
            return self.unary();
        }
        let base = self.atom()?;
        if self.eat("**") {
            return Some(Expr::pow(base, self.unary()?));
        }
        Some(base)
    }

    fn atom(&mut self) -> Option<Expr> {
        match self.t.get(self.pos)?.clone() {
            T::Num(n) => {
                self.pos += 1;
                Number::from_decimal(&n).map(Expr::Num).or_else(|| {
                    n.parse::<f64>().ok().map(|v| {
                        Expr::Num(Number {
                            exact: None,
                            value: v,
                        })
                    })
                })
            }
            T::Op("(") => {
                self.pos += 1;
                let e = self.sum()?;
                self.eat(")").then_some(e)
            }
            T::Name(name) => {
                self.pos += 1;
                if KEYWORDS.contains(&name.as_str()) {
                    return None;
                }
                if self.eat("(") {
                    let mut args = vec![self.sum()?];
                    while self.eat(",") {
                        args.push(self.sum()?);
                    }
                    if !self.eat(")") {
                        return None;
                    }
                    return Some(call(&name, args));
                }
                Some(match name.as_str() {
                    "pi" => Expr::Pi,
                    "E" => Expr::Euler,
                    "I" => Expr::ImagUnit,
                    "oo" => Expr::Infinity,
                    _ => Expr::Sym(name),
                })
            }
            T::Op(_) => None,
        }
    }
}

fn call(name: &str, mut args: Vec<Expr>) -> Expr {
    let one = |f: Func, args: Vec<Expr>| Expr::Call(f, args);
    match (name, args.len()) {
        ("sqrt", 1) => Expr::pow(
            args.remove(0),
            Expr::quotient(Expr::Num(Number::int(1)), Expr::Num(Number::int(2))),
        ),
        ("sin", 1) => one(Func::Sin, args),
        ("cos", 1) => one(Func::Cos, args),
        ("tan", 1) => one(Func::Tan, args),
        ("exp", 1) => one(Func::Exp, args),
        ("Abs", 1) | ("abs", 1) => one(Func::Abs, args),
        ("log", 1) | ("ln", 1) => Expr::Call(Func::Log, vec![args.remove(0), Expr::Euler]),
        ("log", 2) => one(Func::Log, args),
        ("factorial", 1) => one(Func::Factorial, args),
        ("floor", 1) => one(Func::Floor, args),
        ("ceiling", 1) => one(Func::Ceil, args),
        _ => Expr::Undefined(name.to_string(), args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_sequences() {
        assert!(
            matches!(parse_expr("(1, 2)"), Some(Parsed::Seq(SeqKind::Tuple, v)) if v.len() == 2)
        );
        assert!(matches!(
            parse_expr("[1,2]"),
            Some(Parsed::Seq(SeqKind::List, _))
        ));
        assert!(matches!(
            parse_expr("{1,2}"),
            Some(Parsed::Seq(SeqKind::Set, _))
        ));
        assert!(matches!(parse_expr(".5"), Some(Parsed::Expr(_))));
        assert!(
            parse_expr("2x").is_none(),
            "no implicit multiplication in Python"
        );
    }

    #[test]
    fn deep_nesting_fails_without_overflow() {
        let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(parse_expr(&deep).is_none());
    }
}
