//! HF `config.json` → a validated [`DecoderConfig`].
//!
//! Two levels, as in ripgrep: [`HfConfig`] mirrors the JSON (field names exactly as HF writes
//! them, transformers 4.x `rope_theta` + `rope_scaling` and 5.x `rope_parameters` alike), and
//! [`HfConfig::resolve`] turns it once into a [`DecoderConfig`] whose switches say how the one
//! decoder in `decoder.rs` behaves for each family. Anything the decoder does not implement
//! (sliding windows, other rope types, other activations) is rejected here, with its name.

use std::path::Path;

use serde::Deserialize;

use super::ModelError;

/// `config.json` as HF writes it. Only the fields the decoder reads.
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: Option<bool>,
    pub hidden_act: Option<String>,
    /// transformers 4.x.
    pub rope_theta: Option<f64>,
    /// transformers 4.x.
    pub rope_scaling: Option<RopeParameters>,
    /// transformers 5.x: theta and scaling together.
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    pub eos_token_id: Option<TokenIds>,
    pub bos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<TokenIds>,
}

/// `eos_token_id` is an integer in most configs and a list in some (Llama 3.1 Instruct).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling` (4.x) or `rope_parameters` (5.x). `type` is the older spelling of `rope_type`.
#[derive(Debug, Clone, Deserialize)]
pub struct RopeParameters {
    pub rope_type: Option<String>,
    #[serde(rename = "type")]
    pub legacy_type: Option<String>,
    pub rope_theta: Option<f64>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
}

/// The four supported architectures, named as in `config.json`'s `architectures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Qwen2,
    Qwen3,
    Llama,
    Olmo2,
}

impl Architecture {
    fn from_hf(name: &str) -> Option<Self> {
        match name {
            "Qwen2ForCausalLM" => Some(Self::Qwen2),
            "Qwen3ForCausalLM" => Some(Self::Qwen3),
            "LlamaForCausalLM" => Some(Self::Llama),
            "Olmo2ForCausalLM" => Some(Self::Olmo2),
            _ => None,
        }
    }
}

/// Where the q/k RMSNorm sits, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// Qwen3: over each head's `head_dim` features, before RoPE.
    PerHead,
    /// OLMo2: over the whole q (resp. k) projection, before splitting into heads.
    WholeProjection,
}

/// Llama 3.1 frequency-dependent rope scaling (transformers `_compute_llama3_parameters`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Everything the decoder needs, validated. Built only by [`HfConfig::resolve`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_llama3: Option<Llama3Scaling>,
    /// Qwen2: q/k/v projections carry a bias; also any family with `attention_bias: true`.
    pub qkv_bias: bool,
    /// `attention_bias: true` also puts a bias on `o_proj` (Llama, OLMo2, Qwen3).
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub qk_norm: QkNorm,
    /// OLMo2: norms after each sublayer (`post_attention_layernorm`, `post_feedforward_layernorm`)
    /// and no `input_layernorm`.
    pub post_sublayer_norms: bool,
    pub tie_word_embeddings: bool,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

