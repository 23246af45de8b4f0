//! Paper §5.1-5.2 on a tiny real model, through the executor: `sample` draws until the first
//! correct answer and repeats from its seed; `score` marks the tokens with the largest
//! s_t = P_cft − P_base, which equal `cft score` of the two models; `transfer` reuses another
//! model's token ids and critical tokens where the tokenizers agree and detects where they do
//! not.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use burn::backend::Flex;
use cft::cache::{Cache, Store};
use cft::exec::{self, NoEvents, Options};
use cft::generate::{Decoding, Ending, Engine, EngineOptions};
use cft::model::{LanguageModel, LoadOptions};
use cft::plan::{self, Plan};
use cft::stages::annotate::{Response, Weights, read_lines};
use cft::stages::sample::Attempts;
use cft::stages::score::Scores;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models");
const SEED: u64 = 11;
const LIMIT: u64 = 24;

/// A manifest on the tiny Llama fixture (a second model, `other`, when given): SFT and CFT on
/// greedy data, SFT and CFT on greedy + sampled data (and transferred from `llama` with
/// `other`).
fn manifest(dir: &Path, other: Option<&Path>, sample_seed: u64) -> PathBuf {
    let other_model = other.map_or(String::new(), |p| {
        format!("[[model]]\nname = \"other\"\npath = \"{}\"\n", p.display())
    });
    let transferred = match other {
        None => "",
        Some(_) => {
            r#"
[[method]]
name = "sft-transfer"
kind = "sft"
responses_from = "llama"
[[method]]
name = "cft-transfer"
kind = "cft"
rule = "strict"
k = 2
responses_from = "llama"
score = { by = "strict2" }
"#
        }
    };
    let file = format!(
        "m{sample_seed}{}.toml",
        other.map_or(0, |p| p.as_os_str().len())
    );
    support::write(
        dir,
        &file,
        &format!(
            r#"
[experiment]
name = "s51"
seed = 5
[[model]]
name = "llama"
path = "{FIXTURES}/llama"
{other_model}
[data.train]
path = "train.jsonl"
[annotate]
template = "plain"
max_new_tokens = 10
[sample]
attempts = {LIMIT}
seed = {sample_seed}
[[method]]
name = "strict2"
kind = "cft"
rule = "strict"
k = 2
[[method]]
name = "sft-sampled"
kind = "sft"
responses = "greedy+sampled"
[[method]]
name = "cft-sampled"
kind = "cft"
rule = "strict"
k = 2
responses = "greedy+sampled"
score = {{ by = "strict2", top = 0.25 }}
{transferred}
[train]
epochs = 4
batch_size = 4
micro_batch_size = 4
learning_rate = 5e-2
precision = "f32"
max_length = 64
[eval]
include_base = false
benchmarks = []
"#
        ),
    )
}

/// Questions whose gold answers are single digits: the random model's samples hit some of
/// them within a few attempts, others not within the limit.
fn write_data(dir: &Path, n: usize) {
    let golds: Vec<String> = (0..n).map(|i| (i % 10).to_string()).collect();
    write_golds(dir, &golds);
}

fn write_golds(dir: &Path, golds: &[String]) {
    let lines: Vec<String> = golds
        .iter()
        .enumerate()
        .map(|(i, g)| {
            serde_json::json!({"question": format!("What is {i} plus {}?", i * 7 % 13), "answer": format!("#### {g}")})
                .to_string()
        })
        .collect();
    support::write(dir, "train.jsonl", &(lines.join("\n") + "\n"));
}

/// Lets the model answer greedily once, then makes every third question's gold its own
/// prediction, so D_correct is not empty (and the others are sampled).
fn prepare(dir: &Path, cache: &Cache, m: &Path) {
    write_data(dir, 24);
    run(cache, &plan_of(cache, m, &["greedy llama"]));
    let first: Vec<Response> = lines(&output(cache, m, "greedy llama", "responses.jsonl"));
    let golds: Vec<String> = first
        .iter()
        .map(|r| match r.idx % 3 == 0 && !r.pred.is_empty() {
            true => r.pred.clone(),
            false => (r.idx % 10).to_string(),
        })
        .collect();
    write_golds(dir, &golds);
}

