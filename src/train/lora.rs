//! LoRA (Hu et al. 2021) for the decoder: a trainable low-rank update on the linear layers
//! named in `target_modules` (HF names: `q_proj`, `v_proj`, ...), every base weight frozen.
//! Initialised as PEFT does (A Kaiming-uniform, B zero, scale alpha / r), saved in PEFT's
//! format (`adapter_config.json` + `adapter_model.safetensors`, keys
//! `base_model.model.<module>.lora_A.weight`), and merged (`W + scale · B A`) into a plain
//! HF checkpoint for evaluation.
//!
//! The update itself ([`LowRank`]) lives in the model's `Linear`, the one place the decoder
//! computes a projection; this file decides where it goes and how it is stored.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::prelude::*;
use serde_json::json;

use super::TrainError;
use super::checkpoint::{StoreDtype, read_safetensors, safetensors_bytes};
use super::params::HostTensor;
use crate::manifest::LORA_TARGETS;
use crate::model::CausalLm;
use crate::model::decoder::{Linear, LowRank};
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: Vec<String>,
}

impl LoraSpec {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    fn check(&self) -> Result<(), TrainError> {
        let bad = |message: String| TrainError::Setting {
            name: "adapter".into(),
            message,
        };
        if self.rank == 0 {
            return Err(bad("rank must be positive".into()));
        }
        if self.target_modules.is_empty() {
            return Err(bad("target_modules is empty".into()));
        }
        for m in &self.target_modules {
            if !LORA_TARGETS.contains(&m.as_str()) {
                return Err(bad(format!(
                    "unknown target module {m:?} (one of {LORA_TARGETS:?})"
                )));
            }
        }
        Ok(())
    }
}

