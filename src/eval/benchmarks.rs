//! The eleven benchmarks of the paper, in the Qwen2.5-Math harness's file layouts, and MedQA
//! (paper §5.3), the multiple-choice one.
//!
//! Each loader reads one JSONL file (`<dir>/<name>/test.jsonl`; TabMWP's 1k subset is a JSON
//! object keyed by id) and takes question and gold answer exactly as the harness's
//! `parse_question` / `parse_ground_truth` do, including the final `strip_string` on the
//! gold answer, so that [`super::grade`] sees the same gold string the paper's numbers used.
//!
//! The harness has no MedQA loader. MedQA's JSONL (`question`, `options` keyed `A`..`E`,
//! `answer_idx`) is read the way the harness reads its own multiple-choice benchmarks
//! (`mmlu_stem`): the question, then `\nAnswer Choices: (A) … (B) …`, and the gold letter.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

use super::normalize::strip_string;
use super::pynum::py_float_repr;
use super::records::{Place, RecordError, read_records};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Benchmark {
    Gsm8k,
    Math,
    Svamp,
    Asdiv,
    Mawps,
    CarpEn,
    Tabmwp,
    MinervaMath,
    Gaokao2023En,
    OlympiadBench,
    CollegeMath,
    /// MedQA (Jin et al., 2021): multiple choice, graded as the harness grades `mmlu_stem`.
    Medqa,
}

impl Benchmark {
    /// The eleven benchmarks of the paper's tables and MedQA.
    pub const ALL: [Benchmark; 12] = [
        Benchmark::Gsm8k,
        Benchmark::Math,
        Benchmark::Svamp,
        Benchmark::Asdiv,
        Benchmark::Mawps,
        Benchmark::CarpEn,
        Benchmark::Tabmwp,
        Benchmark::MinervaMath,
        Benchmark::Gaokao2023En,
        Benchmark::OlympiadBench,
        Benchmark::CollegeMath,
        Benchmark::Medqa,
    ];

    /// The harness's `data_name`.
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::Gsm8k => "gsm8k",
            Benchmark::Math => "math",
            Benchmark::Svamp => "svamp",
            Benchmark::Asdiv => "asdiv",
            Benchmark::Mawps => "mawps",
            Benchmark::CarpEn => "carp_en",
            Benchmark::Tabmwp => "tabmwp",
            Benchmark::MinervaMath => "minerva_math",
            Benchmark::Gaokao2023En => "gaokao2023en",
            Benchmark::OlympiadBench => "olympiadbench",
            Benchmark::CollegeMath => "college_math",
            Benchmark::Medqa => "medqa",
        }
    }

    /// The grader of a benchmark named `name` in a manifest: the benchmark of that name, or
    /// GSM8K's for the manifest's own datasets (the toy family's splits), whose format it is.
    pub fn of_name(name: &str) -> Benchmark {
        name.parse().unwrap_or(Benchmark::Gsm8k)
    }

    /// Which grader a benchmark named `name` read in `format` needs beyond
    /// [`Benchmark::of_name`]: `Some(format)` only where the two differ, so stage parameters
    /// name it only then.
    pub fn grader_beyond_name(name: &str, format: &str) -> Option<String> {
        (Benchmark::of_name(name).name() != format).then(|| format.to_string())
    }

    /// Answers are option letters A-E: the harness's letter pick follows the extraction
    /// (`extract_answer`'s "choice answer" step for `mmlu*`, `sat_math` and `aqua`).
    pub fn multiple_choice(self) -> bool {
        self == Benchmark::Medqa
    }

    /// carp_en and minerva_math keep unit words (`STRIP_EXCEPTIONS` in the harness).
    pub fn skips_units(self) -> bool {
        matches!(self, Benchmark::CarpEn | Benchmark::MinervaMath)
    }

    /// The data file below the benchmark directory, in the harness's layout.
    pub fn file(self) -> &'static str {
        match self {
            Benchmark::Tabmwp => "tabmwp/test.jsonl",
            Benchmark::Gsm8k => "gsm8k/test.jsonl",
            Benchmark::Math => "math/test.jsonl",
            Benchmark::Svamp => "svamp/test.jsonl",
            Benchmark::Asdiv => "asdiv/test.jsonl",
            Benchmark::Mawps => "mawps/test.jsonl",
            Benchmark::CarpEn => "carp_en/test.jsonl",
            Benchmark::MinervaMath => "minerva_math/test.jsonl",
            Benchmark::Gaokao2023En => "gaokao2023en/test.jsonl",
            Benchmark::OlympiadBench => "olympiadbench/test.jsonl",
            Benchmark::CollegeMath => "college_math/test.jsonl",
            Benchmark::Medqa => "medqa/test.jsonl",
        }
    }
}

