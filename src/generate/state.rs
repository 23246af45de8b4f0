//! Inference state outside the module: one sequence's keys and values ([`SequenceState`]), and
//! the state of a whole batch ([`BatchState`]) with the operations continuous batching needs:
//! retire a finished row, admit new rows into free slots, drop rows, trim dead columns.
//!
//! Every row's keys sit in one `[b, kv_heads, s, head_dim]` tensor per layer, and every row
//! writes its next token into the same column. Which columns a row may attend to is kept per
//! row in `valid`: a row admitted into a finished row's slot is written right-aligned over
//! it, and the old occupant's columns stay there, masked out. Attention does not depend on
//! the order of columns (positions are rotated into the keys), so a row's outputs do not depend
//! on what else its slot or the batch holds.

use burn::prelude::*;

use crate::model::kernels::assign_block;
use crate::model::{KvCache, LayerKv};

/// Keys and values of one sequence (no padding): what a later request can start from.
#[derive(Debug, Clone)]
pub struct SequenceState<B: Backend> {
    /// Per layer, `[1, kv_heads, len, head_dim]`.
    pub layers: Vec<LayerKv<B>>,
    pub len: usize,
}

impl<B: Backend> SequenceState<B> {
    /// The state of the first `len` tokens: a slice, nothing is recomputed.
    pub fn prefix(&self, len: usize) -> Self {
        let len = len.min(self.len);
        let layers = self
            .layers
            .iter()
            .map(|kv| LayerKv::new(kv.keys().narrow(2, 0, len), kv.values().narrow(2, 0, len)))
            .collect();
        Self { layers, len }
    }
}

/// The KV state of the rows being decoded together.
#[derive(Debug, Clone)]
pub struct BatchState<B: Backend> {
    pub cache: KvCache<B>,
    /// Per row, which of the `s` cached columns it may attend to. Kept on the host: it is
    /// tiny, and rows change far more often than it is uploaded.
    pub valid: Vec<Vec<bool>>,
}

impl<B: Backend> BatchState<B> {
    pub fn rows(&self) -> usize {
        self.valid.len()
    }

