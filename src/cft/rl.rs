//! GRPO's rollout (paper §4.4, App. B.2: n = 5 responses per prompt): each prompt of a batch is
//! answered `n` times by seeded sampling on the batched engine, each response is graded
//! (reward 1 when the benchmark's grader says correct, 0 otherwise, as verl's rule-based
//! math reward gives) and the rewards become advantages within each prompt's group
//! ([`crate::train::grpo::group_advantages`]). Every sample has its own seed, mixed from the
//! run's seed, the step, the prompt and the sample's number, so the responses do not depend on
//! how the engine batches them, and a resumed run samples what the uninterrupted one did.

use burn::prelude::*;

use crate::generate::{Decoding, Ending, Engine, EngineOptions, GenerateError};
use crate::train::grpo::group_advantages;

/// How a step samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Responses per prompt (`rollout.n`; the paper: 5).
    pub n: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub seed: u64,
    /// Rows the engine decodes together.
    pub max_batch: usize,
}

/// The `n` responses of one prompt of a step, with their rewards and advantages.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The prompt's index in the batch.
    pub prompt: usize,
    /// Each response's tokens, as generated (its end token included).
    pub responses: Vec<Vec<u32>>,
    pub rewards: Vec<f32>,
    pub advantages: Vec<f32>,
}

/// Grades a response of prompt `prompt`: true when correct.
pub trait Reward: Sync {
    fn correct(&self, prompt: usize, response: &[u32]) -> bool;
}

/// The rule-based reward of the pipeline: the response's graded text (cut at the template's
/// stop strings, as `eval` and the rollouts cut it) graded by the benchmark's grader.
pub struct GradeReward<'a> {
    pub ending: Ending<'a>,
    pub benchmark: crate::eval::Benchmark,
    pub golds: Vec<String>,
}

impl Reward for GradeReward<'_> {
    fn correct(&self, prompt: usize, response: &[u32]) -> bool {
        let (Ok(text), Some(gold)) = (self.ending.graded_text(response), self.golds.get(prompt))
        else {
            return false;
        };
        crate::eval::grade(self.benchmark, &text, gold).correct
    }
}

/// The seed of sample `k` of prompt `prompt` at `step`: SplitMix-style mixing of the three.
pub fn sample_seed(seed: u64, step: u64, prompt: u64, k: u64) -> u64 {
    let mut z = seed
        ^ step.wrapping_mul(0xA24B_AED4_963E_E407)
        ^ prompt.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Samples `n` responses to each prompt (ending by `ending`'s rule), grades them with `reward`
/// and normalises the rewards within each prompt's group (`norm_by_std`: GRPO's; false:
/// Dr. GRPO's). `prompts[i]` are the token ids of prompt `i` (its template applied).
pub fn sample_groups<B: Backend>(
    lm: &crate::model::CausalLm<B>,
    prompts: &[Vec<u32>],
    ending: &Ending<'_>,
    reward: &dyn Reward,
    sampling: Sampling,
    step: u64,
    norm_by_std: bool,
) -> Result<Vec<Group>, GenerateError> {
    let n = sampling.n.max(1);
    let mut requests = Vec::with_capacity(prompts.len() * n);
    for (p, prompt) in prompts.iter().enumerate() {
        for k in 0..n {
            let mut r = ending.request::<B>(prompt.clone());
            r.decoding = Decoding::Sample {
                temperature: sampling.temperature,
                top_p: sampling.top_p,
                top_k: sampling.top_k,
                seed: sample_seed(sampling.seed, step, p as u64, k as u64),
            };
            requests.push(r);
        }
    }
    let engine = Engine::new(
        lm,
        EngineOptions {
            max_batch: sampling.max_batch.max(1),
            ..Default::default()
        },
    );
    let completions = engine.generate(requests)?;
    let mut groups: Vec<Group> = Vec::with_capacity(prompts.len());
    for (i, c) in completions.into_iter().enumerate() {
        let p = i / n;
        if groups.len() <= p {
            groups.push(Group {
                prompt: p,
                responses: Vec::with_capacity(n),
                rewards: Vec::with_capacity(n),
                advantages: Vec::new(),
            });
        }
        let correct = reward.correct(p, &c.tokens);
        if let Some(g) = groups.last_mut() {
            g.rewards.push(f32::from(u8::from(correct)));
            g.responses.push(c.tokens);
        }
    }
    // Advantages within each prompt's group, as verl groups a batch by its prompts' uid.
    let rewards: Vec<f32> = groups.iter().flat_map(|g| g.rewards.clone()).collect();
    let ids: Vec<u64> = groups
        .iter()
        .flat_map(|g| std::iter::repeat_n(g.prompt as u64, g.rewards.len()))
        .collect();
    let advantages = group_advantages(&rewards, &ids, norm_by_std);
    let mut at = 0;
    for g in &mut groups {
        g.advantages = advantages[at..at + g.rewards.len()].to_vec();
        at += g.rewards.len();
    }
    Ok(groups)
}
