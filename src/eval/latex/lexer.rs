//! Tokens of sympy's LaTeX grammar (`sympy/parsing/latex/LaTeX.g4`, sympy 1.12).
//!
//! The lexer mirrors the grammar's longest-match rules: `\` plus a run of letters is one
//! command (so `\lefty` is not `\left y`), spacing commands and `\left`/`\right` vanish,
//! `d` followed by a letter is a differential, digits are single tokens. A character the
//! grammar has no token for (`%`, `$`, `\\`) becomes [`Tok::Error`]; the parser fails only
//! if it reaches it, as ANTLR's lazily filled token stream does.

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Digit(char),
    Letter(char),
    /// `\name` for any command without a token of its own (sympy: `Symbol(name)`).
    Cmd(String),
    Differential(String),
    Plus,
    Minus,
    Star,
    Slash,
    Colon,
    Caret,
    Underscore,
    Bang,
    Comma,
    Dot,
    Quotes(usize),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBraceLit,
    RBraceLit,
    LBracket,
    RBracket,
    Bar,
    Rel(super::RelOp),
    Error,
}

const SKIPPED: &[&str] = &[
    "thinspace",
    "medspace",
    "thickspace",
    "quad",
    "qquad",
    "negthinspace",
    "negmedspace",
    "negthickspace",
    "left",
    "right",
    "vrule",
    "vcenter",
    "vbox",
    "vskip",
    "vspace",
    "hfil",
];

pub fn lex(s: &str) -> Vec<Tok> {
    use super::RelOp;
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        let tok = match c {
            ' ' | '\t' | '\r' | '\n' => continue,
            '0'..='9' => Tok::Digit(c),
            'd' if next_is_differential(&chars, i) => {
                let mut j = i;
                while j < chars.len() && chars[j].is_ascii_whitespace() {
                    j += 1;
                }
                let mut name = String::new();
                if chars[j] == '\\' {
                    j += 1;
                    while j < chars.len() && chars[j].is_ascii_alphabetic() {
                        name.push(chars[j]);
                        j += 1;
                    }
                } else {
                    name.push(chars[j]);
                    j += 1;
                }
                i = j;
                Tok::Differential(name)
            }
            'a'..='z' | 'A'..='Z' => Tok::Letter(c),
            '+' => Tok::Plus,
            '-' => Tok::Minus,
            '*' => Tok::Star,
            '/' => Tok::Slash,
            ':' => Tok::Colon,
            '^' => Tok::Caret,
            '_' => Tok::Underscore,
            '!' => Tok::Bang,
            ',' => Tok::Comma,
            '.' => Tok::Dot,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            '|' => Tok::Bar,
            // `&=` and `=&` are one EQUAL token; a lone `&` is a lexer error in sympy
            '&' => {
                let mut j = i;
                while j < chars.len() && chars[j].is_ascii_whitespace() {
                    j += 1;
                }
                if chars.get(j) == Some(&'=') {
                    i = j + 1;
                    Tok::Rel(RelOp::Eq)
                } else {
                    Tok::Error
                }
            }
            '=' => {
                let mut j = i;
                while j < chars.len() && chars[j].is_ascii_whitespace() {
                    j += 1;
                }
                if chars.get(j) == Some(&'&') {
                    i = j + 1;
                }
                Tok::Rel(RelOp::Eq)
            }
            '<' => Tok::Rel(RelOp::Lt),
            '>' => Tok::Rel(RelOp::Gt),
            '\'' => {
                let mut n = 1;
                while i < chars.len() && chars[i] == '\'' {
                    n += 1;
                    i += 1;
                }
                Tok::Quotes(n)
            }
            '\\' => {
                let mut name = String::new();
                while i < chars.len() && chars[i].is_ascii_alphabetic() {
                    name.push(chars[i]);
                    i += 1;
                }
                if name.is_empty() {
                    let Some(&n) = chars.get(i) else {
                        out.push(Tok::Error);
                        break;
                    };
                    i += 1;
                    match n {
                        ',' | ':' | ';' | '!' | '*' | '-' | '.' | '/' | '"' | '(' | '=' => {
                            continue;
                        }
                        '{' => Tok::LBraceLit,
                        '}' => Tok::RBraceLit,
                        _ => Tok::Error,
                    }
                } else if (name == "left" || name == "right") && chars.get(i) == Some(&'|') {
                    i += 1;
                    Tok::Bar
                } else if SKIPPED.contains(&name.as_str()) {
                    continue;
                } else {
                    match name.as_str() {
                        "neq" => Tok::Rel(RelOp::Ne),
                        "le" | "leq" | "leqq" | "leqslant" => Tok::Rel(RelOp::Le),
                        "ge" | "geq" | "geqq" | "geqslant" => Tok::Rel(RelOp::Ge),
                        _ => Tok::Cmd(name),
                    }
                }
            }
            _ => Tok::Error,
        };
        out.push(tok);
    }
    out
}

fn next_is_differential(chars: &[char], mut i: usize) -> bool {
    while i < chars.len() && chars[i].is_ascii_whitespace() {
        i += 1;
    }
    match chars.get(i) {
        Some(c) if c.is_ascii_alphabetic() => true,
        Some('\\') => chars.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic()),
        _ => false,
    }
}
