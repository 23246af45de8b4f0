//! Parity with HF transformers on the committed tiny models of `tests/fixtures/models` (written
//! by `scripts/make_model_fixtures.py` with transformers' outputs saved next to the weights).
//!
//! The comparisons live here, not in the tests, so that `cft check parity --device cuda` runs
//! the very code the CPU tests (`tests/model_parity.rs`, `tests/generate_parity.rs`) assert on:
//! a GPU machine has the binary and the fixtures but not the test binaries. Each comparison
//! returns what it measured — the worst absolute difference of the continuous quantities and
//! a description of every exact quantity (token ids, top-k ids) that differs — and leaves the
//! verdict to [`Comparison::passed`] with the tolerances below.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::Deserialize;

use crate::generate::{Engine, EngineOptions, FinishReason, GenerateError, Request, encode, score};
use crate::model::{ChatMessage, LanguageModel, ModelError};

/// The families of `tests/fixtures/models` (`qwen2-bf16` is a fifth directory, for the
/// half-precision path, and not a family).
pub const FAMILIES: [&str; 4] = ["qwen2", "qwen3", "llama", "olmo2"];

/// Logits, log-probs and entropies: f32 against f32, the same maths in another order.
pub const TOLERANCE: f32 = 1e-4;
/// Top-k probabilities of `score` (values in [0, 1], so tighter than the logits).
pub const PROB_TOLERANCE: f32 = 1e-5;
/// New tokens of each greedy generation, as the fixtures were made.
pub const NEW_TOKENS: usize = 24;
/// Top alternatives compared per greedy step, and per scored position.
pub const TOP_K: usize = 5;

/// Errors of reading a fixture or running a model on it. Each names the file at fault (the
/// reference's files as a model directory's: [`ModelError`]).
#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    #[error("{}: {message}", path.display())]
    Reference { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("reading logits from the device: {0}")]
    Device(String),
}

/// One position of transformers' scoring of a prompt.
#[derive(Debug, Deserialize)]
pub struct ScoreRow {
    pub pos: usize,
    pub token: u32,
    pub next_logprob: Option<f32>,
    pub entropy: f32,
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Deserialize)]
pub struct TokenizerCase {
    pub text: String,
    pub ids: Vec<u32>,
}

#[derive(Debug, Deserialize)]
pub struct ChatCase {
    pub messages: Vec<ChatMessage>,
    pub rendered: String,
}

/// What transformers computed on a fixture: `reference.json` and `reference.safetensors`.
#[derive(Debug, Deserialize)]
pub struct Reference {
    pub prompts: Vec<Vec<u32>>,
    pub pad_id: u32,
    pub greedy_single: Vec<Vec<u32>>,
    pub greedy_single_logprobs: Vec<Vec<f32>>,
    pub greedy_single_top: Vec<Vec<Vec<u32>>>,
    pub greedy_batch: Vec<Vec<u32>>,
    pub score: Vec<Vec<ScoreRow>>,
    pub tokenizer: Option<Vec<TokenizerCase>>,
    pub chat: Option<ChatCase>,
    /// `logits.{i}` of `reference.safetensors`: `(seq_len, vocab, values)`.
    #[serde(skip)]
    pub logits: Vec<(usize, usize, Vec<f32>)>,
}

impl Reference {
    /// Reads the reference of the fixture directory `dir`.
    pub fn read(dir: &Path) -> Result<Self, ParityError> {
        let path = dir.join("reference.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let mut r: Reference =
            serde_json::from_str(&text).map_err(|source| ModelError::Json { path, source })?;
        let path = dir.join("reference.safetensors");
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let bad = |message: String| ParityError::Reference {
            path: path.clone(),
            message,
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        for i in 0..r.prompts.len() {
            let name = format!("logits.{i}");
            let view = st.tensor(&name).map_err(|e| bad(format!("{name}: {e}")))?;
            let [t, v] = view.shape() else {
                return Err(bad(format!("{name} is not 2-d: {:?}", view.shape())));
            };
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(bad(format!("{name}: dtype {:?}, not F32", view.dtype())));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            r.logits.push((*t, *v, values));
        }
        Ok(r)
    }
}

/// What one comparison measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The largest absolute difference of a continuous quantity (0 when there is none).
    pub worst: f32,
    /// The bound `worst` must keep within.
    pub tolerance: f32,
    /// Each exact quantity that differs, described for a person (empty: all identical).
    pub mismatches: Vec<String>,
}

impl Comparison {
    fn new(tolerance: f32) -> Self {
        Self {
            worst: 0.0,
            tolerance,
            mismatches: Vec::new(),
        }
    }

