//! Answer extraction: which part of a model's response is its final answer.
//!
//! The order is the reference's (`extract_answer` in Qwen2.5-Math `parser.py`): Minerva's
//! "final answer is $…$. I hope", then the last `\boxed{…}` (braces matched), then "The
//! answer is", "final answer is", the Chinese "答案是", and finally the last number in the
//! text. The harness then cleans the piece (drops line breaks, a leading `:`, a trailing
//! `.` or `/`) and normalises it with `strip_string` — twice, because `run_execute`
//! strips the already stripped prediction again; [`extract_prediction`] does all of it.

use std::sync::LazyLock;

use regex::Regex;

use super::normalize::strip_string;

static LAST_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"-?\d*\.?\d+").unwrap_or_else(|e| unreachable!("{e}")));
static NEWLINE_BLANKS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\n\s*").unwrap_or_else(|e| unreachable!("{e}")));
static TRIGGER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("choice is|answer is").unwrap_or_else(|e| unreachable!("{e}")));
static CHOICE_LETTER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(A|B|C|D|E)\b").unwrap_or_else(|e| unreachable!("{e}")));

/// The prediction the harness grades: extraction, then `strip_string` as `run_execute` does.
pub fn extract_prediction(response: &str, skip_unit: bool) -> String {
    let pred = extract_answer(response, skip_unit);
    strip_string(&pred, skip_unit)
}

/// [`extract_prediction`] for a multiple-choice benchmark, as the harness takes it for
/// `mmlu_stem`, `sat_math` and `aqua`: `extract_answer` returns `parser.py`'s own
/// `choice_answer_clean` of the response at once, and `run_execute` strips that.
pub fn extract_choice_prediction(response: &str) -> String {
    let text = response.replace("\u{43a}\u{438}", "");
    strip_string(&parser_choice_answer_clean(&text), false)
}

/// `choice_answer_clean` of the harness's `parser.py` (not `grader.py`'s, which
/// [`choice_answer_clean`] is): with several "answer is" or "choice is", only the first
/// "\n\n" block counts; after the last trigger the **first** standalone letter A-E is the
/// answer, with no trigger the last one, with no letter the cleaned text.
pub fn parser_choice_answer_clean(response: &str) -> String {
    const TRIGGERS: [&str; 2] = ["choice is", "answer is"];
    let mut pred = response.trim_matches('\n');
    if TRIGGERS.iter().any(|t| pred.matches(t).count() > 1) {
        pred = pred.split("\n\n").next().unwrap_or("");
    }
    let after_trigger = TRIGGER.find_iter(pred).last().map(|m| m.end());
    if let Some(end) = after_trigger {
        pred = &pred[end..];
    }
    let p = pred
        .trim_matches('\n')
        .trim_end_matches('.')
        .trim_end_matches('/')
        .trim_matches(' ')
        .trim_start_matches(':');
    let upper = p.to_uppercase();
    let mut letters = CHOICE_LETTER.find_iter(&upper);
    let letter = match after_trigger {
        Some(_) => letters.next(),
        None => letters.last(),
    };
    let picked = match letter {
        Some(m) => m.as_str().to_string(),
        None => py_strip(p).trim_matches('.').to_string(),
    };
    picked
        .trim_end_matches('.')
        .trim_end_matches('/')
        .to_string()
}

/// `extract_answer(pred_str, data_name)` for the free-form benchmarks.
pub fn extract_answer(response: &str, skip_unit: bool) -> String {
    let text = response.replace("\u{43a}\u{438}", "");
    let raw = raw_answer(&text);
    let Some(raw) = raw else {
        return String::new();
    };
    let mut pred = NEWLINE_BLANKS.replace_all(&raw, "").into_owned();
    if let Some(rest) = pred.strip_prefix(':') {
        pred = rest.to_string();
    }
    if let Some(rest) = pred.strip_suffix('.') {
        pred = rest.to_string();
    }
    if let Some(rest) = pred.strip_suffix('/') {
        pred = rest.to_string();
    }
    strip_string(&pred, skip_unit)
}

