//! Unit words that `strip_string` deletes from answers (the list comes from MathQA).
//!
//! The reference removes each listed text, and its plural, when it stands between
//! non-word characters, trying the whole list twice in order. The texts are regular
//! expressions there (`"q ."` has a wildcard dot), and the order matters (`"m"` after
//! `"km"`), so the list is kept as the reference has it and compiled once.

use std::sync::LazyLock;

const UNIT_TEXTS: &[&str] = &[
    "east",
    "degree",
    "mph",
    "kmph",
    "ft",
    "m sqaure",
    " m east",
    "sq m",
    "deg",
    "mile",
    "q .",
    "monkey",
    "prime",
    "ratio",
    "profit of rs",
    "rd",
    "o",
    "gm",
    "p . m",
    "lb",
    "tile",
    "per",
    "dm",
    "lt",
    "gain",
    "ab",
    "way",
    "west",
    "a .",
    "b .",
    "c .",
    "d .",
    "e .",
    "f .",
    "g .",
    "h .",
    "t",
    "a",
    "h",
    "no change",
    "men",
    "soldier",
    "pie",
    "bc",
    "excess",
    "st",
    "inches",
    "noon",
    "percent",
    "by",
    "gal",
    "kmh",
    "c",
    "acre",
    "rise",
    "a . m",
    "th",
    "π r 2",
    "sq",
    "mark",
    "l",
    "toy",
    "coin",
    "sq . m",
    "gallon",
    "° f",
    "profit",
    "minw",
    "yr",
    "women",
    "feet",
    "am",
    "pm",
    "hr",
    "cu cm",
    "square",
    "v â € ™",
    "are",
    "rupee",
    "rounds",
    "cubic",
    "cc",
    "mtr",
    "s",
    "ohm",
    "number",
    "kmph",
    "day",
    "hour",
    "minute",
    "min",
    "second",
    "man",
    "woman",
    "sec",
    "cube",
    "mt",
    "sq inch",
    "mp",
    "∏ cm ³",
    "hectare",
    "more",
    "sec",
    "unit",
    "cu . m",
    "cm 2",
    "rs .",
    "rs",
    "kg",
    "g",
    "month",
    "km",
    "m",
    "cm",
    "mm",
    "apple",
    "liter",
    "loss",
    "yard",
    "pure",
    "year",
    "increase",
    "decrease",
    "d",
    "less",
    "Surface",
    "litre",
    "pi sq m",
    "s .",
    "metre",
    "meter",
    "inch",
];

/// One unit text as a fixed-length pattern: `None` is the reference's wildcard `.`.
struct Unit {
    /// Text every match must contain (the unit up to its first wildcard), for a cheap skip.
    literal: String,
    pattern: Vec<Option<char>>,
}

// Hand-matched rather than compiled: 340 Unicode-aware `(^|\W)unit($|\W)` regexes take
// 0.2 s and 200 MB to build, longer than grading thousands of answers.
static UNITS: LazyLock<Vec<Unit>> = LazyLock::new(|| {
    let plural = UNIT_TEXTS.iter().map(|t| format!("{t}s"));
    UNIT_TEXTS
        .iter()
        .map(|t| t.to_string())
        .chain(plural)
        .map(|t| Unit {
            literal: t.split('.').next().unwrap_or("").to_string(),
            pattern: t.chars().map(|c| (c != '.').then_some(c)).collect(),
        })
        .collect()
});

/// Python's `\w` for `str` patterns: letters, digits (Unicode) and `_`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Unit {
    fn matches_at(&self, s: &[char], at: usize) -> bool {
        at + self.pattern.len() <= s.len()
            && self
                .pattern
                .iter()
                .zip(&s[at..])
                .all(|(p, c)| p.map_or(*c != '\n', |p| p == *c))
    }

    /// `re.sub(r"(^|\W)" + unit + r"($|\W)", r"\1\2", s)`: leftmost, non-overlapping.
    fn remove(&self, s: &[char]) -> Vec<char> {
        let n = self.pattern.len();
        let mut out = Vec::with_capacity(s.len());
        let mut pos = 0;
        while pos < s.len() {
            // the two ways to start: at the very beginning, or after one non-word character
            let starts = [
                (pos == 0).then_some((None, pos)),
                (!is_word(s[pos])).then_some((Some(s[pos]), pos + 1)),
            ];
            let mut matched = None;
            for (lead, at) in starts.into_iter().flatten() {
                if !self.matches_at(s, at) {
                    continue;
                }
                let end = at + n;
                if end == s.len() {
                    matched = Some((lead, None, end));
                } else if !is_word(s[end]) {
                    matched = Some((lead, Some(s[end]), end + 1));
                }
                if matched.is_some() {
                    break;
                }
            }
            match matched {
                Some((lead, trail, end)) => {
                    out.extend(lead);
                    out.extend(trail);
                    pos = end;
                }
                None => {
                    out.push(s[pos]);
                    pos += 1;
                }
            }
        }
        out
    }
}

/// Deletes unit texts as `strip_string` does (two passes over the list, in order).
pub fn remove_units(s: &str) -> String {
    let mut string = s.to_string();
    for _ in 0..2 {
        for unit in UNITS.iter() {
            if !string.contains(unit.literal.as_str()) {
                continue;
            }
            let chars: Vec<char> = string.chars().collect();
            let next = unit.remove(&chars);
            if !next.is_empty() {
                string = next.into_iter().collect();
            }
        }
    }
    string
}

#[cfg(test)]
mod tests {
    use super::remove_units;

    #[test]
    fn units_after_numbers_go() {
        assert_eq!(remove_units("5 cm"), "5 ");
        assert_eq!(remove_units("12 meters"), "12 ");
        assert_eq!(remove_units("3 hours"), "3 ");
    }

    #[test]
    fn letters_inside_words_stay() {
        assert_eq!(remove_units("x+y"), "x+y");
        assert_eq!(remove_units("\\frac{1}{2}"), "\\frac{1}{2}");
    }

    #[test]
    fn wildcard_dots_and_plurals() {
        // "a ." is a regex in the reference: "a", a space, any character
        assert_eq!(remove_units("5 a x"), "5 ");
        assert_eq!(remove_units("7 kgs"), "7 ");
        assert_eq!(remove_units("(5 cm)"), "(5 )");
    }

    #[test]
    fn single_letters_are_units_too() {
        // The reference's list has "a", "t", "s", "m": a lone letter between symbols goes.
        assert_eq!(remove_units("2a"), "2a");
        assert_eq!(remove_units("a+1"), "+1");
    }
}
