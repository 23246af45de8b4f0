//! GSM8K-format arithmetic word problems: a question, a step-by-step solution and `#### N`.
//!
//! The wording varies (names, items, verbs, sentence frames) while the numbers and the
//! operations decide the answer — the structure the paper's method relies on: many tokens of
//! a solution can be replaced freely, a few cannot. Each solution line restates the question's
//! event in its own words ("She gives away 4, so 13 - 4 = 9."), so the operand is copied from
//! the question and the verb picks the operation; values stay below 60 so that the arithmetic
//! is learnable by a ~1M-parameter model in minutes on a CPU. Splits draw from independent
//! streams; `hard` uses more steps and plays the out-of-domain benchmark.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub question: String,
    /// GSM8K style: solution lines, then `#### N`.
    pub answer: String,
}

const NAMES: [(&str, &str); 12] = [
    ("Tom", "he"),
    ("Ana", "she"),
    ("Liam", "he"),
    ("Mia", "she"),
    ("Noah", "he"),
    ("Zoe", "she"),
    ("Omar", "he"),
    ("Lena", "she"),
    ("Ravi", "he"),
    ("Iris", "she"),
    ("Ben", "he"),
    ("Sara", "she"),
];

const ITEMS: [&str; 10] = [
    "apples", "marbles", "stickers", "books", "coins", "pencils", "cookies", "stamps", "shells",
    "cards",
];

/// Values stay below this, so the arithmetic is a table a few-million-parameter model can
/// learn in minutes on a CPU (numbers are spelled digit by digit by the toy tokenizer).
const MAX_VALUE: u64 = 60;

#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// Generates `n` problems of a split. The same (seed, split, n, steps) gives the same problems.
pub fn generate(seed: u64, split: &str, n: u64, min_steps: u64, max_steps: u64) -> Vec<Problem> {
    let mut rng = Rng::stream(seed, &format!("toy-problems/{split}"));
    (0..n)
        .map(|_| one(&mut rng, min_steps, max_steps))
        .collect()
}

/// Capitalises the first letter (pronouns opening a sentence).
fn cap(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// How a solution line joins the restated event to its arithmetic: free wording, so these
/// tokens can be replaced without changing the answer.
const JOINS: [&str; 4] = [", so", ", which makes", ". Now", ", and"];

fn one(rng: &mut Rng, min_steps: u64, max_steps: u64) -> Problem {
    let (name, he) = *rng.pick(&NAMES);
    let he_cap = cap(he);
    let items = *rng.pick(&ITEMS);
    let start = rng.range(2, 20);
    let steps = rng.range(min_steps, max_steps);

    let mut question = vec![match rng.range(0, 2) {
        0 => format!("{name} has {start} {items}."),
        1 => format!("{name} starts with {start} {items}."),
        _ => format!("There are {start} {items} in {name}'s box."),
    }];
    let mut solution = vec![match rng.range(0, 2) {
        0 => format!("{name} starts with {start} {items}."),
        1 => format!("At first {he} has {start}."),
        _ => format!("{name} has {start} {items} to begin with."),
    }];
    let mut value = start;
    for _ in 0..steps {
        let op = loop {
            let op = match rng.range(0, 5) {
                0 | 1 => Op::Add,
                2 | 3 => Op::Sub,
                4 => Op::Mul,
                _ => Op::Div,
            };
            let ok = match op {
                Op::Add => value < MAX_VALUE - 1,
                Op::Sub => value >= 2,
                Op::Mul => value * 2 < MAX_VALUE,
                Op::Div => value >= 4 && value.is_multiple_of(2),
            };
            if ok {
                break op;
            }
        };
        // The question states an event; the solution restates it, then computes.
        let (q, echo, sign, b) = match op {
            Op::Add => {
                let b = rng.range(1, 9.min(MAX_VALUE - 1 - value));
                let (q, echo) = match rng.range(0, 2) {
                    0 => (
                        format!("Then {he} buys {b} more."),
                        format!("{he_cap} buys {b} more"),
                    ),
                    1 => (
                        format!("{name} finds {b} more {items}."),
                        format!("{name} finds {b} more"),
                    ),
                    _ => (
                        format!("A friend gives {name} {b} {items}."),
                        format!("{he_cap} gets {b} from a friend"),
                    ),
                };
                (q, echo, '+', b)
            }
            Op::Sub => {
                let b = rng.range(1, 9.min(value - 1));
                let (q, echo) = match rng.range(0, 2) {
                    0 => (
                        format!("Then {he} gives away {b} {items}."),
                        format!("{he_cap} gives away {b}"),
                    ),
                    1 => (
                        format!("{name} loses {b} of them."),
                        format!("{name} loses {b}"),
                    ),
                    _ => (
                        format!("{name} uses {b} {items}."),
                        format!("{he_cap} uses {b}"),
                    ),
                };
                (q, echo, '-', b)
            }
            Op::Mul => {
                let (q, echo) = match rng.range(0, 1) {
                    0 => (
                        format!("Then the number of {items} doubles."),
                        "The number doubles".to_string(),
                    ),
                    _ => (
                        format!("{name} ends up with twice as many {items}."),
                        format!("{he_cap} ends up with twice as many"),
                    ),
                };
                (q, echo, '*', 2)
            }
            Op::Div => {
                let (q, echo) = match rng.range(0, 1) {
                    0 => (
                        format!("Then {he} gives half of them away."),
                        format!("{he_cap} gives half away"),
                    ),
                    _ => (
                        format!("{name} shares them equally with a friend."),
                        format!("{he_cap} keeps half"),
                    ),
                };
                (q, echo, '/', 2)
            }
        };
        let next = match sign {
            '+' => value + b,
            '-' => value - b,
            '*' => value * b,
            _ => value / b,
        };
        let join = *rng.pick(&JOINS);
        let tail = if rng.range(0, 1) == 0 {
            String::new()
        } else {
            format!(" {items}")
        };
        question.push(q);
        solution.push(format!("{echo}{join} {value} {sign} {b} = {next}{tail}."));
        value = next;
    }
    question.push(match rng.range(0, 2) {
        0 => format!("How many {items} does {name} have now?"),
        1 => format!("How many {items} does {name} have at the end?"),
        _ => format!("How many {items} are left?"),
    });
    solution.push(format!("#### {value}"));
    Problem {
        question: question.join(" "),
        answer: solution.join("\n"),
    }
}

/// The option letters, in order.
const LETTERS: [char; 5] = ['A', 'B', 'C', 'D', 'E'];

/// One problem turned into a multiple-choice question: the options, the gold letter and a
/// solution that computes the value, then names its option.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The question, then `\nAnswer Choices: 12 (A) 17 (B) …`: each value before its letter,
    /// so that naming the option is copying the token after the value (a lookup a toy model
    /// learns in minutes; in MedQA's `(A) 12` order it stayed at chance).
    pub question: String,
    /// The solution lines, then `The answer is 14, which is (C).`
    pub answer: String,
    pub letter: String,
}