/// The linear layers of one decoder layer, by HF name: the manifest's [`LORA_TARGETS`].
fn projections<B: Backend>(
    layer: &mut crate::model::decoder::DecoderLayer<B>,
) -> [(&'static str, &mut Linear<B>); 7] {
    let (attn, mlp) = (&mut layer.self_attn, &mut layer.mlp);
    [
        ("q_proj", &mut attn.q_proj),
        ("k_proj", &mut attn.k_proj),
        ("v_proj", &mut attn.v_proj),
        ("o_proj", &mut attn.o_proj),
        ("gate_proj", &mut mlp.gate_proj),
        ("up_proj", &mut mlp.up_proj),
        ("down_proj", &mut mlp.down_proj),
    ]
}

/// Freezes every weight of `model` and attaches fresh adapters to the target modules
/// (A uniform in ±1/sqrt(in), as PEFT's Kaiming init; B zero, so training starts at the base).
pub fn attach<B: Backend>(
    model: CausalLm<B>,
    spec: &LoraSpec,
    seed: u64,
) -> Result<CausalLm<B>, TrainError> {
    spec.check()?;
    let mut model = model.no_grad();
    let device = model.model.embed_tokens.weight.val().device();
    let mut rng = Rng::stream(seed, "lora-init");
    for layer in model.model.layers.iter_mut() {
        for (name, linear) in projections(layer) {
            if !spec.target_modules.iter().any(|m| m == name) {
                continue;
            }
            let [d_out, d_in] = linear.weight.val().dims();
            let bound = 1.0 / (d_in as f64).sqrt();
            let a: Vec<f32> = (0..spec.rank * d_in)
                .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
                .collect();
            let b = vec![0.0f32; d_out * spec.rank];
            linear.lora = Some(low_rank(a, b, [spec.rank, d_in, d_out], spec, &device));
        }
    }
    Ok(model)
}

fn low_rank<B: Backend>(
    a: Vec<f32>,
    b: Vec<f32>,
    [r, d_in, d_out]: [usize; 3],
    spec: &LoraSpec,
    device: &B::Device,
) -> LowRank<B> {
    let tensor = |v: Vec<f32>, shape: [usize; 2]| {
        Param::from_tensor(Tensor::<B, 2>::from_data(TensorData::new(v, shape), device))
    };
    LowRank {
        a: tensor(a, [r, d_in]),
        b: tensor(b, [d_out, r]),
        scale: spec.scale(),
        dropout: spec.dropout,
    }
}

/// Whether any adapter of `model` applies dropout (and so draws random numbers).
pub fn has_dropout<B: Backend>(model: &CausalLm<B>) -> bool {
    model.model.layers.iter().any(|layer| {
        let (a, m) = (&layer.self_attn, &layer.mlp);
        [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &m.gate_proj,
            &m.up_proj,
            &m.down_proj,
        ]
        .iter()
        .any(|l| l.lora.as_ref().is_some_and(|r| r.dropout > 0.0))
    })
}

/// Our parameter name of an adapter matrix → PEFT's key, e.g.
/// `model.layers.0.self_attn.q_proj.lora.a` → `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
pub fn peft_key(name: &str) -> Option<String> {
    let (module, which) = name.rsplit_once(".lora.")?;
    let matrix = match which {
        "a" => "lora_A",
        "b" => "lora_B",
        _ => return None,
    };
    Some(format!("base_model.model.{module}.{matrix}.weight"))
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir`; returns the
/// file names.
pub fn write_peft(
    dir: &Path,
    values: &BTreeMap<String, HostTensor>,
    spec: &LoraSpec,
) -> Result<Vec<String>, TrainError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tensors: BTreeMap<String, HostTensor> = values
        .iter()
        .filter_map(|(name, v)| peft_key(name).map(|k| (k, v.clone())))
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors_bytes(&tensors, StoreDtype::F32, Some(meta))?;
    let weights = dir.join("adapter_model.safetensors");
    std::fs::write(&weights, bytes).map_err(io(&weights))?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": spec.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "base_model_name_or_path": null,
    });
    let path = dir.join("adapter_config.json");
    let text =
        serde_json::to_string_pretty(&config).map_err(|e| TrainError::State(e.to_string()))?;
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(vec![
        "adapter_config.json".into(),
        "adapter_model.safetensors".into(),
    ])
}

/// Reads a PEFT adapter directory and attaches it to `model` (every weight frozen, the
/// adapters trainable).
pub fn load_peft<B: Backend>(model: CausalLm<B>, dir: &Path) -> Result<CausalLm<B>, TrainError> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::State(format!("{}: {e}", path.display())))?;
    let spec = LoraSpec {
        rank: config["r"].as_u64().unwrap_or(0) as usize,
        alpha: config["lora_alpha"].as_f64().unwrap_or(0.0),
        dropout: config["lora_dropout"].as_f64().unwrap_or(0.0),
        target_modules: serde_json::from_value(config["target_modules"].clone())
            .map_err(|e| TrainError::State(format!("{}: target_modules: {e}", path.display())))?,
    };
    let bytes_path = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&bytes_path).map_err(|source| TrainError::Io {
        path: bytes_path.clone(),
        source,
    })?;
    let (mut tensors, _) = read_safetensors(&bytes)?;
    let mut model = attach(model, &spec, 0)?;
    let device = model.model.embed_tokens.weight.val().device();
    for (i, layer) in model.model.layers.iter_mut().enumerate() {
        for (name, linear) in projections(layer) {
            let Some(old) = linear.lora.take() else {
                continue;
            };
            let module = if ["q_proj", "k_proj", "v_proj", "o_proj"].contains(&name) {
                format!("model.layers.{i}.self_attn.{name}")
            } else {
                format!("model.layers.{i}.mlp.{name}")
            };
            let mut take = |m: &str, shape: [usize; 2]| {
                let key = format!("base_model.model.{module}.{m}.weight");
                match tensors.remove(&key) {
                    Some((s, v)) if s == shape => Ok(v),
                    Some((s, _)) => Err(TrainError::State(format!(
                        "{key}: shape {s:?}, expected {shape:?}"
                    ))),
                    None => Err(TrainError::State(format!("{key} missing from the adapter"))),
                }
            };
            let [r, d_in] = old.a.val().dims();
            let [d_out, _] = old.b.val().dims();
            let a = take("lora_A", [r, d_in])?;
            let b = take("lora_B", [d_out, r])?;
            linear.lora = Some(low_rank(a, b, [r, d_in, d_out], &spec, &device));
        }
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(TrainError::State(format!(
            "adapter tensor {extra} is not used"
        )));
    }
    Ok(model)
}

/// The weights of a plain HF checkpoint: each adapted weight merged, `W + scale · B A`, and
/// the adapter matrices dropped.
pub fn merged_values<B: Backend>(model: &CausalLm<B>) -> BTreeMap<String, HostTensor> {
    let mut values = super::params::named_values(model);
    let device = model.model.embed_tokens.weight.val().device();
    for (i, layer) in model.model.layers.iter().enumerate() {
        let attn = &layer.self_attn;
        let mlp = &layer.mlp;
        let linears = [
            ("self_attn.q_proj", &attn.q_proj),
            ("self_attn.k_proj", &attn.k_proj),
            ("self_attn.v_proj", &attn.v_proj),
            ("self_attn.o_proj", &attn.o_proj),
            ("mlp.gate_proj", &mlp.gate_proj),
            ("mlp.up_proj", &mlp.up_proj),
            ("mlp.down_proj", &mlp.down_proj),
        ];
        for (name, linear) in linears {
            let Some(lora) = &linear.lora else { continue };
            let prefix = format!("model.layers.{i}.{name}");
            let w = linear.weight.val().cast(burn::tensor::DType::F32); // [out, in]
            let delta = lora.b.val().matmul(lora.a.val()) * lora.scale; // [out, in]
            let merged = (w + delta.cast(burn::tensor::DType::F32)).to_device(&device);
            let shape = merged.dims().to_vec();
            let data = merged.into_data().to_vec::<f32>().unwrap_or_default();
            values.insert(format!("{prefix}.weight"), (shape, data));
            values.remove(&format!("{prefix}.lora.a"));
            values.remove(&format!("{prefix}.lora.b"));
        }
    }
    values
}
