//! Complex numbers for evaluating answers at sample points.
//!
//! sympy's symbols are complex, and answers such as `\sqrt{-3}` or `\log(-1)` only make
//! sense as complex values; evaluating in `f64` would turn them into `NaN` and call unequal
//! things equal or equal things unequal. Principal branches throughout, as sympy uses.

use std::ops::{Add, Div, Mul, Neg, Sub};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct C {
    pub re: f64,
    pub im: f64,
}

impl C {
    pub const ZERO: C = C { re: 0.0, im: 0.0 };
    pub const ONE: C = C { re: 1.0, im: 0.0 };
    pub const I: C = C { re: 0.0, im: 1.0 };

    pub fn real(re: f64) -> C {
        C { re, im: 0.0 }
    }

    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }

    pub fn is_finite(self) -> bool {
        self.re.is_finite() && self.im.is_finite()
    }

    pub fn is_real(self) -> bool {
        self.im == 0.0 || self.im.abs() <= 1e-12 * self.re.abs().max(1e-300)
    }

    pub fn exp(self) -> C {
        let m = self.re.exp();
        C {
            re: m * self.im.cos(),
            im: m * self.im.sin(),
        }
    }

    pub fn ln(self) -> C {
        C {
            re: self.abs().ln(),
            im: self.im.atan2(self.re),
        }
    }

    pub fn sqrt(self) -> C {
        self.powc(C::real(0.5))
    }

    pub fn powc(self, e: C) -> C {
        if e.im == 0.0 {
            if e.re.fract() == 0.0 && e.re.abs() <= 64.0 {
                return self.powi(e.re as i32);
            }
            if self.im == 0.0 && self.re >= 0.0 {
                return C::real(self.re.powf(e.re));
            }
        }
        if self == C::ZERO {
            return if e.re > 0.0 {
                C::ZERO
            } else {
                C::real(f64::NAN)
            };
        }
        (e * self.ln()).exp()
    }

    fn powi(self, n: i32) -> C {
        if self.im == 0.0 {
            return C::real(self.re.powi(n));
        }
        let mut acc = C::ONE;
        for _ in 0..n.unsigned_abs() {
            acc = acc * self;
        }
        if n < 0 { C::ONE / acc } else { acc }
    }

    pub fn sin(self) -> C {
        C {
            re: self.re.sin() * self.im.cosh(),
            im: self.re.cos() * self.im.sinh(),
        }
    }

    pub fn cos(self) -> C {
        C {
            re: self.re.cos() * self.im.cosh(),
            im: -self.re.sin() * self.im.sinh(),
        }
    }

    pub fn sinh(self) -> C {
        -(C::I * (C::I * self).sin())
    }

    pub fn cosh(self) -> C {
        (C::I * self).cos()
    }

    /// Inverse sine, principal branch: `-i ln(iz + sqrt(1 - z²))`.
    pub fn asin(self) -> C {
        if self.im == 0.0 && self.re.abs() <= 1.0 {
            return C::real(self.re.asin());
        }
        -(C::I * (C::I * self + (C::ONE - self * self).sqrt()).ln())
    }

    pub fn acos(self) -> C {
        if self.im == 0.0 && self.re.abs() <= 1.0 {
            return C::real(self.re.acos());
        }
        C::real(std::f64::consts::FRAC_PI_2) - self.asin()
    }

    /// Inverse tangent, principal branch: `(i/2) ln((i + z)/(i - z))`.
    pub fn atan(self) -> C {
        if self.im == 0.0 {
            return C::real(self.re.atan());
        }
        C { re: 0.0, im: 0.5 } * ((C::I + self) / (C::I - self)).ln()
    }
}

impl Add for C {
    type Output = C;
    fn add(self, o: C) -> C {
        C {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
}

impl Sub for C {
    type Output = C;
    fn sub(self, o: C) -> C {
        C {
            re: self.re - o.re,
            im: self.im - o.im,
        }
    }
}

impl Mul for C {
    type Output = C;
    fn mul(self, o: C) -> C {
        if self.im == 0.0 && o.im == 0.0 {
            return C::real(self.re * o.re);
        }
        C {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
}

impl Div for C {
    type Output = C;
    fn div(self, o: C) -> C {
        if self.im == 0.0 && o.im == 0.0 {
            return C::real(self.re / o.re);
        }
        let d = o.re * o.re + o.im * o.im;
        C {
            re: (self.re * o.re + self.im * o.im) / d,
            im: (self.im * o.re - self.re * o.im) / d,
        }
    }
}

impl Neg for C {
    type Output = C;
    fn neg(self) -> C {
        C {
            re: -self.re,
            im: -self.im,
        }
    }
}