/// The manifest's plan cut down to the stages labelled `labels` (a label ending in `*`: every
/// one that starts so) and what they need.
fn plan_of(cache: &Cache, manifest: &Path, labels: &[&str]) -> Plan {
    let exp = cft::manifest::load(manifest).unwrap();
    let matches = |label: &str| {
        labels.iter().any(|l| match l.strip_suffix('*') {
            Some(prefix) => label.starts_with(prefix),
            None => label == *l,
        })
    };
    let plan = plan::build(&exp, cache)
        .unwrap()
        .restricted(|s| matches(&s.label));
    assert!(!plan.is_empty(), "no stage {labels:?}");
    plan
}

fn run(cache: &Cache, plan: &Plan) {
    let stop = AtomicBool::new(false);
    let s = exec::run(
        plan,
        cache,
        &exec::Launcher::Threads(&cft::stages::registry()),
        &NoEvents,
        &stop,
        &Options::default(),
    )
    .unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
}

fn record(cache: &Cache, manifest: &Path, label: &str) -> cft::cache::Record {
    let plan = plan_of(cache, manifest, &[label]);
    let prefix = label.strip_suffix('*');
    let spec = plan
        .graph
        .node_weights()
        .find(|s| prefix.map_or(s.label == label, |p| s.label.starts_with(p)))
        .unwrap_or_else(|| panic!("no stage {label}"));
    cache
        .record(&spec.key)
        .unwrap()
        .unwrap_or_else(|| panic!("{label} has not run"))
}

fn output(cache: &Cache, manifest: &Path, label: &str, name: &str) -> Vec<u8> {
    let r = record(cache, manifest, label);
    cache.artifact(r.outputs[name].hash()).unwrap().unwrap()
}

fn lines<T: for<'de> serde::Deserialize<'de>>(bytes: &[u8]) -> Vec<T> {
    read_lines(bytes, "test").unwrap()
}

