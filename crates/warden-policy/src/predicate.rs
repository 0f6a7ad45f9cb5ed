//! `where` conditions: a small predicate language over the user and the
//! node, checked when a role is stored and evaluated without I/O.
//!
//! ```text
//! contains(user.traits["teams"], node.labels["team"]) && login != "root"
//! regexp.match(node.labels.env, "staging|dev") || !has_prefix(login, "svc-")
//! ```
//!
//! - Values: `"string"` literals, `login` (the Unix login asked for),
//!   `node.labels["k"]` or `node.labels.k` (a string; `""` when the node
//!   has no such label), `user.traits["k"]` or `user.traits.k` (a list;
//!   empty when the user has no such trait), `true`, `false`.
//! - `a == b`, `a != b` compare strings; `contains(list, string)`,
//!   `contains_any(list, list)`, `has_prefix(string, prefix)` and
//!   `regexp.match(string or list, "pattern")` (the pattern must match a
//!   whole value; for a list, any one) give booleans; `!`, `&&`, `||` and
//!   parentheses combine them.
//!
//! Types are checked when the expression compiles (a role with a bad one
//! is refused on apply), so evaluating never fails.

use crate::Traits;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Longest expression accepted.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting accepted (parentheses, `!`, calls).
const MAX_DEPTH: usize = 32;
/// Upper bound on a compiled pattern (and on its matcher's cache).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Most `regexp.match` patterns in one expression (each may cost up to
/// the size limit, on every node the policy is pushed to).
const MAX_PATTERNS: usize = 8;

/// What an expression is evaluated against.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub traits: &'a Traits,
    pub login: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// Why an expression does not compile: what and where (a byte offset).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at {at}: {what}")]
pub struct PredicateError {
    pub at: usize,
    pub what: String,
}

/// A compiled `where` expression.
#[derive(Clone, Debug)]
pub struct Predicate {
    source: String,
    root: Bool,
}

#[derive(Clone, Debug)]
enum Str {
    Lit(String),
    Login,
    Label(String),
}

#[derive(Clone, Debug)]
enum List {
    Trait(String),
}

#[derive(Clone, Debug)]
enum Bool {
    Lit(bool),
    Not(Box<Bool>),
    And(Box<Bool>, Box<Bool>),
    Or(Box<Bool>, Box<Bool>),
    Eq(Str, Str),
    Contains(List, Str),
    ContainsAny(List, List),
    HasPrefix(Str, Str),
    MatchStr(Str, regex::Regex),
    MatchList(List, regex::Regex),
}

/// A value while type-checking.
enum Value {
    Str(Str),
    List(List),
    Bool(Bool),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Bool(_) => "a boolean",
        }
    }
}

impl Predicate {
    /// Compiles `source`.
    pub fn compile(source: &str) -> Result<Self, PredicateError> {
        if source.len() > MAX_LEN {
            return Err(PredicateError {
                at: MAX_LEN,
                what: format!("longer than {MAX_LEN} bytes"),
            });
        }
        let tokens = lex(source)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            depth: 0,
            patterns: 0,
            end: source.len(),
        };
        let value = p.or()?;
        if let Some((at, t)) = p.tokens.get(p.pos) {
            return Err(PredicateError {
                at: *at,
                what: format!("unexpected {}", t.describe()),
            });
        }
        match value {
            Value::Bool(root) => Ok(Predicate {
                source: source.to_string(),
                root,
            }),
            other => Err(PredicateError {
                at: 0,
                what: format!(
                    "the expression is {}, not a condition (compare it, or use contains(...))",
                    other.kind()
                ),
            }),
        }
    }

    /// Compiles `source` once per process (roles are evaluated for every
    /// login and every node listed).
    pub fn cached(source: &str) -> Result<Arc<Self>, PredicateError> {
        static CACHE: Mutex<BTreeMap<String, Arc<Predicate>>> = Mutex::new(BTreeMap::new());
        if let Some(p) = CACHE.lock().unwrap_or_else(|e| e.into_inner()).get(source) {
            return Ok(p.clone());
        }
        let p = Arc::new(Self::compile(source)?);
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        // Roles are few; a flood of distinct expressions only costs
        // compiling again.
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(source.to_string(), p.clone());
        Ok(p)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression against `ctx`.
    pub fn eval(&self, ctx: &Context<'_>) -> bool {
        eval(&self.root, ctx)
    }
}