    pub fn columns(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// The first column row `row` may attend to (`columns()` when none).
    pub fn first_valid(&self, row: usize) -> usize {
        let cols = &self.valid[row];
        cols.iter().position(|&v| v).unwrap_or(cols.len())
    }

    /// Keeps the rows `keep` (in that order), then trims the columns none of them uses.
    pub fn select_rows(self, keep: &[usize]) -> Self {
        let device = match self.cache.layers.iter().flatten().next() {
            Some(kv) => kv.keys().device(),
            None => return self,
        };
        let idx: Vec<i32> = keep.iter().map(|&r| r as i32).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [keep.len()]), &device);
        let cache = self.cache.map_layers(|kv| {
            let (k, v, len) = kv.into_parts();
            LayerKv::with_room(k.select(0, idx.clone()), v.select(0, idx.clone()), len)
        });
        Self {
            cache,
            valid: keep.iter().map(|&r| self.valid[r].clone()).collect(),
        }
        .trimmed(0)
    }

    /// Drops the leading columns that no row uses, if there are more than `at_least` of them
    /// (a view now; the next write into the cache copies it once).
    pub fn trimmed(self, at_least: usize) -> Self {
        let s = self.columns();
        let dead = (0..self.rows())
            .map(|r| self.first_valid(r))
            .min()
            .unwrap_or(0);
        if dead == 0 || dead <= at_least || dead >= s {
            return self;
        }
        let cache = self.cache.map_layers(|kv| {
            let (k, v, len) = kv.into_parts();
            let cap = kv_capacity(&k);
            LayerKv::with_room(
                k.narrow(2, dead, cap - dead),
                v.narrow(2, dead, cap - dead),
                len - dead,
            )
        });
        Self {
            cache,
            valid: self
                .valid
                .into_iter()
                .map(|row| row[dead..].to_vec())
                .collect(),
        }
    }

    /// A finished row: it keeps its slot, masked out entirely, until a new row takes it.
    pub fn retire(&mut self, row: usize) {
        if let Some(cols) = self.valid.get_mut(row) {
            cols.iter_mut().for_each(|v| *v = false);
        }
    }

    /// Stacks the rows of `other` below those of `self`, aligning their columns on the right.
    /// Both are copied once into new buffers with room for the steps to come.
    pub fn stack(self, other: Self) -> Self {
        let (a, b) = (self.columns(), other.columns());
        let width = a.max(b);
        let (pad_top, pad_bottom) = (width - a, width - b);
        let layers = self
            .cache
            .layers
            .into_iter()
            .zip(other.cache.layers)
            .map(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => {
                    let (xk, xv, yk) = (x.keys(), x.values(), y.keys());
                    let top = xk.dims()[0];
                    let rows = top + yk.dims()[0];
                    let k = place(
                        &xk,
                        rows,
                        [width, ROOM],
                        vec![(0, xk.clone(), pad_top), (top, yk, pad_bottom)],
                    );
                    let v = place(
                        &xk,
                        rows,
                        [width, ROOM],
                        vec![(0, xv, pad_top), (top, y.values(), pad_bottom)],
                    );
                    Some(LayerKv::with_room(k, v, width))
                }
                _ => None,
            })
            .collect();
        let pad_rows = |rows: Vec<Vec<bool>>, extra: usize| {
            rows.into_iter()
                .map(move |row| [vec![false; extra], row].concat())
                .collect::<Vec<_>>()
        };
        Self {
            cache: KvCache { layers },
            valid: [
                pad_rows(self.valid, pad_top),
                pad_rows(other.valid, pad_bottom),
            ]
            .concat(),
        }
    }

    /// Writes the rows of `new` into the slots `slots` (one per row of `new`, each a row of
    /// `self`), right-aligned: only those rows are copied. The batch widens on the left (a
    /// copy of everything) only when a new row is wider than it.
    pub fn admit(self, new: Self, slots: &[usize]) -> Self {
        let (cols, w) = (self.columns(), new.columns());
        let mut batch = match w > cols {
            true => self.left_pad(w - cols),
            false => self,
        };
        let cols = batch.columns();
        let offset = cols - w;
        batch.cache.layers = batch
            .cache
            .layers
            .into_iter()
            .zip(new.cache.layers)
            .map(|(old, fresh)| match (old, fresh) {
                (Some(old), Some(fresh)) => {
                    let (mut k, mut v, len) = old.into_parts();
                    for (i, &slot) in slots.iter().enumerate() {
                        let from = |x: Tensor<B, 4>| x.narrow(0, i, 1);
                        let at = offset..offset + w;
                        k = assign_block(k, slot..slot + 1, at.clone(), from(fresh.keys()));
                        v = assign_block(v, slot..slot + 1, at, from(fresh.values()));
                    }
                    Some(LayerKv::with_room(k, v, len))
                }
                (old, _) => old,
            })
            .collect();
        for (i, &slot) in slots.iter().enumerate() {
            let mut row = vec![false; offset];
            row.extend_from_slice(&new.valid[i]);
            batch.valid[slot] = row;
        }
        batch
    }

    /// Adds `extra` invalid columns on the left of every row (a copy).
    fn left_pad(self, extra: usize) -> Self {
        let width = self.columns() + extra;
        let rows = self.rows();
        let cache = self.cache.map_layers(|kv| {
            let (k, v) = (kv.keys(), kv.values());
            let k2 = place(&k, rows, [width, ROOM], vec![(0, k.clone(), extra)]);
            let v2 = place(&k, rows, [width, ROOM], vec![(0, v, extra)]);
            LayerKv::with_room(k2, v2, width)
        });
        Self {
            cache,
            valid: self
                .valid
                .into_iter()
                .map(|row| [vec![false; extra], row].concat())
                .collect(),
        }
    }

    /// Row `row` without its padding, as a reusable [`SequenceState`]. The row's valid
    /// columns must be contiguous (as after `encode` or a prefill).
    pub fn sequence(&self, row: usize) -> SequenceState<B> {
        let s = self.columns();
        let start = self.first_valid(row);
        let layers = self
            .cache
            .layers
            .iter()
            .flatten()
            .map(|kv| {
                LayerKv::new(
                    kv.keys().narrow(0, row, 1).narrow(2, start, s - start),
                    kv.values().narrow(0, row, 1).narrow(2, start, s - start),
                )
            })
            .collect();
        SequenceState {
            layers,
            len: s - start,
        }
    }
}

