//! An HF model directory → [`CausalLm`]: `config.json` and `model.safetensors`, or shards
//! listed in `model.safetensors.index.json`; weights in f32, bf16 or f16.
//!
//! Strict both ways: every parameter of the module must be found with the shape the config
//! implies, and every tensor in the files must be used; either failure names the tensor. The
//! one tolerated extra is an `lm_head.weight` that equals the embedding of a tied model.
//!
//! Half-precision weights become f32 unless [`LoadOptions::keep_half`] is set (the CUDA path,
//! where bf16 stays bf16); the CPU backend computes in f32.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::DType;
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::ModelError;
use super::config::{DecoderConfig, HfConfig, QkNorm};
use super::decoder::{Attention, CausalLm, DecoderLayer, Embedding, Linear, Mlp, Model, RmsNorm};
use super::rope::Rope;

/// How weights are materialised.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Keep bf16/f16 weights in their stored dtype instead of converting them to f32.
    pub keep_half: bool,
    /// Convert every weight to this float dtype, whatever it is stored as (training's
    /// `precision`); overrides `keep_half`.
    pub dtype: Option<burn::tensor::DType>,
}

/// Reads `config.json` and the weights of an HF directory onto `device`.
pub fn load_causal_lm<B: Backend>(
    dir: &Path,
    device: &B::Device,
    options: LoadOptions,
) -> Result<CausalLm<B>, ModelError> {
    let config = HfConfig::from_file(&dir.join("config.json"))?.resolve()?;
    let mut weights = Weights::read(dir, options)?;
    let model = build(&config, &mut weights, device)?;
    weights.finish(&config, &model)?;
    Ok(model)
}

/// The weight files of a directory: the single file, or the shards named by the index.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    if !index_path.is_file() {
        return Err(ModelError::MissingFile {
            path: single,
            hint: "neither model.safetensors nor model.safetensors.index.json exists".into(),
        });
    }
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(&index_path).map_err(|source| ModelError::Io {
        path: index_path.clone(),
        source,
    })?;
    let index: Index = serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: index_path.clone(),
        source,
    })?;
    let mut files: Vec<PathBuf> = index.weight_map.values().map(|f| dir.join(f)).collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// Tensors read from the files, by checkpoint name, not yet turned into parameters.
struct Weights {
    tensors: HashMap<String, (TensorData, PathBuf)>,
}

impl Weights {
    fn read(dir: &Path, options: LoadOptions) -> Result<Self, ModelError> {
        let mut tensors = HashMap::new();
        for path in weight_files(dir)? {
            let bytes = std::fs::read(&path).map_err(|source| ModelError::Io {
                path: path.clone(),
                source,
            })?;
            let file = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for (name, view) in file.iter() {
                let data = to_tensor_data(view.dtype(), view.shape(), view.data(), options)
                    .ok_or_else(|| ModelError::UnsupportedDtype {
                        tensor: name.to_string(),
                        dtype: format!("{:?}", view.dtype()),
                    })?;
                if tensors
                    .insert(name.to_string(), (data, path.clone()))
                    .is_some()
                {
                    return Err(ModelError::DuplicateTensor(name.to_string()));
                }
            }
        }
        Ok(Self { tensors })
    }

