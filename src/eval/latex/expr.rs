//! The expression tree that both LaTeX and Python-syntax answers parse into.

/// A rational or decimal literal as written; decimals keep their exact value.
#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    /// Numerator and denominator when the literal fits `i128` (decimals are exact too).
    pub exact: Option<(i128, i128)>,
    pub value: f64,
}

impl Number {
    /// A literal such as `12`, `1000.5` or `.25` (commas already removed).
    pub fn from_decimal(text: &str) -> Option<Number> {
        let value: f64 = text.parse().ok()?;
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = format!("{int}{frac}");
        let exact = if digits.len() <= 30 && frac.len() <= 30 {
            let num: Option<i128> = if digits.is_empty() {
                Some(0)
            } else {
                digits.parse().ok()
            };
            num.and_then(|n| 10i128.checked_pow(frac.len() as u32).map(|d| (n, d)))
        } else {
            None
        };
        Some(Number { exact, value })
    }

    pub fn int(v: i128) -> Number {
        Number {
            exact: Some((v, 1)),
            value: v as f64,
        }
    }
}

/// Built-in functions the parsers know by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Csc,
    Sec,
    Cot,
    Asin,
    Acos,
    Atan,
    Acsc,
    Asec,
    Acot,
    Sinh,
    Cosh,
    Tanh,
    Asinh,
    Acosh,
    Atanh,
    Exp,
    Abs,
    Floor,
    Ceil,
    Factorial,
    Conjugate,
    /// `log(x, base)`
    Log,
    /// `binomial(n, k)`
    Binomial,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(Number),
    Sym(String),
    Infinity,
    /// Python-syntax `pi`, `E`, `I` (LaTeX `\pi` is a plain symbol in sympy's parser).
    Pi,
    Euler,
    ImagUnit,
    Add(Vec<Expr>),
    Mul(Vec<Expr>),
    Neg(Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    /// `f(x)`: a function the parser does not know; compared as an opaque smooth function.
    Undefined(String, Vec<Expr>),
    /// `\sum_{var=lo}^{hi} body` (or `\prod`): `var` is bound inside `body`.
    Series(Series),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub product: bool,
    pub var: String,
    pub lo: Box<Expr>,
    pub hi: Box<Expr>,
    pub body: Box<Expr>,
}

impl Expr {
    pub fn pow(b: Expr, e: Expr) -> Expr {
        Expr::Pow(Box::new(b), Box::new(e))
    }

    pub fn recip(e: Expr) -> Expr {
        Expr::pow(e, Expr::Num(Number::int(-1)))
    }

    pub fn quotient(a: Expr, b: Expr) -> Expr {
        Expr::Mul(vec![a, Expr::recip(b)])
    }

    pub fn difference(a: Expr, b: Expr) -> Expr {
        Expr::Add(vec![a, Expr::Neg(Box::new(b))])
    }

    /// Whether the expression mentions a free symbol (sympy's `free_symbols` non-empty).
    pub fn has_symbols(&self) -> bool {
        self.has_free_symbols(&[])
    }

    fn has_free_symbols(&self, bound: &[&str]) -> bool {
        let free = |e: &Expr| e.has_free_symbols(bound);
        match self {
            Expr::Sym(s) => !bound.contains(&s.as_str()),
            Expr::Undefined(..) => true,
            Expr::Num(_) | Expr::Infinity | Expr::Pi | Expr::Euler | Expr::ImagUnit => false,
            Expr::Add(v) | Expr::Mul(v) | Expr::Call(_, v) => v.iter().any(free),
            Expr::Neg(e) => free(e),
            Expr::Pow(a, b) => free(a) || free(b),
            Expr::Series(s) => {
                let mut inner = bound.to_vec();
                inner.push(&s.var);
                free(&s.lo) || free(&s.hi) || s.body.has_free_symbols(&inner)
            }
        }
    }

    /// A short printed form, used to name subscripted symbols (`x_{1}`).
    pub fn print(&self) -> String {
        match self {
            Expr::Num(n) => match n.exact {
                Some((p, 1)) => p.to_string(),
                _ => n.value.to_string(),
            },
            Expr::Sym(s) => s.clone(),
            Expr::Infinity => "oo".into(),
            Expr::Pi => "pi".into(),
            Expr::Euler => "E".into(),
            Expr::ImagUnit => "I".into(),
            Expr::Add(v) => v.iter().map(Expr::print).collect::<Vec<_>>().join(" + "),
            Expr::Mul(v) => v.iter().map(Expr::print).collect::<Vec<_>>().join("*"),
            Expr::Neg(e) => format!("-{}", e.print()),
            Expr::Pow(a, b) => format!("{}**{}", a.print(), b.print()),
            Expr::Call(f, v) => format!(
                "{f:?}({})",
                v.iter().map(Expr::print).collect::<Vec<_>>().join(", ")
            ),
            Expr::Series(s) => format!(
                "{}({}, ({}, {}, {}))",
                if s.product { "Product" } else { "Sum" },
                s.body.print(),
                s.var,
                s.lo.print(),
                s.hi.print()
            ),
            Expr::Undefined(n, v) => format!(
                "{n}({})",
                v.iter().map(Expr::print).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqKind {
    Tuple,
    List,
    Set,
}

/// What a parser returns: an expression, a relation, a Python sequence or a matrix.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Expr(Expr),
    Rel(RelOp, Expr, Expr),
    Seq(SeqKind, Vec<Parsed>),
    Matrix(Vec<Vec<Expr>>),
    /// sympy's `false`, what a chained equation such as `a=b=1` evaluates to.
    False,
}
