//! How a counterfactual branch ends and is graded. Hand-made branches (the kept tokens
//! `y_<t ++ [alternative]`, then a scripted continuation standing in for the model) are
//! replayed token by token through the engine's own finish rule, with the rollout stage's
//! judge; the verdict must be the one the Qwen2.5-Math harness gives the whole continuation
//! (cut at its first stop string), and the opt-in early stop must never change it on these
//! cases. Each case is one where the old rule (stop at the first complete answer of any form)
//! gave another verdict.

mod common;

use cft::cft::rollout::{Judge, budget};
use cft::eval::{Benchmark, grade};
use cft::generate::ending::cut_at_stop;
use cft::generate::{Ending, FinishReason, StopPredicate, finish_reason};
use cft::manifest::{EarlyStop, Template};
use cft::model::TextTokenizer;
use cft::stages::annotate::GradeJudge;
use cft::stages::prompt::stop_strings;

const MAX_NEW: usize = 512;

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_dir(&common::fixture("qwen2")).unwrap()
}

/// The rollout stage's judge for `template`, with the fixture's EOS (`<|im_end|>`).
fn judge<'t>(tok: &'t TextTokenizer, template: Template, early_stop: EarlyStop) -> GradeJudge<'t> {
    let eos = [tok.token_id("<|im_end|>").unwrap()];
    GradeJudge {
        ending: Ending::new(tok, &eos, stop_strings(template), MAX_NEW),
        early_stop,
        benchmark: Benchmark::Gsm8k,
        golds: vec!["14".into()],
    }
}

/// The branch as the engine runs it: the budget the rollout gives it, then one scripted token
/// per step until the engine's finish rule ends it.
fn replay(judge: &GradeJudge<'_>, kept: &[u32], script: &[u32]) -> (Vec<u32>, FinishReason) {
    let eos = judge.ending.end_ids().to_vec();
    let room = budget(MAX_NEW, kept, &eos, judge);
    if room == 0 {
        return (Vec::new(), FinishReason::Length);
    }
    let mut stop: Option<StopPredicate<'_>> =
        Some(Box::new(|generated: &[u32]| judge.ended(kept, generated)));
    let mut generated = Vec::new();
    for &t in script {
        generated.push(t);
        if let Some(reason) = finish_reason(&eos, &mut stop, &generated, room) {
            return (generated, reason);
        }
    }
    panic!("the script ran out before the branch ended: give it an end");
}

struct Case {
    what: &'static str,
    template: Template,
    kept: &'static str,
    continuation: &'static str,
}

const CASES: [Case; 4] = [
    Case {
        what: "a box after \"The answer is\" wins",
        template: Template::Qwen25MathCot,
        kept: "Liam has 13 books and buys 1. The answer is 14. ",
        continuation: "Wait, he gave 2 away first, so \\boxed{12}.<|im_end|>",
    },
    Case {
        what: "a marker-less correct answer, then a stop string and an invented next turn",
        template: Template::Cot,
        kept: "Liam has 13 + 1 = 14 books.",
        continuation: "\n\nQuestion: Tom has 3 apples and eats 1. How many are left?\nAnswer: 3 - 1 = 2.<|im_end|>",
    },
    Case {
        what: "\"The answer is\" keeps the text after it, up to EOS",
        template: Template::Qwen25MathCot,
        kept: "Liam has 13 + 1 books. The answer is 14.",
        continuation: "\n\nLiam's books are 13 + 1 = 14.<|im_end|>",
    },
    Case {
        what: "an answer that ends only at EOS",
        template: Template::Qwen25MathCot,
        kept: "13 + 1 = 14",
        continuation: " books now, and 2 more next week.<|im_end|>",
    },
];

/// What the harness gives the whole continuation: special tokens skipped, cut at the first
/// stop string, stripped, graded.
fn harness(tok: &TextTokenizer, template: Template, kept: &[u32], script: &[u32]) -> bool {
    let text = tok.decode(&[kept, script].concat(), true).unwrap();
    let graded = cut_at_stop(&text, &stop_strings(template))
        .trim()
        .to_string();
    grade(Benchmark::Gsm8k, &graded, "14").correct
}

#[test]
fn branches_are_graded_as_the_harness_grades_the_whole_continuation() {
    let tok = tokenizer();
    for case in CASES {
        let kept = tok.encode(case.kept, false).unwrap();
        let script = tok.encode(case.continuation, false).unwrap();
        let faithful = judge(&tok, case.template, EarlyStop::None);
        let (generated, _) = replay(&faithful, &kept, &script);
        let verdict = faithful.correct(0, &[kept.as_slice(), &generated].concat());
        assert_eq!(
            verdict,
            harness(&tok, case.template, &kept, &script),
            "{}",
            case.what
        );
        // The old rule graded the text up to the first complete answer; each case is one
        // where that differs from the harness.
        let old = grade(Benchmark::Gsm8k, case.kept.trim(), "14").correct;
        let whole_uncut = grade(
            Benchmark::Gsm8k,
            tok.decode(&[kept.as_slice(), &script].concat(), true)
                .unwrap()
                .trim(),
            "14",
        )
        .correct;
        assert!(
            old != verdict || whole_uncut != verdict,
            "{}: not a case that tells the rules apart",
            case.what
        );

        // The opt-in early stop does not stop at any of these answers, so it agrees.
        let early = judge(&tok, case.template, EarlyStop::Answer);
        let (stopped, _) = replay(&early, &kept, &script);
        assert_eq!(
            early.correct(0, &[kept.as_slice(), &stopped].concat()),
            verdict,
            "{}",
            case.what
        );
    }
}

