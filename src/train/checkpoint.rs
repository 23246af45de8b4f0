//! HF-format checkpoints: `model.safetensors` written from the module's parameters by their
//! checkpoint names, next to the base model's `config.json` and tokenizer files, so the
//! result loads in `cft generate` and in `transformers` exactly like a downloaded model.
//! The training state (weights, Adam moments, step) is a safetensors file too, with the
//! scalars in its metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::TrainError;
use super::params::HostTensor;

/// Files of a model directory carried over unchanged from the base model.
pub const CARRIED_FILES: [&str; 8] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
];

/// The storage dtype of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    Bf16,
}

/// safetensors bytes of `tensors` (sorted by name), with optional string metadata.
pub fn safetensors_bytes(
    tensors: &BTreeMap<String, HostTensor>,
    dtype: StoreDtype,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, TrainError> {
    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let bytes = match dtype {
                StoreDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                StoreDtype::Bf16 => values
                    .iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect(),
            };
            (name.clone(), shape.clone(), bytes)
        })
        .collect();
    let st_dtype = match dtype {
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::Bf16 => Dtype::BF16,
    };
    let views = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(st_dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| TrainError::State(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, metadata).map_err(|e| TrainError::State(e.to_string()))
}

/// Tensors by name and the string metadata of a safetensors file.
pub type Contents = (BTreeMap<String, HostTensor>, HashMap<String, String>);

/// Reads every tensor of safetensors bytes as f32, and the metadata.
pub fn read_safetensors(bytes: &[u8]) -> Result<Contents, TrainError> {
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| TrainError::State(e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(bytes).map_err(|e| TrainError::State(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.iter() {
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::BF16 => view
                .data()
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => return Err(TrainError::State(format!("tensor {name}: dtype {other:?}"))),
        };
        out.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    Ok((out, metadata))
}

/// Writes an HF model directory into `out`: `model.safetensors` from `tensors` and the
/// carried files of `base` (those that exist). Returns the written file names.
pub fn write_model_dir(
    out: &Path,
    base: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    dtype: StoreDtype,
) -> Result<Vec<String>, TrainError> {
    let io = |path: PathBuf| move |source| TrainError::Io { path, source };
    std::fs::create_dir_all(out).map_err(io(out.to_path_buf()))?;
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors_bytes(tensors, dtype, Some(metadata))?;
    let weights = out.join("model.safetensors");
    std::fs::write(&weights, bytes).map_err(io(weights.clone()))?;
    let mut names = vec!["model.safetensors".to_string()];
    for file in CARRIED_FILES {
        let from = base.join(file);
        if from.is_file() {
            let to = out.join(file);
            if base != out {
                std::fs::copy(&from, &to).map_err(io(to.clone()))?;
            }
            names.push(file.to_string());
        }
    }
    Ok(names)
}
