//! Where the optimiser state lives changes nothing a user can see: `offload` (f32 master
//! weights and moments on the host, updated by CPU threads) and `zero1` with 2 and 4 simulated
//! ranks (data parallel, optimiser state sharded) give the single-device weights bit for bit on
//! the CPU, in f32 and in bf16, full and LoRA. And a run saved to a state file mid-way and
//! restored (under any strategy) ends with the same bits as one that never stopped.

mod common;

use std::collections::BTreeMap;

use burn::backend::Autodiff;
use burn::tensor::DType;
use cft::model::{LanguageModel, LoadOptions};
use cft::train::data::Example;
use cft::train::lora::{self, LoraSpec};
use cft::train::optim::AdamConfig;
use cft::train::params::{HostTensor, named_values};
use cft::train::{LastBatch, Normalization, Objective, Schedule, Strategy, TrainSettings, Trainer};
use common::{B, fixture};

type AD = Autodiff<B>;
type Dev = burn::backend::flex::FlexDevice;

/// Eight weighted examples of different lengths.
fn examples() -> Vec<Example> {
    (0..8)
        .map(|i| {
            let prompt: Vec<u32> = (0..3 + i % 3)
                .map(|j| 3 + ((i * 7 + j * 3) % 40) as u32)
                .collect();
            let len = 3 + (i * 5) % 6;
            let response: Vec<u32> = (0..len)
                .map(|j| 3 + ((i * 11 + j * 5) % 40) as u32)
                .collect();
            let weights: Vec<f32> = (0..len).map(|j| ((i + j) % 3) as f32 * 0.5).collect();
            Example::new(i as u64, &prompt, &response, Some(&weights), None, 64).unwrap()
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Setup {
    F32,
    Bf16,
    /// LoRA on bf16 base weights; no dropout (with dropout, ranks draw their masks per
    /// micro-batch, so zero1 differs from one device as any data-parallel run does).
    Lora,
}

fn trainer(setup: Setup, strategy: Strategy<Dev>) -> Trainer<AD> {
    let dtype = match setup {
        Setup::F32 => DType::F32,
        _ => DType::BF16,
    };
    let options = LoadOptions {
        keep_half: false,
        dtype: Some(dtype),
    };
    let lm = LanguageModel::<AD>::load(&fixture("qwen2"), &Default::default(), options).unwrap();
    let model = match setup {
        Setup::Lora => {
            let spec = LoraSpec {
                rank: 4,
                alpha: 8.0,
                dropout: 0.0,
                target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
            };
            lora::attach(lm.lm, &spec, 3).unwrap()
        }
        _ => lm.lm,
    };
    let settings = TrainSettings {
        objective: Objective::Weighted,
        batch_size: 4,
        micro_batch_size: 1,
        normalization: Normalization::MicroBatch,
        last_batch: LastBatch::Short,
        total_steps: 6,
        schedule: Schedule::new("cosine", 2e-3, 0.2, 6, 0.1).unwrap(),
        // Decoupled weight decay and clipping below the norm: every term of the update runs.
        adam: AdamConfig::new("adamw", 0.9, 0.95, 1e-8, 0.01).unwrap(),
        grad_clip: 0.05,
        seed: 11,
        pad_id: lm.pad_token_id,
    };
    Trainer::new(model, settings, examples(), Default::default())
        .unwrap()
        .with_strategy(strategy)
        .unwrap()
}

fn strategies() -> Vec<Strategy<Dev>> {
    let cpu = Default::default();
    vec![
        Strategy::Single,
        Strategy::Offload,
        Strategy::Zero1(vec![cpu; 2]),
        Strategy::Zero1(vec![cpu; 4]),
    ]
}

/// Every weight's bits after the run.
fn bits(t: &Trainer<AD>) -> BTreeMap<String, (Vec<usize>, Vec<u32>)> {
    named_values(&t.model)
        .into_iter()
        .map(|(name, (shape, values)): (String, HostTensor)| {
            (name, (shape, values.iter().map(|v| v.to_bits()).collect()))
        })
        .collect()
}

fn run(mut t: Trainer<AD>) -> (Trainer<AD>, Vec<(u64, u64)>) {
    let mut log = Vec::new();
    while !t.is_done() {
        let m = t.step();
        log.push((m.loss.to_bits(), m.grad_norm.to_bits()));
    }
    (t, log)
}

fn same_weights(a: &Trainer<AD>, b: &Trainer<AD>, what: &str) {
    let (a, b) = (bits(a), bits(b));
    assert_eq!(a.len(), b.len(), "{what}: parameter count");
    for (name, value) in &a {
        assert!(b.get(name) == Some(value), "{what}: {name} differs");
    }
}

#[test]
fn every_strategy_gives_the_single_device_weights() {
    for setup in [Setup::F32, Setup::Bf16, Setup::Lora] {
        let (single, log) = run(trainer(setup, Strategy::Single));
        // The run trained: the weights moved.
        let (start, _) = run(trainer_untrained(setup));
        assert_ne!(bits(&single), bits(&start), "{setup:?}: nothing trained");
        for strategy in strategies().into_iter().skip(1) {
            let what = format!("{setup:?} {}", describe(&strategy));
            let (other, other_log) = run(trainer(setup, strategy));
            assert_eq!(log, other_log, "{what}: losses or gradient norms");
            same_weights(&single, &other, &what);
        }
    }
}

/// Micro-batches run side by side in threads (`with_lanes`, what the CPU stages use) give the
/// one-at-a-time weights, losses and gradient norms bit for bit: 2 lanes (two waves of two of a
/// step's four micro-batches) and 3 (a wave of three, then one), in f32, bf16 and LoRA, and with
/// offload's host optimiser.
#[test]
fn micro_batches_side_by_side_give_the_same_weights() {
    for setup in [Setup::F32, Setup::Bf16, Setup::Lora] {
        let (single, log) = run(trainer(setup, Strategy::Single));
        for (lanes, strategy) in [
            (2, Strategy::Single),
            (3, Strategy::Single),
            (2, Strategy::Offload),
        ] {
            let what = format!("{setup:?} {} with {lanes} lanes", describe(&strategy));
            let (other, other_log) = run(trainer(setup, strategy).with_lanes(lanes));
            assert_eq!(log, other_log, "{what}: losses or gradient norms");
            same_weights(&single, &other, &what);
        }
    }
}

/// The same trainer with no steps to take.
fn trainer_untrained(setup: Setup) -> Trainer<AD> {
    let mut t = trainer(setup, Strategy::Single);
    t.settings.total_steps = 0;
    t
}

fn describe(s: &Strategy<Dev>) -> String {
    match s {
        Strategy::Zero1(d) => format!("zero1 x{}", d.len()),
        other => other.name().to_string(),
    }
}

#[test]
fn a_restored_state_file_resumes_bit_for_bit_under_any_strategy() {
    let dir = tempfile::tempdir().unwrap();
    for setup in [Setup::Bf16, Setup::Lora] {
        let (whole, _) = run(trainer(setup, Strategy::Single));
        for (i, saver) in strategies().into_iter().enumerate() {
            // Saved under one strategy after 3 steps, resumed under the next one.
            let resumer = strategies().into_iter().nth((i + 1) % 4).unwrap();
            let what = format!("{setup:?}: {} -> {}", describe(&saver), describe(&resumer));
            let mut first = trainer(setup, saver);
            for _ in 0..3 {
                first.step();
            }
            let path = dir.path().join(format!("state-{i}.safetensors"));
            let size = first.save_state(&path, "[1,2,3]").unwrap();
            assert_eq!(size, std::fs::metadata(&path).unwrap().len(), "{what}");
            drop(first);
            let mut second = trainer(setup, resumer);
            assert_eq!(second.restore_state(&path).unwrap(), "[1,2,3]", "{what}");
            assert_eq!(second.step, 3, "{what}");
            let (second, _) = run(second);
            same_weights(&whole, &second, &what);
        }
    }
}

#[test]
fn a_state_file_holds_only_what_trains_and_refuses_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut lora = trainer(Setup::Lora, Strategy::Single);
    lora.step();
    let path = dir.path().join("lora.safetensors");
    lora.save_state(&path, "[]").unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for name in file.names() {
        assert!(
            name.contains(".lora."),
            "{name}: a frozen weight in the state"
        );
        *kinds
            .entry(name.split('.').next().unwrap().to_string())
            .or_default() += 1;
    }
    // Each adapter matrix: its weight, both moments and (bf16 base, f32 adapters) no master.
    let params = kinds["param"];
    assert!(params > 0);
    assert_eq!(kinds.get("m"), Some(&params));
    assert_eq!(kinds.get("v"), Some(&params));
    // A full fine-tuning cannot resume from it.
    let mut full = trainer(Setup::Bf16, Strategy::Single);
    let err = full.restore_state(&path).err().unwrap().to_string();
    assert!(err.contains("has no param."), "{err}");
}