/// Columns of room a batch built by [`BatchState::stack`] leaves for the steps that follow.
const ROOM: usize = 64;

fn kv_capacity<B: Backend>(x: &Tensor<B, 4>) -> usize {
    let [_, _, cap, _] = x.dims();
    cap
}

/// Places `parts` into one zeroed `[rows, h, width + room, d]` buffer shaped like `like`
/// (`[_, h, _, d]`): a part `(row, x, pad)` with `x: [b, h, s, d]` fills rows `row..row + b`,
/// columns `pad..pad + s`. One copy of each part; rows no part covers stay zero.
fn place<B: Backend>(
    like: &Tensor<B, 4>,
    rows: usize,
    [width, room]: [usize; 2],
    parts: Vec<(usize, Tensor<B, 4>, usize)>,
) -> Tensor<B, 4> {
    let [_, h, _, d] = like.dims();
    let mut out = Tensor::<B, 4>::zeros([rows, h, width + room, d], (&like.device(), like.dtype()));
    for (row, x, pad) in parts {
        let [b, _, s, _] = x.dims();
        out = assign_block(out, row..row + b, pad..pad + s, x);
    }
    out
}

/// Stacks sequence states left-padded to the longest: the cache a group of requests starts
/// from, with room for the `room` tokens they feed next. `None` when no request has a prefix.
///
/// Returns the cache and, per row, its validity mask over the prefix columns.
pub fn stack_prefixes<B: Backend>(
    prefixes: &[Option<&SequenceState<B>>],
    num_layers: usize,
    room: usize,
) -> (Option<KvCache<B>>, Vec<Vec<bool>>) {
    let width = prefixes.iter().flatten().map(|p| p.len).max().unwrap_or(0);
    let masks = prefixes
        .iter()
        .map(|p| {
            let len = p.map_or(0, |p| p.len);
            let mut m = vec![false; width - len];
            m.extend(std::iter::repeat_n(true, len));
            m
        })
        .collect();
    if width == 0 {
        return (None, masks);
    }
    // Any prefix gives the layout (heads, head size, device, dtype) of every layer.
    let Some(template) = prefixes.iter().flatten().next() else {
        return (None, masks);
    };
    let layers = (0..num_layers)
        .map(|layer| {
            let like = template.layers.get(layer)?.keys();
            let (mut ks, mut vs) = (Vec::new(), Vec::new());
            for (row, p) in prefixes.iter().enumerate() {
                // Rows without a prefix stay zero (and masked).
                if let Some(kv) = p.filter(|p| p.len > 0).and_then(|p| p.layers.get(layer)) {
                    ks.push((row, kv.keys(), width - kv.len()));
                    vs.push((row, kv.values(), width - kv.len()));
                }
            }
            let rows = prefixes.len();
            Some(LayerKv::with_room(
                place(&like, rows, [width, room], ks),
                place(&like, rows, [width, room], vs),
                width,
            ))
        })
        .collect();
    (Some(KvCache { layers }), masks)
}

