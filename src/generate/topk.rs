//! The k largest entries of each row, on the device.
//!
//! burn 0.21's `topk_with_indices` sorts the whole row, and on the CUDA backend a sort falls
//! back to reading the tensor to the host (a 152k-entry vocabulary per row per step). Here
//! the top k come from k arg-max reductions, each picked entry then masked to -inf: no sort,
//! and only the `[rows, k]` result is read back. For the few alternatives the rollouts keep
//! (k - 1 of them) and a sampling `top_k` of tens, that is k passes over the row.

use burn::prelude::*;

/// The `k` largest entries of each row of `x` (`[rows, n]`) and their column ids
/// (`[rows, k]` each), largest first; of equal entries the lower id comes first, as
/// `topk_with_indices` orders them on the CPU.
pub fn top_k<B: Backend>(x: Tensor<B, 2>, k: usize) -> (Tensor<B, 2>, Tensor<B, 2, Int>) {
    let [rows, n] = x.dims();
    let k = k.min(n);
    let device = x.device();
    let columns = Tensor::<B, 1, Int>::arange(0..n as i64, &device)
        .reshape([1, n])
        .expand([rows, n]); // [rows, n]
    let (mut values, mut ids) = (Vec::with_capacity(k), Vec::with_capacity(k));
    let mut rest = x;
    for j in 0..k {
        let (value, id) = rest.clone().max_dim_with_indices(1); // [rows, 1]
        if j + 1 < k {
            let picked = columns.clone().equal(id.clone().expand([rows, n]));
            rest = rest.mask_fill(picked, f32::NEG_INFINITY);
        }
        values.push(value);
        ids.push(id);
    }
    match k {
        0 => (
            Tensor::zeros([rows, 0], &device),
            Tensor::zeros([rows, 0], &device),
        ),
        _ => (Tensor::cat(values, 1), Tensor::cat(ids, 1)),
    }
}

/// Whether the top k are taken on the device ([`top_k`]) rather than by burn's sort: yes on
/// every backend but the CPU one, where the sort is as cheap and stays the reference (the
/// tests compare the two there).
pub fn on_device<B: Backend>() -> bool {
    !std::any::type_name::<B>().contains("burn_flex")
}

/// The top `k` of each row, by [`top_k`] when `device` says so, else by burn's sort.
pub fn select<B: Backend>(
    x: Tensor<B, 2>,
    k: usize,
    device: bool,
) -> (Tensor<B, 2>, Tensor<B, 2, Int>) {
    match device {
        true => top_k(x, k),
        false => x.topk_with_indices(k, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// The same values as burn's sorting `topk_with_indices` and the same ids, except that
    /// equal entries come lowest id first (burn's CPU sort leaves their order open).
    #[test]
    fn matches_the_sorting_top_k_and_orders_ties_by_id() {
        let device = Default::default();
        let mut rng = crate::rng::Rng::new(3);
        let (rows, n) = (5, 300);
        let mut values: Vec<f32> = (0..rows * n)
            .map(|_| (rng.next_u64() % 100_000) as f32 / 700.0 - 70.0)
            .collect();
        // a tie at the top of row 0, and -inf entries in row 1
        let top = values[..n].iter().copied().fold(f32::MIN, f32::max);
        let first = values[..n].iter().position(|&x| x == top).unwrap();
        values[17] = top;
        values[250] = top;
        values[n..n + 5].fill(f32::NEG_INFINITY);
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(values.clone(), [rows, n]), &device);
        let floats = |t: Tensor<Flex, 2>| t.into_data().iter::<f32>().collect::<Vec<_>>();
        let ints = |t: Tensor<Flex, 2, Int>| t.into_data().iter::<i64>().collect::<Vec<_>>();
        for k in [1, 2, 5, 40] {
            let (v, i) = top_k(x.clone(), k);
            let (want_v, want_i) = x.clone().topk_with_indices(k, 1);
            let (v, i, want_i) = (floats(v), ints(i), ints(want_i));
            assert_eq!(v, floats(want_v), "k {k}");
            for r in 0..rows {
                let row = &values[r * n..(r + 1) * n];
                for j in 0..k {
                    let id = i[r * k + j];
                    assert_eq!(
                        row[id as usize],
                        v[r * k + j],
                        "k {k} row {r}: the id's value"
                    );
                    let tied = row.iter().filter(|&&x| x == v[r * k + j]).count() > 1;
                    if !tied {
                        assert_eq!(id, want_i[r * k + j], "k {k} row {r} place {j}");
                    } else if j > 0 && v[r * k + j - 1] == v[r * k + j] {
                        assert!(i[r * k + j - 1] < id, "ties lowest id first");
                    }
                }
            }
        }
        // Row 0's largest value is now at its original place and at 17 and 250.
        let mut want = vec![first as i64, 17, 250];
        want.sort();
        let (_, i) = top_k(x, 3);
        assert_eq!(
            &ints(i)[..3],
            want.as_slice(),
            "the tie at the top of row 0"
        );
    }
}
