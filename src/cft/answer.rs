//! When is a response's final answer complete? A counterfactual branch stops there rather
//! than at EOS (DESIGN.md, Generation engine): whatever it generates afterwards cannot change
//! its verdict under the marker that completed it, and it is often most of the cost.
//!
//! Complete means one of: a `#### N` line ended by a newline (GSM8K format); a closed
//! `\boxed{...}`; or "The answer is ..." ended by a period followed by whitespace or by a
//! newline.

/// Whether `text` (the response so far) holds a complete final answer.
pub fn complete(text: &str) -> bool {
    hash_answer(text) || boxed(text) || answer_is(text)
}

fn hash_answer(text: &str) -> bool {
    let Some(at) = text.rfind("####") else {
        return false;
    };
    let rest = &text[at + 4..];
    let Some(end) = rest.find('\n') else {
        return false;
    };
    rest[..end].chars().any(|c| c.is_ascii_digit())
}

fn boxed(text: &str) -> bool {
    let Some(at) = text.rfind("\\boxed{") else {
        return false;
    };
    let mut depth = 0i32;
    for c in text[at + 6..].chars() {
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

fn answer_is(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let Some(at) = lower.rfind("the answer is") else {
        return false;
    };
    let rest = &text[at + 13..];
    rest.contains('\n') || rest.contains(". ") || rest.contains(".\t")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm8k_lines_complete_at_their_newline() {
        assert!(!complete("So 3 + 4 = 7.\n#### 7"));
        assert!(complete("So 3 + 4 = 7.\n#### 7\n"));
        assert!(!complete("#### \n"));
    }

    #[test]
    fn boxed_answers_complete_when_closed() {
        assert!(!complete("so \\boxed{\\frac{1}{2"));
        assert!(complete("so \\boxed{\\frac{1}{2}}"));
    }

    #[test]
    fn the_answer_is_completes_at_the_end_of_its_sentence() {
        assert!(!complete("The answer is 12"));
        assert!(!complete("The answer is 12."));
        assert!(complete("The answer is 12. "));
        assert!(complete("the answer is 12\n"));
    }
}
