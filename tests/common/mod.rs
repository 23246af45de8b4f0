//! Shared by the parity tests: the committed fixtures of `scripts/make_model_fixtures.py`.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::backend::Flex;
use cft::model::{LanguageModel, LoadOptions};
use serde::Deserialize;

pub type B = Flex;

pub const FAMILIES: [&str; 4] = ["qwen2", "qwen3", "llama", "olmo2"];

pub fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(family)
}

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
    pub messages: Vec<cft::model::ChatMessage>,
    pub rendered: String,
}

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

pub fn reference(family: &str) -> Reference {
    let dir = fixture(family);
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let mut r: Reference = serde_json::from_str(&text).unwrap();
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for i in 0..r.prompts.len() {
        let view = st.tensor(&format!("logits.{i}")).unwrap();
        let [t, v] = view.shape() else {
            panic!("logits.{i} is not 2-d")
        };
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        r.logits.push((*t, *v, values));
    }
    r
}

pub fn load(family: &str) -> LanguageModel<B> {
    LanguageModel::load(
        &fixture(family),
        &Default::default(),
        LoadOptions::default(),
    )
    .unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
