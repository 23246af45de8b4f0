//! Drafts that a greedy row verifies in one wide step (prompt-lookup decoding).
//!
//! A counterfactual branch mostly finds its way back to the wording of the response it
//! perturbs within a few tokens, so that response is a free draft of what the branch will say
//! next: the tokens that follow, in the original, the latest match of the branch's last few
//! tokens. The engine feeds the row's next token and its draft together, reads the arg-max at
//! every position, and keeps the draft's longest prefix that the model would have chosen one
//! token at a time — plus, as in any decoding step, the token chosen after it. What a row emits
//! is therefore exactly its greedy continuation; only the number of steps changes.
//!
//! A draft that is wrong costs its columns (computed, then masked out of the KV cache), so a
//! row proposes as many tokens as its drafts have lately been right for ([`Budget`]).

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::GenerateError;
use super::engine::{Completion, Engine, Row, emit};
use super::state::{BatchState, valid_tensor};
use crate::model::attention_bias;

/// A row's source of drafts: given the tokens generated so far (the newest last, not yet in
/// the KV cache), at most `max` tokens the row would say next. Empty: no draft this step.
pub type DraftFn<'a> = Box<dyn FnMut(&[u32], usize) -> Vec<u32> + 'a>;

/// Longest n-gram a lookup matches.
const NGRAM: usize = 3;

/// The tokens that follow, in `source`, a match of the last tokens of `context` (its longest
/// suffix of at most [`NGRAM`] tokens that occurs in `source`), at most `max` of them. Among
/// the matches of that length, the one ending nearest to `at` (where the context's last
/// token would sit in `source` if nothing had shifted) is taken.
pub fn lookup<'s>(source: &'s [u32], context: &[u32], at: usize, max: usize) -> &'s [u32] {
    if max == 0 {
        return &[];
    }
    for n in (1..=NGRAM.min(context.len())).rev() {
        let tail = &context[context.len() - n..];
        // `end`: the index in `source` of the match's last token.
        let best = (n - 1..source.len().saturating_sub(1))
            .filter(|&end| source[end + 1 - n..=end] == *tail)
            .min_by_key(|&end| end.abs_diff(at));
        if let Some(end) = best {
            let rest = &source[end + 1..];
            return &rest[..rest.len().min(max)];
        }
    }
    &[]
}

/// How many of a drafted step's tokens a row keeps: `fed` is `[x, d_0, .., d_{L-1}]` (its next
/// token and its draft) and `chosen[i]` the arg-max after `fed[i]`. Draft token `d_i` stands
/// when every earlier one did and `d_i == chosen[i]`. Returns the number of draft tokens that
/// stand, `a`: the row's cache keeps `x, d_0, .., d_{a-1}`, and `chosen[a]` is its next token.
pub fn accepted(draft: &[u32], chosen: &[u32]) -> usize {
    draft.iter().zip(chosen).take_while(|(d, c)| d == c).count()
}

/// The batch's draft length. A wide step costs every row of the batch the same columns
/// whether they hold draft tokens or padding, so every drafting row proposes this many, and
/// the length follows the batch: after a drafted step it becomes the longest `j` such that
/// at least [`Width::SHARE`] of the step's live rows had `j` draft tokens stand (at least 1),
/// doubling, up to the engine's maximum, while that share stood at the whole length.
#[derive(Clone, Copy, Debug)]
pub struct Width {
    pub len: usize,
    pub max: usize,
}

impl Width {
    /// Share of the rows a draft column must serve to be worth its cost.
    pub const SHARE: f64 = 0.5;

    pub fn new(max: usize) -> Self {
        Self {
            len: max.min(2),
            max,
        }
    }

    /// `stood`: per live row of the step, how many of its draft tokens stood (0 without one).
    pub fn update(&mut self, stood: &[usize]) {
        let need = (Self::SHARE * stood.len() as f64).ceil() as usize;
        let served = |j: usize| stood.iter().filter(|&&a| a >= j).count() >= need.max(1);
        self.len = match (1..=self.len).rev().find(|&j| served(j)) {
            Some(j) if j == self.len => (self.len * 2).min(self.max),
            Some(j) => j,
            None => 1,
        };
    }
}

/// What drafting did in a run, for `bench annotate` and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DraftStats {
    /// Decoding steps (each one forward pass of the whole batch).
    pub steps: usize,
    /// Of them, steps that verified at least one draft.
    pub drafted_steps: usize,
    pub proposed: usize,
    pub accepted: usize,
}

impl std::ops::AddAssign for DraftStats {
    /// Engines' counts add up (the rollouts run several side by side).
    fn add_assign(&mut self, other: Self) {
        self.steps += other.steps;
        self.drafted_steps += other.drafted_steps;
        self.proposed += other.proposed;
        self.accepted += other.accepted;
    }
}