#[test]
fn a_branch_stops_at_the_stop_string_not_after_the_invented_turn() {
    let tok = tokenizer();
    let case = &CASES[1];
    let kept = tok.encode(case.kept, false).unwrap();
    let script = tok.encode(case.continuation, false).unwrap();
    let (generated, reason) = replay(&judge(&tok, case.template, EarlyStop::None), &kept, &script);
    assert_eq!(reason, FinishReason::Stop);
    let text = tok.decode(&generated, true).unwrap();
    assert!(text.contains("\n\nQuestion:"), "{text:?}");
    assert!(
        !text.contains("Tom"),
        "generated past the stop string: {text:?}"
    );
}

#[test]
fn the_early_stop_stops_at_a_closed_box_and_keeps_the_verdict() {
    let tok = tokenizer();
    let kept = tok
        .encode("13 + 1 = 14, so the answer is \\boxed{14", false)
        .unwrap();
    let script = tok
        .encode("} books.\n\nThat is all: 13 and 1 more.<|im_end|>", false)
        .unwrap();
    let faithful = judge(&tok, Template::Qwen25MathCot, EarlyStop::None);
    let early = judge(&tok, Template::Qwen25MathCot, EarlyStop::Answer);
    let (full, full_reason) = replay(&faithful, &kept, &script);
    let (short, short_reason) = replay(&early, &kept, &script);
    assert_eq!(full_reason, FinishReason::Eos);
    assert_eq!(short_reason, FinishReason::Stop);
    assert!(
        short.len() < full.len() / 2,
        "{} vs {}",
        short.len(),
        full.len()
    );
    let verdict = |g: &[u32]| faithful.correct(0, &[kept.as_slice(), g].concat());
    assert!(verdict(&full));
    assert_eq!(verdict(&short), verdict(&full));
}

#[test]
fn an_alternative_that_ends_the_response_gets_no_continuation() {
    let tok = tokenizer();
    let j = judge(&tok, Template::Cot, EarlyStop::None);
    let eos = j.ending.end_ids().to_vec();
    // the alternative is the end token
    let mut kept = tok.encode("13 + 1 = 14", false).unwrap();
    kept.push(eos[0]);
    assert_eq!(budget(MAX_NEW, &kept, &eos, &j), 0);
    // the alternative completes a stop string
    let kept = tok.encode("13 + 1 = 14\n\nQuestion:", false).unwrap();
    assert_eq!(budget(MAX_NEW, &kept, &eos, &j), 0);
    // the budget counts the kept tokens
    let kept = tok.encode("13 + 1 = 14", false).unwrap();
    assert_eq!(budget(MAX_NEW, &kept, &eos, &j), MAX_NEW - kept.len());
}

#[test]
fn the_kept_response_and_the_graded_text_of_a_generation() {
    let tok = tokenizer();
    let eos = tok.token_id("<|im_end|>").unwrap();
    let ending = Ending::new(&tok, &[eos], stop_strings(Template::Cot), MAX_NEW);
    // a stop string: y ends before it, the graded text is cut at it and stripped
    let generated = tok
        .encode(" 13 + 1 = 14.\n\nQuestion: next", false)
        .unwrap();
    let y = ending.kept(&generated);
    let y_text = tok.decode(&y, true).unwrap();
    assert!(y_text.starts_with(" 13 + 1 = 14"), "{y_text:?}");
    assert!(!y_text.contains("Question"), "{y_text:?}");
    assert_eq!(ending.graded_text(&generated).unwrap(), "13 + 1 = 14.");
    // an end token: y stops before it, and it ends the response
    let mut generated = tok.encode("13 + 1 = 14", false).unwrap();
    let n = generated.len();
    generated.push(eos);
    assert_eq!(ending.kept(&generated), generated[..n].to_vec());
    assert_eq!(
        finish_reason(ending.end_ids(), &mut None, &generated, MAX_NEW),
        Some(FinishReason::Eos)
    );
    // `<|endoftext|>` is a stop string of every harness template and a special token of
    // this vocabulary: it ends generation as a token (the harness's `stop_token_ids`)
    let endoftext = tok.token_id("<|endoftext|>").unwrap();
    assert!(ending.end_ids().contains(&endoftext));
}
