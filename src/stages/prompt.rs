//! From a question to prompt token ids under a manifest's template, and the stop strings that
//! end a response. Shared by every stage that generates (greedy, rollouts, evaluation).

use std::str::FromStr;

use crate::eval::{PromptTemplate, render_prompt};
use crate::model::{ChatMessage, TextTokenizer};

use super::StageError;

/// The bare prompt the toy family is trained on.
pub const PLAIN: &str = "Question: {question}\nAnswer:";

/// Prompt ids for `question`. Harness templates are encoded with the tokenizer's special
/// tokens (as the harness's prompt strings are); a chat template already contains them.
pub fn prompt_ids(
    template: &str,
    question: &str,
    tokenizer: &TextTokenizer,
) -> Result<Vec<u32>, StageError> {
    let fail = |e: crate::model::ModelError| {
        StageError::Input(format!("prompt template `{template}`: {e}"))
    };
    let (text, special) = match template {
        "plain" => (PLAIN.replace("{question}", question), true),
        "chat" => {
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
        other => {
            let t =
                PromptTemplate::from_str(other).map_err(|e| StageError::Failed(e.to_string()))?;
            (render_prompt(t, question, &[]), true)
        }
    };
    tokenizer.encode(&text, special).map_err(fail)
}

/// Strings that end a response under `template` (EOS ends every response too).
pub fn stop_strings(template: &str) -> Vec<String> {
    match template {
        "plain" => vec!["\n\nQuestion:".into()],
        other => PromptTemplate::from_str(other)
            .map(|t| t.stop_strings().into_iter().map(String::from).collect())
            .unwrap_or_default(),
    }
}
