//! The batched decoding loop with continuous batching.
//!
//! Requests wait in a queue; up to `max_batch` of them decode together. Each step reads the
//! whole batch's choices back in one host synchronisation (a burn `Transaction`), records them,
//! retires rows that hit EOS, their stop predicate or their length, and refills the freed rows
//! from the queue: a new row is written into a finished row's slot, so admitting copies only
//! the new rows (see `state.rs`). A request may start from the [`SequenceState`] of tokens
//! already run (a prefix of another sequence); then only its own `tokens` are computed.
//!
//! A greedy request may bring a draft source ([`super::draft`]): then a step feeds each such
//! row its next token and the tokens its source proposes after it, and keeps the longest
//! prefix of the proposal that one-token steps would have chosen (rows without a draft get
//! one column of the wide step, the rest masked). Every row still emits its greedy tokens.
//! That step is in [`super::draft`].

use std::collections::VecDeque;

use burn::prelude::*;

use super::GenerateError;
use super::choose::Pick;
use super::draft::{DraftFn, DraftStats, Width};
use super::sampling::{Decoding, SplitMix64};
use super::state::{BatchState, SequenceState, stack_prefixes, valid_tensor};
use crate::model::kernels::assign_block;
use crate::model::{CausalLm, KvCache, attention_bias};

/// A caller's test on the tokens generated so far (not including the request's `tokens`).
pub type StopPredicate<'a> = Box<dyn FnMut(&[u32]) -> bool + 'a>;

/// One sequence to continue.
pub struct Request<'a, B: Backend> {
    /// Keys and values of tokens already run, which this request continues without
    /// recomputing them (e.g. `SequenceState::prefix(t)` of an encoded `[Q, y]`).
    pub prefix: Option<SequenceState<B>>,
    /// Tokens fed after the prefix (a prompt, or forced tokens). Must not be empty.
    pub tokens: Vec<u32>,
    pub max_new_tokens: usize,
    pub decoding: Decoding,
    /// Generation ends after emitting one of these (it is kept in the output). Empty: never.
    pub eos_token_ids: Vec<u32>,
    /// Generation ends once this returns true (e.g. a stop string, or a settled answer).
    pub stop: Option<StopPredicate<'a>>,
    /// Greedy requests only: what the row will probably say next, verified in one wide step
    /// (used when [`EngineOptions::max_draft`] > 0 and no alternatives are asked for).
    pub draft: Option<DraftFn<'a>>,
}

impl<'a, B: Backend> Request<'a, B> {
    pub fn greedy(tokens: Vec<u32>, max_new_tokens: usize) -> Self {
        Self {
            prefix: None,
            tokens,
            max_new_tokens,
            decoding: Decoding::Greedy,
            eos_token_ids: Vec::new(),
            stop: None,
            draft: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    Stop,
    Length,
}

/// What one request generated.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub tokens: Vec<u32>,
    /// Model log-probability of each emitted token (before temperature or truncation).
    pub logprobs: Vec<f32>,
    /// Per step, the `top_alternatives` most likely tokens with their probabilities.
    pub alternatives: Vec<Vec<(u32, f32)>>,
    pub finish: FinishReason,
}

#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Rows decoded together.
    pub max_batch: usize,
    /// How many most likely tokens to report per step (0: none).
    pub top_alternatives: usize,
    /// Most new requests prefilled in one forward pass.
    pub prefill_rows: usize,
    /// Take the alternatives and the sampling candidates on the device ([`super::topk`]) and
    /// read back only them; `None`: on every backend but the CPU one.
    pub select_on_device: Option<bool>,
    /// Most draft tokens a greedy row with a draft source verifies in one step (0: none).
    pub max_draft: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_batch: super::rows::ENGINE,
            top_alternatives: 0,
            prefill_rows: 16,
            select_on_device: None,
            max_draft: 0,
        }
    }
}

