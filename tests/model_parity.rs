//! Logits of the burn decoder against HF transformers (eager, f32, CPU) on the committed
//! tiny random models of each family: within 1e-4 at every position, alone and left-padded.

mod common;

use burn::prelude::*;
use common::{B, FAMILIES, load, max_abs_diff, reference};

const TOLERANCE: f32 = 1e-4;

/// Logits `[t, vocab]` of each prompt run alone.
fn single_logits(family: &str) -> f32 {
    let model = load(family);
    let r = reference(family);
    let device = Default::default();
    let mut worst = 0f32;
    for (prompt, (t, v, expected)) in r.prompts.iter().zip(&r.logits) {
        let ids: Vec<i32> = prompt.iter().map(|&x| x as i32).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, *t]), &device);
        let valid =
            Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![true; *t], [1, *t]), &device);
        let logits = model.lm.forward(ids, valid);
        assert_eq!(logits.dims(), [1, *t, *v]);
        let got = logits.into_data().to_vec::<f32>().unwrap();
        worst = worst.max(max_abs_diff(&got, expected));
    }
    worst
}

/// All prompts as one left-padded batch; only the real positions are compared.
fn batched_logits(family: &str) -> f32 {
    let model = load(family);
    let r = reference(family);
    let device = Default::default();
    let n = r.prompts.len();
    let width = r.prompts.iter().map(Vec::len).max().unwrap();
    let mut ids = Vec::new();
    let mut valid = Vec::new();
    for p in &r.prompts {
        let pad = width - p.len();
        ids.extend(std::iter::repeat_n(r.pad_id as i32, pad).chain(p.iter().map(|&x| x as i32)));
        valid.extend(std::iter::repeat_n(false, pad).chain(std::iter::repeat_n(true, p.len())));
    }
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, width]), &device);
    let valid = Tensor::<B, 2, Bool>::from_data(TensorData::new(valid, [n, width]), &device);
    let logits = model.lm.forward(ids, valid); // [n, width, vocab]
    let mut worst = 0f32;
    for (row, (p, (t, v, expected))) in r.prompts.iter().zip(&r.logits).enumerate() {
        let pad = width - p.len();
        let got = logits
            .clone()
            .slice([row..row + 1, pad..width, 0..*v])
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(got.len(), t * v);
        worst = worst.max(max_abs_diff(&got, expected));
    }
    worst
}

#[test]
fn logits_match_transformers_for_every_family() {
    for family in FAMILIES.into_iter().chain(["qwen2-bf16"]) {
        let single = single_logits(family);
        let batched = batched_logits(family);
        eprintln!(
            "{family}: max |logit diff| single {single:.2e}, left-padded batch {batched:.2e}"
        );
        assert!(
            single <= TOLERANCE,
            "{family}: single-prompt logits differ by {single}"
        );
        assert!(
            batched <= TOLERANCE,
            "{family}: batched logits differ by {batched}"
        );
    }
}

#[test]
fn tokenizer_and_chat_template_match_transformers() {
    let model = load("qwen2");
    let r = reference("qwen2");
    for case in r.tokenizer.unwrap() {
        assert_eq!(
            model.tokenizer.encode(&case.text, true).unwrap(),
            case.ids,
            "{}",
            case.text
        );
    }
    let chat = r.chat.unwrap();
    let rendered = model
        .tokenizer
        .apply_chat_template(&chat.messages, true)
        .unwrap();
    assert_eq!(rendered, chat.rendered);
    assert_eq!(model.eos_token_ids, vec![2]);
}

/// The CUDA path keeps bf16 weights in bf16; the CPU backend can run it too. bf16 activations
/// are coarse (8 bits of mantissa): transformers itself, run in bf16 on these weights, is 0.40
/// away from the f32 reference, so the bound is that loose; it catches a wrong path, not rounding.
#[test]
fn bf16_weights_can_stay_bf16() {
    use cft::model::{LanguageModel, LoadOptions};
    let dir = common::fixture("qwen2-bf16");
    let model = LanguageModel::<B>::load(
        &dir,
        &Default::default(),
        LoadOptions {
            keep_half: true,
            dtype: None,
        },
    )
    .unwrap();
    assert_eq!(model.lm.dtype(), burn::tensor::DType::BF16);
    let r = reference("qwen2-bf16");
    let device = Default::default();
    let (t, v, expected) = &r.logits[2];
    let ids: Vec<i32> = r.prompts[2].iter().map(|&x| x as i32).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, *t]), &device);
    let valid = Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![true; *t], [1, *t]), &device);
    let logits = model.lm.forward(ids, valid);
    let got = logits.into_data().to_vec::<f32>().unwrap();
    assert_eq!(got.len(), t * v);
    let worst = max_abs_diff(&got, expected);
    eprintln!("qwen2-bf16 computed in bf16: max |logit diff| {worst:.2e}");
    assert!(worst < 0.5, "bf16 logits differ by {worst}");
}
