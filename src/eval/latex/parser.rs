//! A recursive-descent reading of sympy's LaTeX grammar, with its permissive ending.
//!
//! sympy's start rule has no end-of-input anchor, so ANTLR parses the longest prefix it can
//! and silently drops the rest: `1,2` is `1`, `x>1,y` is `x > 1`, `2\sqrt2` is `2`. Every
//! optional continuation here (a `+`, a factor, a postfix `!`) is tried and rolled back if
//! it does not parse, which reproduces that; only a failure of the first, mandatory piece
//! fails the whole parse. The tree is built as sympy's `_parse_latex_antlr.py` builds it
//! (`\log` is natural, `\lg` is base 10, `\sin^{-1}` is `asin`, an `x` between two
//! symbol-free factors means times).

use super::expr::{Expr, Func, Number, Parsed, RelOp};
use super::functions::FUNC_NORMAL;
use super::lexer::{Tok, lex};

type R<T> = Result<T, ()>;

/// sympy's `parse_latex`; `None` where it raises.
pub fn parse_latex(s: &str) -> Option<Parsed> {
    let toks = lex(s);
    if toks.len() > MAX_TOKENS {
        return None;
    }
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        hard: false,
        fuel: FUEL,
        depth: 0,
        leave_last_digit: false,
    };
    let out = p.relation();
    if p.hard { None } else { out.ok() }
}

/// Commands that have their own token in the grammar, hence are not plain symbols.
const RESERVED: &[&str] = &[
    "frac",
    "dfrac",
    "tfrac",
    "binom",
    "dbinom",
    "tbinom",
    "sqrt",
    "overline",
    "times",
    "cdot",
    "div",
    "mathit",
    "lim",
    "int",
    "sum",
    "prod",
    "lfloor",
    "rfloor",
    "lceil",
    "rceil",
    "langle",
    "rangle",
    "to",
    "rightarrow",
    "Rightarrow",
    "longrightarrow",
    "Longrightarrow",
];

pub(super) struct Parser<'a> {
    pub(super) toks: &'a [Tok],
    pub(super) pos: usize,
    /// Set when the parser looks at a character the lexer could not read: sympy raises.
    /// Also set when the work budget or the nesting limit runs out (see [`FUEL`]).
    pub(super) hard: bool,
    pub(super) fuel: u32,
    pub(super) depth: u32,
    /// Give a number's last digit back to what follows (see `func_normal`'s retry).
    pub(super) leave_last_digit: bool,
}

/// Backtracking can take exponential time on degenerate input (`x(x(x(…` unclosed), and
/// deep nesting could overflow the stack. The reference gives up after three seconds and
/// counts the answer wrong; running out of this budget fails the parse, with the same effect.
const FUEL: u32 = 200_000;
pub(super) const MAX_DEPTH: u32 = 100;
/// Longer than any real answer; a chain of `^` or `!` this long could not be evaluated
/// without deep recursion.
const MAX_TOKENS: usize = 4000;

