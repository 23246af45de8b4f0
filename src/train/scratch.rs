//! A model directory from nothing, for the built-in toy family's `pretrain` stage: a small
//! byte-level BPE tokenizer trained on the corpus (digits always single tokens, so numbers
//! are spelled digit by digit as in Qwen's tokenizer), an HF `config.json` of the chosen
//! architecture, and randomly initialised weights (normal, std 0.02, as HF's
//! `initializer_range`; norms 1, biases 0). Written as files, then loaded like any
//! checkpoint, so the pretrained model is an ordinary HF directory.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::ModelWrapper;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, TokenizerImpl};

use super::TrainError;
use super::checkpoint::{StoreDtype, write_model_dir};
use super::params::HostTensor;
use crate::rng::Rng;

/// Ends every document; also the EOS of generation.
pub const EOS: &str = "<|endoftext|>";
pub const PAD: &str = "<|pad|>";

/// The toy architecture (the manifest's `[models.toy]`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ToyArch {
    pub architecture: String,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
    pub max_position: usize,
    pub vocab_size: usize,
}

fn setting(message: String) -> TrainError {
    TrainError::Setting {
        name: "toy".into(),
        message,
    }
}

/// Trains the tokenizer on `texts` and writes `tokenizer.json` and `tokenizer_config.json`
/// into `dir`; returns the vocabulary size (at most `max_vocab`).
pub fn write_tokenizer(
    dir: &Path,
    texts: &[String],
    max_vocab: usize,
) -> Result<usize, TrainError> {
    type Impl = TokenizerImpl<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >;
    let mut tokenizer: Impl = TokenizerImpl::new(ModelWrapper::BPE(BPE::default()));
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]))));
    tokenizer.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let specials = vec![AddedToken::from(EOS, true), AddedToken::from(PAD, true)];
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainerBuilder::new()
            .vocab_size(max_vocab)
            .show_progress(false)
            .special_tokens(specials.clone())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| setting(format!("tokenizer training: {e}")))?;
    tokenizer.add_special_tokens(&specials);
    let path = dir.join("tokenizer.json");
    tokenizer
        .save(&path, false)
        .map_err(|e| setting(format!("{}: {e}", path.display())))?;
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS,
        "pad_token": PAD,
        "bos_token": null,
        "add_bos_token": false,
        "model_max_length": 1_000_000,
    });
    write_json(&dir.join("tokenizer_config.json"), &config)?;
    Ok(tokenizer.get_vocab_size(true))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| setting(e.to_string()))?;
    std::fs::write(path, text).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `config.json` and random `model.safetensors` for `arch` into `dir` (which already
/// holds the tokenizer files); `vocab` is the tokenizer's size, `eos`/`pad` its ids.
pub fn write_random_model(
    dir: &Path,
    arch: &ToyArch,
    vocab: usize,
    (eos, pad): (u32, u32),
    seed: u64,
) -> Result<(), TrainError> {
    // The toy family trains llama and qwen2; benchmarks also write qwen3 (per-head QK norms)
    // and olmo2 (whole-projection QK norms, norms after each sublayer) at real shapes.
    let (model_type, class, bias) = match arch.architecture.as_str() {
        "llama" => ("llama", "LlamaForCausalLM", false),
        "qwen2" => ("qwen2", "Qwen2ForCausalLM", true),
        "qwen3" => ("qwen3", "Qwen3ForCausalLM", false),
        "olmo2" => ("olmo2", "Olmo2ForCausalLM", false),
        other => {
            return Err(setting(format!(
                "unknown architecture {other:?} (llama, qwen2, qwen3, olmo2)"
            )));
        }
    };
    let (h, heads, kv) = (arch.hidden_size, arch.num_heads, arch.num_kv_heads);
    if heads == 0 || kv == 0 || h % heads != 0 || heads % kv != 0 {
        return Err(setting(format!(
            "hidden_size {h}, num_heads {heads}, num_kv_heads {kv}: heads must divide the \
             hidden size and key/value heads the heads"
        )));
    }
    let d = h / heads;
    let config = json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": h,
        "intermediate_size": arch.intermediate_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": d,
        "max_position_embeddings": arch.max_position,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": true,
        "attention_bias": false,
        "use_sliding_window": false,
        "bos_token_id": null,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": "float32",
    });
    write_json(&dir.join("config.json"), &config)?;

    // name -> shape; f = normal(0, 0.02), o = ones, z = zeros
    let mut specs: Vec<(String, Vec<usize>, char)> =
        vec![("model.embed_tokens.weight".into(), vec![vocab, h], 'f')];
    for i in 0..arch.num_layers {
        let p = format!("model.layers.{i}");
        let i_size = arch.intermediate_size;
        for (name, out, inp) in [
            ("self_attn.q_proj", heads * d, h),
            ("self_attn.k_proj", kv * d, h),
            ("self_attn.v_proj", kv * d, h),
            ("self_attn.o_proj", h, heads * d),
            ("mlp.gate_proj", i_size, h),
            ("mlp.up_proj", i_size, h),
            ("mlp.down_proj", h, i_size),
        ] {
            specs.push((format!("{p}.{name}.weight"), vec![out, inp], 'f'));
            if bias
                && matches!(
                    name,
                    "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj"
                )
            {
                specs.push((format!("{p}.{name}.bias"), vec![out], 'z'));
            }
        }
        match model_type {
            "qwen3" => {
                specs.push((format!("{p}.self_attn.q_norm.weight"), vec![d], 'o'));
                specs.push((format!("{p}.self_attn.k_norm.weight"), vec![d], 'o'));
            }
            "olmo2" => {
                specs.push((format!("{p}.self_attn.q_norm.weight"), vec![heads * d], 'o'));
                specs.push((format!("{p}.self_attn.k_norm.weight"), vec![kv * d], 'o'));
            }
            _ => {}
        }
        if model_type != "olmo2" {
            specs.push((format!("{p}.input_layernorm.weight"), vec![h], 'o'));
        } else {
            specs.push((
                format!("{p}.post_feedforward_layernorm.weight"),
                vec![h],
                'o',
            ));
        }
        specs.push((format!("{p}.post_attention_layernorm.weight"), vec![h], 'o'));
    }
    specs.push(("model.norm.weight".into(), vec![h], 'o'));

    let mut rng = Rng::stream(seed, "pretrain-init");
    let mut tensors: BTreeMap<String, HostTensor> = BTreeMap::new();
    for (name, shape, kind) in specs {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match kind {
            'f' => (0..n).map(|_| (normal(&mut rng) * 0.02) as f32).collect(),
            'o' => vec![1.0; n],
            _ => vec![0.0; n],
        };
        tensors.insert(name, (shape, values));
    }
    // The directory is its own base: config and tokenizer are already there.
    write_model_dir(dir, dir, &tensors, StoreDtype::F32).map(|_| ())
}

