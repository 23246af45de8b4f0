//! A checkpoint that does not fit the config is refused with an error naming the tensor.

mod common;

use std::collections::HashMap;
use std::path::Path;

use cft::model::{LanguageModel, LoadOptions, ModelError};
use common::{B, fixture};
use safetensors::tensor::TensorView;

/// Copies the qwen2 fixture into a temporary directory, letting `edit` change its tensors.
fn edited_copy(
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("qwen2")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = file
        .iter()
        .map(|(name, view)| {
            (
                name.to_string(),
                (view.shape().to_vec(), view.data().to_vec()),
            )
        })
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, (shape, data))| {
            let view = TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    dir
}

fn load(dir: &Path) -> Result<LanguageModel<B>, ModelError> {
    LanguageModel::load(dir, &Default::default(), LoadOptions::default())
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = edited_copy(|t| {
        t.remove("model.layers.1.self_attn.k_proj.bias");
    });
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor(n) if n == "model.layers.1.self_attn.k_proj.bias"),
        "{err}"
    );
}

#[test]
fn an_unused_tensor_is_named() {
    let dir = edited_copy(|t| {
        t.insert("model.layers.0.extra.weight".into(), (vec![2], vec![0; 8]));
    });
    let err = load(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("model.layers.0.extra.weight"),
        "{err}"
    );
}

#[test]
fn a_shape_mismatch_is_named() {
    let dir = edited_copy(|t| {
        t.insert("model.norm.weight".into(), (vec![32], vec![0; 128]));
    });
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ModelError::ShapeMismatch { tensor, .. } if tensor == "model.norm.weight"),
        "{err}"
    );
}

#[test]
fn missing_weights_and_unknown_architectures_are_clear_errors() {
    let dir = edited_copy(|_| {});
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert!(matches!(
        load(dir.path()),
        Err(ModelError::MissingFile { .. })
    ));

    let dir = edited_copy(|_| {});
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("Qwen2ForCausalLM", "MambaForCausalLM"),
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("MambaForCausalLM"), "{err}");
}
