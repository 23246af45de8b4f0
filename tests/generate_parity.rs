//! The generation engine against HF transformers' greedy decoding (committed references) and
//! against the naive full-recomputation decoder.

mod common;

use cft::generate::{Decoding, Engine, EngineOptions, FinishReason, Request, encode, naive, score};
use cft::parity;
use common::{B, FAMILIES, load, reference};

const TOLERANCE: f32 = 1e-4;

fn engine_options(max_batch: usize, top: usize) -> EngineOptions {
    EngineOptions {
        max_batch,
        top_alternatives: top,
        prefill_rows: 2,
        select_on_device: None,
        max_draft: 0,
    }
}

/// Through `cft::parity`, the code `cft check parity --device cuda` runs: each prompt alone
/// (tokens, that it ran to its length, log-probs within 1e-4, the top-5 of every step), then
/// all prompts as one left-padded batch (tokens).
#[test]
fn greedy_one_prompt_at_a_time_matches_transformers() {
    for family in FAMILIES {
        let c = parity::greedy_single(&load(family), &reference(family)).unwrap();
        assert_eq!(c.tolerance, TOLERANCE);
        assert!(c.mismatches.is_empty(), "{family}: {:#?}", c.mismatches);
        assert!(
            c.worst <= TOLERANCE,
            "{family}: log-probs differ by {}",
            c.worst
        );
    }
}

#[test]
fn greedy_left_padded_batch_matches_transformers() {
    for family in FAMILIES {
        let c = parity::greedy_batch(&load(family), &reference(family)).unwrap();
        assert!(c.passed(), "{family}: {:#?}", c.mismatches);
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

/// Drafts verified in wide steps change nothing a row emits: transformers' greedy tokens
/// (and log-probs within 1e-4) whether the draft is the answer itself, the answer with wrong
/// tokens in it, or the other prompts' answers (prompt lookup over a source that mostly does
/// not match), with continuous batching refilling rows and rows without drafts beside them.
/// The right drafts are taken: the engine runs fewer steps than tokens.
#[test]
fn drafts_verified_in_wide_steps_give_transformers_greedy_tokens() {
    use cft::generate::draft::lookup;
    for family in FAMILIES {
        let model = load(family);
        let r = reference(family);
        let n = r.greedy_single.iter().map(Vec::len).min().unwrap();
        let corrupt = |answer: &[u32]| -> Vec<u32> {
            let mut a = answer.to_vec();
            for i in (3..a.len()).step_by(5) {
                a[i] = (a[i] + 1) % 7;
            }
            a
        };
        // Per request: its prompt and the source its drafts are looked up in (None: no draft).
        let mut cases: Vec<(usize, Option<Vec<u32>>)> = Vec::new();
        for i in 0..r.prompts.len() {
            let own = r.greedy_single[i][..n].to_vec();
            cases.push((i, Some(own.clone())));
            cases.push((i, Some(corrupt(&own))));
            let j = (i + 1) % r.prompts.len();
            cases.push((i, Some(r.greedy_single[j].clone())));
            cases.push((i, None));
        }
        for (max_batch, max_draft) in [(16, 8), (3, 4), (2, 1)] {
            let requests = cases
                .iter()
                .map(|(i, source)| {
                    let mut q = Request::<B>::greedy(r.prompts[*i].clone(), n);
                    if let Some(source) = source.clone() {
                        q.draft = Some(Box::new(move |generated: &[u32], max: usize| {
                            lookup(&source, generated, generated.len() - 1, max).to_vec()
                        }));
                    }
                    q
                })
                .collect();
            let engine = Engine::new(
                &model.lm,
                EngineOptions {
                    max_draft,
                    ..engine_options(max_batch, 0)
                },
            );
            let out = engine.generate(requests).unwrap();
            for ((i, _), c) in cases.iter().zip(&out) {
                assert_eq!(c.tokens, r.greedy_single[*i][..n], "{family}, prompt {i}");
                for (got, want) in c.logprobs.iter().zip(&r.greedy_single_logprobs[*i]) {
                    assert!((got - want).abs() <= TOLERANCE, "{family}: {got} vs {want}");
                }
            }
            let stats = engine.draft_stats();
            assert!(
                stats.accepted > 0 && stats.accepted < stats.proposed,
                "{family}: drafts both stand and fail: {stats:?}"
            );
            if max_batch == 16 {
                assert!(stats.steps < n, "{family}: {stats:?} for {n} tokens");
            }
        }
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
                    draft: None,
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

/// Selecting on the device (the alternatives, a sampled row's top_k candidates and a nucleus
/// row's head by reductions, only they read back) picks what the host path picks from whole
/// rows: the same tokens, log-probabilities and alternatives, greedy and sampled, for the
/// same seeds.
#[test]
fn selecting_on_the_device_picks_what_the_host_path_picks() {
    for family in ["qwen2", "llama"] {
        let model = load(family);
        let r = reference(family);
        // Rows with a top_k first, so the first batches read only their candidates; then
        // rows that read whole distributions (no top_k), mixed with greedy ones.
        // (top_k, top_p, temperature). The nucleus rows: one narrow enough for its head
        // (top_p 0.3 at temperature 0.5), ones whose head falls short on these random models'
        // flat distributions (read whole in a second read).
        let settings = [
            (5, 1.0, 0.9),
            (40, 0.9, 0.9),
            (0, 1.0, 0.9),
            (0, 0.8, 0.9),
            (0, 0.3, 0.5),
            (0, 0.95, 0.7),
        ];
        let requests = || {
            let mut out = Vec::new();
            for (j, (top_k, top_p, temperature)) in settings.into_iter().enumerate() {
                for (i, prompt) in r.prompts.iter().enumerate() {
                    let mut q = Request::<B>::greedy(prompt.clone(), 12);
                    if j != 2 || i % 2 == 1 {
                        q.decoding = Decoding::Sample {
                            temperature,
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

/// Per position: log-prob of the next token and entropy within 1e-4, the top-5 ids, their
/// probabilities within 1e-5.
#[test]
fn score_matches_transformers_log_probs_entropies_and_top_k() {
    assert_eq!(parity::PROB_TOLERANCE, 1e-5);
    for family in FAMILIES {
        let c = parity::scores(&load(family), &reference(family)).unwrap();
        assert!(c.mismatches.is_empty(), "{family}: {:#?}", c.mismatches);
        assert!(c.worst <= TOLERANCE, "{family}: differ by {}", c.worst);
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