    fn diff(&mut self, got: &[f32], expected: &[f32], what: impl FnOnce() -> String) {
        if got.len() != expected.len() {
            self.mismatches.push(format!(
                "{}: {} values, transformers {}",
                what(),
                got.len(),
                expected.len()
            ));
        } else {
            self.worst = worse(self.worst, max_abs_diff(got, expected));
        }
    }

    fn same<T: PartialEq + std::fmt::Debug>(&mut self, got: &T, expected: &T, what: &str) {
        if got != expected {
            self.mismatches
                .push(format!("{what}: {got:?}, transformers {expected:?}"));
        }
    }

    /// Within tolerance and nothing exact differs. (A NaN difference fails.)
    pub fn passed(&self) -> bool {
        self.worst <= self.tolerance && self.mismatches.is_empty()
    }
}

/// The largest absolute elementwise difference (NaN when either side has one).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, worse)
}

/// The larger of two differences; NaN if either is (`f32::max` would drop a NaN).
fn worse(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

fn read_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, ParityError> {
    let data = t
        .try_into_data()
        .map_err(|e| ParityError::Device(format!("{e:?}")))?;
    Ok(data.iter::<f32>().collect())
}

/// Logits `[t, vocab]` of each prompt run alone through the decoder.
pub fn single_logits<B: Backend>(
    model: &LanguageModel<B>,
    r: &Reference,
    device: &B::Device,
) -> Result<Comparison, ParityError> {
    let mut c = Comparison::new(TOLERANCE);
    for (i, (prompt, (t, v, expected))) in r.prompts.iter().zip(&r.logits).enumerate() {
        let ids: Vec<i32> = prompt.iter().map(|&x| x as i32).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, *t]), device);
        let valid =
            Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![true; *t], [1, *t]), device);
        let logits = model.lm.forward(ids, valid); // [1, t, vocab]
        c.same(
            &logits.dims(),
            &[1, *t, *v],
            &format!("prompt {i}: logits shape"),
        );
        c.diff(&read_f32(logits)?, expected, || format!("prompt {i}"));
    }
    Ok(c)
}

/// All prompts as one left-padded batch; only the real positions are compared.
pub fn batched_logits<B: Backend>(
    model: &LanguageModel<B>,
    r: &Reference,
    device: &B::Device,
) -> Result<Comparison, ParityError> {
    let mut c = Comparison::new(TOLERANCE);
    let n = r.prompts.len();
    let width = r.prompts.iter().map(Vec::len).max().unwrap_or(0);
    let (mut ids, mut valid) = (Vec::new(), Vec::new());
    for p in &r.prompts {
        let pad = width - p.len();
        ids.extend(std::iter::repeat_n(r.pad_id as i32, pad).chain(p.iter().map(|&x| x as i32)));
        valid.extend(std::iter::repeat_n(false, pad).chain(std::iter::repeat_n(true, p.len())));
    }
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, width]), device);
    let valid = Tensor::<B, 2, Bool>::from_data(TensorData::new(valid, [n, width]), device);
    let logits = model.lm.forward(ids, valid); // [n, width, vocab]
    let [_, _, vocab] = logits.dims();
    for (row, (p, (t, v, expected))) in r.prompts.iter().zip(&r.logits).enumerate() {
        let pad = width - p.len();
        c.same(&vocab, v, &format!("prompt {row}: vocabulary"));
        let got = logits
            .clone()
            .slice([row..row + 1, pad..width, 0..vocab.min(*v)]); // [1, t, vocab]
        let got = read_f32(got)?;
        c.same(&got.len(), &(t * v), &format!("prompt {row}: logit count"));
        c.diff(&got, expected, || format!("prompt {row}"));
    }
    Ok(c)
}

/// The engine over `model`, decoding every prompt greedily for [`NEW_TOKENS`] tokens with
/// `max_batch` rows together and the `top` alternatives of each step.
fn greedy<B: Backend>(
    model: &LanguageModel<B>,
    r: &Reference,
    max_batch: usize,
    top: usize,
) -> Result<Vec<crate::generate::Completion>, ParityError> {
    let options = EngineOptions {
        max_batch,
        top_alternatives: top,
        prefill_rows: 2,
        ..Default::default()
    };
    let requests = r
        .prompts
        .iter()
        .map(|p| Request::<B>::greedy(p.clone(), NEW_TOKENS))
        .collect();
    Ok(Engine::new(&model.lm, options).generate(requests)?)
}