/// A row being decoded.
pub(super) struct Row<'a> {
    index: usize,
    /// Finished: the row still occupies its slot (fed a dummy token, its outputs ignored)
    /// until the batch is compacted.
    pub(super) done: bool,
    pub(super) next_pos: usize,
    max_new_tokens: usize,
    pub(super) decoding: Decoding,
    pub(super) rng: SplitMix64,
    eos: Vec<u32>,
    stop: Option<StopPredicate<'a>>,
    out: Completion,
    draft: Option<DraftFn<'a>>,
    /// The draft fed after the row's token in the current step.
    pub(super) proposed: Vec<u32>,
}

pub struct Engine<'m, B: Backend> {
    pub lm: &'m CausalLm<B>,
    pub options: EngineOptions,
    stats: std::sync::Mutex<DraftStats>,
}

impl<'m, B: Backend> Engine<'m, B> {
    pub fn new(lm: &'m CausalLm<B>, options: EngineOptions) -> Self {
        Self {
            lm,
            options,
            stats: Default::default(),
        }
    }

    /// Steps run and drafts verified by this engine so far.
    pub fn draft_stats(&self) -> DraftStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    pub(super) fn count(&self, f: impl FnOnce(&mut DraftStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    /// Runs all requests; completions in request order.
    pub fn generate(
        &self,
        requests: Vec<Request<'_, B>>,
    ) -> Result<Vec<Completion>, GenerateError> {
        let mut out: Vec<Option<Completion>> = vec![None; requests.len()];
        self.generate_each(requests, |i, c| out[i] = Some(c))?;
        Ok(out.into_iter().flatten().collect())
    }

    /// Runs all requests, handing each completion to `on_done(request index, completion)` as
    /// soon as it finishes (so a caller can save work item by item).
    pub fn generate_each(
        &self,
        requests: Vec<Request<'_, B>>,
        mut on_done: impl FnMut(usize, Completion),
    ) -> Result<(), GenerateError> {
        let vocab = self.lm.config.vocab_size;
        super::check_tokens(requests.iter().map(|r| r.tokens.as_slice()), vocab)?;
        for r in &requests {
            r.decoding.validate()?;
        }
        let device = self.lm.model.embed_tokens.weight.device();
        let max_batch = self.options.max_batch.max(1);
        let mut queue: VecDeque<(usize, Request<'_, B>)> =
            requests.into_iter().enumerate().collect();
        // One row per slot of the batch; a finished row keeps its slot (masked out) until a
        // new request is written into it or the batch is compacted.
        let mut rows: Vec<Row<'_>> = Vec::new();
        let mut active: Option<Active<B>> = None;
        let mut width = Width::new(self.options.max_draft);
        loop {
            // 1. admit waiting requests into free slots, or start the batch; compact it
            let group = admissions(&mut queue, &rows, active.is_some(), max_batch, &mut on_done);
            active = self.admit(group, &mut rows, active, &device);
            active = compact(&mut rows, active, !queue.is_empty(), &device);
            let Some((batch, logits)) = active.take() else {
                if queue.is_empty() {
                    break;
                }
                continue;
            };
            // Columns no row attends to any more are dropped once they are a quarter of the
            // batch's width.
            let quarter = batch.columns() / 4;
            let mut batch = batch.trimmed(quarter);

            // 2. choose every row's next token: one host synchronisation
            let picks = super::choose::choose(&self.options, logits, &mut rows, &device)?;

            // 3. record, retire finished rows (they keep their slot, masked out)
            let feed = self.record(picks, &mut rows, &mut batch, width, &mut on_done);
            if rows.iter().all(|r| r.done) {
                rows.clear();
                continue;
            }

            // 4. feed the chosen tokens (and the drafts after them)
            let drafted = rows.iter().any(|r| !r.proposed.is_empty());
            self.count(|s| {
                s.steps += 1;
                s.drafted_steps += usize::from(drafted);
            });
            active = Some(match drafted {
                false => self.step(batch, &feed, &mut rows, &device),
                true => {
                    let step = self.step_drafted(batch, &feed, &mut rows, &device, &mut on_done)?;
                    width.update(&step.2);
                    (step.0, step.1)
                }
            });
        }
        Ok(())
    }

    /// Step 1, admission: prefills `group` in chunks (the attention scores of a chunk are
    /// rows × t × t) and writes each chunk's rows into the slots of finished rows, so that
    /// admitting copies only the new rows; while the batch is still being filled (fewer
    /// finished slots than new rows) the chunk is stacked below it instead.
    fn admit<'a>(
        &self,
        mut group: Vec<(usize, Request<'a, B>)>,
        rows: &mut Vec<Row<'a>>,
        mut active: Option<Active<B>>,
        device: &B::Device,
    ) -> Option<Active<B>> {
        let chunk = self.options.prefill_rows.max(1);
        while !group.is_empty() {
            let rest = group.split_off(chunk.min(group.len()));
            let (state, logits, new_rows) =
                self.prefill(std::mem::replace(&mut group, rest), device);
            active = Some(match active.take() {
                None => {
                    rows.extend(new_rows);
                    (state, logits)
                }
                Some((batch, old)) => {
                    let slots: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].done).collect();
                    match slots.get(..new_rows.len()) {
                        Some(slots) => {
                            let logits = assign_rows(old, slots, logits);
                            for (&slot, row) in slots.iter().zip(new_rows) {
                                rows[slot] = row;
                            }
                            (batch.admit(state, slots), logits)
                        }
                        // the batch is still being filled
                        None => {
                            rows.extend(new_rows);
                            (batch.stack(state), Tensor::cat(vec![old, logits], 0))
                        }
                    }
                }
            });
        }
        active
    }

    /// Step 3: appends each live row's pick to its output and retires the rows that finish
    /// (their completion goes to `on_done`; they keep their slot, masked out). Returns the
    /// token each slot is fed next: its pick, or 0 for a finished row.
    fn record(
        &self,
        picks: Vec<Pick>,
        rows: &mut [Row<'_>],
        batch: &mut BatchState<B>,
        width: Width,
        on_done: &mut impl FnMut(usize, Completion),
    ) -> Vec<u32> {
        let drafting = self.options.max_draft > 0 && self.options.top_alternatives == 0;
        let mut feed = Vec::with_capacity(rows.len());
        for (slot, (row, pick)) in rows.iter_mut().zip(picks).enumerate() {
            row.proposed.clear();
            if row.done {
                feed.push(0);
                continue;
            }
            if self.options.top_alternatives > 0 {
                row.out.alternatives.push(pick.alternatives);
            }
            if emit(row, slot, pick.token, pick.logprob, batch, on_done) {
                feed.push(0);
                continue;
            }
            feed.push(pick.token);
            // What the row proposes after its token: at most one less than its budget
            // left, since the token chosen after the draft is emitted too.
            if drafting
                && row.decoding.is_greedy()
                && let Some(draft) = row.draft.as_mut()
            {
                let room = row.max_new_tokens.saturating_sub(row.out.tokens.len() + 1);
                let max = width.len.min(room);
                if max > 0 {
                    row.proposed = draft(&row.out.tokens, max);
                    row.proposed.truncate(max);
                }
            }
        }
        feed
    }

    /// Runs a group of new requests (prefix state + their tokens) as one left-padded batch.
    /// Returns their batch state, the next-token logits `[g, vocab]` and their rows.
    fn prefill<'a>(
        &self,
        group: Vec<(usize, Request<'a, B>)>,
        device: &B::Device,
    ) -> (BatchState<B>, Tensor<B, 2>, Vec<Row<'a>>) {
        let num_layers = self.lm.model.layers.len();
        let prefixes: Vec<Option<&SequenceState<B>>> =
            group.iter().map(|(_, r)| r.prefix.as_ref()).collect();
        let n_max = group.iter().map(|(_, r)| r.tokens.len()).max().unwrap_or(1);
        let (cache, prefix_masks) = stack_prefixes(&prefixes, num_layers, n_max);
        let g = group.len();

        let (mut ids, mut positions, mut masks) = (Vec::new(), Vec::new(), Vec::new());
        for ((_, r), mut mask) in group.iter().zip(prefix_masks) {
            let p = r.prefix.as_ref().map_or(0, |s| s.len);
            let pad = n_max - r.tokens.len();
            ids.extend(std::iter::repeat_n(0, pad).chain(r.tokens.iter().map(|&t| t as i32)));
            positions.extend(
                std::iter::repeat_n(0, pad).chain((p..p + r.tokens.len()).map(|x| x as i32)),
            );
            mask.extend(
                std::iter::repeat_n(false, pad).chain(std::iter::repeat_n(true, r.tokens.len())),
            );
            masks.push(mask);
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [g, n_max]), device);
        let positions =
            Tensor::<B, 2, Int>::from_data(TensorData::new(positions, [g, n_max]), device);
        let bias = attention_bias(valid_tensor::<B>(&masks, device), n_max);
        let mut cache = cache.unwrap_or_else(|| KvCache::new(num_layers));
        let hidden = self
            .lm
            .forward_hidden(ids, positions, bias, Some(&mut cache)); // [g, n, h]
        let last = hidden.narrow(1, n_max - 1, 1); // [g, 1, h]
        let logits = self.lm.logits(last); // [g, 1, vocab]
        let [_, _, vocab] = logits.dims();

        let rows = group
            .into_iter()
            .map(|(index, r)| {
                let seed = match r.decoding {
                    Decoding::Sample { seed, .. } => seed,
                    Decoding::Greedy => 0,
                };
                Row {
                    index,
                    done: false,
                    next_pos: r.prefix.as_ref().map_or(0, |s| s.len) + r.tokens.len(),
                    max_new_tokens: r.max_new_tokens,
                    decoding: r.decoding,
                    rng: SplitMix64::new(seed),
                    eos: r.eos_token_ids,
                    stop: r.stop,
                    out: empty_completion(),
                    draft: r.draft,
                    proposed: Vec::new(),
                }
            })
            .collect();
        let state = BatchState {
            cache,
            valid: masks,
        }
        .trimmed(0);
        (state, logits.reshape([g, vocab]), rows)
    }

    /// One decoding step: feeds each row's token, returns the next-token logits `[b, vocab]`.
    fn step(
        &self,
        mut batch: BatchState<B>,
        tokens: &[u32],
        rows: &mut [Row<'_>],
        device: &B::Device,
    ) -> (BatchState<B>, Tensor<B, 2>) {
        let b = rows.len();
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let positions: Vec<i32> = rows.iter().map(|r| r.next_pos as i32).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, 1]), device);
        let positions = Tensor::<B, 2, Int>::from_data(TensorData::new(positions, [b, 1]), device);
        for (cols, row) in batch.valid.iter_mut().zip(rows.iter()) {
            cols.push(!row.done);
        }
        let bias = attention_bias(valid_tensor::<B>(&batch.valid, device), 1); // [b, 1, 1, s + 1]
        let hidden = self
            .lm
            .forward_hidden(ids, positions, bias, Some(&mut batch.cache));
        let logits = self.lm.logits(hidden); // [b, 1, vocab]
        let [_, _, vocab] = logits.dims();
        for row in rows.iter_mut() {
            row.next_pos += 1;
        }
        (batch, logits.reshape([b, vocab]))
    }
}

