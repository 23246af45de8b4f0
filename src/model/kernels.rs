//! Fast paths on the CPU backend for what burn's generic ops do slowly on flex. Each one falls
//! back to the generic op on any other backend (CUDA, autodiff) or input it does not cover.
//!
//! - [`assign_block`]: burn's `slice_assign` is functional, and on flex it copies the whole
//!   destination, so appending one column to a KV cache cost a copy of the cache at every
//!   decoding step, in every layer. This writes only the block when the destination is a flex
//!   tensor that nothing else holds.
//! - [`silu`]: flex computes `x·σ(x)` one element at a time through glibc's `expf` (a function
//!   call per element: 9% of a batch-64 decoding run and 15% of a prefill in `perf`). This computes it in one vectorised pass with
//!   its own `exp` (within 2 ulp of the correctly rounded value).

/// The CPU kernels this build computes with, as every stage record names them. By default the
/// same on every x86-64 CPU with AVX2 and FMA, so the same bytes; the `avx512` build feature
/// lets burn-flex and gemm choose AVX-512 where the CPU has it (faster there, and the bytes then
/// depend on the CPU).
pub const KERNELS: &str = match cfg!(feature = "avx512") {
    false => "avx2",
    true => "avx512-when-present",
};

use std::any::Any;
use std::ops::Range;

use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_flex::FlexTensor;
use half::{bf16, f16};

/// `x·σ(x)` (SwiGLU's activation).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let mut primitive = match x.into_primitive() {
        TensorPrimitive::Float(p) => p,
        other => return burn::tensor::activation::silu(Tensor::from_primitive(other)),
    };
    let done = (&mut primitive as &mut dyn Any)
        .downcast_mut::<FlexTensor>()
        .is_some_and(silu_flex);
    let x = Tensor::from_primitive(TensorPrimitive::Float(primitive));
    match done {
        true => x,
        false => burn::tensor::activation::silu(x),
    }
}

/// The f32 flex case: replaces `x` by a new contiguous tensor; false when it does not apply.
fn silu_flex(x: &mut FlexTensor) -> bool {
    if x.dtype() != DType::F32 {
        return false;
    }
    let contiguous = x.to_contiguous();
    let n = contiguous.layout().num_elements();
    let Some(values) = contiguous.storage::<f32>().get(..n) else {
        return false;
    };
    let mut values = values.to_vec();
    silu_slice(&mut values);
    let shape = contiguous.layout().shape().clone();
    *x = FlexTensor::from_data(TensorData::new(values, shape));
    true
}

/// `x ← x / (1 + e^-x)` over a slice, with the widest vector unit the CPU has.
fn silu_slice(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has just been found to support AVX-512F.
            unsafe { silu_avx512(xs) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has just been found to support AVX2.
            unsafe { silu_avx2(xs) };
            return;
        }
    }
    silu_loop(xs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_avx512(xs: &mut [f32]) {
    silu_loop(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn silu_avx2(xs: &mut [f32]) {
    silu_loop(xs)
}

/// Branch-free, so the compiler vectorises it; the same operations in the same order whatever
/// the vector width, so every CPU gets the same bits.
#[inline(always)]
fn silu_loop(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x /= 1.0 + exp(-*x);
    }
}

/// `e^x` for f32: `x = n ln2 + r` with `|r| <= ln2 / 2`, `e^r` by its Taylor polynomial of
/// degree 7 (truncation error below 1.1e-8 relative), `2^n` put in the exponent bits. The
/// input is clamped to [-87.3, 88.3], where `2^n` and the result stay normal floats.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for the n that occur
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let k = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    p * f32::from_bits(((k + 127) as u32) << 23)
}

/// `dst[rows, :, cols, :] = src` for `dst: [n, h, c, d]` and `src: [rows.len(), h, cols.len(), d]`.
pub fn assign_block<B: Backend>(
    dst: Tensor<B, 4>,
    rows: Range<usize>,
    cols: Range<usize>,
    src: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [_, h, _, d] = dst.dims();
    let at = [rows.clone(), 0..h, cols.clone(), 0..d];
    let mut dst_p = match dst.into_primitive() {
        TensorPrimitive::Float(p) => p,
        other => return Tensor::from_primitive(other).slice_assign(at, src),
    };
    let src_p = match src.into_primitive() {
        TensorPrimitive::Float(p) => p,
        other => {
            let dst = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(dst_p));
            return dst.slice_assign(at, Tensor::from_primitive(other));
        }
    };
    let written = match (
        (&mut dst_p as &mut dyn Any).downcast_mut::<FlexTensor>(),
        (&src_p as &dyn Any).downcast_ref::<FlexTensor>(),
    ) {
        (Some(dst), Some(src)) => write_flex(dst, src, rows, cols),
        _ => false,
    };
    let dst = Tensor::from_primitive(TensorPrimitive::Float(dst_p));
    match written {
        true => dst,
        false => dst.slice_assign(at, Tensor::from_primitive(TensorPrimitive::Float(src_p))),
    }
}