    /// Removes `name` and checks its shape.
    fn take<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Param<Tensor<B, D>>, ModelError> {
        let (data, path) = self
            .tensors
            .remove(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if data.shape.as_slice() != shape.as_slice() {
            return Err(ModelError::ShapeMismatch {
                tensor: name.to_string(),
                file: path,
                expected: shape.to_vec(),
                found: data.shape.as_slice().to_vec(),
            });
        }
        let dtype = data.dtype;
        Ok(Param::from_tensor(Tensor::from_data(data, (device, dtype))))
    }

    fn linear<B: Backend>(
        &mut self,
        prefix: &str,
        [d_in, d_out]: [usize; 2],
        bias: bool,
        device: &B::Device,
    ) -> Result<Linear<B>, ModelError> {
        Ok(Linear {
            weight: self.take(&format!("{prefix}.weight"), [d_out, d_in], device)?,
            bias: match bias {
                true => Some(self.take(&format!("{prefix}.bias"), [d_out], device)?),
                false => None,
            },
            lora: None,
        })
    }

    fn norm<B: Backend>(
        &mut self,
        name: &str,
        dim: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<RmsNorm<B>, ModelError> {
        Ok(RmsNorm {
            weight: self.take(&format!("{name}.weight"), [dim], device)?,
            eps,
        })
    }

    /// Everything left over is an error, except a tied model's copy of the embedding.
    fn finish<B: Backend>(
        mut self,
        config: &DecoderConfig,
        model: &CausalLm<B>,
    ) -> Result<(), ModelError> {
        if config.tie_word_embeddings
            && let Some((head, _)) = self.tensors.remove("lm_head.weight")
        {
            let embedding = model.model.embed_tokens.weight.val().into_data();
            if head.convert_dtype(DType::F32) != embedding.convert_dtype(DType::F32) {
                return Err(ModelError::UnusedTensor(
                    "lm_head.weight (the config ties embeddings, but it differs from \
                     model.embed_tokens.weight)"
                        .into(),
                ));
            }
        }
        let mut left: Vec<String> = self.tensors.into_keys().collect();
        left.sort();
        match left.first() {
            Some(first) => Err(ModelError::UnusedTensor(match left.len() {
                1 => first.clone(),
                n => format!("{first} (and {} more)", n - 1),
            })),
            None => Ok(()),
        }
    }
}

/// Little-endian safetensors bytes → f32 `TensorData` (or bf16/f16 with `keep_half`).
fn to_tensor_data(
    dtype: Dtype,
    shape: &[usize],
    bytes: &[u8],
    options: LoadOptions,
) -> Option<TensorData> {
    if let Some(target) = options.dtype {
        let widened = LoadOptions {
            keep_half: false,
            dtype: None,
        };
        return to_tensor_data(dtype, shape, bytes, widened).map(|d| d.convert_dtype(target));
    }
    let shape = shape.to_vec();
    let pairs = || bytes.chunks_exact(2).map(|c| [c[0], c[1]]);
    Some(match dtype {
        Dtype::F32 => {
            let v: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            TensorData::new(v, shape)
        }
        Dtype::BF16 if options.keep_half => {
            TensorData::new(pairs().map(bf16::from_le_bytes).collect::<Vec<_>>(), shape)
        }
        Dtype::BF16 => TensorData::new(
            pairs()
                .map(|p| bf16::from_le_bytes(p).to_f32())
                .collect::<Vec<_>>(),
            shape,
        ),
        Dtype::F16 if options.keep_half => {
            TensorData::new(pairs().map(f16::from_le_bytes).collect::<Vec<_>>(), shape)
        }
        Dtype::F16 => TensorData::new(
            pairs()
                .map(|p| f16::from_le_bytes(p).to_f32())
                .collect::<Vec<_>>(),
            shape,
        ),
        _ => return None,
    })
}

/// Builds the module from the checkpoint, one tensor name at a time.
fn build<B: Backend>(
    c: &DecoderConfig,
    w: &mut Weights,
    device: &B::Device,
) -> Result<CausalLm<B>, ModelError> {
    let (hidden, d) = (c.hidden_size, c.head_dim);
    let (q_dim, kv_dim) = (c.num_attention_heads * d, c.num_key_value_heads * d);
    let eps = c.rms_norm_eps;
    let embed_tokens = Embedding {
        weight: w.take("model.embed_tokens.weight", [c.vocab_size, hidden], device)?,
    };
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let (q_norm, k_norm) = match c.qk_norm {
            QkNorm::None => (None, None),
            QkNorm::PerHead => (
                Some(w.norm(&format!("{p}.self_attn.q_norm"), d, eps, device)?),
                Some(w.norm(&format!("{p}.self_attn.k_norm"), d, eps, device)?),
            ),
            QkNorm::WholeProjection => (
                Some(w.norm(&format!("{p}.self_attn.q_norm"), q_dim, eps, device)?),
                Some(w.norm(&format!("{p}.self_attn.k_norm"), kv_dim, eps, device)?),
            ),
        };
        let self_attn = Attention {
            q_proj: w.linear(
                &format!("{p}.self_attn.q_proj"),
                [hidden, q_dim],
                c.qkv_bias,
                device,
            )?,
            k_proj: w.linear(
                &format!("{p}.self_attn.k_proj"),
                [hidden, kv_dim],
                c.qkv_bias,
                device,
            )?,
            v_proj: w.linear(
                &format!("{p}.self_attn.v_proj"),
                [hidden, kv_dim],
                c.qkv_bias,
                device,
            )?,
            o_proj: w.linear(
                &format!("{p}.self_attn.o_proj"),
                [q_dim, hidden],
                c.o_bias,
                device,
            )?,
            q_norm,
            k_norm,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_key_value_heads,
            head_dim: d,
            per_head_qk_norm: c.qk_norm == QkNorm::PerHead,
        };
        let inter = c.intermediate_size;
        let mlp = Mlp {
            gate_proj: w.linear(
                &format!("{p}.mlp.gate_proj"),
                [hidden, inter],
                c.mlp_bias,
                device,
            )?,
            up_proj: w.linear(
                &format!("{p}.mlp.up_proj"),
                [hidden, inter],
                c.mlp_bias,
                device,
            )?,
            down_proj: w.linear(
                &format!("{p}.mlp.down_proj"),
                [inter, hidden],
                c.mlp_bias,
                device,
            )?,
        };
        let input_layernorm = match c.post_sublayer_norms {
            true => None,
            false => Some(w.norm(&format!("{p}.input_layernorm"), hidden, eps, device)?),
        };
        let post_feedforward_layernorm = match c.post_sublayer_norms {
            true => Some(w.norm(
                &format!("{p}.post_feedforward_layernorm"),
                hidden,
                eps,
                device,
            )?),
            false => None,
        };
        layers.push(DecoderLayer {
            self_attn,
            mlp,
            input_layernorm,
            post_attention_layernorm: w.norm(
                &format!("{p}.post_attention_layernorm"),
                hidden,
                eps,
                device,
            )?,
            post_feedforward_layernorm,
        });
    }
    let norm = w.norm("model.norm", hidden, eps, device)?;
    let lm_head = match c.tie_word_embeddings {
        true => None,
        false => Some(w.linear("lm_head", [hidden, c.vocab_size], false, device)?),
    };
    Ok(CausalLm {
        model: Model {
            embed_tokens,
            layers,
            norm,
        },
        lm_head,
        rope: Rope::new(c),
        config: c.clone(),
    })
}
