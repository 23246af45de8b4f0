//! The generation engine against HF transformers' greedy decoding (committed references) and
//! against the naive full-recomputation decoder.

mod common;

use cft::generate::{Decoding, Engine, EngineOptions, FinishReason, Request, encode, naive, score};
use common::{B, FAMILIES, load, reference};

const TOLERANCE: f32 = 1e-4;

fn engine_options(max_batch: usize, top: usize) -> EngineOptions {
    EngineOptions {
        max_batch,
        top_alternatives: top,
        prefill_rows: 2,
        select_on_device: None,
    }
}

#[test]
fn greedy_one_prompt_at_a_time_matches_transformers() {
    for family in FAMILIES {
        let model = load(family);
        let r = reference(family);
        let engine = Engine::new(&model.lm, engine_options(1, 5));
        let requests = r
            .prompts
            .iter()
            .map(|p| Request::<B>::greedy(p.clone(), 24))
            .collect();
        let out = engine.generate(requests).unwrap();
        for (i, c) in out.iter().enumerate() {
            assert_eq!(c.tokens, r.greedy_single[i], "{family} prompt {i}");
            assert_eq!(c.finish, FinishReason::Length);
            let worst = c
                .logprobs
                .iter()
                .zip(&r.greedy_single_logprobs[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                worst <= TOLERANCE,
                "{family} prompt {i}: log-probs differ by {worst}"
            );
            let top: Vec<Vec<u32>> = c
                .alternatives
                .iter()
                .map(|a| a.iter().map(|x| x.0).collect())
                .collect();
            assert_eq!(
                top, r.greedy_single_top[i],
                "{family} prompt {i}: top-5 alternatives"
            );
        }
    }
}

#[test]
fn greedy_left_padded_batch_matches_transformers() {
    for family in FAMILIES {
        let model = load(family);
        let r = reference(family);
        let engine = Engine::new(&model.lm, engine_options(8, 0));
        let requests = r
            .prompts
            .iter()
            .map(|p| Request::<B>::greedy(p.clone(), 24))
            .collect();
        let out = engine.generate(requests).unwrap();
        let tokens: Vec<Vec<u32>> = out.into_iter().map(|c| c.tokens).collect();
        assert_eq!(tokens, r.greedy_batch, "{family}");
    }
}

#[test]
fn continuous_batching_refills_rows_without_changing_outputs() {
    let model = load("llama");
    let r = reference("llama");
    // Two rows for six requests of different lengths: rows finish and are refilled.
    let lengths = [24, 3, 10, 1, 17, 24];
    let requests = lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| Request::<B>::greedy(r.prompts[i % 3].clone(), n))
        .collect();
    let out = Engine::new(&model.lm, engine_options(2, 0))
        .generate(requests)
        .unwrap();
    for (i, (c, &n)) in out.iter().zip(&lengths).enumerate() {
        assert_eq!(c.tokens, r.greedy_single[i % 3][..n], "request {i}");
    }
}

#[test]
fn eos_and_stop_predicates_end_a_request() {
    let model = load("qwen3");
    let r = reference("qwen3");
    let expected = &r.greedy_single[0];
    let mut eos = Request::<B>::greedy(r.prompts[0].clone(), 24);
    eos.eos_token_ids = vec![expected[4]];
    let mut stop = Request::<B>::greedy(r.prompts[0].clone(), 24);
    stop.stop = Some(Box::new(|t: &[u32]| t.len() == 6));
    let out = Engine::new(&model.lm, engine_options(4, 0))
        .generate(vec![eos, stop])
        .unwrap();
    let first = expected.iter().position(|&t| t == expected[4]).unwrap();
    assert_eq!(out[0].tokens, expected[..=first]);
    assert_eq!(out[0].finish, FinishReason::Eos);
    assert_eq!(out[1].tokens, expected[..6]);
    assert_eq!(out[1].finish, FinishReason::Stop);
}