impl Parser<'_> {
    pub(super) fn peek(&mut self) -> Option<&Tok> {
        let t = self.toks.get(self.pos);
        if matches!(t, Some(Tok::Error)) {
            self.hard = true;
        }
        t
    }

    pub(super) fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn expect(&mut self, t: &Tok) -> R<()> {
        if self.eat(t) { Ok(()) } else { Err(()) }
    }

    pub(super) fn is_cmd(&mut self, names: &[&str]) -> Option<String> {
        match self.peek() {
            Some(Tok::Cmd(n)) if names.contains(&n.as_str()) => Some(n.clone()),
            _ => None,
        }
    }

    /// Runs `f`; on failure puts the position back and returns `None`.
    pub(super) fn attempt<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> Option<T> {
        let save = self.pos;
        match f(self) {
            Ok(v) => Some(v),
            Err(()) => {
                self.pos = save;
                None
            }
        }
    }

    fn relation(&mut self) -> R<Parsed> {
        let lhs = self.expr()?;
        let op = match self.peek() {
            Some(Tok::Rel(op)) => *op,
            _ => return Ok(Parsed::Expr(lhs)),
        };
        // Unlike `+` or a factor, a relation sign commits: `w=` and `w==2` raise in sympy.
        self.pos += 1;
        let rhs = self.expr().inspect_err(|_| self.hard = true)?;
        if matches!(self.peek(), Some(Tok::Rel(_))) {
            // A chain nests to the left: Eq(Eq(a, b), c). sympy makes it `false` when c is
            // not a lone symbol, keeps it unevaluated otherwise (not modelled), and raises
            // for an outer inequality.
            let mut last_outer = RelOp::Eq;
            let mut last = rhs;
            while let Some(Tok::Rel(outer)) = self.peek().cloned() {
                let Some(next) = self.attempt(|p| {
                    p.pos += 1;
                    p.expr()
                }) else {
                    break;
                };
                (last_outer, last) = (outer, next);
            }
            return match (last_outer, &last) {
                (RelOp::Eq, e) if !matches!(e, Expr::Sym(_)) => Ok(Parsed::False),
                _ => Err(()),
            };
        }
        Ok(Parsed::Rel(op, lhs, rhs))
    }

    pub(super) fn expr(&mut self) -> R<Expr> {
        let mut terms = vec![self.mp(false)?];
        loop {
            let neg = match self.peek() {
                Some(Tok::Plus) => false,
                Some(Tok::Minus) => true,
                _ => break,
            };
            match self.attempt(|p| {
                p.pos += 1;
                p.mp(false)
            }) {
                Some(t) if neg => terms.push(Expr::Neg(Box::new(t))),
                Some(t) => terms.push(t),
                None => break,
            }
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Add(terms)
        })
    }

    pub(super) fn mp(&mut self, nofunc: bool) -> R<Expr> {
        let mut acc = self.unary(nofunc)?;
        loop {
            let div = match self.peek() {
                Some(Tok::Star) => false,
                Some(Tok::Cmd(c)) if c == "times" || c == "cdot" => false,
                Some(Tok::Slash) | Some(Tok::Colon) => true,
                Some(Tok::Cmd(c)) if c == "div" => true,
                _ => break,
            };
            match self.attempt(|p| {
                p.pos += 1;
                p.mp_operand(nofunc)
            }) {
                // kept flat, so that a long product is not a deep tree
                Some(r) => {
                    let r = if div { Expr::recip(r) } else { r };
                    match &mut acc {
                        Expr::Mul(factors) => factors.push(r),
                        _ => acc = Expr::Mul(vec![acc, r]),
                    }
                }
                None => break,
            }
        }
        Ok(acc)
    }

    pub(super) fn mp_operand(&mut self, nofunc: bool) -> R<Expr> {
        self.unary(nofunc)
    }

    fn unary(&mut self, nofunc: bool) -> R<Expr> {
        match self.peek() {
            Some(Tok::Plus) => {
                self.pos += 1;
                self.nest()?;
                let inner = self.unary(nofunc);
                self.depth -= 1;
                return inner;
            }
            Some(Tok::Minus) => {
                self.pos += 1;
                self.nest()?;
                let inner = self.unary(nofunc);
                self.depth -= 1;
                return Ok(Expr::Neg(Box::new(inner?)));
            }
            _ => {}
        }
        let mut list = vec![self.postfix(true)?];
        while let Some(next) = self.attempt(|p| p.postfix(!nofunc)) {
            list.push(next);
        }
        Ok(postfix_list(list))
    }

    fn postfix(&mut self, func_ok: bool) -> R<Expr> {
        let mut e = self.exp(func_ok)?;
        let mut bangs = 0;
        while self.eat(&Tok::Bang) {
            bangs += 1;
            if bangs > MAX_DEPTH {
                self.hard = true;
                return Err(());
            }
            e = Expr::Call(Func::Factorial, vec![e]);
        }
        Ok(e)
    }

    fn exp(&mut self, func_ok: bool) -> R<Expr> {
        let mut base = self.comp(func_ok)?;
        let mut carets = 0;
        while matches!(self.peek(), Some(Tok::Caret)) {
            carets += 1;
            if carets > MAX_DEPTH {
                self.hard = true;
                return Err(());
            }
            let Some(e) = self.attempt(|p| {
                p.pos += 1;
                p.atom_or_braced()
            }) else {
                break;
            };
            let _ = self.attempt(|p| p.subexpr());
            base = Expr::pow(base, e);
        }
        Ok(base)
    }

    fn atom_or_braced(&mut self) -> R<Expr> {
        if self.eat(&Tok::LBrace) {
            let e = self.expr()?;
            self.expect(&Tok::RBrace)?;
            return Ok(e);
        }
        self.atom()
    }

    pub(super) fn subexpr(&mut self) -> R<Expr> {
        self.expect(&Tok::Underscore)?;
        self.atom_or_braced()
    }

    pub(super) fn supexpr(&mut self) -> R<Expr> {
        self.expect(&Tok::Caret)?;
        self.atom_or_braced()
    }

    /// Spends one unit of work and one level of nesting (the caller gives the level back).
    fn nest(&mut self) -> R<()> {
        if self.fuel == 0 || self.depth >= MAX_DEPTH {
            self.hard = true;
            return Err(());
        }
        self.fuel -= 1;
        self.depth += 1;
        Ok(())
    }

    fn comp(&mut self, func_ok: bool) -> R<Expr> {
        self.nest()?;
        let out = self.comp_inner(func_ok);
        self.depth -= 1;
        out
    }

    fn comp_inner(&mut self, func_ok: bool) -> R<Expr> {
        if let Some(e) = self.attempt(|p| p.group()) {
            return Ok(e);
        }
        if let Some(e) = self.attempt(|p| {
            p.expect(&Tok::Bar)?;
            let e = p.expr()?;
            p.expect(&Tok::Bar)?;
            Ok(Expr::Call(Func::Abs, vec![e]))
        }) {
            return Ok(e);
        }
        if func_ok && let Some(e) = self.attempt(|p| p.func()) {
            return Ok(e);
        }
        if let Some(e) = self.attempt(|p| p.atom()) {
            return Ok(e);
        }
        for (open, close, f) in [
            ("lfloor", "rfloor", Func::Floor),
            ("lceil", "rceil", Func::Ceil),
        ] {
            if let Some(e) = self.attempt(|p| {
                p.is_cmd(&[open]).ok_or(())?;
                p.pos += 1;
                let e = p.expr()?;
                p.is_cmd(&[close]).ok_or(())?;
                p.pos += 1;
                Ok(Expr::Call(f, vec![e]))
            }) {
                return Ok(e);
            }
        }
        Err(())
    }

    fn group(&mut self) -> R<Expr> {
        let close = match self.peek() {
            Some(Tok::LParen) => Tok::RParen,
            Some(Tok::LBracket) => Tok::RBracket,
            Some(Tok::LBrace) => Tok::RBrace,
            Some(Tok::LBraceLit) => Tok::RBraceLit,
            _ => return Err(()),
        };
        self.pos += 1;
        let e = self.expr()?;
        self.expect(&close)?;
        Ok(e)
    }

    /// `(LETTER | SYMBOL)` with an optional subscript and primes, named as sympy names it.
    pub(super) fn symbol_name(&mut self) -> R<String> {
        let mut name = match self.peek() {
            Some(Tok::Letter(c)) => c.to_string(),
            Some(Tok::Cmd(n))
                if !RESERVED.contains(&n.as_str()) && !FUNC_NORMAL.contains(&n.as_str()) =>
            {
                n.clone()
            }
            _ => return Err(()),
        };
        self.pos += 1;
        let quotes_first = self.quotes();
        if let Some(sub) = self.attempt(|p| p.subexpr()) {
            name.push_str(&format!("_{{{}}}", sub.print()));
        }
        let quotes = quotes_first + if quotes_first == 0 { self.quotes() } else { 0 };
        name.push_str(&"'".repeat(quotes));
        Ok(name)
    }

    fn quotes(&mut self) -> usize {
        match self.peek() {
            Some(Tok::Quotes(n)) => {
                let n = *n;
                self.pos += 1;
                n
            }
            _ => 0,
        }
    }

    fn atom(&mut self) -> R<Expr> {
        match self.peek().cloned() {
            Some(Tok::Cmd(n)) if n == "infty" => {
                self.pos += 1;
                Ok(Expr::Infinity)
            }
            Some(Tok::Letter(_)) => Ok(Expr::Sym(self.symbol_name()?)),
            Some(Tok::Cmd(n)) if n == "frac" || n == "dfrac" || n == "tfrac" => {
                self.pos += 1;
                let top_start = self.pos;
                let top = self.frac_part()?;
                let top_toks = &self.toks[top_start..self.pos];
                let bottom_start = self.pos;
                let bottom = self.frac_part()?;
                let bottom_toks = &self.toks[bottom_start..self.pos];
                if let Some(d) = derivative(top_toks, bottom_toks) {
                    return Ok(d);
                }
                Ok(if is_one(&top) {
                    Expr::recip(bottom)
                } else {
                    Expr::quotient(top, bottom)
                })
            }
            Some(Tok::Cmd(n)) if n == "binom" || n == "dbinom" || n == "tbinom" => {
                self.pos += 1;
                self.expect(&Tok::LBrace)?;
                let a = self.expr()?;
                self.expect(&Tok::RBrace)?;
                self.expect(&Tok::LBrace)?;
                let b = self.expr()?;
                self.expect(&Tok::RBrace)?;
                Ok(Expr::Call(Func::Binomial, vec![a, b]))
            }
            Some(Tok::Cmd(n)) if n == "mathit" => {
                self.pos += 1;
                self.expect(&Tok::LBrace)?;
                let mut text = String::new();
                while let Some(Tok::Letter(c)) = self.peek() {
                    text.push(*c);
                    self.pos += 1;
                }
                self.expect(&Tok::RBrace)?;
                Ok(Expr::Sym(text))
            }
            Some(Tok::Cmd(_)) => Ok(Expr::Sym(self.symbol_name()?)),
            Some(Tok::Differential(v)) => {
                self.pos += 1;
                Ok(Expr::Sym(format!("d{v}")))
            }
            Some(Tok::Digit(_)) => self.number(),
            _ => Err(()),
        }
    }

    fn frac_part(&mut self) -> R<Expr> {
        if let Some(Tok::Digit(d)) = self.peek().cloned() {
            self.pos += 1;
            return Ok(Expr::Num(Number::int(i128::from(
                d.to_digit(10).unwrap_or(0),
            ))));
        }
        self.expect(&Tok::LBrace)?;
        let e = self.expr()?;
        self.expect(&Tok::RBrace)?;
        Ok(e)
    }

    /// `DIGIT+ (',' DIGIT DIGIT DIGIT)* ('.' DIGIT+)?`, commas dropped.
    fn number(&mut self) -> R<Expr> {
        let mut text = self.digits();
        if text.is_empty() {
            return Err(());
        }
        if self.leave_last_digit && text.len() > 1 {
            text.pop();
            self.pos -= 1;
            return Number::from_decimal(&text).map(Expr::Num).ok_or(());
        }
        let leading_zero = text.len() > 1 && text.starts_with('0');
        while let Some(group) = self.attempt(|p| {
            p.expect(&Tok::Comma)?;
            let mut g = String::new();
            for _ in 0..3 {
                match p.peek() {
                    Some(Tok::Digit(d)) => {
                        g.push(*d);
                        p.pos += 1;
                    }
                    _ => return Err(()),
                }
            }
            Ok(g)
        }) {
            text.push_str(&group);
        }
        if let Some(frac) = self.attempt(|p| {
            p.expect(&Tok::Dot)?;
            let f = p.digits();
            if f.is_empty() { Err(()) } else { Ok(f) }
        }) {
            text.push('.');
            text.push_str(&frac);
        } else if leading_zero {
            // sympy.Number("03") goes through Python's parser, which rejects leading zeros
            self.hard = true;
            return Err(());
        }
        Number::from_decimal(&text).map(Expr::Num).ok_or(())
    }

    fn digits(&mut self) -> String {
        let mut s = String::new();
        while let Some(Tok::Digit(d)) = self.peek() {
            s.push(*d);
            self.pos += 1;
        }
        s
    }
}