/// `[b, s]` validity from host rows of equal length.
pub fn valid_tensor<B: Backend>(rows: &[Vec<bool>], device: &B::Device) -> Tensor<B, 2, Bool> {
    let s = rows.first().map_or(0, Vec::len);
    let flat: Vec<bool> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), s]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn_flex::Flex;

    /// A one-layer batch whose key at (row, column) is `[base + 10 * row + column; 2]`.
    fn batch(rows: usize, cols: usize, base: f32, valid: Vec<Vec<bool>>) -> BatchState<B> {
        let values: Vec<f32> = (0..rows)
            .flat_map(|r| (0..cols).flat_map(move |c| [base + (10 * r + c) as f32; 2]))
            .collect();
        let k = Tensor::<B, 4>::from_data(
            TensorData::new(values, [rows, 1, cols, 2]),
            &Default::default(),
        );
        BatchState {
            cache: KvCache {
                layers: vec![Some(LayerKv::new(k.clone(), k))],
            },
            valid,
        }
    }

    /// Per row, the first element of each column's key.
    fn keys(b: &BatchState<B>) -> Vec<Vec<f32>> {
        let Some(Some(kv)) = b.cache.layers.first() else {
            return Vec::new();
        };
        let [rows, _, cols, _] = kv.keys().dims();
        let flat: Vec<f32> = kv.keys().into_data().to_vec().unwrap_or_default();
        (0..rows)
            .map(|r| (0..cols).map(|c| flat[(r * cols + c) * 2]).collect())
            .collect()
    }

    #[test]
    fn a_new_row_takes_a_slot_right_aligned_over_the_old_one() {
        let mut old = batch(
            2,
            4,
            0.0,
            vec![vec![true; 4], vec![false, true, true, true]],
        );
        old.retire(1);
        let new = batch(1, 2, 100.0, vec![vec![false, true]]);
        let b = old.admit(new, &[1]);
        assert_eq!(b.columns(), 4);
        assert_eq!(keys(&b)[0], [0.0, 1.0, 2.0, 3.0]);
        // the old occupant's first two columns stay, masked out
        assert_eq!(keys(&b)[1], [10.0, 11.0, 100.0, 101.0]);
        assert_eq!(b.valid[1], [false, false, false, true]);
        assert_eq!(b.valid[0], [true; 4]);
        assert_eq!(b.first_valid(1), 3);
    }

    #[test]
    fn a_row_wider_than_the_batch_widens_it_on_the_left() {
        let mut old = batch(2, 2, 0.0, vec![vec![true; 2], vec![true; 2]]);
        old.retire(0);
        let new = batch(1, 3, 100.0, vec![vec![true; 3]]);
        let b = old.admit(new, &[0]);
        assert_eq!(b.columns(), 3);
        assert_eq!(keys(&b)[0], [100.0, 101.0, 102.0]);
        assert_eq!(keys(&b)[1], [0.0, 10.0, 11.0]);
        assert_eq!(b.valid, [vec![true; 3], vec![false, true, true]]);
    }

    #[test]
    fn trimming_drops_only_columns_no_row_uses() {
        let b = batch(
            2,
            4,
            0.0,
            vec![
                vec![false, false, true, true],
                vec![false, true, true, true],
            ],
        );
        let b = b.trimmed(0);
        assert_eq!(b.columns(), 3);
        assert_eq!(keys(&b), [vec![1.0, 2.0, 3.0], vec![11.0, 12.0, 13.0]]);
        // below the threshold nothing is dropped
        assert_eq!(b.trimmed(1).columns(), 3);
    }

    #[test]
    fn appending_after_a_trim_or_an_admission_keeps_every_row() {
        let mut b = batch(2, 3, 0.0, vec![vec![false, true, true], vec![true; 3]]);
        b.retire(0);
        let b = b
            .admit(batch(1, 1, 100.0, vec![vec![true]]), &[0])
            .trimmed(0);
        let Some(Some(kv)) = b.cache.layers.into_iter().next() else {
            panic!("no layer");
        };
        let column = Tensor::<B, 4>::from_data(
            TensorData::new(vec![7.0f32, 7.0, 8.0, 8.0], [2, 1, 1, 2]),
            &Default::default(),
        );
        let kv = kv.append(column.clone(), column);
        let flat: Vec<f32> = kv.keys().into_data().to_vec().unwrap_or_default();
        let firsts: Vec<f32> = flat.iter().step_by(2).copied().collect();
        assert_eq!(firsts, [0.0, 1.0, 100.0, 7.0, 10.0, 11.0, 12.0, 8.0]);
    }
}
