//! Logits of the burn decoder against HF transformers (eager, f32, CPU) on the committed
//! tiny random models of each family: within 1e-4 at every position, alone and left-padded.

mod common;

use burn::prelude::*;
use cft::parity;
use common::{B, FAMILIES, load, max_abs_diff, reference};

/// Every prompt alone, then all of them as one left-padded batch (only the real positions
/// compared), through `cft::parity` — the code `cft check parity --device cuda` runs.
#[test]
fn logits_match_transformers_for_every_family() {
    let device = Default::default();
    for family in FAMILIES.into_iter().chain(["qwen2-bf16"]) {
        let model = load(family);
        let r = reference(family);
        let single = parity::single_logits(&model, &r, &device).unwrap();
        let batched = parity::batched_logits(&model, &r, &device).unwrap();
        eprintln!(
            "{family}: max |logit diff| single {:.2e}, left-padded batch {:.2e}",
            single.worst, batched.worst
        );
        assert_eq!(single.tolerance, 1e-4);
        assert!(
            single.passed(),
            "{family}: single-prompt logits differ by {} ({:?})",
            single.worst,
            single.mismatches
        );
        assert!(
            batched.passed(),
            "{family}: batched logits differ by {} ({:?})",
            batched.worst,
            batched.mismatches
        );
    }
}

/// A comparison fails on a difference past its tolerance, on a NaN and on any exact mismatch.
#[test]
fn a_comparison_fails_when_the_numbers_differ() {
    let model = load("llama");
    let mut r = reference("llama");
    r.logits[1].2[7] += 3e-4;
    let c = parity::single_logits(&model, &r, &Default::default()).unwrap();
    assert!(!c.passed() && c.worst > 2e-4 && c.worst < 4e-4, "{c:?}");
    r.logits[1].2[7] = f32::NAN;
    let c = parity::single_logits(&model, &r, &Default::default()).unwrap();
    assert!(!c.passed() && c.worst.is_nan(), "{c:?}");
    let mut r = reference("llama");
    r.greedy_batch[2][5] += 1;
    let c = parity::greedy_batch(&model, &r).unwrap();
    assert!(!c.passed(), "{c:?}");
    assert_eq!(c.mismatches.len(), 1);
    assert!(c.mismatches[0].starts_with("prompt 2: tokens"), "{c:?}");
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
