//! The opt-in early stop of counterfactual branches (`[annotate] early_stop = "answer"`):
//! when may a branch stop before its end rule ([`crate::generate::Ending`]) ends it, without
//! changing its verdict?
//!
//! The grader reads the text the way the Qwen2.5-Math harness does (`extract_answer` in
//! `parser.py`, [`crate::eval::extract`]): Minerva's "final answer is $…$. I hope" first,
//! then the **last** `boxed`, then everything after the **last** "he answer is" (so trailing
//! text stays in the answer), then the last number. Text generated after a point can therefore
//! change the verdict through every form but one: once the last `boxed` of the text is a
//! closed `\boxed{…}` and no "final answer is $" has been written, only a new `boxed` or a
//! Minerva answer can change what is extracted — anything else the continuation writes lands
//! after the box, where `boxed_content` never looks, or is cut away with the stop string.
//!
//! Hence [`settled`] claims exactly this: for a text P it accepts and any continuation C such
//! that P·C holds no more occurrences of `boxed` than P and no "final answer is $", the
//! harness extracts the same answer from P·C (and from P·C cut at a stop string, since no
//! stop string contains `}`) as from P. "The answer is N", a `#### N` line and a bare last
//! number are never settled: any further text can change them (the harness keeps what
//! follows "The answer is"; a later number replaces the last one).

/// Whether the answer of `text` (a response so far, special tokens skipped) can no longer
/// change except through a new `boxed` or a Minerva-style answer.
pub fn settled(text: &str) -> bool {
    // Minerva's form outranks `\boxed{}` and could still be completed.
    if text.contains("final answer is $") {
        return false;
    }
    // The harness reads past the last "boxed"; the answer is final once its group closes.
    let Some(at) = text.rfind("boxed") else {
        return false;
    };
    let Some(group) = text[at + "boxed".len()..].strip_prefix('{') else {
        return false;
    };
    let mut depth = 1usize;
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Benchmark, grade};

    #[test]
    fn a_closed_box_settles_the_answer() {
        assert!(!settled("so \\boxed{\\frac{1}{2"));
        assert!(settled("so \\boxed{\\frac{1}{2}}"));
        assert!(settled("so \\boxed{3} and then some"));
        // the last box is the open one
        assert!(!settled("\\boxed{3} or rather \\boxed{4"));
        // `boxed` not followed by a group: the harness reads up to a `$`
        assert!(!settled("\\boxed 3"));
        // a Minerva answer could still outrank it
        assert!(!settled("The final answer is $5$ \\boxed{5}"));
    }

    #[test]
    fn answer_forms_that_later_text_can_change_never_settle() {
        assert!(!settled("The answer is 14. "));
        assert!(!settled("The answer is 14.\n"));
        assert!(!settled("So 3 + 4 = 7.\n#### 7\n"));
        assert!(!settled("She has 7 apples."));
    }

    /// Deterministic pseudo-random continuations over an alphabet rich in answer syntax.
    fn continuations() -> Vec<String> {
        let pieces = [
            "The answer is ",
            "the answer is",
            "\\boxed",
            "{",
            "}",
            "$",
            ". I hope",
            "final answer is",
            "18",
            "7",
            " ",
            "\n",
            ".",
            "\n\nQuestion:",
            "So ",
            "-",
            "3.5",
            ",",
            "x",
            "答案是",
            "####",
            "\\frac{1}{2}",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..3000)
            .map(|_| {
                let n = (next() % 12) as usize;
                (0..n)
                    .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    /// The claim of the module doc, checked: over many continuations that add no marker, the
    /// verdict of a settled text never changes; continuations that add one may change it.
    #[test]
    fn settled_verdicts_survive_every_continuation_without_a_new_marker() {
        let stops = ["\n\nQuestion:".to_string()];
        let prefixes = [
            ("Total: 3 + 4 = 7. So \\boxed{7}", "7"),
            ("The answer is 9. Hence \\boxed{7}", "7"),
            ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
            ("We get \\boxed{8}.", "7"),
        ];
        let mut checked = 0;
        let mut changed_with_marker = 0;
        for (p, gold) in prefixes {
            assert!(settled(p), "{p}");
            let before = grade(Benchmark::Gsm8k, p, gold);
            for c in continuations() {
                let whole = format!("{p}{c}");
                let graded = crate::generate::ending::cut_at_stop(&whole, &stops).trim();
                let after = grade(Benchmark::Gsm8k, graded, gold);
                let new_marker = graded.matches("boxed").count() > p.matches("boxed").count()
                    || graded.contains("final answer is $");
                if new_marker {
                    changed_with_marker += usize::from(after.correct != before.correct);
                } else {
                    checked += 1;
                    assert_eq!(after.pred, before.pred, "{p:?} + {c:?}");
                }
            }
        }
        assert!(checked > 1000, "{checked}");
        assert!(
            changed_with_marker > 0,
            "the continuations exercise new markers"
        );
    }

    /// What the old rule (stop at the first complete answer of any form) got wrong: each of
    /// these texts looked complete to it, and a continuation with no new box changes its
    /// verdict under the harness's extraction. None of them is settled.
    #[test]
    fn the_cases_the_old_rule_got_wrong_are_not_settled() {
        let cases = [
            // "The answer is" keeps its trailing text
            ("The answer is 14. ", "So 13 + 1 = 14 books.", "14"),
            // a later box wins over "The answer is"
            ("The answer is 14. ", "Checking: \\boxed{15}", "14"),
            // a `####` line is read by the last-number rule
            ("3 + 4 = 7\n#### 7\n", "Next: 8 + 1 = 9", "7"),
        ];
        for (p, c, gold) in cases {
            assert!(!settled(p), "{p:?}");
            let alone = grade(Benchmark::Gsm8k, p.trim(), gold);
            let whole = grade(Benchmark::Gsm8k, format!("{p}{c}").trim(), gold);
            assert_ne!(alone.correct, whole.correct, "{p:?} + {c:?}");
        }
    }
}