impl fmt::Display for Benchmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown benchmark `{0}` (expected one of gsm8k, math, svamp, asdiv, mawps, carp_en, tabmwp, minerva_math, gaokao2023en, olympiadbench, college_math, medqa)"
)]
pub struct UnknownBenchmark(pub String);

impl FromStr for Benchmark {
    type Err = UnknownBenchmark;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Benchmark::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBenchmark(s.to_string()))
    }
}

/// One question with its gold answer as the harness takes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    pub idx: usize,
    pub question: String,
    pub answer: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not valid JSON: {source}")]
    Json {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("{place}: {benchmark} record lacks a usable `{field}`")]
    Field {
        place: Place,
        benchmark: Benchmark,
        field: &'static str,
    },
}

/// TabMWP as PromptPG publishes it: one JSON object keyed by problem id (the 1k test subset).
const TABMWP_PROMPTPG: &str = "tabmwp/problems_test1k.json";

/// Loads `benchmark` from `dir` (the folder holding `gsm8k/`, `math/`, …), in file order.
/// TabMWP is read from the harness's `tabmwp/test.jsonl` or, failing that, from PromptPG's
/// `tabmwp/problems_test1k.json`.
pub fn load_benchmark(dir: &Path, benchmark: Benchmark) -> Result<Vec<Problem>, LoadError> {
    let mut path = dir.join(benchmark.file());
    if benchmark == Benchmark::Tabmwp && !path.exists() {
        path = dir.join(TABMWP_PROMPTPG);
    }
    load_benchmark_file(&path, benchmark)
}

/// Loads one benchmark file in `benchmark`'s layout: JSONL or parquet (the same fields as
/// columns), or for TabMWP also PromptPG's single JSON object keyed by id (a `.json` file).
pub fn load_benchmark_file(path: &Path, benchmark: Benchmark) -> Result<Vec<Problem>, LoadError> {
    let path = path.to_path_buf();
    let keyed_by_id =
        benchmark == Benchmark::Tabmwp && path.extension().is_some_and(|e| e == "json");
    let records: Vec<(Place, Value)> = if keyed_by_id {
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        // serde_json's map sorts keys; the harness keeps the file's order, and so must we.
        let entries: InOrder = serde_json::from_str(&text).map_err(|source| LoadError::Json {
            path: path.clone(),
            line: 1,
            source,
        })?;
        let place = Place {
            path: path.clone(),
            index: 1,
            row: false,
        };
        entries.0.into_iter().map(|v| (place.clone(), v)).collect()
    } else {
        read_records(&path)?
    };
    records
        .into_iter()
        .enumerate()
        .map(|(n, (place, r))| {
            let question = parse_question(&r, benchmark)
                .ok_or_else(|| field_err(&place, benchmark, fields(&r, benchmark).0))?;
            let answer = parse_gold(&r, benchmark)
                .ok_or_else(|| field_err(&place, benchmark, fields(&r, benchmark).1))?;
            let idx = r
                .get("idx")
                .and_then(Value::as_u64)
                .map_or(n, |i| i as usize);
            Ok(Problem {
                idx,
                question,
                answer,
            })
        })
        .collect()
}

/// The values of a JSON object in file order.
struct InOrder(Vec<Value>);

impl<'de> serde::Deserialize<'de> for InOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = InOrder;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object keyed by problem id")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<InOrder, A::Error> {
                let mut out = Vec::new();
                while let Some((_, v)) = map.next_entry::<String, Value>()? {
                    out.push(v);
                }
                Ok(InOrder(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The fields an error names when the question or the gold answer cannot be taken: for
/// MedQA the options (when the question is there) and the gold letter.
fn fields(r: &Value, benchmark: Benchmark) -> (&'static str, &'static str) {
    match benchmark {
        Benchmark::Medqa if text(r, "question").is_some() => ("options", "answer_idx"),
        Benchmark::Medqa => ("question", "answer_idx"),
        _ => ("question", "answer"),
    }
}

fn field_err(place: &Place, benchmark: Benchmark, field: &'static str) -> LoadError {
    LoadError::Field {
        place: place.clone(),
        benchmark,
        field,
    }
}

fn text(r: &Value, key: &str) -> Option<String> {
    match r.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => py_float_repr(f),
            _ => n.to_string(),
        }),
        _ => None,
    }
}

