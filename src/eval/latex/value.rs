//! Deciding whether two parsed answers are the same mathematical object.
//!
//! The reference asks sympy, in order: same printed form, structural equality,
//! `a.equals(b)` / `simplify(a - b) == 0`, for relations `|lhs - rhs|` equal on both sides,
//! then `float(N(a))` against `float(N(b))` with relative tolerance 1e-4. Here:
//!
//! * symbol-free expressions are computed exactly as rationals where only `+ - * /` and
//!   integer powers occur, otherwise as complex floats; real values get the 1e-4 rule,
//!   complex ones must agree tightly (sympy's `float()` refuses them, so only exact
//!   simplification could have matched);
//! * expressions with symbols are evaluated at a few deterministic pseudo-random points
//!   (seeded by the symbol's name, so both sides see the same values) and must agree to
//!   ~1e-8 relative at every point where both are finite.

use super::complex::C;
use super::expr::{Expr, Func, Parsed, SeqKind};
use crate::eval::pynum::is_close;

const POINTS: u64 = 5;

/// Whether `a` and `b` are equal as the reference's `symbolic_equal` would find them.
pub fn parsed_equal(a: &Parsed, b: &Parsed, rel_tol: f64) -> bool {
    match (a, b) {
        (Parsed::Expr(x), Parsed::Expr(y)) => expr_equal(x, y, rel_tol),
        (Parsed::False, Parsed::False) => true,
        (Parsed::Rel(o1, l1, r1), Parsed::Rel(o2, l2, r2)) => {
            if o1 == o2 && same_function(l1, l2) && same_function(r1, r2) {
                return true;
            }
            // sympy's "equation equal": Abs(lhs - rhs) on both sides, whatever the relation
            let d1 = Expr::Call(Func::Abs, vec![Expr::difference(l1.clone(), r1.clone())]);
            let d2 = Expr::Call(Func::Abs, vec![Expr::difference(l2.clone(), r2.clone())]);
            same_function(&d1, &d2)
        }
        (Parsed::Seq(k1, xs), Parsed::Seq(k2, ys)) => {
            if k1 != k2 || xs.len() != ys.len() {
                return false;
            }
            if *k1 == SeqKind::Set {
                xs.iter().all(|x| ys.iter().any(|y| seq_item_equal(x, y)))
                    && ys.iter().all(|y| xs.iter().any(|x| seq_item_equal(x, y)))
            } else {
                xs.iter().zip(ys).all(|(x, y)| seq_item_equal(x, y))
            }
        }
        (Parsed::Matrix(m1), Parsed::Matrix(m2)) => {
            m1.len() == m2.len()
                && m1.iter().zip(m2).all(|(r1, r2)| {
                    r1.len() == r2.len()
                        && r1
                            .iter()
                            .zip(r2)
                            .all(|(x, y)| same_function(x, y) || rounded_equal(x, y))
                })
        }
        _ => false,
    }
}

/// Python `==` on sequence items: sympy's structural equality, approximated as identity
/// of the function both sides compute (no 1e-4 slack).
fn seq_item_equal(a: &Parsed, b: &Parsed) -> bool {
    match (a, b) {
        (Parsed::Expr(x), Parsed::Expr(y)) => same_function(x, y),
        _ => parsed_equal(a, b, 0.0),
    }
}

/// Matrices compare entries rounded to three decimals in the reference.
fn rounded_equal(a: &Expr, b: &Expr) -> bool {
    match (constant_value(a), constant_value(b)) {
        (Some(x), Some(y)) if x.is_real() && y.is_real() => {
            (x.re * 1000.0).round() == (y.re * 1000.0).round()
        }
        _ => false,
    }
}