/// Sampling ends at each question's first correct attempt, and the attempts are the seeded
/// draws: decoding them one by one outside the stage gives the same answers. Another wave
/// width gives the same bytes; another seed other samples.
#[test]
fn sampling_stops_at_the_first_correct_answer_and_repeats_from_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path(), 24);
    let m = manifest(dir.path(), None, SEED);
    let cache = Cache::open(&dir.path().join("cache"), "test").unwrap();
    run(&cache, &plan_of(&cache, &m, &["sample llama"]));
    let greedy: Vec<Response> = lines(&output(&cache, &m, "greedy llama", "responses.jsonl"));
    let attempts: Vec<Attempts> = lines(&output(&cache, &m, "sample llama", "attempts.jsonl"));
    let sampled: Vec<Response> = lines(&output(&cache, &m, "sample llama", "responses.jsonl"));
    let wrong: Vec<&Response> = greedy.iter().filter(|r| !r.correct).collect();
    assert_eq!(
        attempts.iter().map(|a| a.idx).collect::<Vec<_>>(),
        wrong.iter().map(|r| r.idx).collect::<Vec<_>>(),
        "one line per question greedy decoding got wrong"
    );
    let solved: Vec<&Attempts> = attempts.iter().filter(|a| a.solved).collect();
    assert!(
        !solved.is_empty() && solved.len() < attempts.len(),
        "some questions solved, some not: {attempts:?}"
    );
    assert!(
        solved.iter().any(|a| a.attempts > 1),
        "some after failed attempts"
    );
    assert_eq!(
        sampled.iter().map(|r| r.idx).collect::<Vec<_>>(),
        solved.iter().map(|a| a.idx).collect::<Vec<_>>()
    );

    // Each attempt decoded alone, from the seed the stage mixes for it.
    let model = LanguageModel::<Flex>::load(
        &Path::new(FIXTURES).join("llama"),
        &Default::default(),
        LoadOptions::default(),
    )
    .unwrap();
    let ending = Ending::new(
        &model.tokenizer,
        &model.eos_token_ids,
        cft::stages::prompt::stop_strings(cft::manifest::Template::Plain),
        10,
    );
    let engine = Engine::new(&model.lm, EngineOptions::default());
    let by_idx: HashMap<u64, &Response> = wrong.iter().map(|r| (r.idx, *r)).collect();
    for a in &attempts {
        let q = by_idx[&a.idx];
        assert_eq!(a.preds.len() as u64, a.attempts, "{a:?}");
        for (i, pred) in a.preds.iter().enumerate() {
            let mut request = ending.request(q.prompt_ids.clone());
            request.decoding = Decoding::Sample {
                temperature: 1.0,
                top_p: 1.0,
                top_k: 0,
                seed: cft::stages::eval::sample_seed(SEED, a.idx, i as u64),
            };
            let done = engine.generate(vec![request]).unwrap().remove(0);
            let text = ending.graded_text(&done.tokens).unwrap();
            let verdict = cft::eval::grade(cft::eval::Benchmark::Gsm8k, &text, &q.gold);
            assert_eq!(&verdict.pred, pred, "question {} attempt {i}", a.idx);
            let last = i as u64 + 1 == a.attempts;
            assert_eq!(
                verdict.correct,
                a.solved && last,
                "question {} attempt {i}: only the last attempt of a solved question is correct",
                a.idx
            );
            if a.solved && last {
                let r = sampled.iter().find(|r| r.idx == a.idx).unwrap();
                assert_eq!(r.response_ids, ending.kept(&done.tokens));
                assert!(r.correct);
            }
        }
    }

    // Narrower waves (more of them, other batches) over two engines: the same bytes.
    let narrow = Cache::open(&dir.path().join("narrow"), "test").unwrap();
    let mut plan = plan_of(&narrow, &m, &["sample llama"]);
    for spec in plan.graph.node_weights_mut() {
        if spec.kind.name() == "sample" {
            spec.bindings["decode_rows"] = serde_json::json!(5);
            // two model copies, each on its share of a wave's chunks (one per GPU on a GPU
            // machine)
            spec.bindings["engines"] = serde_json::json!(2);
        }
    }
    run(&narrow, &plan);
    for name in ["attempts.jsonl", "responses.jsonl"] {
        assert!(
            output(&narrow, &m, "sample llama", name) == output(&cache, &m, "sample llama", name),
            "{name} differs with another wave width and two engines"
        );
    }
    // Another seed: other draws.
    let reseeded = manifest(dir.path(), None, SEED + 1);
    run(&cache, &plan_of(&cache, &reseeded, &["sample llama"]));
    assert!(
        output(&cache, &reseeded, "sample llama", "attempts.jsonl")
            != output(&cache, &m, "sample llama", "attempts.jsonl")
    );
}

/// `cft score --json` of a model on a sequence: P(token at p + 1 | ..=p) for each p.
fn cft_score(model: &Path, ids: &[u32]) -> Vec<f32> {
    let csv: Vec<String> = ids.iter().map(u32::to_string).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_cft"))
        .args(["score", "--json", "--top", "1", "--model"])
        .arg(model)
        .args(["--ids", &csv.join(",")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["next_logprob"].as_f64().map(|lp| (lp as f32).exp())
        })
        .collect()
}