/// `parse_question` of the harness.
pub fn parse_question(r: &Value, benchmark: Benchmark) -> Option<String> {
    let q = match benchmark {
        Benchmark::Asdiv => format!(
            "{} {}",
            text(r, "body")?.trim(),
            text(r, "question")?.trim()
        ),
        Benchmark::Svamp => {
            let mut body = text(r, "Body")?.trim().to_string();
            if !body.ends_with('.') {
                body.push('.');
            }
            format!("{body} {}", text(r, "Question")?.trim())
        }
        Benchmark::Tabmwp => {
            let title = text(r, "table_title").filter(|t| !t.is_empty());
            let title = title.map_or(String::new(), |t| format!("regarding \"{t}\" "));
            let mut q = format!(
                "Read the following table {title}and answer a question:\n{}\n{}",
                text(r, "table")?,
                text(r, "question")?
            );
            if let Some(Value::Array(choices)) = r.get("choices")
                && !choices.is_empty()
            {
                let items: Vec<String> = choices
                    .iter()
                    .map(|c| py_str_repr(c.as_str().unwrap_or_default()))
                    .collect();
                q.push_str(&format!(
                    " Please select from the following options: [{}]",
                    items.join(", ")
                ));
            }
            q
        }
        Benchmark::CarpEn => text(r, "content")?,
        Benchmark::Medqa => {
            let options = choice_options(r)?;
            format!(
                "{}\nAnswer Choices: {}",
                text(r, "question")?.trim(),
                options.join(" ")
            )
        }
        _ => ["question", "problem", "Question", "input"]
            .iter()
            .find_map(|k| text(r, k))?,
    };
    let mut q = q.trim().to_string();
    if let Some(gold) = parse_gold(r, benchmark) {
        match gold.to_lowercase().as_str() {
            "true" | "false" => q.push_str(" (True or False)"),
            "yes" | "no" => q.push_str(" (Yes or No)"),
            _ => {}
        }
    }
    Some(q)
}

/// `parse_ground_truth` of the harness: the gold answer string the grader compares against.
pub fn parse_gold(r: &Value, benchmark: Benchmark) -> Option<String> {
    let raw = match benchmark {
        Benchmark::Math | Benchmark::MinervaMath => {
            // extract_answer on the worked solution: cleaned and stripped once already
            let solution = text(r, "solution")?;
            super::extract::extract_answer(&solution, benchmark.skips_units())
        }
        Benchmark::Gsm8k => {
            let a = text(r, "answer")?;
            let (_, g) = a.split_once("####")?;
            g.to_string()
        }
        Benchmark::Svamp => text(r, "Answer")?,
        Benchmark::Asdiv => {
            let a = text(r, "answer")?;
            strip_parenthesised(&a)
        }
        Benchmark::Mawps => text(r, "target")?,
        Benchmark::Tabmwp => {
            let a = text(r, "answer")?;
            let numeric = matches!(
                r.get("ans_type").and_then(Value::as_str),
                Some("integer_number" | "decimal_number")
            );
            if numeric { tabmwp_number(&a)? } else { a }
        }
        Benchmark::CarpEn => text(r, "answer")?,
        Benchmark::Gaokao2023En | Benchmark::CollegeMath => {
            text(r, "answer")?.replace('$', "").trim().to_string()
        }
        Benchmark::OlympiadBench => {
            let first = r.get("final_answer")?.as_array()?.first()?.as_str()?;
            first.trim_matches('$').to_string()
        }
        Benchmark::Medqa => {
            let letter = text(r, "answer_idx")?.trim().to_string();
            let letters = choice_options(r)?.len();
            let known = LETTERS[..letters].iter().any(|l| *l == letter);
            if !known {
                return None;
            }
            letter
        }
    };
    Some(match benchmark {
        Benchmark::CarpEn | Benchmark::MinervaMath => raw
            .replace("\\neq", "\\ne")
            .replace("\\leq", "\\le")
            .replace("\\geq", "\\ge"),
        _ => strip_string(&raw, false),
    })
}

/// The option letters of a multiple-choice question, in order.
pub const LETTERS: [&str; 5] = ["A", "B", "C", "D", "E"];

