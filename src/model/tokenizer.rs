//! `tokenizer.json` (the `tokenizers` crate) plus `tokenizer_config.json`'s special tokens
//! and chat template, rendered with minijinja as transformers renders it with Jinja2
//! (`trim_blocks`, `lstrip_blocks`, Python string methods, `raise_exception`).
//!
//! Newer transformers write the template to `chat_template.jinja` instead of
//! `tokenizer_config.json`; both are read.

use std::path::Path;

use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};

use super::ModelError;

/// One chat turn, as in `apply_chat_template(messages)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A special token in `tokenizer_config.json`: a string or `{"content": ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Text(String),
    Added { content: String },
}

impl SpecialToken {
    fn text(&self) -> &str {
        match self {
            SpecialToken::Text(t) => t,
            SpecialToken::Added { content } => content,
        }
    }
}

/// `chat_template` is a string, or a list of named templates (the "default" one is used).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ChatTemplate {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Debug, Clone, Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    bos_token: Option<SpecialToken>,
    eos_token: Option<SpecialToken>,
    pad_token: Option<SpecialToken>,
    chat_template: Option<ChatTemplate>,
    #[serde(default)]
    add_bos_token: bool,
}

/// A model's tokenizer with its special tokens and chat template.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub chat_template: Option<String>,
    add_bos_token: bool,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl TextTokenizer {
    /// Reads `tokenizer.json` and, when present, `tokenizer_config.json` and
    /// `chat_template.jinja` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path,
                hint: "the model directory has no tokenizer.json".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let config: TokenizerConfig = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: config_path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TokenizerConfig::default(),
            Err(source) => {
                return Err(ModelError::Io {
                    path: config_path,
                    source,
                });
            }
        };
        let chat_template = match config.chat_template {
            Some(ChatTemplate::One(t)) => Some(t),
            Some(ChatTemplate::Named(list)) => list
                .into_iter()
                .find(|t| t.name == "default")
                .map(|t| t.template),
            None => {
                let jinja = dir.join("chat_template.jinja");
                match std::fs::read_to_string(&jinja) {
                    Ok(t) => Some(t),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(source) => {
                        return Err(ModelError::Io {
                            path: jinja,
                            source,
                        });
                    }
                }
            }
        };
        let text = |t: Option<SpecialToken>| t.map(|t| t.text().to_string());
        Ok(Self {
            inner,
            bos_token: text(config.bos_token),
            eos_token: text(config.eos_token),
            pad_token: text(config.pad_token),
            chat_template,
            add_bos_token: config.add_bos_token,
        })
    }

    /// Token ids of `text`. With `add_special_tokens`, the post-processor of `tokenizer.json`
    /// runs, and a `bos_token` is prepended when `tokenizer_config.json` asks for it.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| ModelError::Encode(e.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        if add_special_tokens
            && self.add_bos_token
            && let Some(bos) = self.bos_token.as_deref().and_then(|t| self.token_id(t))
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, ModelError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| ModelError::Encode(e.to_string()))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The id of `eos_token`, if the tokenizer config names one.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_id(t))
    }

    /// The chat template applied to `messages`, as `apply_chat_template(tokenize=False)`.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let source = self
            .chat_template
            .as_deref()
            .ok_or(ModelError::NoChatTemplate)?;
        let template_error = |e: minijinja::Error| ModelError::Template(format!("{e:#}"));
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |_format: String| "01 Jan 2025".to_string());
        let template = env.template_from_str(source).map_err(template_error)?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.clone().unwrap_or_default(),
                eos_token => self.eos_token.clone().unwrap_or_default(),
                pad_token => self.pad_token.clone().unwrap_or_default(),
            })
            .map_err(template_error)
    }
}
