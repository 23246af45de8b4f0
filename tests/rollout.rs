//! Counterfactual rollouts: the batched engine (shared prefixes, continuous batching, the end
//! rule, drafts from the perturbed response) gives exactly the outcomes of the naive
//! one-branch-at-a-time path, on the tiny models
//! of all four families, for every criticality rule; the Strict shortcut gives the same masks.

mod common;

use cft::cft::criticality::{still_open, weights};
use cft::cft::rollout::{
    Example, Judge, Outcome, Settings, batched, batched_with_stats, sequential,
};

/// Draft tokens per step where a test drafts.
const DRAFT: usize = 8;
use cft::manifest::Rule;
use cft::model::{LanguageModel, LoadOptions};

use common::{B, FAMILIES, fixture};

/// A stand-in for the grader with a mix of outcomes: a branch ends once it contains token 5,
/// and is correct when its token sum is not divisible by 3.
struct Toy;
impl Judge for Toy {
    fn ended(&self, kept: &[u32], generated: &[u32]) -> bool {
        kept.contains(&5) || generated.contains(&5)
    }
    fn correct(&self, example: usize, response: &[u32]) -> bool {
        !(response.iter().map(|&t| t as usize).sum::<usize>() + example).is_multiple_of(3)
    }
}

fn examples(model: &LanguageModel<B>) -> Vec<Example> {
    let prompts: Vec<Vec<u32>> = vec![vec![1, 17, 42, 9, 100], vec![1, 8, 250, 31], vec![3, 77]];
    prompts
        .into_iter()
        .map(|prompt| {
            let response = cft::generate::naive::greedy(&model.lm, &prompt, 14, &[]);
            let open = vec![true; response.len()];
            Example {
                prompt,
                response,
                open,
            }
        })
        .collect()
}

fn fails(outcomes: &[Outcome]) -> Vec<Vec<Option<bool>>> {
    outcomes.iter().map(|o| o.fail.clone()).collect()
}

#[test]
fn batched_rollouts_equal_the_naive_path_for_every_rule() {
    for family in FAMILIES {
        let model = LanguageModel::<B>::load(
            &fixture(family),
            &Default::default(),
            LoadOptions::default(),
        )
        .unwrap();
        let ex = examples(&model);
        // Two engines side by side, each on its share of the branches; drafts from the
        // perturbed response or none.
        let settings = |rank, draft| Settings {
            rank,
            max_new_tokens: 24,
            max_batch: 16,
            threads: 2,
            draft,
        };
        let mut per_rank = Vec::new();
        for rank in [2, 3] {
            let slow = sequential(&model.lm, &ex, &[], &Toy, settings(rank, 0)).unwrap();
            let plain = batched(&model.lm, &ex, &[], &Toy, settings(rank, 0)).unwrap();
            assert_eq!(plain, slow, "{family}, rank {rank}");
            let (fast, stats) =
                batched_with_stats(&model.lm, &ex, &[], &Toy, settings(rank, DRAFT)).unwrap();
            assert_eq!(fast, slow, "{family}, rank {rank}, drafts {stats:?}");
            assert!(stats.accepted > 0, "{family}: no draft stood: {stats:?}");
            assert!(
                fast.iter().all(|o| o.alt.iter().all(Option::is_some)),
                "every position branched"
            );
            per_rank.push(fails(&fast));
        }
        let all: Vec<bool> = per_rank
            .iter()
            .flatten()
            .flatten()
            .map(|f| f.unwrap())
            .collect();
        assert!(
            all.contains(&true) && all.contains(&false),
            "{family}: the judge gives both outcomes"
        );
        for (i, e) in ex.iter().enumerate() {
            let ranks = vec![per_rank[0][i].clone(), per_rank[1][i].clone()];
            for rule in [Rule::Strict, Rule::Union, Rule::Graded] {
                let w = weights(rule, 3, &ranks).unwrap();
                assert_eq!(w.len(), e.response.len());
            }
        }
    }
}

#[test]
fn the_strict_shortcut_gives_the_same_masks_as_full_rollouts() {
    let model = LanguageModel::<B>::load(
        &fixture("qwen3"),
        &Default::default(),
        LoadOptions::default(),
    )
    .unwrap();
    let ex = examples(&model);
    let settings = |rank| Settings {
        rank,
        max_new_tokens: 24,
        max_batch: 16,
        threads: 1,
        draft: DRAFT,
    };
    let rank2 = fails(&batched(&model.lm, &ex, &[], &Toy, settings(2)).unwrap());
    let rank3_full = fails(&batched(&model.lm, &ex, &[], &Toy, settings(3)).unwrap());
    // Rank 3 only where rank 2 failed.
    let narrowed: Vec<Example> = ex
        .iter()
        .zip(&rank2)
        .map(|(e, r2)| Example {
            open: still_open(std::slice::from_ref(r2)),
            ..e.clone()
        })
        .collect();
    let rank3_short = fails(&batched(&model.lm, &narrowed, &[], &Toy, settings(3)).unwrap());
    let skipped: usize = rank3_short.iter().flatten().filter(|f| f.is_none()).count();
    assert!(skipped > 0, "the shortcut skips branches");
    for i in 0..ex.len() {
        let full = weights(Rule::Strict, 3, &[rank2[i].clone(), rank3_full[i].clone()]).unwrap();
        let short = weights(Rule::Strict, 3, &[rank2[i].clone(), rank3_short[i].clone()]).unwrap();
        assert_eq!(full, short);
    }
}

/// The real end rule and grader: stop strings that occur often in a random model's text end
/// many branches (some straddling the kept prefix and the continuation), and the batched
/// path still gives exactly the naive path's outcomes, with and without the opt-in early stop.
#[test]
fn batched_rollouts_equal_the_naive_path_under_the_real_end_rule() {
    use cft::eval::Benchmark;
    use cft::generate::{Ending, Engine, EngineOptions, FinishReason};
    use cft::manifest::EarlyStop;
    use cft::stages::annotate::GradeJudge;

    for family in FAMILIES {
        let model = LanguageModel::<B>::load(
            &fixture(family),
            &Default::default(),
            LoadOptions::default(),
        )
        .unwrap();
        let ex = examples(&model);
        let ending = Ending::new(
            &model.tokenizer,
            &model.eos_token_ids,
            vec!["e".into(), "t".into()],
            24,
        );
        // The stop strings do end responses of this model.
        let requests = ex
            .iter()
            .map(|e| ending.request(e.prompt.clone()))
            .collect();
        let finished = Engine::new(&model.lm, EngineOptions::default())
            .generate(requests)
            .unwrap();
        assert!(
            finished.iter().any(|c| c.finish == FinishReason::Stop),
            "{family}: no response ended at a stop string"
        );
        let settings = |rank| Settings {
            rank,
            max_new_tokens: 24,
            max_batch: 16,
            threads: 2,
            draft: DRAFT,
        };
        for early_stop in [EarlyStop::None, EarlyStop::Answer] {
            let judge = GradeJudge {
                ending: ending.clone(),
                early_stop,
                benchmark: Benchmark::Gsm8k,
                golds: vec!["7".into(); ex.len()],
            };
            for rank in [2, 3] {
                let fast =
                    batched(&model.lm, &ex, ending.end_ids(), &judge, settings(rank)).unwrap();
                let slow =
                    sequential(&model.lm, &ex, ending.end_ids(), &judge, settings(rank)).unwrap();
                assert_eq!(fast, slow, "{family}, rank {rank}, {early_stop:?}");
            }
        }
    }
}
