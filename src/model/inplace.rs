//! Writing a block of a tensor in place where the backend allows it.
//!
//! burn's `slice_assign` is functional: on flex it copies the whole destination, so appending
//! one column to a KV cache costed a copy of the cache at every decoding step, in every layer.
//! [`assign_block`] writes only the block when the destination is a flex tensor that nothing
//! else holds; everywhere else (other backends, shared or strided buffers) it is `slice_assign`.

use std::any::Any;
use std::ops::Range;

use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_flex::FlexTensor;
use half::{bf16, f16};

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
