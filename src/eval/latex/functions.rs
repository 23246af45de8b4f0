//! Function-like constructs of sympy's LaTeX grammar: `\sin^2 x`, `\log_2 8`,
//! `\sqrt[3]{x}`, `\overline{z}`, `\sum_{k=1}^{n} …`, and `f(x)` for an unknown `f`.
//!
//! They live apart from [`super::parser`] because each has its own small sub-grammar
//! (sub- and superscripts in either order, arguments with or without parentheses) and its
//! own conversion rules from sympy's `convert_func` (`\log` is natural, `\lg` is base 10,
//! `\sin^{-1}` is `asin`, other powers wrap the call).

use super::expr::{Expr, Func, Number, RelOp, Series};
use super::lexer::Tok;
use super::parser::Parser;

type R<T> = Result<T, ()>;

/// Commands that take an argument with or without parentheses (`func_normal` in the grammar).
pub(super) const FUNC_NORMAL: &[&str] = &[
    "exp", "log", "lg", "ln", "sin", "cos", "tan", "csc", "sec", "cot", "arcsin", "arccos",
    "arctan", "arccsc", "arcsec", "arccot", "sinh", "cosh", "tanh", "arsinh", "arcosh", "artanh",
];

impl Parser<'_> {
    /// `(subexpr? supexpr? | supexpr? subexpr?) (L_PAREN func_arg R_PAREN | func_arg_noparens)`
    fn scripts_and_argument(
        &mut self,
        leave_last_digit: bool,
    ) -> R<(Option<Expr>, Option<Expr>, Expr)> {
        let mut sub = None;
        let mut sup = None;
        self.leave_last_digit = leave_last_digit;
        if let Some(s) = self.attempt(|p| p.subexpr()) {
            sub = Some(s);
            sup = self.attempt(|p| p.supexpr());
        } else if let Some(s) = self.attempt(|p| p.supexpr()) {
            sup = Some(s);
            sub = self.attempt(|p| p.subexpr());
        }
        self.leave_last_digit = false;
        let arg = match self.attempt(|p| {
            p.expect(&Tok::LParen)?;
            let a = p.expr()?;
            while p.eat(&Tok::Comma) {
                p.expr()?;
            }
            p.expect(&Tok::RParen)?;
            Ok(a)
        }) {
            Some(a) => a,
            None => self.mp(true)?,
        };
        Ok((sub, sup, arg))
    }

    pub(super) fn func(&mut self) -> R<Expr> {
        if let Some(name) = self.is_cmd(FUNC_NORMAL) {
            self.pos += 1;
            return self.func_normal(&name);
        }
        if let Some(name) = self.is_cmd(&["sum", "prod"]) {
            self.pos += 1;
            return self.series(name == "prod");
        }
        if let Some(name) = self.is_cmd(&["sqrt"]) {
            let _ = name;
            self.pos += 1;
            let root = self.attempt(|p| {
                p.expect(&Tok::LBracket)?;
                let r = p.expr()?;
                p.expect(&Tok::RBracket)?;
                Ok(r)
            });
            self.expect(&Tok::LBrace)?;
            let base = self.expr()?;
            self.expect(&Tok::RBrace)?;
            let exponent = match root {
                Some(r) => Expr::recip(r),
                None => Expr::quotient(Expr::Num(Number::int(1)), Expr::Num(Number::int(2))),
            };
            return Ok(Expr::pow(base, exponent));
        }
        if self.is_cmd(&["overline"]).is_some() {
            self.pos += 1;
            self.expect(&Tok::LBrace)?;
            let base = self.expr()?;
            self.expect(&Tok::RBrace)?;
            return Ok(Expr::Call(Func::Conjugate, vec![base]));
        }
        // f(x), f_1'(x, y): a function sympy does not know
        let name = self.symbol_name()?;
        self.expect(&Tok::LParen)?;
        let mut args = vec![self.expr()?];
        while self.eat(&Tok::Comma) {
            args.push(self.expr()?);
        }
        self.expect(&Tok::RParen)?;
        Ok(Expr::Undefined(name, args))
    }

    /// `(\sum | \prod) (subeq supexpr | supexpr subeq) mp`, with `subeq` = `_{var = lo}`.
    fn series(&mut self, product: bool) -> R<Expr> {
        let subeq = |p: &mut Self| -> R<(String, Expr)> {
            p.expect(&Tok::Underscore)?;
            p.expect(&Tok::LBrace)?;
            let var = match p.expr()? {
                Expr::Sym(v) => v,
                _ => return Err(()),
            };
            p.expect(&Tok::Rel(RelOp::Eq))?;
            let lo = p.expr()?;
            p.expect(&Tok::RBrace)?;
            Ok((var, lo))
        };
        let ((var, lo), hi) = if matches!(self.peek(), Some(Tok::Underscore)) {
            let eq = subeq(self)?;
            (eq, self.supexpr()?)
        } else {
            let hi = self.supexpr()?;
            (subeq(self)?, hi)
        };
        let body = self.mp(false)?;
        Ok(Expr::Series(Series {
            product,
            var,
            lo: Box::new(lo),
            hi: Box::new(hi),
            body: Box::new(body),
        }))
    }

    fn func_normal(&mut self, name: &str) -> R<Expr> {
        // `\log_2 128` is log base 212 of 8 in sympy: a script's digits are greedy, but
        // ANTLR's lookahead leaves the last digit to the argument when nothing else follows.
        let (sub, sup, arg) = match self.attempt(|p| p.scripts_and_argument(false)) {
            Some(parts) => parts,
            None => self.scripts_and_argument(true)?,
        };
        let inverse = is_minus_one(&sup);
        let trig = |f: Func| Expr::Call(f, vec![arg.clone()]);
        let mut e = match name {
            "exp" => trig(Func::Exp),
            "log" | "ln" | "lg" => {
                let base = match (sub, name) {
                    (Some(b), _) => b,
                    (None, "lg") => Expr::Num(Number::int(10)),
                    _ => Expr::Euler,
                };
                Expr::Call(Func::Log, vec![arg.clone(), base])
            }
            "sin" if inverse => trig(Func::Asin),
            "cos" if inverse => trig(Func::Acos),
            "tan" if inverse => trig(Func::Atan),
            "csc" if inverse => trig(Func::Acsc),
            "sec" if inverse => trig(Func::Asec),
            "cot" if inverse => trig(Func::Acot),
            "sinh" if inverse => trig(Func::Asinh),
            "cosh" if inverse => trig(Func::Acosh),
            "tanh" if inverse => trig(Func::Atanh),
            "sin" => trig(Func::Sin),
            "cos" => trig(Func::Cos),
            "tan" => trig(Func::Tan),
            "csc" => trig(Func::Csc),
            "sec" => trig(Func::Sec),
            "cot" => trig(Func::Cot),
            "sinh" => trig(Func::Sinh),
            "cosh" => trig(Func::Cosh),
            "tanh" => trig(Func::Tanh),
            "arcsin" => trig(Func::Asin),
            "arccos" => trig(Func::Acos),
            "arctan" => trig(Func::Atan),
            "arccsc" => trig(Func::Acsc),
            "arcsec" => trig(Func::Asec),
            "arccot" => trig(Func::Acot),
            "arsinh" => trig(Func::Asinh),
            "arcosh" => trig(Func::Acosh),
            "artanh" => trig(Func::Atanh),
            _ => return Err(()),
        };
        let trig_name = matches!(
            name,
            "sin" | "cos" | "tan" | "csc" | "sec" | "cot" | "sinh" | "cosh" | "tanh"
        );
        if let Some(p) = sup
            && !(trig_name && inverse)
        {
            e = Expr::pow(e, p);
        }
        Ok(e)
    }
}

fn is_minus_one(sup: &Option<Expr>) -> bool {
    matches!(sup, Some(Expr::Neg(b)) if matches!(**b, Expr::Num(ref n) if n.exact == Some((1, 1))))
}

#[cfg(test)]
mod tests {
    use super::super::expr::Parsed;
    use super::super::parser::parse_latex;
    use super::*;

    #[test]
    fn log_base_digits_as_sympy_reads_them() {
        let log = |s: &str| match parse_latex(s) {
            Some(Parsed::Expr(Expr::Call(Func::Log, args))) => args
                .iter()
                .map(Expr::print)
                .collect::<Vec<_>>()
                .join(" base "),
            other => format!("{other:?}"),
        };
        assert_eq!(log("\\log_28"), "8 base 2");
        assert_eq!(log("\\log_2 128"), "8 base 212");
        assert_eq!(log("\\log_{2}128"), "128 base 2");
    }

    #[test]
    fn functions_are_calls() {
        assert!(matches!(
            parse_latex("f(x)"),
            Some(Parsed::Expr(Expr::Undefined(..)))
        ));
        assert!(matches!(
            parse_latex("\\sin^{-1}x"),
            Some(Parsed::Expr(Expr::Call(Func::Asin, _)))
        ));
    }
}
