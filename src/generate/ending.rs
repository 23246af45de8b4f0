//! Where a generated response ends, which of its text is graded, and which of its tokens are
//! kept. One rule serves the greedy pass (Eq. 3-4), every counterfactual branch (Eq. 5) and
//! evaluation, so a branch ends exactly as the response it perturbs ended and is graded on the
//! same cut. It is the rule of vLLM running the Qwen2.5-Math harness (`math_eval.py`):
//!
//! - generation ends after an end token: the model's EOS ids, and each stop string that is a
//!   special token of the vocabulary (the harness's `stop_token_ids` for Qwen's `<|im_end|>`
//!   and `<|endoftext|>`); once the response's text (special tokens skipped, as vLLM
//!   detokenises) contains a stop string; or after `max_new_tokens` tokens;
//! - the graded text is that text cut at the first stop string and stripped, as the harness
//!   does with `code.split(stop_word)[0].strip()`;
//! - the kept response (D_correct's y: what is trained on and branched from) is the tokens
//!   before the end token and before the token in which a stop string begins. The end token
//!   is not part of y: training appends EOS itself (`train.append_eos`).

use crate::model::TextTokenizer;

use super::{Request, StopPredicate};

/// The end rule of one template on one model.
#[derive(Clone)]
pub struct Ending<'t> {
    tokenizer: &'t TextTokenizer,
    /// Ids after which generation ends (kept in the engine's output, never in y).
    end_ids: Vec<u32>,
    stops: Vec<String>,
    /// Tokens of the longest stop string plus one: a stop string that completes at the newest
    /// token lies within this many tokens of the end (each non-special token decodes to at
    /// least one byte).
    window: usize,
    max_new_tokens: usize,
}

impl<'t> Ending<'t> {
    /// `eos`: the model's EOS ids; `stops`: the template's stop strings.
    pub fn new(
        tokenizer: &'t TextTokenizer,
        eos: &[u32],
        stops: Vec<String>,
        max_new_tokens: usize,
    ) -> Self {
        let mut end_ids = eos.to_vec();
        for s in &stops {
            if let Some(id) = special_id(tokenizer, s)
                && !end_ids.contains(&id)
            {
                end_ids.push(id);
            }
        }
        let window = stops.iter().map(|s| s.len()).max().unwrap_or(0) + 1;
        Self {
            tokenizer,
            end_ids,
            stops,
            window,
            max_new_tokens,
        }
    }

    pub fn end_ids(&self) -> &[u32] {
        &self.end_ids
    }

    /// A greedy request for a fresh response to the prompt `tokens`, ending by this rule.
    /// (Branches continue a response; `cft::rollout` gives them the budget left after their
    /// kept tokens and the same end tokens and stop strings through its judge.)
    pub fn request<B: burn::prelude::Backend>(&self, tokens: Vec<u32>) -> Request<'t, B> {
        let mut r = Request::greedy(tokens, self.max_new_tokens);
        r.eos_token_ids = self.end_ids.clone();
        r.stop = self.stop_predicate(Vec::new());
        r
    }

    /// Fires once `kept ++ generated` contains a stop string. Only the tail is decoded, so the
    /// cost per step does not grow with the response.
    pub fn stop_predicate(&self, kept: Vec<u32>) -> Option<StopPredicate<'t>> {
        if self.stops.is_empty() {
            return None;
        }
        let this = self.clone();
        Some(Box::new(move |generated: &[u32]| {
            this.stopped(&kept, generated)
        }))
    }

    /// Whether `kept ++ generated` contains a stop string (decoding only its tail).
    pub fn stopped(&self, kept: &[u32], generated: &[u32]) -> bool {
        !self.stops.is_empty() && self.contains_stop(&tail(kept, generated, self.window))
    }

    pub fn tokenizer(&self) -> &'t TextTokenizer {
        self.tokenizer
    }

    fn contains_stop(&self, tokens: &[u32]) -> bool {
        self.tokenizer
            .decode(tokens, true)
            .is_ok_and(|text| self.stops.iter().any(|s| text.contains(s.as_str())))
    }

    /// The text the grader reads: special tokens skipped, cut at the first stop string,
    /// stripped.
    pub fn graded_text(&self, response: &[u32]) -> Result<String, crate::model::ModelError> {
        let text = self.tokenizer.decode(response, true)?;
        Ok(cut_at_stop(&text, &self.stops).trim().to_string())
    }

    /// The tokens of y: before the first end token, and before the token in which the first
    /// stop string begins.
    pub fn kept(&self, response: &[u32]) -> Vec<u32> {
        let end = response
            .iter()
            .position(|t| self.end_ids.contains(t))
            .unwrap_or(response.len());
        let response = &response[..end];
        let Ok(text) = self.tokenizer.decode(response, true) else {
            return response.to_vec();
        };
        let cut = cut_at_stop(&text, &self.stops).len();
        if cut == text.len() {
            return response.to_vec();
        }
        // The longest prefix whose text ends before the stop string begins.
        let mut keep = 0;
        for n in 1..=response.len() {
            match self.tokenizer.decode(&response[..n], true) {
                Ok(prefix) if prefix.len() <= cut => keep = n,
                _ => break,
            }
        }
        response[..keep].to_vec()
    }
}

/// `text` up to its first stop string.
pub fn cut_at_stop<'a>(text: &'a str, stops: &[String]) -> &'a str {
    let cut = stops
        .iter()
        .filter_map(|s| text.find(s.as_str()))
        .min()
        .unwrap_or(text.len());
    &text[..cut]
}

/// The id of `text` when it is one special token (which decoding with special tokens
/// skipped drops).
fn special_id(tokenizer: &TextTokenizer, text: &str) -> Option<u32> {
    let id = tokenizer.token_id(text)?;
    let skipped = tokenizer.decode(&[id], true).ok()?;
    skipped.is_empty().then_some(id)
}

/// The last `n` tokens of `kept ++ generated`.
pub fn tail(kept: &[u32], generated: &[u32], n: usize) -> Vec<u32> {
    let from_kept = n.saturating_sub(generated.len()).min(kept.len());
    let mut t = kept[kept.len() - from_kept..].to_vec();
    t.extend_from_slice(&generated[generated.len().saturating_sub(n)..]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_spans_the_kept_tokens_and_the_generated_ones() {
        assert_eq!(tail(&[1, 2, 3], &[4], 3), vec![2, 3, 4]);
        assert_eq!(tail(&[1, 2, 3], &[4, 5, 6, 7], 3), vec![5, 6, 7]);
        assert_eq!(tail(&[1], &[4], 5), vec![1, 4]);
        assert_eq!(tail(&[], &[], 5), Vec::<u32>::new());
    }

    #[test]
    fn cuts_at_the_earliest_stop_string() {
        let stops = vec!["\n\nQuestion:".to_string(), "</s>".to_string()];
        assert_eq!(cut_at_stop("a</s>b\n\nQuestion: c", &stops), "a");
        assert_eq!(cut_at_stop("a\n\nQuestion: c</s>", &stops), "a");
        assert_eq!(cut_at_stop("abc", &stops), "abc");
    }
}