impl HfConfig {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks the config once and fixes each family's switches.
    pub fn resolve(&self) -> Result<DecoderConfig, ModelError> {
        let unsupported = |what: String| Err(ModelError::Unsupported(what));
        let name = match self.architectures.as_slice() {
            [one] => one.as_str(),
            [] => return unsupported("config.json names no architecture".into()),
            many => return unsupported(format!("several architectures {many:?}")),
        };
        let Some(architecture) = Architecture::from_hf(name) else {
            return unsupported(format!(
                "architecture {name} (supported: Qwen2ForCausalLM, Qwen3ForCausalLM, \
                 LlamaForCausalLM, Olmo2ForCausalLM)"
            ));
        };
        if let Some(act) = &self.hidden_act
            && act != "silu"
        {
            return unsupported(format!("hidden_act {act:?} (only \"silu\")"));
        }
        if self.use_sliding_window == Some(true) {
            return unsupported("use_sliding_window: true".into());
        }
        let heads = self.num_attention_heads;
        let kv_heads = self.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return unsupported(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            ));
        }
        let head_dim = match self.head_dim {
            Some(d) => d,
            None if self.hidden_size.is_multiple_of(heads) => self.hidden_size / heads,
            None => {
                return unsupported(format!(
                    "hidden_size {} is not a multiple of num_attention_heads {heads}",
                    self.hidden_size
                ));
            }
        };
        if head_dim % 2 != 0 {
            return unsupported(format!("odd head_dim {head_dim}"));
        }
        let (rope_theta, rope_llama3) = self.rope()?;
        let attention_bias = self.attention_bias.unwrap_or(false);
        Ok(DecoderConfig {
            architecture,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            rope_llama3,
            qkv_bias: architecture == Architecture::Qwen2 || attention_bias,
            o_bias: architecture != Architecture::Qwen2 && attention_bias,
            mlp_bias: self.mlp_bias.unwrap_or(false),
            qk_norm: match architecture {
                Architecture::Qwen3 => QkNorm::PerHead,
                Architecture::Olmo2 => QkNorm::WholeProjection,
                Architecture::Qwen2 | Architecture::Llama => QkNorm::None,
            },
            post_sublayer_norms: architecture == Architecture::Olmo2,
            // transformers' PretrainedConfig default is true when the key is absent.
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(true),
            eos_token_ids: self
                .eos_token_id
                .as_ref()
                .map(TokenIds::to_vec)
                .unwrap_or_default(),
            pad_token_id: self
                .pad_token_id
                .as_ref()
                .and_then(|ids| ids.to_vec().first().copied()),
        })
    }

    /// `rope_parameters` (5.x) wins over `rope_theta` + `rope_scaling` (4.x).
    fn rope(&self) -> Result<(f64, Option<Llama3Scaling>), ModelError> {
        let params = self.rope_parameters.as_ref().or(self.rope_scaling.as_ref());
        let theta = params
            .and_then(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10_000.0);
        let Some(params) = params else {
            return Ok((theta, None));
        };
        let kind = params
            .rope_type
            .as_deref()
            .or(params.legacy_type.as_deref())
            .unwrap_or("default");
        match kind {
            "default" => Ok((theta, None)),
            "llama3" => {
                let missing = |field: &str| {
                    ModelError::Unsupported(format!("llama3 rope scaling without {field}"))
                };
                Ok((
                    theta,
                    Some(Llama3Scaling {
                        factor: params.factor.ok_or_else(|| missing("factor"))?,
                        low_freq_factor: params
                            .low_freq_factor
                            .ok_or_else(|| missing("low_freq_factor"))?,
                        high_freq_factor: params
                            .high_freq_factor
                            .ok_or_else(|| missing("high_freq_factor"))?,
                        original_max_position_embeddings: params
                            .original_max_position_embeddings
                            .ok_or_else(|| {
                            missing("original_max_position_embeddings")
                        })?,
                    }),
                ))
            }
            other => Err(ModelError::Unsupported(format!(
                "rope type {other:?} (only \"default\" and \"llama3\")"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<DecoderConfig, ModelError> {
        let hf: HfConfig = serde_json::from_str(json).map_err(|source| ModelError::Json {
            path: "inline".into(),
            source,
        })?;
        hf.resolve()
    }

    const LLAMA_4X: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "tie_word_embeddings": false, "eos_token_id": [128001, 128008, 128009]
    }"#;

    #[test]
    fn reads_transformers_4_llama_rope_scaling() -> Result<(), ModelError> {
        let cfg = parse(LLAMA_4X)?;
        assert_eq!(cfg.rope_theta, 500000.0);
        assert_eq!(cfg.head_dim, 128);
        assert_eq!(cfg.eos_token_ids, vec![128001, 128008, 128009]);
        let scaling = cfg
            .rope_llama3
            .ok_or(ModelError::Unsupported("none".into()))?;
        assert_eq!(scaling.original_max_position_embeddings, 8192);
        Ok(())
    }

    #[test]
    fn rejects_unknown_architecture_and_rope_type() {
        let gpt = LLAMA_4X.replace("LlamaForCausalLM", "GPT2LMHeadModel");
        assert!(matches!(parse(&gpt), Err(ModelError::Unsupported(m)) if m.contains("GPT2")));
        let yarn = LLAMA_4X.replace("\"llama3\"", "\"yarn\"");
        assert!(matches!(parse(&yarn), Err(ModelError::Unsupported(m)) if m.contains("yarn")));
    }

    #[test]
    fn qwen2_defaults_to_tied_embeddings_and_qkv_bias() -> Result<(), ModelError> {
        let qwen = LLAMA_4X
            .replace("LlamaForCausalLM", "Qwen2ForCausalLM")
            .replace("\"tie_word_embeddings\": false,", "");
        let cfg = parse(&qwen)?;
        assert!(cfg.tie_word_embeddings && cfg.qkv_bias && !cfg.o_bias);
        Ok(())
    }
}
