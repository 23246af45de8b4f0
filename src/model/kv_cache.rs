//! The decoder's inference state, kept outside the module (burn's idiom, and what lets the
//! same [`CausalLm`](super::CausalLm) train without a cache and generate with one): per layer,
//! the keys and values of the tokens seen so far, in buffers with room to append in place.

use burn::prelude::*;

use super::kernels::assign_block;

/// Columns of room a [`LayerKv`] adds when it grows (at least; a quarter of its length if more).
const KV_ROOM: usize = 64;

/// Keys and values of one layer for the tokens seen so far.
///
/// The buffers may be wider than the cached tokens: columns `len..` are room that
/// [`LayerKv::append`] writes in place, so a decoding step copies one column, not the whole
/// cache (flex writes in place when the buffer is not shared, and the attention only borrows
/// narrowed views for the length of a forward pass).
#[derive(Debug, Clone)]
pub struct LayerKv<B: Backend> {
    /// `[b, kv_heads, capacity, head_dim]`, after RoPE.
    k: Tensor<B, 4>,
    /// `[b, kv_heads, capacity, head_dim]`.
    v: Tensor<B, 4>,
    len: usize,
}

impl<B: Backend> LayerKv<B> {
    /// A cache holding exactly `k` and `v` (`[b, kv_heads, s, head_dim]`), no room.
    pub fn new(k: Tensor<B, 4>, v: Tensor<B, 4>) -> Self {
        let [_, _, len, _] = k.dims();
        Self { k, v, len }
    }

    /// A cache whose first `len` columns of `k` and `v` are filled and the rest is room.
    pub fn with_room(k: Tensor<B, 4>, v: Tensor<B, 4>, len: usize) -> Self {
        Self { k, v, len }
    }

    /// Cached tokens (columns).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Columns the buffers hold, filled or not.
    pub fn capacity(&self) -> usize {
        let [_, _, cap, _] = self.k.dims();
        cap
    }

    /// `[b, kv_heads, len, head_dim]`: a view, no copy.
    pub fn keys(&self) -> Tensor<B, 4> {
        self.k.clone().narrow(2, 0, self.len)
    }

    /// `[b, kv_heads, len, head_dim]`: a view, no copy.
    pub fn values(&self) -> Tensor<B, 4> {
        self.v.clone().narrow(2, 0, self.len)
    }

    /// The buffers themselves (with their room) and the filled length, for reshaping a batch.
    pub fn into_parts(self) -> (Tensor<B, 4>, Tensor<B, 4>, usize) {
        (self.k, self.v, self.len)
    }

    /// Appends `t` new columns (`[b, kv_heads, t, head_dim]`): written in place while there
    /// is room, else into new buffers with room to spare.
    pub fn append(self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Self {
        let [b, h, t, d] = k.dims();
        let (start, len) = (self.len, self.len + t);
        if len <= self.capacity() {
            return Self {
                k: assign_block(self.k, 0..b, start..len, k),
                v: assign_block(self.v, 0..b, start..len, v),
                len,
            };
        }
        let capacity = len + (len / 4).max(KV_ROOM);
        let grow = |old: Tensor<B, 4>, new: Tensor<B, 4>| {
            let buffer = Tensor::<B, 4>::zeros([b, h, capacity, d], (&new.device(), new.dtype()));
            let buffer = assign_block(buffer, 0..b, 0..start, old.narrow(2, 0, start));
            assign_block(buffer, 0..b, start..len, new)
        };
        Self {
            k: grow(self.k, k),
            v: grow(self.v, v),
            len,
        }
    }
}

/// Inference state kept outside the module: one [`LayerKv`] per layer, `None` before the
/// first forward.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub layers: Vec<Option<LayerKv<B>>>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
        }
    }

    /// Cached sequence length (columns), 0 when empty.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some(kv)) => kv.len(),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each layer's cache transformed by `f` (layers not run yet stay empty).
    pub fn map_layers(self, mut f: impl FnMut(LayerKv<B>) -> LayerKv<B>) -> Self {
        Self {
            layers: self
                .layers
                .into_iter()
                .map(|slot| slot.map(&mut f))
                .collect(),
        }
    }
}