#[test]
fn branches_from_a_prefix_state_match_full_recomputation() {
    for family in ["qwen2", "olmo2"] {
        let model = load(family);
        let r = reference(family);
        let prompt = &r.prompts[1];
        let response = &r.greedy_single[1];
        let full: Vec<u32> = prompt.iter().chain(response).copied().collect();
        let encoded = encode(&model.lm, std::slice::from_ref(&full))
            .unwrap()
            .remove(0);
        // Branch at response positions t with the 2nd most likely token forced.
        let mut requests = Vec::new();
        let mut expected = Vec::new();
        for t in [0usize, 5, 11] {
            let at = prompt.len() + t;
            let rows = score(
                encoded.logits.clone().narrow(0, at - 1, 1),
                &full[at - 1..at],
                2,
                false,
            )
            .unwrap();
            let alternative = rows[0].top[1].0;
            let mut branch: Vec<u32> = full[..at].to_vec();
            branch.push(alternative);
            let n = 3 + t % 6; // rows finish at different steps
            expected.push(naive::greedy(&model.lm, &branch, n, &[]));
            let mut req = Request::<B>::greedy(vec![alternative], n);
            req.prefix = Some(encoded.state.prefix(at));
            requests.push(req);
        }
        // A plain prompt in the same batch, so prefixes and prompts mix.
        requests.push(Request::<B>::greedy(r.prompts[2].clone(), 8));
        expected.push(r.greedy_single[2][..8].to_vec());
        // All in one batch, and two rows at a time so that branches refill finished rows.
        for max_batch in [4, 2] {
            let requests = requests
                .iter()
                .map(|q: &Request<B>| Request {
                    prefix: q.prefix.clone(),
                    tokens: q.tokens.clone(),
                    max_new_tokens: q.max_new_tokens,
                    decoding: q.decoding,
                    eos_token_ids: Vec::new(),
                    stop: None,
                })
                .collect();
            let out = Engine::new(&model.lm, engine_options(max_batch, 0))
                .generate(requests)
                .unwrap();
            let tokens: Vec<Vec<u32>> = out.into_iter().map(|c| c.tokens).collect();
            assert_eq!(tokens, expected, "{family}, max_batch {max_batch}");
        }
    }
}

/// Selecting on the device (the alternatives and a sampled row's top_k candidates by
/// reductions, only they read back) picks what the host path picks from whole rows: the same
/// tokens, log-probabilities and alternatives, greedy and sampled, for the same seeds.
#[test]
fn selecting_on_the_device_picks_what_the_host_path_picks() {
    for family in ["qwen2", "llama"] {
        let model = load(family);
        let r = reference(family);
        // Rows with a top_k first, so the first batches read only their candidates; then
        // rows that read whole distributions (no top_k), mixed with greedy ones.
        let settings = [(5, 1.0), (40, 0.9), (0, 1.0), (0, 0.8)];
        let requests = || {
            let mut out = Vec::new();
            for (j, (top_k, top_p)) in settings.into_iter().enumerate() {
                for (i, prompt) in r.prompts.iter().enumerate() {
                    let mut q = Request::<B>::greedy(prompt.clone(), 12);
                    if j < 2 || i % 2 == 1 {
                        q.decoding = Decoding::Sample {
                            temperature: 0.9,
                            top_p,
                            top_k,
                            seed: (i * 10 + j) as u64,
                        };
                    }
                    out.push(q);
                }
            }
            out
        };
        let run = |device: bool| {
            let options = EngineOptions {
                select_on_device: Some(device),
                ..engine_options(5, 4)
            };
            Engine::new(&model.lm, options)
                .generate(requests())
                .unwrap()
        };
        let (host, device) = (run(false), run(true));
        assert_eq!(host.len(), device.len());
        let mut sampled_differently = 0;
        for (i, (h, d)) in host.iter().zip(&device).enumerate() {
            assert_eq!(h.tokens, d.tokens, "{family} request {i}: tokens");
            assert_eq!(
                h.logprobs, d.logprobs,
                "{family} request {i}: log-probabilities"
            );
            assert_eq!(
                h.alternatives, d.alternatives,
                "{family} request {i}: alternatives"
            );
            let prompt = i % r.prompts.len();
            sampled_differently +=
                usize::from(h.tokens[..] != r.greedy_single[prompt][..h.tokens.len()]);
        }
        assert!(
            sampled_differently > 0,
            "{family}: sampling never left the greedy path"
        );
    }
}

