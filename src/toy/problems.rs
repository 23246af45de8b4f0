//! GSM8K-format arithmetic word problems: a question, a step-by-step solution and `#### N`.
//!
//! The wording varies (names, items, verbs, sentence frames) while the numbers and the
//! operations decide the answer — the structure the paper's method relies on: many tokens of
//! a solution can be replaced freely, a few cannot. Splits draw from independent streams;
//! `hard` uses more steps and plays the out-of-domain benchmark.

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

fn one(rng: &mut Rng, min_steps: u64, max_steps: u64) -> Problem {
    let (name, he) = *rng.pick(&NAMES);
    let items = *rng.pick(&ITEMS);
    let start = rng.range(2, 40);
    let steps = rng.range(min_steps, max_steps);

    let mut question = vec![match rng.range(0, 2) {
        0 => format!("{name} has {start} {items}."),
        1 => format!("{name} starts with {start} {items}."),
        _ => format!("There are {start} {items} in {name}'s box."),
    }];
    let mut solution = vec![match rng.range(0, 1) {
        0 => format!("{name} starts with {start} {items}."),
        _ => format!("At first {name} has {start} {items}."),
    }];
    let mut value = start;
    for _ in 0..steps {
        let op = loop {
            let op = match rng.range(0, 3) {
                0 => Op::Add,
                1 => Op::Sub,
                2 => Op::Mul,
                _ => Op::Div,
            };
            let ok = match op {
                Op::Add => true,
                Op::Sub => value >= 2,
                Op::Mul => value <= 150,
                Op::Div => (2..=5).any(|d| value.is_multiple_of(d)),
            };
            if ok {
                break op;
            }
        };
        let (q, s, next) = match op {
            Op::Add => {
                let b = rng.range(1, 30);
                let next = value + b;
                let q = match rng.range(0, 2) {
                    0 => format!("Then {he} buys {b} more."),
                    1 => format!("{name} finds {b} more {items}."),
                    _ => format!("A friend gives {name} {b} {items}."),
                };
                let s = match rng.range(0, 1) {
                    0 => {
                        format!("After getting {b} more, {he} has {value} + {b} = {next} {items}.")
                    }
                    _ => format!("{value} + {b} = {next}, so {he} now has {next} {items}."),
                };
                (q, s, next)
            }
            Op::Sub => {
                let b = rng.range(1, value - 1);
                let next = value - b;
                let q = match rng.range(0, 2) {
                    0 => format!("Then {he} gives away {b} {items}."),
                    1 => format!("{name} loses {b} of them."),
                    _ => format!("{name} uses {b} {items}."),
                };
                let s = match rng.range(0, 1) {
                    0 => format!("After losing {b}, {he} has {value} - {b} = {next} {items}."),
                    _ => format!("{value} - {b} = {next}, so {he} now has {next} {items}."),
                };
                (q, s, next)
            }
            Op::Mul => {
                let b = rng.range(2, 4);
                let next = value * b;
                let word = match b {
                    2 => "doubles",
                    3 => "triples",
                    _ => "grows four times",
                };
                let q = match rng.range(0, 1) {
                    0 => format!("Then the number of {items} {word}."),
                    _ => format!("{name} ends up with {b} times as many {items}."),
                };
                let s = match rng.range(0, 1) {
                    0 => format!("That is {value} * {b} = {next} {items}."),
                    _ => format!("{value} * {b} = {next}, so {he} now has {next} {items}."),
                };
                (q, s, next)
            }
            Op::Div => {
                let choices: Vec<u64> = (2..=5).filter(|d| value.is_multiple_of(*d)).collect();
                let b = *rng.pick(&choices);
                let next = value / b;
                let q = match rng.range(0, 1) {
                    0 => format!("Then {he} splits them equally into {b} bags and keeps one bag."),
                    _ => {
                        format!("{name} shares them equally among {b} friends, keeping one share.")
                    }
                };
                let s = match rng.range(0, 1) {
                    0 => format!("One share is {value} / {b} = {next} {items}."),
                    _ => format!("{value} / {b} = {next}, so {he} now has {next} {items}."),
                };
                (q, s, next)
            }
        };
        question.push(q);
        solution.push(s);
        value = next;
    }
    question.push(match rng.range(0, 2) {
        0 => format!("How many {items} does {name} have now?"),
        1 => format!("How many {items} does {name} have at the end?"),
        _ => format!("What is the number of {items} {name} has in the end?"),
    });
    solution.push(format!("#### {value}"));
    Problem {
        question: question.join(" "),
        answer: solution.join("\n"),
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