/// MedQA's `options` as the harness lays out `mmlu_stem`'s: `(A) text`, in letter order. The
/// options are an object keyed by letter (MedQA's files) or an array (as `mmlu_stem`'s
/// `choices`); two to five of them, the letters consecutive from A.
fn choice_options(r: &Value) -> Option<Vec<String>> {
    let texts: Vec<String> = match r.get("options")? {
        Value::Object(map) => {
            let mut out = Vec::new();
            for letter in LETTERS {
                match map.get(letter) {
                    Some(v) => out.push(option_text(v)?),
                    None => break,
                }
            }
            if out.len() != map.len() {
                return None;
            }
            out
        }
        Value::Array(items) => items.iter().map(option_text).collect::<Option<_>>()?,
        _ => return None,
    };
    if !(2..=LETTERS.len()).contains(&texts.len()) {
        return None;
    }
    Some(
        texts
            .iter()
            .zip(LETTERS)
            .map(|(t, l)| format!("({l}) {}", t.trim()))
            .collect(),
    )
}

fn option_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Python's `repr(str)`, as the harness prints TabMWP's list of choices.
fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `re.sub(r"\(.*?\)", "", answer)`.
fn strip_parenthesised(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find('(') {
        match rest[open..].find(')') {
            Some(close) => {
                out.push_str(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// TabMWP numeric answers as the harness parses them (`a/b`, commas, `%`), printed as Python floats.
fn tabmwp_number(a: &str) -> Option<String> {
    let v = if let Some((n, d)) = a.split_once('/') {
        let (n, d): (i64, i64) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
        n as f64 / d as f64
    } else if a.contains(',') {
        a.replace(',', "").trim().parse().ok()?
    } else if let Some((n, _)) = a.split_once('%') {
        n.trim().parse::<f64>().ok()? / 100.0
    } else {
        a.trim().parse().ok()?
    };
    Some(py_float_repr(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_round_trip() {
        for b in Benchmark::ALL {
            assert_eq!(b.name().parse::<Benchmark>(), Ok(b));
        }
        assert!("gsm8K".parse::<Benchmark>().is_err());
    }

    #[test]
    fn gold_answers_as_the_harness_takes_them() {
        let g = |r: Value, b| parse_gold(&r, b).unwrap_or_default();
        assert_eq!(
            g(json!({"answer": "so 3+4=7\n#### 1,234"}), Benchmark::Gsm8k),
            "1,234"
        );
        assert_eq!(g(json!({"Answer": 145.0}), Benchmark::Svamp), "145");
        assert_eq!(g(json!({"answer": "9 (apples)"}), Benchmark::Asdiv), "9");
        assert_eq!(g(json!({"target": 43.0}), Benchmark::Mawps), "43");
        assert_eq!(
            g(
                json!({"solution": "so $\\boxed{\\dfrac{1}{2}}$."}),
                Benchmark::Math
            ),
            "\\frac{1}{2}"
        );
        assert_eq!(
            g(json!({"final_answer": ["$2n$"]}), Benchmark::OlympiadBench),
            "2n"
        );
        assert_eq!(
            g(json!({"answer": "$10-4 n$"}), Benchmark::CollegeMath),
            "10-4n"
        );
        assert_eq!(
            g(
                json!({"answer": "1/4", "ans_type": "decimal_number"}),
                Benchmark::Tabmwp
            ),
            "0.25"
        );
        assert_eq!(
            g(json!({"answer": "b ^ { 2 } \\leq 9"}), Benchmark::CarpEn),
            "b ^ { 2 } \\le 9"
        );
    }

    #[test]
    fn python_string_repr() {
        assert_eq!(py_str_repr("shortage"), "'shortage'");
        assert_eq!(py_str_repr("men's vault"), "\"men's vault\"");
        assert_eq!(py_str_repr("a'b\"c"), "'a\\'b\"c'");
    }

    #[test]
    fn questions_as_the_harness_builds_them() {
        let q = parse_question(
            &json!({"Body": "There are 5 apples", "Question": "How many?", "Answer": 5.0}),
            Benchmark::Svamp,
        );
        assert_eq!(q.as_deref(), Some("There are 5 apples. How many?"));
    }

    #[test]
    fn loads_small_files_it_writes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("gsm8k"))?;
        std::fs::write(
            dir.path().join("gsm8k/test.jsonl"),
            "{\"question\": \"1+1?\", \"answer\": \"1+1=2\\n#### 2\"}\n",
        )?;
        let p = load_benchmark(dir.path(), Benchmark::Gsm8k)?;
        assert_eq!(
            p,
            vec![Problem {
                idx: 0,
                question: "1+1?".into(),
                answer: "2".into()
            }]
        );
        std::fs::write(dir.path().join("gsm8k/test.jsonl"), "{\"question\": 1}\n")?;
        let err = load_benchmark(dir.path(), Benchmark::Gsm8k)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains(":1:")));
        Ok(())
    }
}
