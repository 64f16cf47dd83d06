//! The text syntax: a hand-written tokenizer and recursive-descent parser producing a [`Condition`].
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | atom
//! atom    := attribute | event | sequence | consent | identifier | near | membership | all | any
//! ```
//!
//! * `attribute  := PATH comparison` where PATH is `traits.NAME…` or `computed.NAME…` (parts are identifier
//!   runs of letters, digits, `_` and `-`, or JSON strings: `traits."first name"`). A path whose first part is
//!   quoted (`"foo".bar`) is taken as written; [`crate::validate::check`] rejects paths outside `traits.` /
//!   `computed.`, the form exists so that every tree prints.
//! * `event      := [MEASURE "of"] "event" NAME ["where" FILTER ("," FILTER)*] [WINDOW] [comparison]`
//!   with `MEASURE := count | sum P | avg P | min P | max P | first | last` and
//!   `WINDOW := "in last" SPAN | "between" SPAN "and" SPAN "ago" | "from" DATE "to" DATE`. Without a measure
//!   and a comparison it means "has done" (`count … >= 1`). After a measure, `between SPAN and SPAN ago` is the
//!   window when another comparison follows it and the comparison otherwise (`last of event "X" between 60d
//!   and 120d ago`).
//! * `sequence   := "did" NAME [where…] "then" "not" NAME [where…] "within" SPAN [WINDOW]`
//! * `consent    := "consent" WORD "for" WORD`, `identifier := "has" WORD`, `membership := "in" "segment" NAME`
//! * `near       := "near" NUMBER "," NUMBER "within" NUMBER "km"`
//! * `all := "all" "(" [expr] ")"`, `any := "any" "(" [expr] ")"`: `all()` is the empty `And` (everyone),
//!   `any()` the empty `Or` (no one); `all(x)` / `any(x)` are one-element lists. `a and b …` chains are flat.
//!
//! `in the last 7 days` and `within the last 7 days` may say "the". Keywords are case-insensitive, `#` starts a comment to the end of the line. Spans are `30m`, `24h`, `7d`,
//! `2w` or `30 minutes`, `1 hour`, `7 days`, `2 weeks`. Values are JSON (strings, numbers, `true`, `false`,
//! `null`, arrays, objects). Dates are `YYYY-MM-DD` (midnight UTC) or RFC 3339.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Number, Value};

use crate::ast::*;
use crate::print::{print_attribute_path, print_property_path};

/// A definition that does not parse: where (1-based line and column, the column counting characters), and
/// what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses a definition in the text syntax.
pub fn parse(text: &str) -> Result<Condition, ParseError> {
    let tokens = Lexer::new(text).run()?;
    let mut parser = Parser { tokens, pos: 0, depth: 0 };
    if matches!(parser.peek().kind, Kind::End) {
        return Err(parser.error_here("a condition (the definition is empty)"));
    }
    let condition = parser.parse_or()?;
    let next = parser.peek();
    match next.kind {
        Kind::End => Ok(condition),
        Kind::RParen => Err(parser.error_here("and, or or the end (this ) has no ( to close)")),
        _ => Err(parser.error_here("and, or or the end")),
    }
}

impl FromStr for Condition {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

/// How deeply conditions (and JSON values) may nest in the text.
const MAX_DEPTH: usize = 128;

/// Letters, digits, `_` and `-`: the characters of a bare name.
pub(crate) fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// A bare word (a keyword, a first path part, a consent channel) starts with a letter or `_`.
pub(crate) fn is_word_start(c: char) -> bool {
    is_ident_char(c) && !c.is_ascii_digit() && c != '-'
}

// ---------------------------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A run of identifier characters starting with a letter or `_`, or any run right after a `.`.
    Word(String),
    /// A JSON string, decoded.
    Str(String),
    /// A JSON-style number, as written.
    Num(String),
    /// A number immediately followed by identifier characters: `7d`, `5km`, `7x`.
    Suffixed(String, String),
    /// Starts like `YYYY-MM-DD`.
    Date(String),
    Dot,
    Comma,
    Colon,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    line: usize,
    column: usize,
    /// The source text of the token.
    text: String,
}

impl Token {
    fn describe(&self) -> String {
        match &self.kind {
            Kind::End => "the end".to_string(),
            Kind::Str(s) => format!("the text {}", crate::print::quote(&shorten(s))),
            _ => format!("\"{}\"", shorten(&self.text)),
        }
    }

