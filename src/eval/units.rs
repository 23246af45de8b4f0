//! Unit words that `strip_string` deletes from answers (the list comes from MathQA).
//!
//! The reference removes each listed text, and its plural, when it stands between
//! non-word characters, trying the whole list twice in order. The texts are regular
//! expressions there (`"q ."` has a wildcard dot), and the order matters (`"m"` after
//! `"km"`), so the list is kept as the reference has it and compiled once.

use std::sync::LazyLock;

use regex::Regex;

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

struct Unit {
    /// Text every match must contain (the unit up to its first wildcard), for a cheap skip.
    literal: String,
    re: Regex,
}

static UNITS: LazyLock<Vec<Unit>> = LazyLock::new(|| {
    let plural = UNIT_TEXTS.iter().map(|t| format!("{t}s"));
    UNIT_TEXTS
        .iter()
        .map(|t| t.to_string())
        .chain(plural)
        .filter_map(|t| {
            let literal = t.split('.').next().unwrap_or("").to_string();
            // The unit is a Python regex whose only metacharacter is `.`.
            let body = t
                .split('.')
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join(".");
            let re = Regex::new(&format!(r"(^|\W){body}($|\W)")).ok()?;
            Some(Unit { literal, re })
        })
        .collect()
});

/// Deletes unit texts as `strip_string` does (two passes over the list, in order).
pub fn remove_units(s: &str) -> String {
    let mut string = s.to_string();
    for _ in 0..2 {
        for unit in UNITS.iter() {
            if !string.contains(unit.literal.as_str()) {
                continue;
            }
            let next = unit.re.replace_all(&string, "${1}${2}");
            if !next.is_empty() {
                string = next.into_owned();
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
    fn single_letters_are_units_too() {
        // The reference's list has "a", "t", "s", "m": a lone letter between symbols goes.
        assert_eq!(remove_units("2a"), "2a");
        assert_eq!(remove_units("a+1"), "+1");
    }
}