/// Appends a chosen token to a live row's output; if that finishes the row, retires it (it
/// keeps its slot, masked out) and hands its completion to `on_done`. Returns whether it
/// finished.
pub(super) fn emit(
    row: &mut Row<'_>,
    slot: usize,
    token: u32,
    logprob: f32,
    batch: &mut BatchState<impl Backend>,
    on_done: &mut impl FnMut(usize, Completion),
) -> bool {
    row.out.tokens.push(token);
    row.out.logprobs.push(logprob);
    let finish = finish_reason(&row.eos, &mut row.stop, &row.out.tokens, row.max_new_tokens);
    let Some(reason) = finish else {
        return false;
    };
    row.done = true;
    batch.retire(slot);
    row.out.finish = reason;
    on_done(
        row.index,
        std::mem::replace(&mut row.out, empty_completion()),
    );
    true
}

/// The decoding batch: its model state, and the next-token logits of every slot
/// (`[rows, vocab]`).
type Active<B> = (BatchState<B>, Tensor<B, 2>);

/// Step 1, which waiting requests join the batch now. Every change of the batch copies its KV
/// cache (burn has no in-place write), so requests are admitted in groups, to share their
/// prefill: once 1/8 of the slots are free, or when no row is live; a batch not yet started
/// takes `max_batch`. A request with no budget completes at once, empty, without a slot.
fn admissions<'a, B: Backend>(
    queue: &mut VecDeque<(usize, Request<'a, B>)>,
    rows: &[Row<'a>],
    started: bool,
    max_batch: usize,
    on_done: &mut impl FnMut(usize, Completion),
) -> Vec<(usize, Request<'a, B>)> {
    let refill_at = (max_batch / 8).max(1);
    let live = rows.iter().filter(|r| !r.done).count();
    let free = if started {
        rows.len() - live
    } else {
        max_batch
    };
    let mut group = Vec::new();
    if !queue.is_empty() && (free >= refill_at || live == 0) {
        while group.len() < free {
            let Some((i, r)) = queue.pop_front() else {
                break;
            };
            match r.max_new_tokens {
                0 => on_done(i, empty_completion()),
                _ => group.push((i, r)),
            }
        }
    }
    group
}

/// Step 1, compaction: once nothing waits, finished rows are dropped when they are a quarter
/// of the batch (their slots would only be computed for nothing), and the batch with them
/// when no row is live.
fn compact<B: Backend>(
    rows: &mut Vec<Row<'_>>,
    active: Option<Active<B>>,
    waiting: bool,
    device: &B::Device,
) -> Option<Active<B>> {
    let live = rows.iter().filter(|r| !r.done).count();
    let dead = rows.len() - live;
    if waiting || dead == 0 || (live > 0 && dead * 4 < rows.len()) {
        return active;
    }
    let keep: Vec<usize> = (0..rows.len()).filter(|&r| !rows[r].done).collect();
    rows.retain(|r| !r.done);
    match active {
        Some((batch, logits)) if !keep.is_empty() => {
            let idx = Tensor::<B, 1, Int>::from_data(
                TensorData::new(
                    keep.iter().map(|&r| r as i32).collect::<Vec<_>>(),
                    [keep.len()],
                ),
                device,
            );
            Some((batch.select_rows(&keep), logits.select(0, idx)))
        }
        _ => None,
    }
}

/// `logits` (`[b, vocab]`) with rows `slots` replaced by the rows of `new` (`[slots.len(), vocab]`).
fn assign_rows<B: Backend>(
    logits: Tensor<B, 2>,
    slots: &[usize],
    new: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [b, vocab] = logits.dims();
    let mut out = logits.reshape([b, 1, 1, vocab]);
    for (i, &slot) in slots.iter().enumerate() {
        let row = new.clone().narrow(0, i, 1).reshape([1, 1, 1, vocab]);
        out = assign_block(out, slot..slot + 1, 0..1, row);
    }
    out.reshape([b, vocab])
}

/// Why a row whose output is now `tokens` (the newest last) ends, if it does: an end token,
/// its stop predicate, or its budget, checked in that order.
pub fn finish_reason(
    eos: &[u32],
    stop: &mut Option<StopPredicate<'_>>,
    tokens: &[u32],
    max_new_tokens: usize,
) -> Option<FinishReason> {
    if tokens.last().is_some_and(|t| eos.contains(t)) {
        Some(FinishReason::Eos)
    } else if stop.as_mut().is_some_and(|stop| stop(tokens)) {
        Some(FinishReason::Stop)
    } else if tokens.len() >= max_new_tokens {
        Some(FinishReason::Length)
    } else {
        None
    }
}

fn empty_completion() -> Completion {
    Completion {
        tokens: Vec::new(),
        logprobs: Vec::new(),
        alternatives: Vec::new(),
        finish: FinishReason::Length,
    }
}