/// Expression equality: exact or 1e-4 for constants, point-wise identity otherwise.
pub fn expr_equal(a: &Expr, b: &Expr, rel_tol: f64) -> bool {
    if a == b {
        return true;
    }
    if !a.has_symbols() && !b.has_symbols() {
        if let (Some(x), Some(y)) = (exact(a), exact(b))
            && x == y
        {
            return true;
        }
        let (Some(x), Some(y)) = (constant_value(a), constant_value(b)) else {
            return false;
        };
        if x.is_real() && y.is_real() {
            return is_close(x.re, y.re, rel_tol) || values_match(x, y);
        }
        return values_match(x, y);
    }
    same_function(a, b)
}

fn constant_value(e: &Expr) -> Option<C> {
    let v = eval(e, &|_| C::ONE, &|_, _| C::ONE);
    (v.is_finite() || v.re.is_infinite()).then_some(v)
}

/// Whether `a` and `b` agree at every sample point where both are finite (and at one at least).
pub fn same_function(a: &Expr, b: &Expr) -> bool {
    if a == b {
        return true;
    }
    let mut compared = 0;
    for point in 0..POINTS {
        let sym = |name: &str| C::real(sample(name, point));
        let undef = |name: &str, args: &[C]| undefined_value(name, args);
        let (x, y) = (eval(a, &sym, &undef), eval(b, &sym, &undef));
        if x.is_finite() && y.is_finite() {
            if !values_match(x, y) {
                return false;
            }
            compared += 1;
        } else if x.is_finite() != y.is_finite() {
            return false;
        } else if x.re.is_infinite() && y.re.is_infinite() && x.re == y.re {
            compared += 1;
        }
    }
    compared > 0
}

fn values_match(x: C, y: C) -> bool {
    if !x.is_finite() || !y.is_finite() {
        return x == y;
    }
    let scale = x.abs().max(y.abs()).max(1.0);
    (x - y).abs() <= 1e-8 * scale
}