#[test]
fn sampling_is_reproducible_whatever_the_batch() {
    let model = load("qwen2");
    let r = reference("qwen2");
    let sample = |seed| Decoding::Sample {
        temperature: 0.8,
        top_p: 0.9,
        top_k: 50,
        seed,
    };
    let request = |prompt: &Vec<u32>, seed| {
        let mut q = Request::<B>::greedy(prompt.clone(), 16);
        q.decoding = sample(seed);
        q
    };
    let alone = Engine::new(&model.lm, engine_options(1, 0))
        .generate(vec![request(&r.prompts[0], 7)])
        .unwrap();
    let mixed = Engine::new(&model.lm, engine_options(4, 0))
        .generate(vec![
            request(&r.prompts[2], 1),
            Request::<B>::greedy(r.prompts[1].clone(), 5),
            request(&r.prompts[0], 7),
        ])
        .unwrap();
    assert_eq!(alone[0].tokens, mixed[2].tokens);
    assert_ne!(
        alone[0].tokens,
        r.greedy_single[0][..16],
        "sampling should differ from greedy"
    );
}

#[test]
fn score_matches_transformers_log_probs_entropies_and_top_k() {
    for family in FAMILIES {
        let model = load(family);
        let r = reference(family);
        let encoded = encode(&model.lm, &r.prompts).unwrap();
        for (i, (e, prompt)) in encoded.into_iter().zip(&r.prompts).enumerate() {
            let rows = score(e.logits, prompt, 5, false).unwrap();
            for (got, want) in rows.iter().zip(&r.score[i]) {
                assert_eq!((got.pos, got.token), (want.pos, want.token));
                match (got.next_logprob, want.next_logprob) {
                    (Some(a), Some(b)) => {
                        assert!((a - b).abs() <= TOLERANCE, "{family}: {a} vs {b}")
                    }
                    (None, None) => {}
                    other => panic!("{family}: next_logprob {other:?}"),
                }
                assert!(
                    (got.entropy - want.entropy).abs() <= TOLERANCE,
                    "{family} entropy"
                );
                let ids: Vec<u32> = got.top.iter().map(|x| x.0).collect();
                let want_ids: Vec<u32> = want.top.iter().map(|x| x.0).collect();
                assert_eq!(ids, want_ids, "{family} top-5 at {}", got.pos);
                for (a, b) in got.top.iter().zip(&want.top) {
                    assert!((a.1 - b.1).abs() <= 1e-5, "{family} top prob");
                }
            }
        }
    }
}

#[test]
fn bad_requests_are_errors() {
    use cft::generate::GenerateError;
    let model = load("qwen2");
    let engine = Engine::new(&model.lm, engine_options(2, 0));
    let err = engine
        .generate(vec![Request::<B>::greedy(vec![1, 5000], 4)])
        .unwrap_err();
    assert!(matches!(
        err,
        GenerateError::TokenOutOfRange { token: 5000, .. }
    ));
    let err = engine
        .generate(vec![Request::<B>::greedy(vec![], 4)])
        .unwrap_err();
    assert!(matches!(err, GenerateError::EmptyRequest(0)));
    let mut bad = Request::<B>::greedy(vec![1], 4);
    bad.decoding = Decoding::Sample {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
    };
    assert!(matches!(
        engine.generate(vec![bad]),
        Err(GenerateError::InvalidDecoding(_))
    ));
    let e = encode(&model.lm, &[vec![1, 2, 3]]).unwrap().remove(0);
    assert!(matches!(
        score(e.logits, &[1, 2], 3, false),
        Err(GenerateError::LengthMismatch { .. })
    ));
}
