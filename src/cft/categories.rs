//! Token categories of the paper's Figure 5: numbers, operators, punctuation, special
//! characters, words and others, decided on a token's decoded text.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Number,
    Operator,
    Punctuation,
    Special,
    Word,
    Other,
}

pub const ALL: [Category; 6] = [
    Category::Number,
    Category::Operator,
    Category::Punctuation,
    Category::Special,
    Category::Word,
    Category::Other,
];

const OPERATORS: &str = "+-*/=<>^%×÷";
const PUNCTUATION: &str = ".,:;?!'\"()[]{}";
const SPECIAL: &str = "$#@&_~\\|`";

/// The category of a decoded token. Leading and trailing whitespace (tokenizers attach a space
/// to the word after it) does not count; a token of whitespace only is `Other`.
pub fn categorize(text: &str) -> Category {
    let t = text.trim();
    if t.is_empty() {
        return Category::Other;
    }
    let all = |set: &str| t.chars().all(|c| set.contains(c));
    if t.chars().any(|c| c.is_ascii_digit())
        && t.chars().all(|c| c.is_ascii_digit() || ".,".contains(c))
    {
        Category::Number
    } else if all(OPERATORS) {
        Category::Operator
    } else if all(PUNCTUATION) {
        Category::Punctuation
    } else if all(SPECIAL) {
        Category::Special
    } else if t.chars().any(char::is_alphabetic) {
        Category::Word
    } else {
        Category::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_of_typical_tokens() {
        assert_eq!(categorize(" 48"), Category::Number);
        assert_eq!(categorize("3.5"), Category::Number);
        assert_eq!(categorize(" +"), Category::Operator);
        assert_eq!(categorize("="), Category::Operator);
        assert_eq!(categorize("."), Category::Punctuation);
        assert_eq!(categorize(":"), Category::Punctuation);
        assert_eq!(categorize("$"), Category::Special);
        assert_eq!(categorize("####"), Category::Special);
        assert_eq!(categorize(" apples"), Category::Word);
        assert_eq!(categorize("\n"), Category::Other);
        assert_eq!(categorize("→"), Category::Other);
    }
}