/// A value in [0.4, 2.4) fixed by the symbol's name and the point index.
fn sample(name: &str, point: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ point.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = splitmix(h);
    0.4 + 2.0 * ((h >> 11) as f64 / (1u64 << 53) as f64)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An unknown function `f(x, …)` as a fixed smooth function chosen by its name.
fn undefined_value(name: &str, args: &[C]) -> C {
    let k = 0.5 + sample(name, 99);
    let c = sample(name, 98);
    let mut acc = C::real(c);
    for (i, a) in args.iter().enumerate() {
        acc = acc + (*a * C::real(k + i as f64)).sin();
    }
    acc
}

/// Exact value of a symbol-free expression built from `+ - * /` and integer powers.
fn exact(e: &Expr) -> Option<(i128, i128)> {
    match e {
        Expr::Num(n) => n.exact.and_then(|(p, q)| reduce(p, q)),
        Expr::Neg(x) => exact(x).and_then(|(p, q)| Some((p.checked_neg()?, q))),
        Expr::Add(v) => v.iter().try_fold((0i128, 1i128), |acc, x| {
            let (p, q) = exact(x)?;
            reduce(
                acc.0.checked_mul(q)?.checked_add(p.checked_mul(acc.1)?)?,
                acc.1.checked_mul(q)?,
            )
        }),
        Expr::Mul(v) => v.iter().try_fold((1i128, 1i128), |acc, x| {
            let (p, q) = exact(x)?;
            reduce(acc.0.checked_mul(p)?, acc.1.checked_mul(q)?)
        }),
        Expr::Pow(b, x) => {
            let (p, q) = exact(b)?;
            let (n, 1) = exact(x)? else { return None };
            if n.unsigned_abs() > 64 {
                return None;
            }
            let (pp, qq) = (
                p.checked_pow(n.unsigned_abs() as u32)?,
                q.checked_pow(n.unsigned_abs() as u32)?,
            );
            if n >= 0 {
                reduce(pp, qq)
            } else {
                reduce(qq, pp)
            }
        }
        _ => None,
    }
}

fn reduce(p: i128, q: i128) -> Option<(i128, i128)> {
    if q == 0 {
        return None;
    }
    let g = gcd(p.unsigned_abs(), q.unsigned_abs()) as i128;
    let (p, q) = (p / g, q / g);
    if q < 0 {
        Some((p.checked_neg()?, q.checked_neg()?))
    } else {
        Some((p, q))
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Complex value of `e`, with symbols and unknown functions supplied by the caller.
fn eval(e: &Expr, sym: &dyn Fn(&str) -> C, undef: &dyn Fn(&str, &[C]) -> C) -> C {
    let ev = |x: &Expr| eval(x, sym, undef);
    match e {
        Expr::Num(n) => C::real(n.value),
        Expr::Sym(s) => sym(s),
        Expr::Infinity => C::real(f64::INFINITY),
        Expr::Pi => C::real(std::f64::consts::PI),
        Expr::Euler => C::real(std::f64::consts::E),
        Expr::ImagUnit => C::I,
        Expr::Add(v) => v.iter().fold(C::ZERO, |acc, x| acc + ev(x)),
        Expr::Mul(v) => v.iter().fold(C::ONE, |acc, x| acc * ev(x)),
        Expr::Neg(x) => -ev(x),
        Expr::Pow(b, x) => ev(b).powc(ev(x)),
        Expr::Undefined(name, args) => {
            let vals: Vec<C> = args.iter().map(ev).collect();
            undef(name, &vals)
        }
        Expr::Series(series) => eval_series(series, sym, undef),
        Expr::Call(f, args) => {
            let a = args.first().map(ev).unwrap_or(C::ZERO);
            call(*f, a, args.get(1).map(ev))
        }
    }
}

/// A sum or product with integer bounds is computed term by term (sympy evaluates it
/// when comparing numerically); otherwise it stands for an opaque function of its body
/// (at the bound variable's sample value) and its bounds.
fn eval_series(
    s: &super::expr::Series,
    sym: &dyn Fn(&str) -> C,
    undef: &dyn Fn(&str, &[C]) -> C,
) -> C {
    const MAX_TERMS: f64 = 100_000.0;
    let (lo, hi) = (eval(&s.lo, sym, undef), eval(&s.hi, sym, undef));
    let integral = |v: C| v.is_real() && v.re.is_finite() && v.re.fract() == 0.0;
    if integral(lo) && integral(hi) && hi.re - lo.re < MAX_TERMS {
        let mut acc = if s.product { C::ONE } else { C::ZERO };
        let mut k = lo.re;
        while k <= hi.re {
            let at_k = |name: &str| if name == s.var { C::real(k) } else { sym(name) };
            let term = eval(&s.body, &at_k, undef);
            acc = if s.product { acc * term } else { acc + term };
            k += 1.0;
        }
        return acc;
    }
    let body = eval(&s.body, sym, undef);
    let name = if s.product { "Product" } else { "Sum" };
    // an infinite bound is a legitimate argument: give it a finite stand-in
    let bound = |v: C| {
        if v.re.is_infinite() {
            C::real(v.re.signum() * 1234.5)
        } else {
            v
        }
    };
    undef(name, &[body, bound(lo), bound(hi)])
}

fn call(f: Func, a: C, b: Option<C>) -> C {
    let nan = C::real(f64::NAN);
    match f {
        Func::Sin => a.sin(),
        Func::Cos => a.cos(),
        Func::Tan => a.sin() / a.cos(),
        Func::Csc => C::ONE / a.sin(),
        Func::Sec => C::ONE / a.cos(),
        Func::Cot => a.cos() / a.sin(),
        Func::Asin => a.asin(),
        Func::Acos => a.acos(),
        Func::Atan => a.atan(),
        Func::Acsc => (C::ONE / a).asin(),
        Func::Asec => (C::ONE / a).acos(),
        Func::Acot => (C::ONE / a).atan(),
        Func::Sinh => a.sinh(),
        Func::Cosh => a.cosh(),
        Func::Tanh => a.sinh() / a.cosh(),
        Func::Asinh => (a + (a * a + C::ONE).sqrt()).ln(),
        Func::Acosh => (a + (a * a - C::ONE).sqrt()).ln(),
        Func::Atanh => C::real(0.5) * ((C::ONE + a) / (C::ONE - a)).ln(),
        Func::Exp => a.exp(),
        Func::Abs => C::real(a.abs()),
        Func::Conjugate => C {
            re: a.re,
            im: -a.im,
        },
        Func::Floor if a.is_real() => C::real(a.re.floor()),
        Func::Ceil if a.is_real() => C::real(a.re.ceil()),
        Func::Floor | Func::Ceil => nan,
        Func::Factorial if a.is_real() => C::real(gamma(a.re + 1.0)),
        Func::Factorial => nan,
        Func::Log => match b {
            Some(base) => a.ln() / base.ln(),
            None => a.ln(),
        },
        Func::Binomial => match b {
            Some(k) if k.is_real() && k.re.fract() == 0.0 && k.re >= 0.0 && k.re <= 200.0 => {
                let mut acc = C::ONE;
                for i in 0..k.re as i64 {
                    acc = acc * (a - C::real(i as f64)) / C::real((i + 1) as f64);
                }
                acc
            }
            Some(k) if a.is_real() && k.is_real() => {
                C::real(gamma(a.re + 1.0) / (gamma(k.re + 1.0) * gamma(a.re - k.re + 1.0)))
            }
            _ => nan,
        },
    }
}

/// Lanczos approximation of Γ(x) for real x (exact enough for factorials up to ~170).
fn gamma(x: f64) -> f64 {
    if x > 171.7 {
        return f64::INFINITY; // past f64 range, as sympy's float(N(...)) of 2004! is
    }
    if x.fract() == 0.0 && x > 0.0 && x < 171.0 {
        return (1..x as u64).fold(1.0, |acc, k| acc * k as f64);
    }
    if x < 0.5 {
        return std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma(1.0 - x));
    }
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::latex::parse_answer;

    fn eq(a: &str, b: &str) -> bool {
        match (parse_answer(a), parse_answer(b)) {
            (Some(x), Some(y)) => parsed_equal(&x, &y, 1e-4),
            _ => false,
        }
    }

    #[test]
    fn rationals_and_decimals() {
        assert!(eq("\\frac{1}{2}", "0.5"));
        assert!(eq("\\frac{2}{4}", "\\frac{1}{2}"));
        assert!(eq("\\frac{100}{3}", "33.333"));
        assert!(!eq("\\frac{1}{3}", "0.33"));
    }

    #[test]
    fn symbolic_forms() {
        assert!(eq("x+1", "1+x"));
        assert!(eq("\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}"));
        assert!(eq("(x+1)^2", "x^2+2x+1"));
        assert!(eq("2\\sqrt{2}", "\\sqrt{8}"));
        assert!(!eq("x+1", "x+2"));
        assert!(!eq("\\pi", "3.14159"));
    }

    #[test]
    fn sums_and_large_factorials() {
        assert!(eq("\\sum_{k=1}^{3} k^2", "14"));
        assert!(
            eq("\\sum_{k=0}^{30}2^{k-1}", "2^{30}-1"),
            "within 1e-4 relative"
        );
        assert!(eq(
            "\\sum_{n=0}^{\\infty}\\frac{(-1)^{n}x^{2n+1}}{2n+1}",
            "\\sum_{n=0}^{\\infty}\\frac{(-1)^{n}}{2n+1}x^{2n+1}"
        ));
        assert!(
            eq("\\frac{1}{2004!}", "0"),
            "underflows to 0.0 as in sympy's float()"
        );
        assert!(!eq("-3", "-\\infty"));
    }

    #[test]
    fn relations_compare_by_distance() {
        assert!(eq("y=2x+1", "2x+1=y"));
        assert!(eq("a>-7", "a > - 7"));
        assert!(
            eq("x>3", "x<3"),
            "the reference's |lhs-rhs| rule ignores the direction"
        );
    }
}