/// Greedy decoding of each prompt alone: the tokens, that each ran to its length, their
/// log-probs and the top-5 alternatives of every step.
pub fn greedy_single<B: Backend>(
    model: &LanguageModel<B>,
    r: &Reference,
) -> Result<Comparison, ParityError> {
    let mut c = Comparison::new(TOLERANCE);
    let out = greedy(model, r, 1, TOP_K)?;
    c.same(&out.len(), &r.greedy_single.len(), "completions");
    for (i, got) in out.iter().enumerate() {
        let (Some(tokens), Some(logprobs), Some(top)) = (
            r.greedy_single.get(i),
            r.greedy_single_logprobs.get(i),
            r.greedy_single_top.get(i),
        ) else {
            continue;
        };
        c.same(&got.tokens, tokens, &format!("prompt {i}: tokens"));
        c.same(
            &got.finish,
            &FinishReason::Length,
            &format!("prompt {i}: finish"),
        );
        c.diff(&got.logprobs, logprobs, || format!("prompt {i}: log-probs"));
        let ids: Vec<Vec<u32>> = got
            .alternatives
            .iter()
            .map(|a| a.iter().map(|x| x.0).collect())
            .collect();
        c.same(&ids, top, &format!("prompt {i}: top-{TOP_K} alternatives"));
    }
    Ok(c)
}

/// Greedy decoding of all prompts as one left-padded batch: the tokens.
pub fn greedy_batch<B: Backend>(
    model: &LanguageModel<B>,
    r: &Reference,
) -> Result<Comparison, ParityError> {
    let mut c = Comparison::new(TOLERANCE);
    let tokens: Vec<Vec<u32>> = greedy(model, r, 8, 0)?
        .into_iter()
        .map(|c| c.tokens)
        .collect();
    for (i, (got, expected)) in tokens.iter().zip(&r.greedy_batch).enumerate() {
        c.same(got, expected, &format!("prompt {i}: tokens"));
    }
    c.same(&tokens.len(), &r.greedy_batch.len(), "completions");
    Ok(c)
}

/// Per-position log-probs, entropies and top-5 (ids and probabilities) of each prompt. `worst`
/// is that of the log-probs and entropies ([`TOLERANCE`]); a top-5 probability further than
/// [`PROB_TOLERANCE`] from transformers' is a mismatch.
pub fn scores<B: Backend>(
    model: &LanguageModel<B>,
    r: &Reference,
) -> Result<Comparison, ParityError> {
    let mut c = Comparison::new(TOLERANCE);
    let encoded = encode(&model.lm, &r.prompts)?;
    for (i, (e, prompt)) in encoded.into_iter().zip(&r.prompts).enumerate() {
        let rows = score(e.logits, prompt, TOP_K, false)?;
        let Some(expected) = r.score.get(i) else {
            continue;
        };
        c.same(
            &rows.len(),
            &expected.len(),
            &format!("prompt {i}: positions"),
        );
        for (got, want) in rows.iter().zip(expected) {
            let at = format!("prompt {i} position {}", want.pos);
            c.same(&(got.pos, got.token), &(want.pos, want.token), &at);
            match (got.next_logprob, want.next_logprob) {
                (Some(a), Some(b)) => c.diff(&[a], &[b], String::new),
                (None, None) => {}
                (a, b) => c.same(&a, &b, &format!("{at}: next log-prob")),
            }
            c.diff(&[got.entropy], &[want.entropy], String::new);
            let ids: Vec<u32> = got.top.iter().map(|x| x.0).collect();
            let want_ids: Vec<u32> = want.top.iter().map(|x| x.0).collect();
            c.same(&ids, &want_ids, &format!("{at}: top-{TOP_K}"));
            let probs: Vec<f32> = got.top.iter().map(|x| x.1).collect();
            let want_probs: Vec<f32> = want.top.iter().map(|x| x.1).collect();
            let d = max_abs_diff(&probs, &want_probs);
            if d > PROB_TOLERANCE || d.is_nan() {
                c.mismatches
                    .push(format!("{at}: top-{TOP_K} probabilities differ by {d:e}"));
            }
        }
    }
    Ok(c)
}

/// The checks of [`check_family`], in order, with the names `cft check parity` prints.
pub const CHECKS: [&str; 4] = ["logits", "greedy", "batched", "score"];

/// Every comparison of one fixture directory on `device`: logits (each prompt alone and the
/// left-padded batch, the worse of the two), greedy decoding alone, greedy decoding batched,
/// and scoring. Named as [`CHECKS`].
pub fn check_family<B: Backend>(
    dir: &Path,
    device: &B::Device,
    options: crate::model::LoadOptions,
) -> Result<Vec<(&'static str, Comparison)>, ParityError> {
    let model = LanguageModel::<B>::load(dir, device, options)?;
    let r = Reference::read(dir)?;
    let mut logits = single_logits(&model, &r, device)?;
    let batched = batched_logits(&model, &r, device)?;
    logits.worst = worse(logits.worst, batched.worst);
    logits.mismatches.extend(batched.mismatches);
    Ok(vec![
        ("logits", logits),
        ("greedy", greedy_single(&model, &r)?),
        ("batched", greedy_batch(&model, &r)?),
        ("score", scores(&model, &r)?),
    ])
}