/// The sampled responses' s_t are P under CFT's checkpoint minus P under the base model, as
/// `cft score` gives them, and the top 25% of each response's tokens (rounded up) are marked;
/// the greedy responses keep their rollout-based critical tokens, and the training reads
/// both.
#[test]
fn scores_are_the_probability_gap_that_cft_score_gives() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), None, SEED);
    let cache = Cache::open(&dir.path().join("cache"), "test").unwrap();
    prepare(dir.path(), &cache, &m);
    run(&cache, &plan_of(&cache, &m, &["train llama cft-sampled *"]));
    let sampled: Vec<Response> = lines(&output(&cache, &m, "sample llama", "responses.jsonl"));
    let scores: Vec<Scores> = lines(&output(
        &cache,
        &m,
        "score llama cft-sampled",
        "scores.jsonl",
    ));
    let weights: Vec<Weights> = lines(&output(
        &cache,
        &m,
        "score llama cft-sampled",
        "weights.jsonl",
    ));
    assert_eq!(scores.len(), sampled.len());
    let checkpoint = cache
        .files()
        .model_dir(&record(&cache, &m, "train llama strict2 *"))
        .unwrap();
    let base = Path::new(FIXTURES).join("llama");
    for ((r, s), w) in sampled.iter().zip(&scores).zip(&weights).take(3) {
        let seq: Vec<u32> = r
            .prompt_ids
            .iter()
            .chain(&r.response_ids)
            .copied()
            .collect();
        let p = r.prompt_ids.len();
        let (cft, base) = (cft_score(&checkpoint, &seq), cft_score(&base, &seq));
        let want: Vec<f32> = (p - 1..seq.len() - 1).map(|t| cft[t] - base[t]).collect();
        assert_eq!(s.s.len(), r.response_ids.len());
        for (t, (got, want)) in s.s.iter().zip(&want).enumerate() {
            assert!(
                (got - want).abs() < 1e-5,
                "example {} token {t}: {got} vs {want}",
                r.idx
            );
        }
        let count = (0.25 * s.s.len() as f64).ceil() as usize;
        assert_eq!(w.weights.iter().filter(|x| **x == 1.0).count(), count);
        let least_marked = (0..s.s.len())
            .filter(|&t| w.weights[t] == 1.0)
            .map(|t| s.s[t])
            .fold(f32::INFINITY, f32::min);
        assert!(
            (0..s.s.len()).all(|t| w.weights[t] == 1.0 || s.s[t] <= least_marked),
            "the marked tokens have the largest s_t"
        );
    }
    // The checkpoint differs from the base model, so the scores say something.
    let largest = scores
        .iter()
        .flat_map(|s| &s.s)
        .fold(0f32, |m, x| m.max(x.abs()));
    assert!(largest > 1e-3, "largest |s_t| {largest}");
    // The training saw the greedy-correct and the sampled responses.
    let greedy: Vec<Response> = lines(&output(&cache, &m, "greedy llama", "responses.jsonl"));
    let trained: Vec<&Response> = greedy
        .iter()
        .filter(|r| r.correct)
        .chain(&sampled)
        .collect();
    let tokens: usize = trained.iter().map(|r| r.response_ids.len()).sum();
    let metrics = record(&cache, &m, "train llama cft-sampled *").metrics;
    // 4 epochs of ceil(n / 4) steps over every response token
    let steps = metrics["steps"].as_array().map(Vec::len);
    assert_eq!(steps, Some(4 * trained.len().div_ceil(4)), "{metrics}");
    assert_eq!(
        metrics["response_tokens"].as_u64(),
        Some(4 * tokens as u64),
        "{metrics}"
    );
}

/// A copy of the Llama fixture whose tokenizer drops its last merges: the same vocabulary
/// size, other token boundaries.
fn other_tokenizer(dir: &Path) -> PathBuf {
    let out = dir.join("llama-other-bpe");
    std::fs::create_dir_all(&out).unwrap();
    for f in std::fs::read_dir(Path::new(FIXTURES).join("llama")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, out.join(f.file_name().unwrap())).unwrap();
    }
    let path = out.join("tokenizer.json");
    let mut t: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let merges = t["model"]["merges"].as_array_mut().unwrap();
    merges.truncate(merges.len() / 2);
    std::fs::write(&path, t.to_string()).unwrap();
    out
}

/// A copy of the Llama fixture with an added token (as Qwen3 adds to Qwen2.5's): the same
/// tokenizer for the text it was given.
fn added_token(dir: &Path) -> PathBuf {
    let out = dir.join("llama-added");
    std::fs::create_dir_all(&out).unwrap();
    for f in std::fs::read_dir(Path::new(FIXTURES).join("llama")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, out.join(f.file_name().unwrap())).unwrap();
    }
    let path = out.join("tokenizer.json");
    let mut t: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let added = t["added_tokens"].as_array_mut().unwrap();
    let next = added.iter().filter_map(|a| a["id"].as_u64()).max().unwrap() + 1;
    let mut extra = added[0].clone();
    extra["id"] = serde_json::json!(next);
    extra["content"] = serde_json::json!("<think>");
    added.push(extra);
    std::fs::write(&path, t.to_string()).unwrap();
    out
}

