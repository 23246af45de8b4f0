//! Agreement with the Qwen2.5-Math reference grader on realistic (response, gold) pairs.
//!
//! `tests/fixtures/grader/reference.jsonl` is produced by `scripts/grader_reference.py` from
//! the real benchmark files and the reference's own Python (`extract_answer`, `strip_string`
//! and `math_equal`). This test re-grades every line and requires at least 99% agreement on
//! the verdict overall; it prints the rate per benchmark and lists the disagreements.

use std::collections::BTreeMap;

use cft::eval::{Benchmark, grade};

#[derive(serde::Deserialize)]
struct Case {
    benchmark: String,
    response: String,
    answer: String,
    pred: String,
    correct: bool,
}

#[test]
fn verdicts_agree_with_reference() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/grader/reference.jsonl"
    ))?;
    let mut per: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut shown = 0;
    for line in text.lines() {
        let case: Case = serde_json::from_str(line)?;
        let bench: Benchmark = case.benchmark.parse()?;
        let v = grade(bench, &case.response, &case.answer);
        let entry = per.entry(case.benchmark.clone()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(v.correct == case.correct);
        entry.2 += usize::from(v.pred == case.pred);
        if v.correct != case.correct && shown < 60 {
            shown += 1;
            eprintln!(
                "DISAGREE [{}] pred={:?} ref_pred={:?} gold={:?} ours={} ref={}",
                case.benchmark, v.pred, case.pred, case.answer, v.correct, case.correct
            );
        }
    }
    let (mut n, mut agree, mut same_pred) = (0, 0, 0);
    for (b, (total, ok, p)) in &per {
        eprintln!(
            "{b:>14}: verdict agreement {ok}/{total} = {:.2}%, same pred {:.2}%",
            100.0 * *ok as f64 / *total as f64,
            100.0 * *p as f64 / *total as f64
        );
        n += total;
        agree += ok;
        same_pred += p;
    }
    let rate = agree as f64 / n as f64;
    eprintln!(
        "{:>14}: verdict agreement {agree}/{n} = {:.2}%, same pred {:.2}%",
        "overall",
        100.0 * rate,
        100.0 * same_pred as f64 / n as f64
    );
    assert!(rate >= 0.99, "agreement {rate:.4} below 0.99");
    Ok(())
}
