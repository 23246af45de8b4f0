//! Multiple-choice grading against the Qwen2.5-Math harness: `choice_answer_clean` and the
//! whole verdict (`extract_answer` with its letter step for `mmlu_stem`, `strip_string`,
//! `math_equal` against a letter) on the cases of `tests/fixtures/grader/choice.jsonl`,
//! written by `scripts/make_choice_fixtures.py` from the harness's own functions. MedQA is
//! graded exactly that way, so every case must agree.

use cft::eval::extract::choice_answer_clean;
use cft::eval::{Benchmark, grade};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/grader/choice.jsonl"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn choice_answer_clean_agrees_with_the_harness() {
    let cases: Vec<Value> = cases()
        .into_iter()
        .filter(|c| c["kind"] == "clean")
        .collect();
    assert!(cases.len() > 400, "{} cases", cases.len());
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let input = c["input"].as_str().unwrap();
            let ours = choice_answer_clean(input);
            (ours != c["output"].as_str().unwrap())
                .then(|| format!("{input:?}: ours {ours:?}, harness {}", c["output"]))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn medqa_verdicts_agree_with_the_harness_multiple_choice_grading() {
    let cases: Vec<Value> = cases()
        .into_iter()
        .filter(|c| c["kind"] == "grade")
        .collect();
    assert!(cases.len() > 700, "{} cases", cases.len());
    let correct = cases.iter().filter(|c| c["correct"] == true).count();
    assert!(
        correct > 100 && correct < cases.len() - 100,
        "{correct} correct"
    );
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let (response, gold) = (c["response"].as_str().unwrap(), c["gold"].as_str().unwrap());
            let v = grade(Benchmark::Medqa, response, gold);
            let agree = v.pred == c["pred"].as_str().unwrap() && v.correct == c["correct"];
            (!agree).then(|| {
                format!(
                    "{response:?} vs {gold}: ours {:?} {}, harness {} {}",
                    v.pred, v.correct, c["pred"], c["correct"]
                )
            })
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
