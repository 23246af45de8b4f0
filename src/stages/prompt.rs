//! From a question to prompt token ids under a manifest's template, and the stop strings that
//! end a response. Shared by every stage that generates (greedy, rollouts, evaluation).

use crate::eval::{PromptTemplate, render_prompt};
use crate::manifest::Template;
use crate::model::{ChatMessage, TextTokenizer};

use super::StageError;

/// The bare prompt the toy family is trained on.
pub const PLAIN: &str = "Question: {question}\nAnswer:";

/// The harness's template behind a manifest template (`None`: the toy family's `plain`).
fn harness(template: Template) -> Option<PromptTemplate> {
    match template {
        Template::Cot => Some(PromptTemplate::Cot),
        Template::Qwen25MathCot => Some(PromptTemplate::Qwen25MathCot),
        Template::QwenBoxed => Some(PromptTemplate::QwenBoxed),
        Template::Chat => Some(PromptTemplate::Chat),
        Template::Qwen25ChoiceCot => Some(PromptTemplate::Qwen25ChoiceCot),
        Template::Plain => None,
    }
}

/// Prompt ids for `question`. Harness templates are encoded with the tokenizer's special
/// tokens (as the harness's prompt strings are); a chat template already contains them.
pub fn prompt_ids(
    template: Template,
    question: &str,
    tokenizer: &TextTokenizer,
) -> Result<Vec<u32>, StageError> {
    let fail = |e: crate::model::ModelError| {
        StageError::Input(format!("prompt template `{}`: {e}", template.name()))
    };
    let (text, special) = match harness(template) {
        None => (PLAIN.replace("{question}", question), true),
        Some(PromptTemplate::Chat) => {
            let messages = [ChatMessage {
                role: "user".into(),
                content: question.to_string(),
            }];
            (
                tokenizer
                    .apply_chat_template(&messages, true)
                    .map_err(fail)?,
                false,
            )
        }
        Some(t) => (render_prompt(t, question, &[]), true),
    };
    tokenizer.encode(&text, special).map_err(fail)
}

/// Strings that end a response under `template` (EOS ends every response too).
pub fn stop_strings(template: Template) -> Vec<String> {
    match harness(template) {
        None => vec!["\n\nQuestion:".into()],
        Some(t) => t.stop_strings().into_iter().map(String::from).collect(),
    }
}
