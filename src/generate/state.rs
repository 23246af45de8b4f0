//! Inference state outside the module: one sequence's keys and values ([`SequenceState`]), and
//! the left-aligned state of a whole batch ([`BatchState`]) with the operations continuous
//! batching needs: drop finished rows, stack newly admitted rows, trim dead columns.
//!
//! Every row's keys sit right-aligned in a shared `[b, kv_heads, s, head_dim]` tensor per layer;
//! the columns a row does not use (left padding, or the gap between a reused prefix and the
//! tokens fed after it) are marked invalid in `valid` and masked out of attention. Positions are
//! tracked per row, so a row's outputs do not depend on its padding.

use burn::prelude::*;

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
            .map(|kv| LayerKv {
                k: kv.k.clone().narrow(2, 0, len),
                v: kv.v.clone().narrow(2, 0, len),
            })
            .collect();
        Self { layers, len }
    }
}

/// The KV state of the rows being decoded together.
#[derive(Debug, Clone)]
pub struct BatchState<B: Backend> {
    pub cache: KvCache<B>,
    /// Per row, which of the `s` cached columns it may attend to. Kept on the host: it is
    /// tiny, and rows are selected and padded far more often than it is uploaded.
    pub valid: Vec<Vec<bool>>,
    /// Per row, the first valid column (everything left of it is padding).
    pub first_valid: Vec<usize>,
}

impl<B: Backend> BatchState<B> {
    pub fn rows(&self) -> usize {
        self.first_valid.len()
    }

    pub fn columns(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// Keeps the rows `keep` (in that order).
    pub fn select_rows(self, keep: &[usize]) -> Self {
        let device = match self.cache.layers.iter().flatten().next() {
            Some(kv) => kv.k.device(),
            None => return self,
        };
        let idx: Vec<i32> = keep.iter().map(|&r| r as i32).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [keep.len()]), &device);
        let layers = self
            .cache
            .layers
            .into_iter()
            .map(|slot| {
                slot.map(|kv| LayerKv {
                    k: kv.k.select(0, idx.clone()),
                    v: kv.v.select(0, idx.clone()),
                })
            })
            .collect();
        let first_valid = keep.iter().map(|&r| self.first_valid[r]).collect();
        Self {
            cache: KvCache { layers },
            valid: keep.iter().map(|&r| self.valid[r].clone()).collect(),
            first_valid,
        }
        .trimmed()
    }

    /// Drops the leading columns that no row uses.
    pub fn trimmed(self) -> Self {
        let dead = self.first_valid.iter().copied().min().unwrap_or(0);
        let s = self.columns();
        if dead == 0 || dead >= s {
            return self;
        }
        let layers = self
            .cache
            .layers
            .into_iter()
            .map(|slot| {
                slot.map(|kv| LayerKv {
                    k: kv.k.narrow(2, dead, s - dead),
                    v: kv.v.narrow(2, dead, s - dead),
                })
            })
            .collect();
        Self {
            cache: KvCache { layers },
            valid: self
                .valid
                .into_iter()
                .map(|row| row[dead..].to_vec())
                .collect(),
            first_valid: self.first_valid.iter().map(|f| f - dead).collect(),
        }
    }

    /// Adds `extra` invalid columns on the left of every row.
    pub fn left_pad(self, extra: usize) -> Self {
        if extra == 0 {
            return self;
        }
        let layers = self
            .cache
            .layers
            .into_iter()
            .map(|slot| {
                slot.map(|kv| LayerKv {
                    k: pad_left(kv.k, extra),
                    v: pad_left(kv.v, extra),
                })
            })
            .collect();
        Self {
            cache: KvCache { layers },
            valid: self
                .valid
                .into_iter()
                .map(|row| [vec![false; extra], row].concat())
                .collect(),
            first_valid: self.first_valid.iter().map(|f| f + extra).collect(),
        }
    }

    /// Stacks the rows of `other` below those of `self`, aligning their columns on the right.
    pub fn stack(self, other: Self) -> Self {
        let (a, b) = (self.columns(), other.columns());
        let (top, bottom) = (
            self.left_pad(b.saturating_sub(a)),
            other.left_pad(a.saturating_sub(b)),
        );
        let layers = top
            .cache
            .layers
            .into_iter()
            .zip(bottom.cache.layers)
            .map(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => Some(LayerKv {
                    k: Tensor::cat(vec![x.k, y.k], 0),
                    v: Tensor::cat(vec![x.v, y.v], 0),
                }),
                _ => None,
            })
            .collect();
        let mut first_valid = top.first_valid;
        first_valid.extend(bottom.first_valid);
        Self {
            cache: KvCache { layers },
            valid: [top.valid, bottom.valid].concat(),
            first_valid,
        }
    }

    /// Row `row` without its padding, as a reusable [`SequenceState`].
    pub fn sequence(&self, row: usize) -> SequenceState<B> {
        let s = self.columns();
        let start = self.first_valid[row];
        let layers = self
            .cache
            .layers
            .iter()
            .flatten()
            .map(|kv| LayerKv {
                k: kv.k.clone().narrow(0, row, 1).narrow(2, start, s - start),
                v: kv.v.clone().narrow(0, row, 1).narrow(2, start, s - start),
            })
            .collect();
        SequenceState {
            layers,
            len: s - start,
        }
    }
}

/// `[b, h, s, d]` → `[b, h, extra + s, d]` with zeros on the left.
fn pad_left<B: Backend>(x: Tensor<B, 4>, extra: usize) -> Tensor<B, 4> {
    if extra == 0 {
        return x;
    }
    let [b, h, _, d] = x.dims();
    let zeros = Tensor::<B, 4>::zeros([b, h, extra, d], (&x.device(), x.dtype()));
    Tensor::cat(vec![zeros, x], 2)
}

/// Stacks sequence states left-padded to the longest: the cache a group of requests starts
/// from. `None` when no request has a prefix.
///
/// Returns the cache and, per row, its validity mask over the prefix columns.
pub fn stack_prefixes<B: Backend>(
    prefixes: &[Option<&SequenceState<B>>],
    num_layers: usize,
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
    // A template for the zero rows of requests without a prefix.
    let Some(template) = prefixes.iter().flatten().next() else {
        return (None, masks);
    };
    let layers = (0..num_layers)
        .map(|layer| {
            let (mut ks, mut vs) = (Vec::new(), Vec::new());
            for p in prefixes {
                match p.filter(|p| p.len > 0).and_then(|p| p.layers.get(layer)) {
                    Some(kv) => {
                        let [_, _, len, _] = kv.k.dims();
                        ks.push(pad_left(kv.k.clone(), width - len));
                        vs.push(pad_left(kv.v.clone(), width - len));
                    }
                    None => {
                        let t = &template.layers[layer].k;
                        let [_, h, _, d] = t.dims();
                        let z = Tensor::<B, 4>::zeros([1, h, width, d], (&t.device(), t.dtype()));
                        ks.push(z.clone());
                        vs.push(z);
                    }
                }
            }
            Some(LayerKv {
                k: Tensor::cat(ks, 0),
                v: Tensor::cat(vs, 0),
            })
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