/// With a tokenizer that tokenises alike, the transferred responses keep their ids and the
/// source's critical tokens are reused unchanged; with another, the text is tokenised again
/// by the target's tokenizer and scored.
#[test]
fn transfer_reuses_masks_of_the_same_tokenizer_and_detects_another() {
    let dir = tempfile::tempdir().unwrap();
    let same = added_token(dir.path());
    let other = other_tokenizer(dir.path());
    assert!(
        cft::stages::transfer::same_tokenizer(&Path::new(FIXTURES).join("llama"), &same).unwrap()
    );
    assert!(
        !cft::stages::transfer::same_tokenizer(&Path::new(FIXTURES).join("llama"), &other).unwrap()
    );

    let cache = Cache::open(&dir.path().join("cache"), "test").unwrap();
    prepare(dir.path(), &cache, &manifest(dir.path(), None, SEED));
    let source: Vec<Response> = {
        let m = manifest(dir.path(), Some(&same), SEED);
        run(
            &cache,
            &plan_of(&cache, &m, &["train other cft-transfer *"]),
        );
        let transfer = record(&cache, &m, "transfer other from llama");
        assert_eq!(
            transfer.metrics["same_tokenizer"], true,
            "{}",
            transfer.metrics
        );
        let source: Vec<Response> = lines(&output(&cache, &m, "greedy llama", "responses.jsonl"));
        let moved: Vec<Response> = lines(&output(
            &cache,
            &m,
            "transfer other from llama",
            "responses.jsonl",
        ));
        let correct: Vec<&Response> = source.iter().filter(|r| r.correct).collect();
        assert!(!correct.is_empty());
        assert_eq!(moved.len(), correct.len());
        for (a, b) in correct.iter().zip(&moved) {
            assert_eq!(a.response_ids, b.response_ids);
        }
        let critical: Vec<Weights> = lines(&output(
            &cache,
            &m,
            "criticality llama strict-k2",
            "weights.jsonl",
        ));
        let reused: Vec<Weights> = lines(&output(
            &cache,
            &m,
            "score other cft-transfer",
            "weights.jsonl",
        ));
        assert_eq!(reused, critical, "the source's masks, unchanged");
        assert_eq!(
            record(&cache, &m, "score other cft-transfer").metrics["reused"],
            true
        );
        source
    };

    let m = manifest(dir.path(), Some(&other), SEED);
    run(
        &cache,
        &plan_of(&cache, &m, &["train other cft-transfer *"]),
    );
    let transfer = record(&cache, &m, "transfer other from llama");
    assert_eq!(
        transfer.metrics["same_tokenizer"], false,
        "{}",
        transfer.metrics
    );
    let moved: Vec<Response> = lines(&output(
        &cache,
        &m,
        "transfer other from llama",
        "responses.jsonl",
    ));
    let source_tok =
        cft::model::TextTokenizer::from_dir(&Path::new(FIXTURES).join("llama")).unwrap();
    let target_tok = cft::model::TextTokenizer::from_dir(&other).unwrap();
    let mut differ = false;
    for (a, b) in source.iter().filter(|r| r.correct).zip(&moved) {
        let text = source_tok.decode(&a.response_ids, false).unwrap();
        assert_eq!(b.response_ids, target_tok.encode(&text, false).unwrap());
        differ |= a.response_ids != b.response_ids;
    }
    assert!(differ, "the other tokenizer splits some response otherwise");
    let score = record(&cache, &m, "score other cft-transfer");
    assert_eq!(score.metrics["reused"], false, "{}", score.metrics);
    let scores: Vec<Scores> = lines(&output(
        &cache,
        &m,
        "score other cft-transfer",
        "scores.jsonl",
    ));
    for (s, r) in scores.iter().zip(&moved) {
        assert_eq!(s.s.len(), r.response_ids.len());
    }
}