/// Box-Muller standard normal.
fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.unit().max(1e-300);
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LanguageModel, LoadOptions};
    use burn::backend::Flex;

    /// Every layout the writer knows loads as that family: every tensor the loader expects is
    /// there, and none is left over.
    #[test]
    fn random_models_of_every_family_load() {
        for family in ["llama", "qwen2", "qwen3", "olmo2"] {
            let dir = tempfile::tempdir().unwrap();
            let texts = vec!["Question: 1 and 2.\nAnswer: 3 #### 3".to_string()];
            let vocab = write_tokenizer(dir.path(), &texts, 300).unwrap();
            let arch = ToyArch {
                architecture: family.into(),
                hidden_size: 16,
                num_layers: 2,
                num_heads: 4,
                num_kv_heads: 2,
                intermediate_size: 32,
                max_position: 64,
                vocab_size: vocab,
            };
            write_random_model(dir.path(), &arch, vocab, (0, 1), 7).unwrap();
            let lm = LanguageModel::<Flex>::load(
                dir.path(),
                &Default::default(),
                LoadOptions::default(),
            );
            let lm = lm.unwrap_or_else(|e| panic!("{family}: {e}"));
            assert_eq!(lm.lm.config.num_hidden_layers, 2, "{family}");
        }
        let mut bad = ToyArch {
            architecture: "gpt2".into(),
            hidden_size: 16,
            num_layers: 1,
            num_heads: 4,
            num_kv_heads: 2,
            intermediate_size: 32,
            max_position: 64,
            vocab_size: 10,
        };
        let dir = tempfile::tempdir().unwrap();
        let err = write_random_model(dir.path(), &bad, 10, (0, 1), 7).unwrap_err();
        assert!(err.to_string().contains("olmo2"), "{err}");
        bad.architecture = "llama".into();
        bad.num_kv_heads = 3;
        assert!(write_random_model(dir.path(), &bad, 10, (0, 1), 7).is_err());
    }
}
