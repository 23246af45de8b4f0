//! `model`: HF config → decoder, safetensors loading, tokenizer, chat templates.
//!
//! One decoder (`decoder.rs`) serves Qwen2.5, Qwen3, Llama 3.x and OLMo2; `config.rs` decides
//! its switches once per checkpoint, `load.rs` fills it from the weight files and refuses any
//! tensor it cannot place. Inference state (the KV cache) lives outside the module so that the
//! same [`CausalLm`] is trained and used for generation.

pub mod config;
pub mod decoder;
pub mod kernels;
pub mod kv_cache;
pub mod load;
pub mod rope;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use burn::prelude::Backend;

pub use config::{Architecture, DecoderConfig, HfConfig};
pub use decoder::{CausalLm, attention_bias, positions_from_valid};
pub use kv_cache::{KvCache, LayerKv};
pub use load::{LoadOptions, load_causal_lm};
pub use tokenizer::{ChatMessage, TextTokenizer};

/// Errors of reading a model directory. Each names the file or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {hint}", path.display())]
    MissingFile { path: PathBuf, hint: String },
    #[error("{}: not a safetensors file: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("tensor {tensor}: dtype {dtype} is not supported (f32, bf16, f16)")]
    UnsupportedDtype { tensor: String, dtype: String },
    #[error("tensor {0} is missing from the checkpoint")]
    MissingTensor(String),
    #[error("tensor {0} appears in more than one weight file")]
    DuplicateTensor(String),
    #[error("tensor {0} in the checkpoint is not used by the model")]
    UnusedTensor(String),
    #[error("tensor {tensor} in {}: expected shape {expected:?}, found {found:?}", file.display())]
    ShapeMismatch {
        tensor: String,
        file: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Encode(String),
    #[error("the tokenizer has no chat template")]
    NoChatTemplate,
    #[error("chat template: {0}")]
    Template(String),
}

/// A loaded model directory: the module, its tokenizer and the ids that end a sequence.
#[derive(Debug, Clone)]
pub struct LanguageModel<B: Backend> {
    pub lm: CausalLm<B>,
    pub tokenizer: TextTokenizer,
    /// `eos_token_id` of `config.json` and `generation_config.json`, and the tokenizer's
    /// `eos_token`, deduplicated.
    pub eos_token_ids: Vec<u32>,
    /// `pad_token_id` of the config, else the tokenizer's `pad_token`, else the first EOS id.
    pub pad_token_id: u32,
}

impl<B: Backend> LanguageModel<B> {
    pub fn load(dir: &Path, device: &B::Device, options: LoadOptions) -> Result<Self, ModelError> {
        let lm = load_causal_lm(dir, device, options)?;
        let tokenizer = TextTokenizer::from_dir(dir)?;
        let mut eos_token_ids = lm.config.eos_token_ids.clone();
        eos_token_ids.extend(generation_config_eos(dir)?);
        eos_token_ids.extend(tokenizer.eos_token_id());
        eos_token_ids.sort_unstable();
        eos_token_ids.dedup();
        let pad_token_id = lm
            .config
            .pad_token_id
            .or_else(|| {
                tokenizer
                    .pad_token
                    .as_deref()
                    .and_then(|t| tokenizer.token_id(t))
            })
            .or_else(|| eos_token_ids.first().copied())
            .unwrap_or(0);
        Ok(Self {
            lm,
            tokenizer,
            eos_token_ids,
            pad_token_id,
        })
    }
}

/// `eos_token_id` of `generation_config.json`, when the file exists.
fn generation_config_eos(dir: &Path) -> Result<Vec<u32>, ModelError> {
    #[derive(serde::Deserialize)]
    struct GenerationConfig {
        eos_token_id: Option<config::TokenIds>,
    }
    let path = dir.join("generation_config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ModelError::Io { path, source }),
    };
    let config: GenerationConfig =
        serde_json::from_str(&text).map_err(|source| ModelError::Json { path, source })?;
    Ok(config
        .eos_token_id
        .map(|ids| ids.to_vec())
        .unwrap_or_default())
}