/// [`generate`]'s problems as multiple-choice questions with `choices` options (2-5): the
/// right value and distinct distractors within 9 of it, in an order drawn from a stream of
/// its own, so the problems themselves are those of the free-form split.
pub fn generate_choices(
    seed: u64,
    split: &str,
    n: u64,
    min_steps: u64,
    max_steps: u64,
    choices: u64,
) -> Vec<Choice> {
    let mut rng = Rng::stream(seed, &format!("toy-problems/{split}/choices"));
    let count = (choices as usize).clamp(2, LETTERS.len());
    generate(seed, split, n, min_steps, max_steps)
        .into_iter()
        .map(|p| as_choice(&p, count, &mut rng))
        .collect()
}

fn as_choice(p: &Problem, count: usize, rng: &mut Rng) -> Choice {
    let mut lines: Vec<&str> = p.answer.lines().collect();
    let value: u64 = lines
        .pop()
        .and_then(|l| l.strip_prefix("#### "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut values = vec![value];
    while values.len() < count {
        let offset = rng.range(1, 9);
        let candidate = match rng.range(0, 1) {
            0 => value + offset,
            _ => match value.checked_sub(offset) {
                Some(v) => v,
                None => value + offset,
            },
        };
        if !values.contains(&candidate) {
            values.push(candidate);
        }
    }
    rng.shuffle(&mut values);
    let at = values.iter().position(|v| *v == value).unwrap_or(0);
    let letter = LETTERS[at];
    let options: Vec<String> = values
        .iter()
        .zip(LETTERS)
        .map(|(v, l)| format!("{v} ({l})"))
        .collect();
    lines.push("");
    let mut answer = lines.join("\n");
    answer.push_str(&format!("The answer is {value}, which is ({letter})."));
    Choice {
        question: format!("{}\nAnswer Choices: {}", p.question, options.join(" ")),
        answer,
        letter: letter.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_problems_and_splits_differ() {
        let a = generate(7, "train", 50, 1, 4);
        assert_eq!(a, generate(7, "train", 50, 1, 4));
        assert_ne!(a, generate(7, "test", 50, 1, 4));
        assert_ne!(a, generate(8, "train", 50, 1, 4));
    }

    #[test]
    fn choices_hold_the_answer_once_under_the_gold_letter() {
        let free = generate(5, "train", 100, 1, 3);
        let mc = generate_choices(5, "train", 100, 1, 3, 5);
        assert_eq!(mc, generate_choices(5, "train", 100, 1, 3, 5));
        let mut letters = std::collections::BTreeSet::new();
        for (f, c) in free.iter().zip(&mc) {
            let gold = f.answer.lines().last().unwrap().trim_start_matches("#### ");
            assert!(c.question.starts_with(&f.question), "{}", c.question);
            let (_, options) = c.question.split_once("\nAnswer Choices: ").unwrap();
            let mine = format!("{gold} ({})", c.letter);
            assert!(options.contains(&mine), "{options} / {mine}");
            let values: Vec<&str> = options
                .split(") ")
                .map(|o| o.split_once(" (").unwrap().0)
                .collect();
            assert_eq!(values.len(), 5);
            assert_eq!(
                values.iter().filter(|v| **v == gold).count(),
                1,
                "{options}"
            );
            assert!(
                c.answer
                    .ends_with(&format!("The answer is {gold}, which is ({}).", c.letter))
            );
            letters.insert(c.letter.clone());
        }
        assert_eq!(letters.len(), 5, "every letter is the gold one somewhere");
    }

    #[test]
    fn answers_follow_the_solution_arithmetic() {
        for p in generate(1, "hard", 200, 5, 7) {
            let last = p.answer.lines().last().unwrap();
            let gold: u64 = last.trim_start_matches("#### ").parse().unwrap();
            // The second-to-last line states the final value.
            let prev = p.answer.lines().rev().nth(1).unwrap();
            assert!(prev.contains(&format!("= {gold}")), "{prev} / {gold}");
        }
    }
}