/// The wide step: in the engine's loop, after step 3 has chosen each row's token and its
/// proposal (`Row::proposed`), in place of the one-column step.
impl<B: Backend> Engine<'_, B> {
    /// A decoding step with drafts: every row is fed `[token, draft..]` (padded to the
    /// widest, the padding masked), the arg-max after each fed token is read back in one
    /// host synchronisation, and each row keeps the draft tokens that stand
    /// ([`accepted`]): they are emitted (a row may finish among them), the columns after
    /// them are masked out of its cache, and the logits after the last one are the row's
    /// next-token logits `[b, vocab]`, from which step 2 chooses as after a plain step.
    pub(super) fn step_drafted(
        &self,
        mut batch: BatchState<B>,
        tokens: &[u32],
        rows: &mut [Row<'_>],
        device: &B::Device,
        on_done: &mut impl FnMut(usize, Completion),
    ) -> Result<Drafted<B>, GenerateError> {
        let b = rows.len();
        let w = 1 + rows.iter().map(|r| r.proposed.len()).max().unwrap_or(0);
        let (mut ids, mut positions) = (Vec::with_capacity(b * w), Vec::with_capacity(b * w));
        let start = batch.columns();
        for ((&token, row), cols) in tokens.iter().zip(rows.iter()).zip(batch.valid.iter_mut()) {
            let fed = 1 + row.proposed.len();
            let own = std::iter::once(token).chain(row.proposed.iter().copied());
            ids.extend(own.map(|t| t as i32).chain(std::iter::repeat_n(0, w - fed)));
            positions.extend((0..w).map(|i| (row.next_pos + i.min(fed - 1)) as i32));
            cols.extend((0..w).map(|i| !row.done && i < fed));
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, w]), device);
        let positions = Tensor::<B, 2, Int>::from_data(TensorData::new(positions, [b, w]), device);
        let bias = attention_bias(valid_tensor::<B>(&batch.valid, device), w); // [b, 1, w, s + w]
        let hidden = self
            .lm
            .forward_hidden(ids, positions, bias, Some(&mut batch.cache)); // [b, w, h]
        let logits = self.lm.logits(hidden); // [b, w, vocab]
        let [_, _, vocab] = logits.dims();
        let logits = logits.reshape([b * w, vocab]);
        // As step 2 chooses a greedy row's token: the arg-max of its log-probabilities.
        let logp = log_softmax(logits.clone(), 1);
        let (best_lp, best) = logp.max_dim_with_indices(1); // [b * w, 1]
        let tx = burn::tensor::Transaction::default()
            .register(best_lp)
            .register(best);
        let mut data = super::ReadBack::execute(tx)?;
        let (best_lp, best) = (data.f32s()?, data.i64s()?);
        let mut next = Vec::with_capacity(b);
        // Per live row, the draft tokens that stood (for the batch's next width).
        let mut took = Vec::with_capacity(b);
        let (mut proposed, mut stood) = (0, 0);
        for (slot, row) in rows.iter_mut().enumerate() {
            let at = slot * w;
            let draft = std::mem::take(&mut row.proposed);
            let chosen: Vec<u32> = best[at..at + w].iter().map(|&t| t as u32).collect();
            let a = match row.done {
                true => 0,
                false => accepted(&draft, &chosen),
            };
            if !row.done {
                took.push(a);
            }
            (proposed, stood) = (proposed + draft.len(), stood + a);
            for i in 0..a {
                if row.done {
                    break;
                }
                emit(row, slot, draft[i], best_lp[at + i], &mut batch, on_done);
            }
            // The cache keeps the row's token and the draft tokens that stood.
            if let Some(cols) = batch.valid.get_mut(slot) {
                for col in &mut cols[start + 1 + a..] {
                    *col = false;
                }
            }
            row.next_pos += 1 + a;
            next.push((at + a) as i32);
        }
        self.count(|s| {
            s.proposed += proposed;
            s.accepted += stood;
        });
        let next = Tensor::<B, 1, Int>::from_data(TensorData::new(next, [b]), device);
        Ok((batch, logits.select(0, next), took))
    }
}

/// A drafted step's batch, next-token logits, and per live row the draft tokens that stood.
type Drafted<B> = (BatchState<B>, Tensor<B, 2>, Vec<usize>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_continues_the_nearest_longest_match() {
        let source = [1, 2, 3, 4, 9, 2, 3, 5, 6];
        // "2 3" occurs twice; the 3-gram "7 2 3" nowhere: the 2-gram nearest to `at` wins.
        assert_eq!(lookup(&source, &[7, 2, 3], 2, 3), &[4, 9, 2]);
        assert_eq!(lookup(&source, &[7, 2, 3], 6, 3), &[5, 6]);
        // The longest match beats a nearer shorter one.
        assert_eq!(lookup(&source, &[9, 2, 3], 2, 2), &[5, 6]);
        // No match, nothing after the match, or no room: no draft.
        assert!(lookup(&source, &[8], 0, 4).is_empty());
        assert!(lookup(&source, &[6], 8, 4).is_empty());
        assert!(lookup(&source, &[1], 0, 0).is_empty());
    }

    #[test]
    fn a_draft_stands_up_to_its_first_wrong_token() {
        assert_eq!(accepted(&[4, 5, 6], &[4, 5, 6, 7]), 3);
        assert_eq!(accepted(&[4, 5, 6], &[4, 8, 6, 7]), 1);
        assert_eq!(accepted(&[4, 5, 6], &[3, 5, 6, 7]), 0);
        assert_eq!(accepted(&[], &[3]), 0);
    }

    #[test]
    fn the_draft_length_follows_what_half_the_rows_took() {
        let mut w = Width::new(8);
        assert_eq!(w.len, 2);
        // Half the rows took both tokens: try four.
        w.update(&[2, 2, 0, 1]);
        assert_eq!(w.len, 4);
        w.update(&[4, 4, 4, 3]);
        assert_eq!(w.len, 8);
        w.update(&[8, 8, 8, 8]);
        assert_eq!(w.len, 8);
        // Only a quarter of the rows took more than one.
        w.update(&[8, 1, 1, 0]);
        assert_eq!(w.len, 1);
        w.update(&[0, 0, 0, 1]);
        assert_eq!(w.len, 1);
        w.update(&[1, 1, 0, 0]);
        assert_eq!(w.len, 2);
    }
}