/// `\frac{dy}{dx}`: sympy reads a braced differential over a braced differential as
/// `Derivative(y, x)` of two independent symbols, which `simplify` turns into 0 (or 1 when
/// `y` is `x`).
fn derivative(top: &[Tok], bottom: &[Tok]) -> Option<Expr> {
    match (top, bottom) {
        (
            [Tok::LBrace, Tok::Differential(y), Tok::RBrace],
            [Tok::LBrace, Tok::Differential(x), Tok::RBrace],
        ) => Some(Expr::Num(Number::int(i128::from(x == y)))),
        _ => None,
    }
}

fn is_one(e: &Expr) -> bool {
    matches!(e, Expr::Num(n) if n.exact == Some((1, 1)))
}

/// `convert_postfix_list`: implicit multiplication, except that a lone `x` between two
/// symbol-free factors is read as a times sign (`2x3` is `2*3`).
fn postfix_list(list: Vec<Expr>) -> Expr {
    if list.len() == 1 {
        return list.into_iter().next().unwrap_or(Expr::Num(Number::int(1)));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let is_x = matches!(e, Expr::Sym(s) if s == "x");
        if is_x && i > 0 && i + 1 < list.len() {
            let (l, r) = (&list[i - 1], &list[i + 1]);
            if !l.has_symbols() && !r.has_symbols() {
                continue;
            }
        }
        out.push(e.clone());
    }
    Expr::Mul(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> bool {
        parse_latex(s).is_some()
    }

    #[test]
    fn prefix_parsing_drops_the_rest() {
        assert_eq!(parse_latex("1,2"), parse_latex("1"));
        assert_eq!(parse_latex("x>1,y"), parse_latex("x>1"));
        assert_eq!(parse_latex("1,000"), parse_latex("1000"));
    }

    #[test]
    fn failures_match_sympy() {
        assert!(!ok("(1,2)"));
        assert!(!ok("1e+03"), "`03` has a leading zero");
        assert!(ok("0.03"));
        assert!(!ok("\\sqrt2"));
        assert!(!ok("5\\%"));
        assert!(!ok("(2"));
        assert!(!ok("w=") && !ok("w==2"), "a relation sign commits");
        assert!(ok("x+") && ok("1,,2"), "other continuations roll back");
        assert!(ok("2)"));
        assert!(ok("\\frac12"));
        assert!(ok("x(x+1)"));
    }

    #[test]
    fn degenerate_input_fails_fast() {
        let nested = "x(".repeat(60);
        assert!(!ok(&nested));
        let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(!ok(&deep));
    }

    #[test]
    fn chained_equations_collapse_to_false() {
        assert_eq!(parse_latex("a=b=c+1"), Some(Parsed::False));
        assert_eq!(parse_latex("a=b=2"), Some(Parsed::False));
    }
}