    fn is_word(&self, keyword: &str) -> bool {
        matches!(&self.kind, Kind::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 { format!("{}…", s.chars().take(40).collect::<String>()) } else { s.to_string() }
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: usize,
    column: usize,
    tokens: Vec<Token>,
}

impl Lexer {
    fn new(text: &str) -> Self {
        Lexer { chars: text.chars().collect(), i: 0, line: 1, column: 1, tokens: Vec::new() }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.i + n).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn error(line: usize, column: usize, message: impl Into<String>) -> ParseError {
        ParseError { line, column, message: message.into() }
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&f) {
            self.bump();
        }
    }

    fn run(mut self) -> Result<Vec<Token>, ParseError> {
        loop {
            // Whitespace and comments.
            while let Some(c) = self.peek() {
                if c.is_whitespace() {
                    self.bump();
                } else if c == '#' {
                    self.take_while(|c| c != '\n');
                } else {
                    break;
                }
            }
            let (line, column, start) = (self.line, self.column, self.i);
            let Some(c) = self.peek() else {
                self.tokens.push(Token { kind: Kind::End, line, column, text: String::new() });
                return Ok(self.tokens);
            };
            let after_dot = matches!(self.tokens.last(), Some(Token { kind: Kind::Dot, .. }));
            let kind = if after_dot && is_ident_char(c) {
                self.take_while(is_ident_char);
                Kind::Word(self.chars[start..self.i].iter().collect())
            } else if c == '"' {
                Kind::Str(self.string()?)
            } else if c.is_ascii_digit() || (c == '-' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) {
                self.number(line, column)?
            } else if is_word_start(c) {
                self.take_while(is_ident_char);
                Kind::Word(self.chars[start..self.i].iter().collect())
            } else {
                self.bump();
                match c {
                    '.' => Kind::Dot,
                    ',' => Kind::Comma,
                    ':' => Kind::Colon,
                    '(' => Kind::LParen,
                    ')' => Kind::RParen,
                    '[' => Kind::LBracket,
                    ']' => Kind::RBracket,
                    '{' => Kind::LBrace,
                    '}' => Kind::RBrace,
                    '=' => {
                        if self.peek() == Some('=') {
                            self.bump();
                        }
                        Kind::Eq
                    }
                    '!' if self.peek() == Some('=') => {
                        self.bump();
                        Kind::Ne
                    }
                    '!' => {
                        return Err(Self::error(line, column, "unexpected \"!\": write != for not equal, or not"));
                    }
                    '<' if self.peek() == Some('=') => {
                        self.bump();
                        Kind::Le
                    }
                    '<' => Kind::Lt,
                    '>' if self.peek() == Some('=') => {
                        self.bump();
                        Kind::Ge
                    }
                    '>' => Kind::Gt,
                    other => {
                        return Err(Self::error(line, column, format!("unexpected character {:?}", other)));
                    }
                }
            };
            let text = self.chars[start..self.i].iter().collect();
            self.tokens.push(Token { kind, line, column, text });
        }
    }

    /// A JSON string starting at the opening quote; returns its decoded content.
    fn string(&mut self) -> Result<String, ParseError> {
        let (line, column) = (self.line, self.column);
        self.bump();
        let mut out = String::new();
        loop {
            let (esc_line, esc_column) = (self.line, self.column);
            match self.bump() {
                None | Some('\n') => {
                    return Err(Self::error(line, column, "unterminated string: missing the closing \""));
                }
                Some('"') => return Ok(out),
                Some('\\') => {
                    let bad = |what: String| Self::error(esc_line, esc_column, what);
                    match self.bump() {
                        Some('"') => out.push('"'),
                        Some('\\') => out.push('\\'),
                        Some('/') => out.push('/'),
                        Some('b') => out.push('\u{8}'),
                        Some('f') => out.push('\u{c}'),
                        Some('n') => out.push('\n'),
                        Some('r') => out.push('\r'),
                        Some('t') => out.push('\t'),
                        Some('u') => {
                            let high =
                                self.hex4().ok_or_else(|| bad("bad \\u escape: expected 4 hex digits".into()))?;
                            let code = if (0xD800..0xDC00).contains(&high) {
                                let low = if self.peek() == Some('\\') && self.peek_at(1) == Some('u') {
                                    self.bump();
                                    self.bump();
                                    self.hex4()
                                } else {
                                    None
                                };
                                match low {
                                    Some(low) if (0xDC00..0xE000).contains(&low) => {
                                        0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                                    }
                                    _ => return Err(bad("bad \\u escape: a lone UTF-16 surrogate".into())),
                                }
                            } else {
                                high
                            };
                            let c = char::from_u32(code)
                                .ok_or_else(|| bad("bad \\u escape: a lone UTF-16 surrogate".into()))?;
                            out.push(c);
                        }
                        Some(other) => {
                            return Err(bad(format!(
                                "bad escape \\{other} in a string (use \\\", \\\\, \\n, \\t, \\uXXXX …)"
                            )));
                        }
                        None => {
                            return Err(Self::error(line, column, "unterminated string: missing the closing \""));
                        }
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = self.peek()?.to_digit(16)?;
            self.bump();
            value = value * 16 + digit;
        }
        Some(value)
    }

    /// A number, a date (`2026-01-01…`) or a number with a suffix (`7d`).
    fn number(&mut self, line: usize, column: usize) -> Result<Kind, ParseError> {
        let start = self.i;
        let is_date = (0..4).all(|k| self.peek_at(k).is_some_and(|c| c.is_ascii_digit()))
            && self.peek_at(4) == Some('-')
            && self.peek_at(5).is_some_and(|c| c.is_ascii_digit());
        if is_date {
            self.take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '+' | '-' | '.'));
            return Ok(Kind::Date(self.chars[start..self.i].iter().collect()));
        }
        if self.peek() == Some('-') {
            self.bump();
        }
        self.take_while(|c| c.is_ascii_digit());
        if self.peek() == Some('.') {
            if self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
                self.take_while(|c| c.is_ascii_digit());
            } else {
                self.bump();
                let text: String = self.chars[start..self.i].iter().collect();
                return Err(Self::error(
                    line,
                    column,
                    format!("bad number \"{text}\": expected digits after the decimal point"),
                ));
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let digit_at = if matches!(self.peek_at(1), Some('+' | '-')) { 2 } else { 1 };
            if self.peek_at(digit_at).is_some_and(|c| c.is_ascii_digit()) {
                for _ in 0..digit_at {
                    self.bump();
                }
                self.take_while(|c| c.is_ascii_digit());
            }
        }
        let number: String = self.chars[start..self.i].iter().collect();
        if self.peek().is_some_and(is_ident_char) {
            let suffix_start = self.i;
            self.take_while(is_ident_char);
            return Ok(Kind::Suffixed(number, self.chars[suffix_start..self.i].iter().collect()));
        }
        Ok(Kind::Num(number))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Parser

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

/// What `between A and B` turned out to be.
enum Between {
    Numbers(f64, f64),
    Ago(Span, Span),
}

const COMPARISONS: &str = "=, !=, >, >=, <, <=, between, contains, starts with, in, exists, before, after, \
                           within last, more than … ago, anniversary within";

impl Parser {
    fn peek(&self) -> &Token {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> &Token {
        let last = self.tokens.len() - 1;
        &self.tokens[(self.pos + n).min(last)]
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if !matches!(token.kind, Kind::End) {
            self.pos += 1;
        }
        token
    }

    fn at_word(&self, keyword: &str) -> bool {
        self.peek().is_word(keyword)
    }

    fn eat_word(&mut self, keyword: &str) -> bool {
        let found = self.at_word(keyword);
        if found {
            self.pos += 1;
        }
        found
    }

    fn error_at(token: &Token, message: impl Into<String>) -> ParseError {
        ParseError { line: token.line, column: token.column, message: message.into() }
    }

    /// "expected {expected}, found {the next token}", at the next token.
    fn error_here(&self, expected: &str) -> ParseError {
        let token = self.peek();
        Self::error_at(token, format!("expected {expected}, found {}", token.describe()))
    }

    fn expect_word(&mut self, keyword: &str, expected: &str) -> Result<(), ParseError> {
        if self.eat_word(keyword) { Ok(()) } else { Err(self.error_here(expected)) }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Self::error_at(self.peek(), format!("nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Condition, ParseError> {
        let mut items = vec![self.parse_and()?];
        while self.eat_word("or") {
            items.push(self.parse_and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Condition::Or(items) })
    }

    fn parse_and(&mut self) -> Result<Condition, ParseError> {
        let mut items = vec![self.parse_unary()?];
        while self.eat_word("and") {
            items.push(self.parse_unary()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Condition::And(items) })
    }

    fn parse_unary(&mut self) -> Result<Condition, ParseError> {
        self.enter()?;
        let result = if self.eat_word("not") {
            self.parse_unary().map(|inner| Condition::Not(Box::new(inner)))
        } else if matches!(self.peek().kind, Kind::LParen) {
            let open = self.next();
            self.parse_or().and_then(|inner| {
                self.close_paren(&open, "and, or or )")?;
                Ok(inner)
            })
        } else {
            self.parse_atom()
        };
        self.depth -= 1;
        result
    }

    fn close_paren(&mut self, open: &Token, expected: &str) -> Result<(), ParseError> {
        match self.peek().kind {
            Kind::RParen => {
                self.next();
                Ok(())
            }
            Kind::End => Err(Self::error_at(
                open,
                format!("this ( is never closed: expected {expected} before the end of the definition"),
            )),
            _ => Err(self.error_here(&format!("{expected} (closing the ( at {}:{})", open.line, open.column))),
        }
    }

    fn parse_atom(&mut self) -> Result<Condition, ParseError> {
        let token = self.peek().clone();
        let word = match &token.kind {
            Kind::Str(_) => return self.parse_attribute(),
            Kind::Word(w) => w.to_ascii_lowercase(),
            _ => return Err(self.error_here(EXPECTED_CONDITION)),
        };
        match word.as_str() {
            "traits" | "computed" => self.parse_attribute(),
            "event" => {
                self.next();
                self.parse_event_body(None)
            }
            "count" | "first" | "last" => {
                self.next();
                let measure = match word.as_str() {
                    "count" => Measure::Count,
                    "first" => Measure::First,
                    _ => Measure::Last,
                };
                self.expect_word("of", &format!("of after {word} (as in {word} of event \"Order Completed\" …)"))?;
                self.expect_word("event", &format!("event after {word} of"))?;
                self.parse_event_body(Some(measure))
            }
            "sum" | "avg" | "min" | "max" => {
                self.next();
                let path = self.parse_property_path(&format!(
                    "an event property after {word} (as in {word} total of event \"Order Completed\" …)"
                ))?;
                let measure = match word.as_str() {
                    "sum" => Measure::Sum(path),
                    "avg" => Measure::Avg(path),
                    "min" => Measure::Min(path),
                    _ => Measure::Max(path),
                };
                self.expect_word("of", &format!("of after {word} {}", print_property_path(measure_path(&measure))))?;
                self.expect_word("event", &format!("event after {word} … of"))?;
                self.parse_event_body(Some(measure))
            }
            "did" => self.parse_sequence(),
            "consent" => {
                self.next();
                let channel = self.parse_name("a consent channel (email, sms, line, push) after consent")?;
                self.expect_word("for", "for after the consent channel (as in consent email for marketing)")?;
                let purpose = self.parse_name("a consent purpose (marketing, transactional, …) after for")?;
                Ok(Condition::Consent(ConsentCondition { channel, purpose }))
            }
            "has" => {
                self.next();
                let kind = self.parse_name("an identifier kind (email, phone, line_user_id, …) after has")?;
                Ok(Condition::HasIdentifier(kind))
            }
            "near" => self.parse_near(),
            "in" => {
                self.next();
                self.expect_word("segment", "segment after in (as in in segment \"vip\")")?;
                let name = self.parse_name("a segment name after in segment (as in in segment \"vip\")")?;
                Ok(Condition::InSegment(name))
            }
            "all" | "any" if matches!(self.peek_at(1).kind, Kind::LParen) => {
                self.next();
                let open = self.next();
                let items = if matches!(self.peek().kind, Kind::RParen) {
                    Vec::new()
                } else {
                    self.enter()?;
                    let inner = self.parse_or();
                    self.depth -= 1;
                    vec![inner?]
                };
                self.close_paren(&open, "and, or or )")?;
                Ok(if word == "all" { Condition::And(items) } else { Condition::Or(items) })
            }
            _ => {
                let hint = if matches!(self.peek_at(1).kind, Kind::Dot)
                    || Self::starts_comparison_at(self.peek_at(1), self.peek_at(2))
                {
                    " (attribute paths start with traits. or computed.)"
                } else {
                    ""
                };
                Err(Self::error_at(&token, format!("expected {EXPECTED_CONDITION}, found {}{hint}", token.describe())))
            }
        }
    }

    /// `traits.NAME…` / `computed.NAME…` / `"quoted".…`, then a comparison.
    fn parse_attribute(&mut self) -> Result<Condition, ParseError> {
        let first = self.next();
        let mut path = match first.kind {
            Kind::Str(s) => s,
            Kind::Word(w) => {
                let prefix = w.to_ascii_lowercase();
                if !matches!(self.peek().kind, Kind::Dot) {
                    return Err(self.error_here(&format!(". and a name after {prefix} (as in {prefix}.email)")));
                }
                prefix
            }
            _ => return Err(Self::error_at(&first, "expected an attribute path")),
        };
        self.path_rest(&mut path)?;
        let comparison = self.parse_comparison(&print_attribute_path(&path))?;
        Ok(Condition::Attribute(AttributeCondition { path, comparison }))
    }

    /// The `.part` continuations of a dotted path.
    fn path_rest(&mut self, path: &mut String) -> Result<(), ParseError> {
        while matches!(self.peek().kind, Kind::Dot) {
            self.next();
            let part = self.next();
            match part.kind {
                Kind::Word(w) => path.push_str(&format!(".{w}")),
                Kind::Str(s) => path.push_str(&format!(".{s}")),
                _ => {
                    return Err(Self::error_at(
                        &part,
                        format!("expected a name after \".\" in a path, found {}", part.describe()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// An event property path: `total`, `products.price`, `"unit price"`.
    fn parse_property_path(&mut self, expected: &str) -> Result<String, ParseError> {
        let mut path = match &self.peek().kind {
            Kind::Word(w) | Kind::Str(w) => w.clone(),
            _ => return Err(self.error_here(expected)),
        };
        self.next();
        self.path_rest(&mut path)?;
        Ok(path)
    }

    /// A name in quotes (a bare word is accepted too).
    fn parse_name(&mut self, expected: &str) -> Result<String, ParseError> {
        match &self.peek().kind {
            Kind::Str(s) | Kind::Word(s) => {
                let s = s.clone();
                self.next();
                Ok(s)
            }
            _ => Err(self.error_here(expected)),
        }
    }

    fn parse_near(&mut self) -> Result<Condition, ParseError> {
        self.next();
        let lat = self.parse_f64("a latitude after near (as in near 35.68, 139.76 within 5 km)")?;
        if !matches!(self.peek().kind, Kind::Comma) {
            return Err(self.error_here("\",\" and a longitude after the latitude"));
        }
        self.next();
        let lon = self.parse_f64("a longitude after the comma")?;
        self.expect_word("within", "within after the coordinates (as in near 35.68, 139.76 within 5 km)")?;
        let token = self.peek().clone();
        let km = match &token.kind {
            Kind::Suffixed(number, unit) if unit.eq_ignore_ascii_case("km") => {
                self.next();
                Self::number_f64(&token, number)?
            }
            Kind::Num(number) => {
                self.next();
                let km = Self::number_f64(&token, number)?;
                self.expect_word("km", "km after the distance")?;
                km
            }
            _ => return Err(self.error_here("a distance in km (as in within 5 km)")),
        };
        Ok(Condition::Near(NearCondition { lat, lon, km }))
    }

    fn parse_sequence(&mut self) -> Result<Condition, ParseError> {
        self.next();
        let first = self.parse_event_match("an event name after did (as in did \"Product Viewed\")")?;
        self.expect_word("then", "then not \"…\" (or where filters) after the first event of a sequence")?;
        self.expect_word("not", "not after then (sequences read: did \"A\" then not \"B\" within 1h)")?;
        let then_not = self.parse_event_match("an event name after then not")?;
        self.expect_word("within", "within SPAN after the second event of a sequence (as in within 1h)")?;
        let within = self.parse_span()?;
        let window = match self.parse_window(false)? {
            Some((window, _)) => window,
            None => Window::Ever,
        };
        Ok(Condition::Sequence(SequenceCondition { first, then_not, within, window }))
    }

    fn parse_event_match(&mut self, expected: &str) -> Result<EventMatch, ParseError> {
        let name = self.parse_name(expected)?;
        let mut filters = Vec::new();
        if self.eat_word("where") {
            loop {
                let path = self.parse_property_path("an event property to filter on after where")?;
                let comparison = self.parse_comparison(&print_property_path(&path))?;
                filters.push(PropertyFilter { path, comparison });
                if matches!(self.peek().kind, Kind::Comma) {
                    self.next();
                } else {
                    break;
                }
            }
        }
        Ok(EventMatch { name, filters })
    }

    /// An optional window. After a measure (`measured`), `between` may start the measure's comparison instead:
    /// `between SPAN and SPAN ago` is the window only when another comparison follows it, and `between 2 and 5`
    /// is always a comparison; such a comparison comes back in the second field.
    fn parse_window(&mut self, measured: bool) -> Result<Option<(Window, Option<Comparison>)>, ParseError> {
        let the = usize::from(self.peek_at(1).is_word("the"));
        if self.at_word("in") && self.peek_at(1 + the).is_word("last") {
            for _ in 0..2 + the {
                self.next();
            }
            return Ok(Some((Window::Last(self.parse_span()?), None)));
        }
        if self.eat_word("from") {
            let from = self.parse_date()?;
            self.expect_word("to", "to after the start date (as in from 2026-01-01 to 2026-02-01)")?;
            let to = self.parse_date()?;
            return Ok(Some((Window::Range(from, to), None)));
        }
        if self.at_word("between") {
            let token = self.peek().clone();
            return match self.parse_between()? {
                Between::Ago(from, to) => {
                    if measured && !self.starts_comparison() {
                        // `last of event "X" between 60d and 120d ago`: the measure's comparison.
                        Ok(Some((Window::Ever, Some(Comparison::BetweenAgo(from, to)))))
                    } else {
                        Ok(Some((Window::BetweenAgo(from, to), None)))
                    }
                }
                Between::Numbers(low, high) if measured => {
                    Ok(Some((Window::Ever, Some(Comparison::Between(low, high)))))
                }
                Between::Numbers(..) => Err(Self::error_at(
                    &token,
                    "expected a window (in last SPAN, between SPAN and SPAN ago, from DATE to DATE): \
                     between numbers is a comparison, which needs a measure, e.g. `count of event …`",
                )),
            };
        }
        Ok(None)
    }

    fn parse_event_body(&mut self, measure: Option<Measure>) -> Result<Condition, ParseError> {
        let matches =
            self.parse_event_match("an event name in quotes after event (as in event \"Order Completed\")")?;
        let comparison_token = self.peek().clone();
        let (window, mut comparison) = self.parse_window(measure.is_some())?.unwrap_or((Window::Ever, None));
        let comparison_token = if comparison.is_some() { comparison_token } else { self.peek().clone() };
        if comparison.is_none() && self.starts_comparison() {
            comparison = Some(self.parse_comparison(&format!("event {}", crate::print::quote(&matches.name)))?);
        }
        let (measure, comparison) = match (measure, comparison) {
            (None, None) => (Measure::Count, Comparison::Gte(1.0)),
            (Some(measure), Some(comparison)) => (measure, comparison),
            (None, Some(_)) => {
                return Err(Self::error_at(
                    &comparison_token,
                    "a comparison needs a measure, e.g. `count of event …` (or leave the comparison out for \
                     \"has done\")",
                ));
            }
            (Some(measure), None) => {
                let expected = match measure {
                    Measure::First | Measure::Last => {
                        "a date comparison for the measure (as in within last 30d, more than 90d ago, \
                         between 60d and 120d ago, before 2026-01-01)"
                    }
                    _ => "a comparison for the measure (as in >= 2, < 100, between 2 and 5)",
                };
                return Err(self.error_here(expected));
            }
        };
        Ok(Condition::Event(EventCondition { matches, window, measure, comparison }))
    }

    fn starts_comparison(&self) -> bool {
        Self::starts_comparison_at(self.peek(), self.peek_at(1))
    }

    fn starts_comparison_at(token: &Token, next: &Token) -> bool {
        match &token.kind {
            Kind::Eq | Kind::Ne | Kind::Lt | Kind::Le | Kind::Gt | Kind::Ge => true,
            Kind::Word(_) => {
                ["between", "contains", "starts", "exists", "before", "after", "within", "more", "anniversary"]
                    .iter()
                    .any(|k| token.is_word(k))
                    || (token.is_word("in") && matches!(next.kind, Kind::LParen))
            }
            _ => false,
        }
    }

    fn parse_comparison(&mut self, subject: &str) -> Result<Comparison, ParseError> {
        let token = self.peek().clone();
        let word = match &token.kind {
            Kind::Eq | Kind::Ne => {
                self.next();
                let value = self.parse_value(&format!("a value after {}", token.text))?;
                return Ok(if token.kind == Kind::Eq {
                    Comparison::Equals(value)
                } else {
                    Comparison::NotEquals(value)
                });
            }
            Kind::Gt | Kind::Ge | Kind::Lt | Kind::Le => {
                self.next();
                let n = self.parse_f64(&format!("a number after {}", token.text))?;
                return Ok(match token.kind {
                    Kind::Gt => Comparison::Gt(n),
                    Kind::Ge => Comparison::Gte(n),
                    Kind::Lt => Comparison::Lt(n),
                    _ => Comparison::Lte(n),
                });
            }
            Kind::Word(w) => w.to_ascii_lowercase(),
            _ => String::new(),
        };
        let comparison = match word.as_str() {
            "between" => match self.parse_between()? {
                Between::Numbers(low, high) => Comparison::Between(low, high),
                Between::Ago(from, to) => Comparison::BetweenAgo(from, to),
            },
            "contains" => {
                self.next();
                Comparison::Contains(self.parse_value("a value after contains")?)
            }
            "starts" => {
                self.next();
                self.expect_word("with", "with after starts")?;
                match &self.peek().kind {
                    Kind::Str(s) => {
                        let s = s.clone();
                        self.next();
                        Comparison::StartsWith(s)
                    }
                    _ => return Err(self.error_here("a \"string\" after starts with")),
                }
            }
            "in" if matches!(self.peek_at(1).kind, Kind::LParen) => {
                self.next();
                let open = self.next();
                let mut values = Vec::new();
                if !matches!(self.peek().kind, Kind::RParen) {
                    loop {
                        values.push(self.parse_value("a value in the in (…) list")?);
                        if matches!(self.peek().kind, Kind::Comma) {
                            self.next();
                        } else {
                            break;
                        }
                    }
                }
                self.close_paren(&open, "\",\" or )")?;
                Comparison::In(values)
            }
            "in" => {
                self.next();
                return Err(self.error_here("( after in (as in in (\"JP\", \"KR\"))"));
            }
            "exists" => {
                self.next();
                Comparison::Exists
            }
            "before" => {
                self.next();
                Comparison::Before(self.parse_date()?)
            }
            "after" => {
                self.next();
                Comparison::After(self.parse_date()?)
            }
            "within" => {
                self.next();
                self.eat_word("the");
                self.expect_word("last", "last after within (as in within last 7d)")?;
                Comparison::WithinLast(self.parse_span()?)
            }
            "more" => {
                self.next();
                self.expect_word("than", "than after more (as in more than 90d ago)")?;
                let span = self.parse_span()?;
                self.expect_word("ago", &format!("ago after more than {span}"))?;
                Comparison::MoreThanAgo(span)
            }
            "anniversary" => {
                self.next();
                self.expect_word("within", "within after anniversary (as in anniversary within 7d)")?;
                Comparison::AnniversaryWithin(self.parse_span()?)
            }
            _ => return Err(self.error_here(&format!("a comparison ({COMPARISONS}) after {subject}"))),
        };
        Ok(comparison)
    }

    /// `between A and B` (numbers) or `between SPAN and SPAN ago` (`between 60 and 120 days ago` too).
    fn parse_between(&mut self) -> Result<Between, ParseError> {
        self.next();
        let low_token = self.peek().clone();
        let low = self.parse_number_or_span("a number or a span after between (as in between 2 and 5)")?;
        self.expect_word("and", "and in between … and …")?;
        let high_token = self.peek().clone();
        let high = self.parse_number_or_span("a number or a span after and")?;
        match (low, high) {
            (Err(low), Err(high)) => Ok(Between::Numbers(low, high)),
            (Ok(from), Ok(to)) => {
                self.expect_word("ago", &format!("ago after between {from} and {to}"))?;
                Ok(Between::Ago(from, to))
            }
            (Err(_), Ok(to)) => {
                let amount = Self::span_amount(&low_token, &low_token.text)?;
                self.expect_word("ago", &format!("ago after between {amount} and {to}"))?;
                Ok(Between::Ago(Span::new(amount, to.unit), to))
            }
            (Ok(_), Err(_)) => Err(Self::error_at(
                &high_token,
                format!("expected a span (as in 120d) after and, found {}", high_token.describe()),
            )),
        }
    }

    /// `Ok(span)` for `7d` / `7 days`, `Err(number)` for a plain number.
    fn parse_number_or_span(&mut self, expected: &str) -> Result<Result<Span, f64>, ParseError> {
        let token = self.peek().clone();
        match &token.kind {
            Kind::Suffixed(..) => Ok(Ok(self.parse_span()?)),
            Kind::Num(_) if long_unit(self.peek_at(1)).is_some() => Ok(Ok(self.parse_span()?)),
            Kind::Num(number) => {
                self.next();
                Ok(Err(Self::number_f64(&token, number)?))
            }
            _ => Err(self.error_here(expected)),
        }
    }

    fn parse_span(&mut self) -> Result<Span, ParseError> {
        let token = self.peek().clone();
        match &token.kind {
            Kind::Suffixed(number, suffix) => {
                let unit = match suffix.to_ascii_lowercase().as_str() {
                    "m" => SpanUnit::Minutes,
                    "h" => SpanUnit::Hours,
                    "d" => SpanUnit::Days,
                    "w" => SpanUnit::Weeks,
                    _ => {
                        return Err(Self::error_at(
                            &token,
                            format!(
                                "unknown span unit \"{suffix}\" in \"{}\": use m (minutes), h (hours), d (days) or \
                                 w (weeks), as in 30m, 24h, 7d, 2w",
                                token.text
                            ),
                        ));
                    }
                };
                let amount = Self::span_amount(&token, number)?;
                self.next();
                Ok(Span::new(amount, unit))
            }
            Kind::Num(number) => {
                let amount = Self::span_amount(&token, number)?;
                self.next();
                match long_unit(self.peek()) {
                    Some(unit) => {
                        self.next();
                        Ok(Span::new(amount, unit))
                    }
                    None => Err(self.error_here(&format!(
                        "a unit after {number} (minutes, hours, days or weeks — or write {number}d)"
                    ))),
                }
            }
            _ => Err(self.error_here("a span (as in 30m, 24h, 7d, 2w or 7 days)")),
        }
    }

    fn span_amount(token: &Token, number: &str) -> Result<u32, ParseError> {
        if !number.chars().all(|c| c.is_ascii_digit()) {
            return Err(Self::error_at(token, format!("a span needs a whole number of units, found \"{number}\"")));
        }
        number
            .parse()
            .map_err(|_| Self::error_at(token, format!("span amount \"{number}\" is too large (at most {})", u32::MAX)))
    }

    fn parse_f64(&mut self, expected: &str) -> Result<f64, ParseError> {
        let token = self.peek().clone();
        match &token.kind {
            Kind::Num(number) => {
                self.next();
                Self::number_f64(&token, number)
            }
            Kind::Suffixed(..) => Err(Self::error_at(&token, format!("bad number \"{}\"", token.text))),
            _ => Err(self.error_here(expected)),
        }
    }

    fn number_f64(token: &Token, number: &str) -> Result<f64, ParseError> {
        match number.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(n),
            _ => Err(Self::error_at(token, format!("number \"{number}\" is out of range"))),
        }
    }

    fn parse_date(&mut self) -> Result<DateTime<Utc>, ParseError> {
        let token = self.peek().clone();
        let text = match &token.kind {
            Kind::Date(text) | Kind::Str(text) => text.clone(),
            _ => return Err(self.error_here("a date (YYYY-MM-DD, or RFC 3339 like 2026-01-01T09:00:00Z)")),
        };
        let parsed = if text.len() == 10 {
            NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc())
        } else {
            DateTime::parse_from_rfc3339(&text).ok().map(|d| d.with_timezone(&Utc))
        };
        match parsed {
            Some(date) => {
                self.next();
                Ok(date)
            }
            None => Err(Self::error_at(
                &token,
                format!("invalid date \"{text}\": use YYYY-MM-DD or RFC 3339 like 2026-01-01T09:00:00Z"),
            )),
        }
    }

    /// A JSON value.
    fn parse_value(&mut self, expected: &str) -> Result<Value, ParseError> {
        let token = self.peek().clone();
        let value = match &token.kind {
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Num(number) => json_number(&token, number)?,
            Kind::Word(w) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            Kind::Word(w) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            Kind::Word(w) if w.eq_ignore_ascii_case("null") => Value::Null,
            Kind::LBracket => {
                self.enter()?;
                self.next();
                let mut items = Vec::new();
                if !matches!(self.peek().kind, Kind::RBracket) {
                    loop {
                        items.push(self.parse_value("a value in the [ … ] list")?);
                        if matches!(self.peek().kind, Kind::Comma) {
                            self.next();
                        } else {
                            break;
                        }
                    }
                }
                if !matches!(self.peek().kind, Kind::RBracket) {
                    return Err(
                        self.error_here(&format!("\",\" or ] (closing the [ at {}:{})", token.line, token.column))
                    );
                }
                self.depth -= 1;
                Value::Array(items)
            }
            Kind::LBrace => {
                self.enter()?;
                self.next();
                let mut map = Map::new();
                if !matches!(self.peek().kind, Kind::RBrace) {
                    loop {
                        let key = match &self.peek().kind {
                            Kind::Str(s) => s.clone(),
                            _ => return Err(self.error_here("a \"key\" in the { … } object")),
                        };
                        self.next();
                        if !matches!(self.peek().kind, Kind::Colon) {
                            return Err(self.error_here("\":\" after the key"));
                        }
                        self.next();
                        let value = self.parse_value("a value after \":\"")?;
                        map.insert(key, value);
                        if matches!(self.peek().kind, Kind::Comma) {
                            self.next();
                        } else {
                            break;
                        }
                    }
                }
                if !matches!(self.peek().kind, Kind::RBrace) {
                    return Err(
                        self.error_here(&format!("\",\" or }} (closing the {{ at {}:{})", token.line, token.column))
                    );
                }
                self.depth -= 1;
                Value::Object(map)
            }
            Kind::Suffixed(..) => {
                return Err(Self::error_at(&token, format!("bad number \"{}\"", token.text)));
            }
            Kind::Date(_) => {
                return Err(self
                    .error_here(&format!("{expected} (to compare a date as text, quote it; or use before / after)")));
            }
            Kind::Word(_) => {
                return Err(self.error_here(&format!(
                    "{expected} (a \"string\" in double quotes, a number, true, false or null)"
                )));
            }
            _ => return Err(self.error_here(expected)),
        };
        self.next();
        Ok(value)
    }
}

const EXPECTED_CONDITION: &str = "a condition (traits.…, computed.…, event, count of event, did, consent, has, \
                                  near, in segment, not or ( …)";

fn measure_path(measure: &Measure) -> &str {
    match measure {
        Measure::Sum(p) | Measure::Avg(p) | Measure::Min(p) | Measure::Max(p) => p,
        _ => "",
    }
}

fn long_unit(token: &Token) -> Option<SpanUnit> {
    let Kind::Word(word) = &token.kind else { return None };
    match word.to_ascii_lowercase().as_str() {
        "minute" | "minutes" | "min" | "mins" => Some(SpanUnit::Minutes),
        "hour" | "hours" => Some(SpanUnit::Hours),
        "day" | "days" => Some(SpanUnit::Days),
        "week" | "weeks" => Some(SpanUnit::Weeks),
        _ => None,
    }
}

/// A JSON number keeping serde_json's integer / float distinction: integers without `.` or an exponent
/// become integers (when they fit), everything else a float parsed exactly.
fn json_number(token: &Token, text: &str) -> Result<Value, ParseError> {
    let is_integer = !text.contains(['.', 'e', 'E']);
    if is_integer {
        if let Ok(n) = text.parse::<u64>() {
            return Ok(Value::Number(n.into()));
        }
        if let Ok(n) = text.parse::<i64>() {
            return Ok(Value::Number(n.into()));
        }
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| Parser::error_at(token, format!("number \"{text}\" is out of range")))
}