/// The answer before cleaning; `None` where the reference returns "" at once (`boxed` at end).
fn raw_answer(text: &str) -> Option<String> {
    if text.contains("final answer is $") && text.contains("$. I hope") {
        let after = text.split_once("final answer is $").map_or("", |(_, a)| a);
        let inner = after.split_once("$. I hope").map_or(after, |(b, _)| b);
        return Some(inner.trim().to_string());
    }
    if text.contains("boxed") {
        let last = text.rsplit("boxed").next().unwrap_or("");
        if last.is_empty() {
            return None;
        }
        return Some(boxed_content(last));
    }
    for trigger in ["he answer is", "final answer is"] {
        if text.contains(trigger) {
            return Some(text.rsplit(trigger).next().unwrap_or("").trim().to_string());
        }
    }
    if let Some((_, after)) = text.split_once("答案是") {
        let first = after.trim().split("\n\n").next().unwrap_or("");
        return Some(first.trim().to_string());
    }
    let no_commas = text.replace(',', "");
    Some(
        LAST_NUMBER
            .find_iter(&no_commas)
            .last()
            .map_or(String::new(), |m| m.as_str().to_string()),
    )
}

/// What follows the last `boxed`: the brace-matched group, or the text up to a `$`.
pub fn boxed_content(after: &str) -> String {
    let Some(inner) = after.strip_prefix('{') else {
        return after.split('$').next().unwrap_or("").trim().to_string();
    };
    let mut depth = 1usize;
    let mut out = String::new();
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// The last `\boxed{…}` of a worked solution (how MATH and Minerva gold answers are taken).
pub fn last_boxed(text: &str) -> Option<String> {
    if !text.contains("boxed") {
        return None;
    }
    let last = text.rsplit("boxed").next().unwrap_or("");
    Some(boxed_content(last))
}

/// `choice_answer_clean` of the reference's `grader.py`: the last standalone letter A–E.
pub fn choice_answer_clean(pred: &str) -> String {
    let p = pred
        .trim_matches('\n')
        .trim_end_matches('.')
        .trim_end_matches('/')
        .trim_matches(' ')
        .trim_start_matches(':');
    let upper = p.to_uppercase();
    let picked = match CHOICE_LETTER.find_iter(&upper).last() {
        Some(m) => m.as_str().to_string(),
        None => py_strip(p).trim_matches('.').to_string(),
    };
    picked
        .trim_end_matches('.')
        .trim_end_matches('/')
        .to_string()
}

/// Python's `str.strip()`: its whitespace is Rust's plus the separators U+001C-U+001F.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: &str) -> String {
        extract_prediction(s, false)
    }

    #[test]
    fn minerva_final_answer_wins() {
        let r = "so \\boxed{3}. Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.";
        assert_eq!(ex(r), "\\frac{1}{2}");
    }

    #[test]
    fn last_boxed_with_nested_braces() {
        assert_eq!(
            ex("first \\boxed{1} then \\boxed{\\frac{3}{4}}."),
            "\\frac{3}{4}"
        );
        assert_eq!(ex("\\boxed 5$ done"), "5");
        assert_eq!(ex("text ending in boxed"), "");
    }

    #[test]
    fn answer_is_phrases() {
        assert_eq!(ex("So 2+3=5. The answer is 5."), "5");
        assert_eq!(ex("the final answer is 12 apples"), "12");
        assert_eq!(ex("The answer is: 7"), "7");
    }

    #[test]
    fn last_number_drops_commas() {
        assert_eq!(ex("We get 1,234 in total"), "1234");
        assert_eq!(ex("values -3 and .5"), "0.5");
        assert_eq!(ex("no digits here"), "");
    }

    #[test]
    fn multi_line_answers_are_joined() {
        assert_eq!(ex("The answer is\n 12\n 3"), "123");
    }

    #[test]
    fn choice_letters() {
        assert_eq!(choice_answer_clean("(B)"), "B");
        assert_eq!(choice_answer_clean("D1"), "D1");
        assert_eq!(choice_answer_clean("A or C."), "C");
    }
}
