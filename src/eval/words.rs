//! Number words to digits, as the `word2number` package (`w2n.word_to_num`) does it.
//!
//! `strip_string` in the reference runs every answer through `word_to_num` and keeps the
//! result when it does not raise. The package is permissive: any string that contains a
//! number word among its blank-separated words becomes a number ("five apples" → `5`), and
//! a string of ASCII digits loses its leading zeros ("007" → `7`). Matching it word for word
//! is what keeps verdicts on word answers identical.

use super::pynum::py_float_repr;

fn word_value(w: &str) -> Option<i64> {
    Some(match w {
        "zero" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        "hundred" => 100,
        "thousand" => 1000,
        "million" => 1_000_000,
        "billion" => 1_000_000_000,
        _ => return None,
    })
}

/// `number_formation` of word2number: how 1–4 words combine into one group.
fn formation(words: &[&str]) -> Option<i64> {
    let n: Vec<i64> = words.iter().map(|w| word_value(w)).collect::<Option<_>>()?;
    Some(match n.len() {
        0 => return None,
        4 => n[0] * n[1] + n[2] + n[3],
        3 => n[0] * n[1] + n[2],
        2 if n.contains(&100) => n[0] * n[1],
        2 => n[0] + n[1],
        _ => n[0],
    })
}

/// The string `convert_word_number` leaves: the number's `str()` on success, else the input.
pub fn convert_word_number(text: &str) -> String {
    word_to_num(text).unwrap_or_else(|| text.to_string())
}

fn word_to_num(text: &str) -> Option<String> {
    let s = text.replace('-', " ").to_lowercase();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        // str(int(s)): the digits without leading zeros, however many there are
        let trimmed = s.trim_start_matches('0');
        return Some(if trimmed.is_empty() {
            "0".into()
        } else {
            trimmed.into()
        });
    }
    if !s.is_empty() && s.chars().all(char::is_numeric) {
        return None; // Python's isdigit() accepts "²", then int() raises.
    }
    let clean: Vec<&str> = s
        .split_whitespace()
        .filter(|w| *w == "point" || word_value(w).is_some())
        .collect();
    if clean.is_empty() {
        return None;
    }
    let count = |w: &str| clean.iter().filter(|x| **x == w).count();
    if count("thousand") > 1 || count("million") > 1 || count("billion") > 1 || count("point") > 1 {
        return None;
    }
    let (ints, decimals): (&[&str], &[&str]) = match clean.iter().position(|w| *w == "point") {
        Some(p) => (&clean[..p], &clean[p + 1..]),
        None => (&clean[..], &[]),
    };
    let idx = |w: &str| ints.iter().position(|x| *x == w);
    let (b, m, t) = (idx("billion"), idx("million"), idx("thousand"));
    let lt = |a: Option<usize>, b: Option<usize>| matches!((a, b), (Some(a), Some(b)) if a < b);
    if (t.is_some() && (lt(t, m) || lt(t, b))) || (m.is_some() && lt(m, b)) {
        return None;
    }
    let mut total: i64 = 0;
    if ints.len() == 1 {
        total += word_value(ints[0])?;
    } else if !ints.is_empty() {
        if let Some(b) = b {
            total += formation(&ints[..b])? * 1_000_000_000;
        }
        if let Some(m) = m {
            let start = b.map_or(0, |b| b + 1);
            total += formation(ints.get(start..m)?)? * 1_000_000;
        }
        if let Some(t) = t {
            let start = m.or(b).map_or(0, |i| i + 1);
            total += formation(ints.get(start..t)?)? * 1000;
        }
        let last = ints.len() - 1;
        let hundreds = if t.is_some_and(|t| t != last) {
            formation(&ints[t? + 1..])?
        } else if t.is_none() && m.is_some_and(|m| m != last) {
            formation(&ints[m? + 1..])?
        } else if t.is_none() && m.is_none() && b.is_some_and(|b| b != last) {
            formation(&ints[b? + 1..])?
        } else if t.is_none() && m.is_none() && b.is_none() {
            formation(ints)?
        } else {
            0
        };
        total += hundreds;
    }
    if decimals.is_empty() {
        return Some(total.to_string());
    }
    let mut digits = String::from("0.");
    for w in decimals {
        match word_value(w) {
            Some(d @ 0..=9) if *w != "ten" => digits.push_str(&d.to_string()),
            _ => return Some(total.to_string()),
        }
    }
    let frac: f64 = digits.parse().ok()?;
    Some(py_float_repr(total as f64 + frac))
}

#[cfg(test)]
mod tests {
    use super::convert_word_number as c;

    #[test]
    fn words_become_numbers() {
        assert_eq!(c("five"), "5");
        assert_eq!(c("twenty-one"), "21");
        assert_eq!(c("two hundred"), "200");
        assert_eq!(c("one thousand two hundred thirty four"), "1234");
        assert_eq!(c("three apples"), "3");
        assert_eq!(c("007"), "7");
        assert_eq!(c("000"), "0");
        assert_eq!(c(&format!("00{}", "9".repeat(60))), "9".repeat(60));
    }

    #[test]
    fn non_words_stay() {
        assert_eq!(c("\\frac{1}{2}"), "\\frac{1}{2}");
        assert_eq!(c("-5"), "-5");
        assert_eq!(c("Evelyn"), "Evelyn");
    }
}
