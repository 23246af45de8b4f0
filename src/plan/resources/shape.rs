//! A model's shape, all the memory model needs to know about it: sizes from `config.json`
//! (through the same [`HfConfig::resolve`] the loader uses, so the families' switches are
//! decided once), from the manifest's toy family, or from a built-in table of the paper's
//! five models, for planning on a machine without their weights.

use std::path::Path;

use crate::model::config::{DecoderConfig, HfConfig, QkNorm};

/// Bytes of one value of a float dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    Bf16,
    F16,
}

impl Dtype {
    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 | Dtype::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }

    /// `config.json`'s `torch_dtype` (transformers 4.x) or `dtype` (5.x).
    fn from_torch(name: &str) -> Option<Self> {
        match name {
            "float32" => Some(Dtype::F32),
            "bfloat16" => Some(Dtype::Bf16),
            "float16" => Some(Dtype::F16),
            _ => None,
        }
    }
}

/// The sizes of a decoder, as `src/model/decoder.rs` builds it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShape {
    pub vocab: u64,
    pub hidden: u64,
    pub intermediate: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub tied: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub qk_norm: QkNorm,
    /// OLMo2: norms after each sublayer, none before attention.
    pub post_sublayer_norms: bool,
    /// The dtype the weights are stored in (what a loader reads).
    pub stored: Dtype,
}

/// Where a stage's shape came from, shown next to its estimate.
#[derive(Clone, Debug, PartialEq)]
pub enum ShapeSource {
    /// `<model_dir>/config.json`.
    Config,
    /// The manifest's `[model.toy]`.
    Toy,
    /// No `config.json` there: the built-in shape of this paper model.
    BuiltIn(&'static str),
}

impl ModelShape {
    pub fn from_config(c: &DecoderConfig, stored: Dtype) -> Self {
        Self {
            vocab: c.vocab_size as u64,
            hidden: c.hidden_size as u64,
            intermediate: c.intermediate_size as u64,
            layers: c.num_hidden_layers as u64,
            heads: c.num_attention_heads as u64,
            kv_heads: c.num_key_value_heads as u64,
            head_dim: c.head_dim as u64,
            tied: c.tie_word_embeddings,
            qkv_bias: c.qkv_bias,
            o_bias: c.o_bias,
            mlp_bias: c.mlp_bias,
            qk_norm: c.qk_norm,
            post_sublayer_norms: c.post_sublayer_norms,
            stored,
        }
    }

    /// The shape `<dir>/config.json` describes; `None` when the file does not exist.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, String> {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Ok(None);
        }
        let hf = HfConfig::from_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config = hf
            .resolve()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(Self::from_config(&config, stored_dtype(&path))))
    }

    /// `q_proj`'s output width: heads × head_dim.
    pub fn q_dim(&self) -> u64 {
        self.heads * self.head_dim
    }

    /// `k_proj`'s (and `v_proj`'s) output width: kv_heads × head_dim.
    pub fn kv_dim(&self) -> u64 {
        self.kv_heads * self.head_dim
    }

    /// Parameters of one decoder layer: q/k/v/o projections (with their biases), the SwiGLU
    /// MLP, and the norms of the family.
    pub fn layer_params(&self) -> u64 {
        let (h, q, kv, i) = (self.hidden, self.q_dim(), self.kv_dim(), self.intermediate);
        let bias = |on: bool, n: u64| if on { n } else { 0 };
        let attention =
            h * q + h * kv * 2 + q * h + bias(self.qkv_bias, q + 2 * kv) + bias(self.o_bias, h);
        let mlp = 3 * h * i + bias(self.mlp_bias, 2 * i + h);
        // Llama, Qwen2, Qwen3: input_layernorm and post_attention_layernorm; OLMo2:
        // post_attention_layernorm and post_feedforward_layernorm.
        let qk_norms = match self.qk_norm {
            QkNorm::None => 0,
            QkNorm::PerHead => 2 * self.head_dim,
            QkNorm::WholeProjection => q + kv,
        };
        attention + mlp + 2 * h + qk_norms
    }

    /// Every parameter: embedding, layers, final norm, and `lm_head` unless tied.
    pub fn params(&self) -> u64 {
        let embedding = self.vocab * self.hidden;
        let head = if self.tied { 0 } else { embedding };
        embedding + self.layers * self.layer_params() + self.hidden + head
    }

    /// Keys and values one token adds to the cache, per layer: `2 × kv_heads × head_dim`.
    pub fn kv_values_per_token_layer(&self) -> u64 {
        2 * self.kv_dim()
    }

    /// The shape of a toy model (`write_random_model`: head_dim = hidden / heads, tied
    /// embeddings, stored in f32; Qwen2 has q/k/v biases).
    pub fn toy(toy: &crate::manifest::ToyModel) -> Self {
        let heads = toy.num_heads.max(1);
        Self {
            vocab: toy.vocab_size,
            hidden: toy.hidden_size,
            intermediate: toy.intermediate_size,
            layers: toy.num_layers,
            heads,
            kv_heads: toy.num_kv_heads.max(1),
            head_dim: toy.hidden_size / heads,
            tied: true,
            qkv_bias: toy.architecture == "qwen2",
            o_bias: false,
            mlp_bias: false,
            qk_norm: QkNorm::None,
            post_sublayer_norms: false,
            stored: Dtype::F32,
        }
    }

    /// The built-in shape of one of the paper's five models, by the last component of its
    /// directory (`../models/Qwen2.5-7B`), for planning where the weights are not.
    pub fn builtin(dir: &Path) -> Option<(&'static str, Self)> {
        let last = dir.file_name()?.to_str()?.to_ascii_lowercase();
        BUILTIN
            .iter()
            .find(|b| b.names.contains(&last.as_str()))
            .map(|b| (b.names[0], b.shape()))
    }
}