/// The in-place write on flex; false (nothing written) when it does not apply.
fn write_flex(
    dst: &mut FlexTensor,
    src: &FlexTensor,
    rows: Range<usize>,
    cols: Range<usize>,
) -> bool {
    let owned_whole = dst.is_unique()
        && dst.is_contiguous()
        && dst.layout().start_offset() == 0
        && dst.layout().num_elements() * dst.dtype().size() == dst.bytes().len();
    if !owned_whole || dst.dtype() != src.dtype() {
        return false;
    }
    let shape = dst.layout().shape();
    let [n, h, c, d] = [shape[0], shape[1], shape[2], shape[3]];
    let src_shape = src.layout().shape();
    let (r, w) = (rows.len(), cols.len());
    if rows.end > n || cols.end > c || src_shape.to_vec() != vec![r, h, w, d] {
        return false;
    }
    let strides = src.layout().strides();
    if strides[3] != 1 || strides.iter().any(|&s| s < 0) {
        return false;
    }
    let plan = BlockCopy {
        heads: h,
        capacity: c,
        head_dim: d,
        rows,
        cols,
        src_offset: src.layout().start_offset(),
        src_strides: [
            strides[0] as usize,
            strides[1] as usize,
            strides[2] as usize,
        ],
    };
    match dst.dtype() {
        DType::F32 => plan.run(dst.storage_mut::<f32>(), src.storage::<f32>()),
        DType::BF16 => plan.run(dst.storage_mut::<bf16>(), src.storage::<bf16>()),
        DType::F16 => plan.run(dst.storage_mut::<f16>(), src.storage::<f16>()),
        _ => return false,
    }
    true
}

/// Where each contiguous run of a block comes from and goes to. The source may be any view
/// whose last axis is contiguous (a narrowed cache, keys with their heads swapped forward).
struct BlockCopy {
    heads: usize,
    capacity: usize,
    head_dim: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    src_offset: usize,
    /// Element strides of the source's first three axes.
    src_strides: [usize; 3],
}

impl BlockCopy {
    fn run<E: Copy>(&self, dst: &mut [E], src: &[E]) {
        let d = self.head_dim;
        let [s_row, s_head, s_col] = self.src_strides;
        let width = self.cols.len();
        for (i, row) in self.rows.clone().enumerate() {
            for head in 0..self.heads {
                let to = ((row * self.heads + head) * self.capacity + self.cols.start) * d;
                let from = self.src_offset + i * s_row + head * s_head;
                match s_col == d {
                    // the whole run of columns is contiguous
                    true => dst[to..to + width * d].copy_from_slice(&src[from..from + width * d]),
                    false => {
                        for col in 0..width {
                            let (to, from) = (to + col * d, from + col * s_col);
                            dst[to..to + d].copy_from_slice(&src[from..from + d]);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn_flex::Flex;

    #[test]
    fn exp_is_within_two_ulp_of_the_correctly_rounded_value() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = (x as f64).exp();
            let ulp = (exact as f32).to_bits();
            let got = exp(x).to_bits();
            worst = worst.max((got as f64 - ulp as f64).abs());
            x += 0.001_7;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-200.0) > 0.0 && exp(-200.0) < 1e-37);
        assert!(exp(200.0).is_finite());
    }

    #[test]
    fn silu_matches_burns_on_every_path() {
        let values: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.173).collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(values, [10, 100]), &Default::default());
        let expected: Vec<f32> = burn::tensor::activation::silu(x.clone())
            .into_data()
            .to_vec()
            .unwrap_or_default();
        // contiguous, and a transposed view
        for (got, want) in [
            (silu(x.clone()), expected.clone()),
            (silu(x.clone().transpose()).transpose(), expected.clone()),
        ] {
            let got: Vec<f32> = got.into_data().to_vec().unwrap_or_default();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 4.0 * f32::EPSILON * w.abs().max(1e-30),
                    "{g} vs {w}"
                );
            }
        }
        // the portable loop and the vectorised ones give the same bits
        let mut a: Vec<f32> = (0..97).map(|i| i as f32 * 0.31 - 15.0).collect();
        let mut b = a.clone();
        let mut c = a.clone();
        silu_loop(&mut a);
        silu_slice(&mut b);
        assert_eq!(a, b);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2.
            unsafe { silu_avx2(&mut c) };
            assert_eq!(a, c);
        }
    }

    fn ramp(shape: [usize; 4], start: f32) -> Tensor<B, 4> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| start + i as f32).collect();
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    #[test]
    fn writes_the_block_like_slice_assign() {
        let src = ramp([2, 3, 2, 4], 1000.0);
        let expected = ramp([4, 3, 5, 4], 0.0).slice_assign([1..3, 0..3, 2..4, 0..4], src.clone());
        let got = assign_block(ramp([4, 3, 5, 4], 0.0), 1..3, 2..4, src);
        assert_eq!(got.into_data(), expected.into_data());
    }

    #[test]
    fn a_shared_buffer_is_left_untouched() {
        let dst = ramp([2, 1, 3, 2], 0.0);
        let other = dst.clone();
        let got = assign_block(dst, 0..1, 1..2, ramp([1, 1, 1, 2], 50.0));
        assert_eq!(other.into_data(), ramp([2, 1, 3, 2], 0.0).into_data());
        assert_eq!(
            got.slice([0..1, 0..1, 1..2, 0..2]).into_data(),
            ramp([1, 1, 1, 2], 50.0).into_data()
        );
    }

    #[test]
    fn strided_sources_are_read_in_logical_order() {
        let transposed = ramp([1, 3, 2, 2], 7.0).swap_dims(1, 2); // [1, 2, 3, 2], strided
        let expected =
            ramp([1, 2, 4, 2], 0.0).slice_assign([0..1, 0..2, 1..4, 0..2], transposed.clone());
        let got = assign_block(ramp([1, 2, 4, 2], 0.0), 0..1, 1..4, transposed);
        assert_eq!(got.into_data(), expected.into_data());
    }
}
