//! Prompt templates and stop strings, as in the harness's `utils.py` / `math_eval.py`.
//!
//! Three of the harness's templates are what the paper's evaluations use: `cot` (few-shot
//! "Question: … Answer:" blocks), `qwen25-math-cot` and `qwen-boxed` (ChatML with the
//! "put your final answer within \boxed{}" instruction). A model's own chat template is
//! rendered by the model module, which knows the tokenizer; [`PromptTemplate::Chat`] is the
//! hook for it: [`render_prompt`] returns the bare question and the caller wraps it.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptTemplate {
    /// `cot`: few-shot demonstrations joined by "\n\n\n", each "Question: q\nAnswer: a".
    Cot,
    /// `qwen25-math-cot`: ChatML, the boxed instruction as the system message.
    Qwen25MathCot,
    /// `qwen-boxed`: ChatML, a generic system message, the boxed instruction after the question.
    QwenBoxed,
    /// The model's own chat template (rendered by the model module around the question).
    Chat,
    /// `qwen25-math-cot` asking for an option letter: the harness has no template of its own
    /// for multiple choice (it prompts `mmlu_stem` with `cot` demonstrations or the math
    /// templates); this one keeps `qwen25-math-cot`'s form and names what goes in the box.
    Qwen25ChoiceCot,
}

impl PromptTemplate {
    pub fn name(self) -> &'static str {
        match self {
            PromptTemplate::Cot => "cot",
            PromptTemplate::Qwen25MathCot => "qwen25-math-cot",
            PromptTemplate::QwenBoxed => "qwen-boxed",
            PromptTemplate::Chat => "chat",
            PromptTemplate::Qwen25ChoiceCot => "qwen25-choice-cot",
        }
    }

    /// `(input template, demo splitter)`; `{input}` marks the question.
    fn parts(self) -> (&'static str, &'static str) {
        match self {
            PromptTemplate::Cot => ("Question: {input}\nAnswer: ", "\n\n\n"),
            PromptTemplate::Qwen25MathCot => (
                "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
                "\n\n",
            ),
            PromptTemplate::QwenBoxed => (
                "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{input}\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n",
                "\n\n",
            ),
            PromptTemplate::Chat => ("{input}", "\n\n"),
            PromptTemplate::Qwen25ChoiceCot => (
                "<|im_start|>system\nPlease reason step by step, and put the letter of the correct option within \\boxed{}.<|im_end|>\n<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
                "\n\n",
            ),
        }
    }

    /// Strings at which generation stops (`stop_words` in `math_eval.py`).
    pub fn stop_strings(self) -> Vec<&'static str> {
        let mut stops = vec!["</s>", "<|im_end|>", "<|endoftext|>"];
        if self == PromptTemplate::Cot {
            stops.push("\n\nQuestion:");
        }
        stops
    }
}

impl fmt::Display for PromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown prompt template `{0}` (expected cot, qwen25-math-cot, qwen-boxed, chat or qwen25-choice-cot)"
)]
pub struct UnknownTemplate(pub String);

impl FromStr for PromptTemplate {
    type Err = UnknownTemplate;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            PromptTemplate::Cot,
            PromptTemplate::Qwen25MathCot,
            PromptTemplate::QwenBoxed,
            PromptTemplate::Chat,
            PromptTemplate::Qwen25ChoiceCot,
        ]
        .into_iter()
        .find(|t| t.name() == s)
        .ok_or_else(|| UnknownTemplate(s.to_string()))
    }
}

/// The prompt for `question` with few-shot `demos` (question, worked answer), as
/// `construct_prompt` builds it, including its final `strip(" ")`.
pub fn render_prompt(template: PromptTemplate, question: &str, demos: &[(&str, &str)]) -> String {
    let (input, splitter) = template.parts();
    let fill = |q: &str| input.replace("{input}", q);
    let full = if demos.is_empty() {
        fill(question)
    } else if matches!(
        template,
        PromptTemplate::Qwen25MathCot | PromptTemplate::Qwen25ChoiceCot
    ) {
        // the harness puts all demonstrations into the single user turn
        let demo: Vec<String> = demos.iter().map(|(q, a)| format!("{q}\n{a}")).collect();
        fill(&format!("{}{splitter}{question}", demo.join(splitter)))
    } else {
        let demo: Vec<String> = demos
            .iter()
            .map(|(q, a)| format!("{}{a}", fill(q)))
            .collect();
        format!("{}{splitter}{}", demo.join(splitter), fill(question))
    };
    full.trim_matches(' ').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cot_few_shot_layout() {
        let p = render_prompt(
            PromptTemplate::Cot,
            "1+1?",
            &[("2+2?", "2+2=4. The answer is 4.")],
        );
        assert_eq!(
            p,
            "Question: 2+2?\nAnswer: 2+2=4. The answer is 4.\n\n\nQuestion: 1+1?\nAnswer:"
        );
        assert!(
            PromptTemplate::Cot
                .stop_strings()
                .contains(&"\n\nQuestion:")
        );
    }

    #[test]
    fn chatml_templates() {
        let p = render_prompt(PromptTemplate::Qwen25MathCot, "What is 2+3?", &[]);
        assert!(p.starts_with("<|im_start|>system\nPlease reason step by step"));
        assert!(p.ends_with("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"));
        let p = render_prompt(PromptTemplate::QwenBoxed, "Q", &[]);
        assert!(p.contains(
            "Q\nPlease reason step by step, and put your final answer within \\boxed{}."
        ));
        assert_eq!(render_prompt(PromptTemplate::Chat, "Q", &[]), "Q");
    }

    #[test]
    fn names_parse() {
        assert_eq!("qwen-boxed".parse(), Ok(PromptTemplate::QwenBoxed));
        assert!("nope".parse::<PromptTemplate>().is_err());
    }
}