fn str_of<'a>(s: &'a Str, ctx: &Context<'a>) -> &'a str {
    match s {
        Str::Lit(v) => v,
        Str::Login => ctx.login,
        Str::Label(k) => ctx.labels.get(k).map_or("", String::as_str),
    }
}

fn list_of<'a>(l: &List, ctx: &Context<'a>) -> &'a [String] {
    match l {
        List::Trait(k) => ctx.traits.get(k).map_or(&[], Vec::as_slice),
    }
}

fn eval(b: &Bool, ctx: &Context<'_>) -> bool {
    match b {
        Bool::Lit(v) => *v,
        Bool::Not(x) => !eval(x, ctx),
        Bool::And(x, y) => eval(x, ctx) && eval(y, ctx),
        Bool::Or(x, y) => eval(x, ctx) || eval(y, ctx),
        Bool::Eq(x, y) => str_of(x, ctx) == str_of(y, ctx),
        Bool::Contains(l, s) => {
            let s = str_of(s, ctx);
            list_of(l, ctx).iter().any(|v| v == s)
        }
        Bool::ContainsAny(a, b) => {
            let b = list_of(b, ctx);
            list_of(a, ctx).iter().any(|v| b.contains(v))
        }
        Bool::HasPrefix(s, p) => str_of(s, ctx).starts_with(str_of(p, ctx)),
        Bool::MatchStr(s, re) => re.is_match(str_of(s, ctx)),
        Bool::MatchList(l, re) => list_of(l, ctx).iter().any(|v| re.is_match(v)),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Not,
    And,
    Or,
    Eq,
    Ne,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(i) => format!("{i:?}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Comma => "','".into(),
            Tok::Dot => "'.'".into(),
            Tok::Not => "'!'".into(),
            Tok::And => "'&&'".into(),
            Tok::Or => "'||'".into(),
            Tok::Eq => "'=='".into(),
            Tok::Ne => "'!='".into(),
        }
    }
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, PredicateError> {
    let err = |at, what: &str| PredicateError {
        at,
        what: what.to_string(),
    };
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let two = |next: u8| bytes.get(i + 1) == Some(&next);
        let (tok, len) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'.' => (Tok::Dot, 1),
            b'!' if two(b'=') => (Tok::Ne, 2),
            b'!' => (Tok::Not, 1),
            b'&' if two(b'&') => (Tok::And, 2),
            b'|' if two(b'|') => (Tok::Or, 2),
            b'=' if two(b'=') => (Tok::Eq, 2),
            b'"' => {
                let start = i;
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match bytes.get(j) {
                        None => return Err(err(start, "unterminated string")),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            match bytes.get(j + 1) {
                                Some(b'"') => s.push('"'),
                                Some(b'\\') => s.push('\\'),
                                _ => return Err(err(j, "only \\\" and \\\\ escape in a string")),
                            }
                            j += 2;
                        }
                        Some(_) => {
                            // Whole UTF-8 characters.
                            let ch = src[j..].chars().next().expect("in bounds");
                            s.push(ch);
                            j += ch.len_utf8();
                        }
                    }
                }
                out.push((start, Tok::Str(s)));
                i = j + 1;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                let mut j = i;
                while j < bytes.len()
                    && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_' || bytes[j] == b'-')
                {
                    j += 1;
                }
                out.push((start, Tok::Ident(src[start..j].to_string())));
                i = j;
                continue;
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(err(i, &format!("unexpected character {ch:?}")));
            }
        };
        out.push((i, tok));
        i += len;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
    /// `regexp.match` patterns so far.
    patterns: usize,
    /// Offset of the end of the source, for errors at the end.
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(a, _)| *a)
    }

    fn err<T>(&self, what: impl Into<String>) -> Result<T, PredicateError> {
        Err(PredicateError {
            at: self.at(),
            what: what.into(),
        })
    }

    fn expect(&mut self, want: Tok) -> Result<(), PredicateError> {
        match self.peek() {
            Some(t) if *t == want => {
                self.pos += 1;
                Ok(())
            }
            Some(t) => {
                let t = t.describe();
                self.err(format!("expected {}, found {t}", want.describe()))
            }
            None => self.err(format!("expected {}, found the end", want.describe())),
        }
    }

    fn deeper(&mut self) -> Result<(), PredicateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(format!("nested deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn boolean(&self, v: Value, at: usize, op: &str) -> Result<Bool, PredicateError> {
        match v {
            Value::Bool(b) => Ok(b),
            other => Err(PredicateError {
                at,
                what: format!("{op} needs conditions on both sides, not {}", other.kind()),
            }),
        }
    }

    fn or(&mut self) -> Result<Value, PredicateError> {
        let at = self.at();
        let mut left = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let right_at = self.at();
            let right = self.and()?;
            left = Value::Bool(Bool::Or(
                Box::new(self.boolean(left, at, "'||'")?),
                Box::new(self.boolean(right, right_at, "'||'")?),
            ));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Value, PredicateError> {
        let at = self.at();
        let mut left = self.unary()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            let right_at = self.at();
            let right = self.unary()?;
            left = Value::Bool(Bool::And(
                Box::new(self.boolean(left, at, "'&&'")?),
                Box::new(self.boolean(right, right_at, "'&&'")?),
            ));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Value, PredicateError> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            self.deeper()?;
            let at = self.at();
            let v = self.unary()?;
            self.depth -= 1;
            return Ok(Value::Bool(Bool::Not(Box::new(
                self.boolean(v, at, "'!'")?,
            ))));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Value, PredicateError> {
        let at = self.at();
        let left = self.primary()?;
        let negate = match self.peek() {
            Some(Tok::Eq) => false,
            Some(Tok::Ne) => true,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right_at = self.at();
        let right = self.primary()?;
        let (Value::Str(a), Value::Str(b)) = (&left, &right) else {
            let (bad, bad_at) = match left {
                Value::Str(_) => (right, right_at),
                other => (other, at),
            };
            return Err(PredicateError {
                at: bad_at,
                what: format!(
                    "== and != compare strings, not {}{}",
                    bad.kind(),
                    if matches!(bad, Value::List(_)) {
                        " (use contains(list, value))"
                    } else {
                        ""
                    }
                ),
            });
        };
        let eq = Bool::Eq(a.clone(), b.clone());
        Ok(Value::Bool(if negate {
            Bool::Not(Box::new(eq))
        } else {
            eq
        }))
    }

    fn primary(&mut self) -> Result<Value, PredicateError> {
        let at = self.at();
        match self.peek().cloned() {
            Some(Tok::LParen) => {
                self.pos += 1;
                self.deeper()?;
                let v = self.or()?;
                self.depth -= 1;
                self.expect(Tok::RParen)?;
                Ok(v)
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Value::Str(Str::Lit(s)))
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                self.named(name, at)
            }
            Some(t) => self.err(format!("expected a value, found {}", t.describe())),
            None => self.err("expected a value, found the end"),
        }
    }

    /// What follows an identifier: a path, a call or a literal.
    fn named(&mut self, name: String, at: usize) -> Result<Value, PredicateError> {
        match name.as_str() {
            "true" => return Ok(Value::Bool(Bool::Lit(true))),
            "false" => return Ok(Value::Bool(Bool::Lit(false))),
            "login" => return Ok(Value::Str(Str::Login)),
            _ => {}
        }
        // A dotted name: a path (user.traits, node.labels) or a function
        // (regexp.match).
        let mut parts = vec![name];
        while self.peek() == Some(&Tok::Dot) {
            self.pos += 1;
            match self.peek().cloned() {
                Some(Tok::Ident(next)) if parts.len() < 2 => {
                    self.pos += 1;
                    parts.push(next);
                }
                _ => break,
            }
        }
        let dotted = parts.join(".");
        match dotted.as_str() {
            "user.traits" => Ok(Value::List(List::Trait(self.key(at)?))),
            "node.labels" => Ok(Value::Str(Str::Label(self.key(at)?))),
            "contains" | "contains_any" | "has_prefix" | "regexp.match" => {
                self.call(&dotted, at)
            }
            _ => Err(PredicateError {
                at,
                what: format!(
                    "unknown name {dotted:?}: use login, node.labels[\"k\"], user.traits[\"k\"], contains, contains_any, has_prefix, regexp.match, true, false"
                ),
            }),
        }
    }

    /// `["k"]` or `.k` after a path.
    fn key(&mut self, at: usize) -> Result<String, PredicateError> {
        // `.k` was consumed as a third part only when the path had room:
        // read it here instead.
        match self.peek().cloned() {
            Some(Tok::LBracket) => {
                self.pos += 1;
                let key = match self.peek().cloned() {
                    Some(Tok::Str(k)) => k,
                    _ => return self.err("expected a quoted key, as in [\"team\"]"),
                };
                self.pos += 1;
                self.expect(Tok::RBracket)?;
                Ok(key)
            }
            Some(Tok::Ident(k)) if self.tokens[self.pos - 1].1 == Tok::Dot => {
                self.pos += 1;
                Ok(k)
            }
            _ => Err(PredicateError {
                at,
                what: "a path needs a key: node.labels[\"team\"] or node.labels.team".into(),
            }),
        }
    }

    fn call(&mut self, name: &str, at: usize) -> Result<Value, PredicateError> {
        self.expect(Tok::LParen)?;
        self.deeper()?;
        let mut args = Vec::new();
        if self.peek() != Some(&Tok::RParen) {
            loop {
                let arg_at = self.at();
                args.push((arg_at, self.or()?));
                if self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                    continue;
                }
                break;
            }
        }
        self.expect(Tok::RParen)?;
        self.depth -= 1;
        let wrong = |what: &str| PredicateError {
            at,
            what: format!("{name} takes {what}"),
        };
        let mut args = args.into_iter();
        let (a, b) = match (args.next(), args.next(), args.next()) {
            (Some(a), Some(b), None) => (a, b),
            _ => return Err(wrong("two arguments")),
        };
        let b = match (name, a.1, b.1) {
            ("contains", Value::List(l), Value::Str(s)) => Bool::Contains(l, s),
            ("contains", _, _) => return Err(wrong("(list, string)")),
            ("contains_any", Value::List(x), Value::List(y)) => Bool::ContainsAny(x, y),
            ("contains_any", _, _) => return Err(wrong("(list, list)")),
            ("has_prefix", Value::Str(s), Value::Str(p)) => Bool::HasPrefix(s, p),
            ("has_prefix", _, _) => return Err(wrong("(string, string)")),
            (_, v, Value::Str(Str::Lit(pattern))) => {
                self.patterns += 1;
                if self.patterns > MAX_PATTERNS {
                    return Err(PredicateError {
                        at: b.0,
                        what: format!("more than {MAX_PATTERNS} patterns in one expression"),
                    });
                }
                let bad = |e: regex::Error| PredicateError {
                    at: b.0,
                    what: format!("invalid pattern {pattern:?}: {e}"),
                };
                // Checked alone first: wrapped in the anchors, a pattern
                // such as `x)|(.*` would otherwise escape them.
                regex::RegexBuilder::new(&pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(bad)?;
                let re = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(bad)?;
                match v {
                    Value::Str(s) => Bool::MatchStr(s, re),
                    Value::List(l) => Bool::MatchList(l, re),
                    Value::Bool(_) => return Err(wrong("(string or list, \"pattern\")")),
                }
            }
            _ => {
                return Err(wrong(
                    "(string or list, \"pattern\") with a literal pattern",
                ))
            }
        };
        Ok(Value::Bool(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_eval(
        src: &str,
        traits: &[(&str, &[&str])],
        login: &str,
        labels: &[(&str, &str)],
    ) -> bool {
        let traits: Traits = traits
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Predicate::compile(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .eval(&Context {
                traits: &traits,
                login,
                labels: &labels,
            })
    }

    #[test]
    fn evaluates_over_user_login_and_node() {
        let team = r#"contains(user.traits["teams"], node.labels["team"])"#;
        assert!(ctx_eval(
            team,
            &[("teams", &["db", "web"])],
            "root",
            &[("team", "db")]
        ));
        assert!(!ctx_eval(
            team,
            &[("teams", &["web"])],
            "root",
            &[("team", "db")]
        ));
        // A missing label is "", which no trait value of a real team is.
        assert!(!ctx_eval(team, &[("teams", &["web"])], "root", &[]));
        assert!(!ctx_eval(team, &[], "root", &[("team", "db")]));
        let e = r#"node.labels.env == "prod" && login != "root""#;
        assert!(ctx_eval(e, &[], "deploy", &[("env", "prod")]));
        assert!(!ctx_eval(e, &[], "root", &[("env", "prod")]));
        assert!(!ctx_eval(e, &[], "deploy", &[("env", "dev")]));
        let m = r#"regexp.match(node.labels.env, "staging|dev") || !has_prefix(login, "svc-")"#;
        assert!(ctx_eval(m, &[], "svc-x", &[("env", "dev")]));
        assert!(!ctx_eval(m, &[], "svc-x", &[("env", "prod")]));
        assert!(ctx_eval(m, &[], "alice", &[("env", "prod")]));
        // Anchored: "staging|dev" does not match "devops".
        assert!(!ctx_eval(m, &[], "svc-x", &[("env", "devops")]));
        let any = r#"contains_any(user.traits.groups, user.traits["oncall"])"#;
        assert!(ctx_eval(
            any,
            &[("groups", &["a", "b"]), ("oncall", &["b"])],
            "x",
            &[]
        ));
        assert!(!ctx_eval(
            any,
            &[("groups", &["a"]), ("oncall", &["b"])],
            "x",
            &[]
        ));
        let list = r#"regexp.match(user.traits.groups, "sre-.*")"#;
        assert!(ctx_eval(list, &[("groups", &["dev", "sre-eu"])], "x", &[]));
        assert!(ctx_eval("true && !(false || false)", &[], "x", &[]));
        assert!(ctx_eval(r#""a\"b" == "a\"b""#, &[], "x", &[]));
    }

    #[test]
    fn bad_expressions_say_what_and_where() {
        for (src, at, what) in [
            ("", 0, "expected a value"),
            ("login", 0, "a string, not a condition"),
            ("user.traits.teams == \"db\"", 0, "use contains"),
            (
                "contains(node.labels.team, \"x\")",
                0,
                "contains takes (list, string)",
            ),
            ("contains(user.traits.t)", 0, "two arguments"),
            ("node.name == \"x\"", 0, "unknown name \"node.name\""),
            ("login == \"x\" &&", 15, "expected a value, found the end"),
            ("login == \"x", 9, "unterminated string"),
            ("(login == \"x\"", 13, "expected ')'"),
            ("regexp.match(login, \"(\")", 20, "invalid pattern"),
            ("regexp.match(login, login)", 0, "literal pattern"),
            ("regexp.match(login, \"x)|(?:.*\")", 20, "invalid pattern"),
            ("login = \"x\"", 6, "unexpected character '='"),
            ("true true", 5, "unexpected \"true\""),
            ("node.labels", 0, "needs a key"),
            ("login == \"a\" || 3", 16, "unexpected character '3'"),
        ] {
            let e = Predicate::compile(src).unwrap_err();
            assert!(
                e.at == at && e.what.contains(what),
                "{src:?}: got {e} (want at {at}: {what})"
            );
        }
        let many = [r#"regexp.match(login, "a")"#; MAX_PATTERNS + 1].join(" || ");
        assert!(Predicate::compile(&many)
            .unwrap_err()
            .what
            .contains("patterns"));
        let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
        assert!(Predicate::compile(&deep)
            .unwrap_err()
            .what
            .contains("nested"));
        let nots = format!("{}true", "!".repeat(40));
        assert!(Predicate::compile(&nots)
            .unwrap_err()
            .what
            .contains("nested"));
        assert!(Predicate::compile(&"a".repeat(MAX_LEN + 1)).is_err());
    }
}