/// `torch_dtype` (or `dtype`) of a `config.json`; bf16 when absent or unreadable, as the
/// paper's checkpoints are stored.
fn stored_dtype(path: &Path) -> Dtype {
    #[derive(serde::Deserialize)]
    struct Dtypes {
        torch_dtype: Option<String>,
        dtype: Option<String>,
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Dtypes>(&text).ok())
        .and_then(|d| d.dtype.or(d.torch_dtype))
        .and_then(|name| Dtype::from_torch(&name))
        .unwrap_or(Dtype::Bf16)
}

/// One row of the built-in table, typed from the model's public `config.json`.
struct BuiltIn {
    /// Directory names that select it (lowercase); the first is shown.
    names: &'static [&'static str],
    qwen: Family,
    vocab: u64,
    hidden: u64,
    intermediate: u64,
    layers: u64,
    heads: u64,
    kv_heads: u64,
    tied: bool,
}

#[derive(Clone, Copy)]
enum Family {
    Qwen2,
    Qwen3,
    Llama,
    Olmo2,
}

impl BuiltIn {
    fn shape(&self) -> ModelShape {
        ModelShape {
            vocab: self.vocab,
            hidden: self.hidden,
            intermediate: self.intermediate,
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.hidden / self.heads,
            tied: self.tied,
            qkv_bias: matches!(self.qwen, Family::Qwen2),
            o_bias: false,
            mlp_bias: false,
            qk_norm: match self.qwen {
                Family::Qwen3 => QkNorm::PerHead,
                Family::Olmo2 => QkNorm::WholeProjection,
                Family::Qwen2 | Family::Llama => QkNorm::None,
            },
            post_sublayer_norms: matches!(self.qwen, Family::Olmo2),
            stored: Dtype::Bf16,
        }
    }
}

/// The paper's five base models (Qwen3-8B's `head_dim` 128 equals hidden / heads).
const BUILTIN: [BuiltIn; 5] = [
    BuiltIn {
        names: &["qwen2.5-3b"],
        qwen: Family::Qwen2,
        vocab: 151_936,
        hidden: 2048,
        intermediate: 11_008,
        layers: 36,
        heads: 16,
        kv_heads: 2,
        tied: true,
    },
    BuiltIn {
        names: &["qwen2.5-7b"],
        qwen: Family::Qwen2,
        vocab: 152_064,
        hidden: 3584,
        intermediate: 18_944,
        layers: 28,
        heads: 28,
        kv_heads: 4,
        tied: false,
    },
    BuiltIn {
        names: &["qwen3-8b-base", "qwen3-8b"],
        qwen: Family::Qwen3,
        vocab: 151_936,
        hidden: 4096,
        intermediate: 12_288,
        layers: 36,
        heads: 32,
        kv_heads: 8,
        tied: false,
    },
    BuiltIn {
        names: &["llama-3.1-8b", "meta-llama-3.1-8b", "llama3.1-8b"],
        qwen: Family::Llama,
        vocab: 128_256,
        hidden: 4096,
        intermediate: 14_336,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        tied: false,
    },
    BuiltIn {
        names: &["olmo-2-1124-7b", "olmo2-7b"],
        qwen: Family::Olmo2,
        vocab: 100_352,
        hidden: 4096,
        intermediate: 11_008,
        layers: 32,
        heads: 32,
        kv_heads: 32,
        tied: false,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(json: &str) -> ModelShape {
        let hf: HfConfig = serde_json::from_str(json).unwrap();
        ModelShape::from_config(&hf.resolve().unwrap(), Dtype::Bf16)
    }

    /// The five paper models' `config.json` values, typed by hand from the public files,
    /// against the parameter counts their model cards state.
    #[test]
    fn parameter_counts_of_the_paper_models() {
        let cases = [
            (
                r#"{"architectures": ["Qwen2ForCausalLM"], "vocab_size": 151936, "hidden_size": 2048,
                "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
                "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "tie_word_embeddings": true}"#,
                "Qwen2.5-3B",
                3_085_938_688u64,
            ),
            (
                r#"{"architectures": ["Qwen2ForCausalLM"], "vocab_size": 152064, "hidden_size": 3584,
                "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                "num_key_value_heads": 4, "rms_norm_eps": 1e-6, "tie_word_embeddings": false}"#,
                "Qwen2.5-7B",
                7_615_616_512,
            ),
            (
                r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 4096,
                "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "tie_word_embeddings": false}"#,
                "Llama-3.1-8B",
                8_030_261_248,
            ),
            (
                r#"{"architectures": ["Qwen3ForCausalLM"], "vocab_size": 151936, "hidden_size": 4096,
                "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
                "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6,
                "attention_bias": false, "tie_word_embeddings": false}"#,
                "Qwen3-8B-Base",
                8_190_735_360,
            ),
            (
                r#"{"architectures": ["Olmo2ForCausalLM"], "vocab_size": 100352, "hidden_size": 4096,
                "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 32, "rms_norm_eps": 1e-6, "attention_bias": false,
                "tie_word_embeddings": false}"#,
                "OLMo-2-1124-7B",
                7_298_617_344,
            ),
        ];
        for (json, dir, count) in cases {
            let shape = resolve(json);
            assert_eq!(shape.params(), count, "{dir}");
            let (_, builtin) = ModelShape::builtin(Path::new(dir)).unwrap();
            assert_eq!(builtin, shape, "built-in shape of {dir}");
        }
    }

    #[test]
    fn an_unknown_directory_has_no_builtin_shape() {
        assert!(ModelShape::builtin(Path::new("../models/gpt2")).is_none());
    }
}
