//! HyperPyYAML resolution: overrides, `!ref` / `!copy` (with interpolation and arithmetic),
//! implicit tuples, and `!new:` / `!name:` / `!apply:` objects kept as data.

use std::collections::HashMap;

use indexmap::IndexMap;

use super::parse::Raw;
use super::value::{Object, Value};
use super::HparamsError;

/// Applies `overrides` onto `tree` like HyperPyYAML's `recursive_update`: nested mappings
/// merge, anything else replaces.
pub(crate) fn apply_overrides(
    tree: &mut Raw,
    overrides: &Raw,
    must_match: bool,
    path: &str,
) -> Result<(), HparamsError> {
    let (Raw::Map { items: d, .. }, Raw::Map { items: u, .. }) = (tree, overrides) else {
        return Err(HparamsError::Override(format!(
            "the structure of the overrides does not match the document at `{path}`"
        )));
    };
    for (k, v) in u {
        let sub = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}[{k}]")
        };
        match (d.get_mut(k), v) {
            (Some(existing @ Raw::Map { tag: None, .. }), Raw::Map { tag: None, .. }) => {
                apply_overrides(existing, v, false, &sub)?;
            }
            (None, _) if must_match => {
                return Err(HparamsError::Override(format!(
                    "override `{sub}` does not match any key (keys: {})",
                    d.keys().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
            _ => {
                d.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

/// Resolves every top-level key of `tree`.
/// Rounds of `<key>` interpolation one `!ref` may take (real files need one or two).
const MAX_REF_ROUNDS: usize = 16;

pub(crate) struct Resolver<'a> {
    tree: &'a Raw,
    origin: &'a str,
    cache: HashMap<String, Value>,
    in_progress: Vec<String>,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(tree: &'a Raw, origin: &'a str) -> Self {
        Self {
            tree,
            origin,
            cache: HashMap::new(),
            in_progress: Vec::new(),
        }
    }

    pub(crate) fn resolve_all(&mut self) -> Result<IndexMap<String, Value>, HparamsError> {
        let Raw::Map { items, .. } = self.tree else {
            return Err(HparamsError::Syntax {
                origin: self.origin.to_string(),
                message: "the top level of a hyperparameter file must be a mapping".into(),
            });
        };
        let mut out = IndexMap::new();
        for k in items.keys() {
            out.insert(k.clone(), self.resolve_path(k, false)?);
        }
        Ok(out)
    }

    fn err(&self, key: &str, line: usize, message: String) -> HparamsError {
        HparamsError::Resolve {
            origin: self.origin.to_string(),
            key: key.to_string(),
            line,
            message,
        }
    }

    /// Looks up `a[b][c]` in the raw tree.
    fn lookup(&self, path: &str) -> Option<&'a Raw> {
        let mut node = self.tree;
        for part in path.split('[') {
            let part = part.trim_end_matches(']');
            node = match node {
                Raw::Map { items, .. } => items.get(part)?,
                Raw::Seq { items, .. } => items.get(part.parse::<usize>().ok()?)?,
                Raw::Scalar { .. } => return None,
            };
        }
        Some(node)
    }

    /// Resolves the node at `path` (memoised, so every reference shares one object id).
    fn resolve_path(&mut self, path: &str, copy: bool) -> Result<Value, HparamsError> {
        if let Some(v) = self.cache.get(path) {
            return Ok(if copy {
                strip_ids(v.clone())
            } else {
                v.clone()
            });
        }
        if self.in_progress.iter().any(|p| p == path) {
            let mut chain = self.in_progress.clone();
            chain.push(path.to_string());
            return Err(self.err(
                path,
                0,
                format!("circular reference: {}", chain.join(" -> ")),
            ));
        }
        let raw = self
            .lookup(path)
            .ok_or_else(|| self.err(path, 0, format!("no key `{path}`")))?;
        self.in_progress.push(path.to_string());
        let v = self.resolve_node(raw, path);
        self.in_progress.pop();
        let v = v?;
        self.cache.insert(path.to_string(), v.clone());
        Ok(if copy { strip_ids(v) } else { v })
    }

    fn resolve_node(&mut self, raw: &'a Raw, path: &str) -> Result<Value, HparamsError> {
        let tag = raw.tag().map(str::to_string);
        let line = raw.line();
        match tag.as_deref() {
            None | Some("!!str") | Some("!!int") | Some("!!float") | Some("!!bool")
            | Some("!!null") | Some("!!seq") | Some("!!map") => self.plain(raw, path),
            Some("!ref") | Some("!copy") => {
                let Raw::Scalar { value, .. } = raw else {
                    return Err(self.err(path, line, "!ref / !copy need a scalar like `<key>`".into()));
                };
                self.reference(value, path, line, tag.as_deref() == Some("!copy"))
            }
            Some("!tuple") => match raw {
                Raw::Scalar { value, .. } => Ok(parse_tuple(value)),
                Raw::Seq { items, .. } => Ok(Value::Tuple(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, n)| self.resolve_node(n, &format!("{path}[{i}]")))
                        .collect::<Result<_, _>>()?,
                )),
                _ => Err(self.err(path, line, "!tuple needs a scalar or a sequence".into())),
            },
            Some("!PLACEHOLDER") => Err(self.err(
                path,
                line,
                format!("`{path}` is a !PLACEHOLDER and must be replaced (pass it in the overrides)"),
            )),
            Some(t) if t.starts_with("!new:") || t.starts_with("!name:") || t.starts_with("!apply:") => {
                // The guard matched a `!kind:` prefix, so there is a ':'.
                let (kind, class) = t[1..].split_once(':').expect("checked prefix");
                let obj = self.object(raw, class, path)?;
                Ok(match kind {
                    "new" => Value::New(obj),
                    "name" => Value::Name(obj),
                    _ => Value::Apply(obj),
                })
            }
            Some(t) if t.starts_with("!module:") => Ok(Value::Name(Object {
                class: t["!module:".len()..].to_string(),
                args: vec![],
                kwargs: IndexMap::new(),
                id: Some(path.to_string()),
            })),
            Some(t) => Err(self.err(
                path,
                line,
                format!(
                    "unknown tag `{t}` (supported: !new:, !name:, !apply:, !module:, !ref, !copy, !tuple)"
                ),
            )),
        }
    }

    fn plain(&mut self, raw: &'a Raw, path: &str) -> Result<Value, HparamsError> {
        Ok(match raw {
            Raw::Scalar { value, plain, .. } => {
                if *plain {
                    plain_scalar(value)
                } else {
                    Value::Str(value.clone())
                }
            }
            Raw::Seq { items, .. } => Value::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| self.resolve_node(n, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Raw::Map { items, .. } => {
                let mut m = IndexMap::new();
                for (k, n) in items {
                    m.insert(k.clone(), self.resolve_node(n, &format!("{path}[{k}]"))?);
                }
                Value::Map(m)
            }
        })
    }

    fn object(&mut self, raw: &'a Raw, class: &str, path: &str) -> Result<Object, HparamsError> {
        let mut obj = Object {
            class: class.to_string(),
            args: vec![],
            kwargs: IndexMap::new(),
            id: Some(path.to_string()),
        };
        match self.plain(raw, path)? {
            Value::Map(mut m) => {
                // `_args` + `_kwargs` pass both at once (HyperPyYAML's _get_args).
                if m.len() == 2 && m.contains_key("_args") && m.contains_key("_kwargs") {
                    if let Some(Value::List(a)) = m.shift_remove("_args") {
                        obj.args = a;
                    }
                    if let Some(Value::Map(k)) = m.shift_remove("_kwargs") {
                        obj.kwargs = k;
                    }
                } else {
                    obj.kwargs = m;
                }
            }
            Value::List(a) => obj.args = a,
            Value::Null => {}
            Value::Str(s) if s.is_empty() => {}
            other => {
                return Err(self.err(
                    path,
                    raw.line(),
                    format!(
                        "arguments of `{class}` must be a mapping or a sequence, got {}",
                        other.python_str()
                    ),
                ))
            }
        }
        Ok(obj)
    }

    /// `!ref` / `!copy`: a single `<key>` keeps the referenced value; anything else is string
    /// interpolation followed by HyperPyYAML's arithmetic evaluation.
    fn reference(
        &mut self,
        expr: &str,
        path: &str,
        line: usize,
        copy: bool,
    ) -> Result<Value, HparamsError> {
        self.reference_round(expr, path, line, copy, 0)
    }

    /// One round of interpolation; a result that still holds `<key>` goes round again, at
    /// most [`MAX_REF_ROUNDS`] times (a string value holding its own reference would
    /// otherwise grow forever: found by fuzzing).
    fn reference_round(
        &mut self,
        expr: &str,
        path: &str,
        line: usize,
        copy: bool,
        round: usize,
    ) -> Result<Value, HparamsError> {
        let refs = find_refs(expr);
        if refs.is_empty() {
            return Ok(Value::Str(expr.to_string()));
        }
        if refs.len() == 1 && refs[0].0 == 0 && refs[0].1 == expr.len() {
            return self.deref(&expr[1..expr.len() - 1], path, line, copy);
        }
        let mut out = String::new();
        let mut last = 0;
        for (s, e) in refs {
            out.push_str(&expr[last..s]);
            let v = self.deref(&expr[s + 1..e - 1], path, line, copy)?;
            out.push_str(&v.python_str());
            last = e;
        }
        out.push_str(&expr[last..]);
        if !find_refs(&out).is_empty() {
            if round >= MAX_REF_ROUNDS {
                return Err(self.err(
                    path,
                    line,
                    format!("references still unresolved after {MAX_REF_ROUNDS} rounds of interpolation (a value that refers to itself?): {expr}"),
                ));
            }
            return self.reference_round(&out, path, line, copy, round + 1);
        }
        eval_arithmetic(&out).map_err(|m| self.err(path, line, m))
    }

    fn deref(
        &mut self,
        target: &str,
        path: &str,
        line: usize,
        copy: bool,
    ) -> Result<Value, HparamsError> {
        let (key, attr) = match target.split_once('.') {
            Some((k, a)) => (k, Some(a)),
            None => (target, None),
        };
        if self.lookup(key).is_none() {
            return Err(self.err(
                path,
                line,
                format!("the reference <{target}> is not valid: no key `{key}`"),
            ));
        }
        let v = self.resolve_path(key, copy).map_err(|e| match e {
            HparamsError::Resolve { message, .. } => {
                self.err(path, line, format!("in <{target}>: {message}"))
            }
            other => other,
        })?;
        Ok(match attr {
            Some(a) => Value::Attr(Box::new(v), a.to_string()),
            None => v,
        })
    }
}

fn strip_ids(v: Value) -> Value {
    match v {
        Value::New(mut o) => {
            o.id = None;
            o.args = o.args.into_iter().map(strip_ids).collect();
            o.kwargs = o
                .kwargs
                .into_iter()
                .map(|(k, v)| (k, strip_ids(v)))
                .collect();
            Value::New(o)
        }
        Value::List(v) => Value::List(v.into_iter().map(strip_ids).collect()),
        Value::Tuple(v) => Value::Tuple(v.into_iter().map(strip_ids).collect()),
        Value::Map(m) => Value::Map(m.into_iter().map(|(k, v)| (k, strip_ids(v))).collect()),
        other => other,
    }
}

/// `(start, end)` byte spans of `<...>` references (no `>` inside), as `<[^>]*>`.
fn find_refs(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'<' {
            if let Some(j) = s[i + 1..].find('>') {
                out.push((i, i + 1 + j + 1));
                i = i + 1 + j + 1;
                continue;
            }
            break;
        }
        i += 1;
    }
    out
}

/// YAML 1.2 core-schema typing of a plain scalar (as ruamel.yaml does for HyperPyYAML), plus
/// HyperPyYAML's implicit tuple for `(a, b)`.
pub(crate) fn plain_scalar(s: &str) -> Value {
    let t = s.trim();
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if t.starts_with('(') && t.ends_with(')') {
        return parse_tuple(t);
    }
    let digits = t.trim_start_matches(['+', '-']);
    if !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit() || c == b'_')
        && digits.as_bytes()[0] != b'_'
    {
        if let Ok(i) = t.replace('_', "").parse::<i64>() {
            return Value::Int(i);
        }
    }
    if let Some(hex) = t.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    if let Some(oct) = t.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Int(i);
        }
    }
    if looks_like_float(digits) {
        if let Ok(f) = t.replace('_', "").parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(s.to_string())
}

fn looks_like_float(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_digit() || b[0] == b'.')
        && b.iter().any(|c| c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-' | b'_'))
}

/// HyperPyYAML's `_make_tuple`: `(a, b)` parsed as the YAML flow sequence `[a, b]`.
fn parse_tuple(s: &str) -> Value {
    let inner = s.trim();
    let inner = &inner[1..inner.len() - 1];
    if inner.trim().is_empty() {
        return Value::Tuple(vec![]);
    }
    match super::parse::parse_yaml(&format!("[{inner}]"), "tuple") {
        Ok(Raw::Seq { items, .. }) => Value::Tuple(
            items
                .iter()
                .map(|n| match n {
                    Raw::Scalar {
                        value, plain: true, ..
                    } => plain_scalar(value),
                    Raw::Scalar { value, .. } => Value::Str(value.clone()),
                    _ => Value::Str(format!("{n:?}")),
                })
                .collect(),
        ),
        _ => Value::Str(s.to_string()),
    }
}

/// HyperPyYAML's `parse_arithmetic`: numbers with `+ - * / // % **` and parentheses evaluate
/// (Python semantics: `/` gives a float, `//` and `%` floor); anything else stays a string.
/// Like HyperPyYAML, a leading unary minus is not evaluated (its evaluator lacks USub).
pub(crate) fn eval_arithmetic(s: &str) -> Result<Value, String> {
    match s.trim() {
        "True" => return Ok(Value::Bool(true)),
        "False" => return Ok(Value::Bool(false)),
        "None" => return Ok(Value::Null),
        _ => {}
    }
    let Some(tokens) = tokenize(s) else {
        return Ok(Value::Str(s.to_string()));
    };
    let mut p = ArithParser { t: &tokens, i: 0 };
    match p.expr() {
        Ok(Some(v)) if p.i == tokens.len() => Ok(v),
        Ok(_) => Ok(Value::Str(s.to_string())),
        Err(e) => Err(format!("cannot evaluate `{s}`: {e}")),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Value),
    Op(&'static str),
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit())
        {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let save = i;
                i += 1;
                if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                    i += 1;
                }
                if i < b.len() && b[i].is_ascii_digit() {
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i = save;
                }
            }
            if i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'_') {
                return None; // e.g. `2x`: not a Python number
            }
            let lit = s[start..i].replace('_', "");
            let is_float = lit.contains(['.', 'e', 'E']);
            out.push(Tok::Num(if is_float {
                Value::Float(lit.parse().ok()?)
            } else {
                Value::Int(lit.parse().ok()?)
            }));
        } else {
            // Bytes, not `&s[i..i + 2]`: the next character may be multi-byte UTF-8.
            let two = b.get(i..i + 2).unwrap_or(b"");
            let (tok, len) = match (two, c) {
                (b"**", _) => (Tok::Op("**"), 2),
                (b"//", _) => (Tok::Op("//"), 2),
                (_, b'+') => (Tok::Op("+"), 1),
                (_, b'-') => (Tok::Op("-"), 1),
                (_, b'*') => (Tok::Op("*"), 1),
                (_, b'/') => (Tok::Op("/"), 1),
                (_, b'%') => (Tok::Op("%"), 1),
                (_, b'(') => (Tok::LParen, 1),
                (_, b')') => (Tok::RParen, 1),
                _ => return None,
            };
            out.push(tok);
            i += len;
        }
    }
    Some(out)
}

struct ArithParser<'t> {
    t: &'t [Tok],
    i: usize,
}

impl ArithParser<'_> {
    fn peek_op(&self, ops: &[&str]) -> Option<&'static str> {
        match self.t.get(self.i) {
            Some(Tok::Op(o)) if ops.contains(o) => Some(o),
            _ => None,
        }
    }
    // expr := term (('+'|'-') term)*
    fn expr(&mut self) -> Result<Option<Value>, String> {
        let Some(mut v) = self.term()? else {
            return Ok(None);
        };
        while let Some(op) = self.peek_op(&["+", "-"]) {
            self.i += 1;
            let Some(r) = self.term()? else {
                return Ok(None);
            };
            v = binop(op, v, r)?;
        }
        Ok(Some(v))
    }
    // term := power (('*'|'/'|'//'|'%') power)*
    fn term(&mut self) -> Result<Option<Value>, String> {
        let Some(mut v) = self.power()? else {
            return Ok(None);
        };
        while let Some(op) = self.peek_op(&["*", "/", "//", "%"]) {
            self.i += 1;
            let Some(r) = self.power()? else {
                return Ok(None);
            };
            v = binop(op, v, r)?;
        }
        Ok(Some(v))
    }
    // power := atom ('**' power)?   (right associative)
    fn power(&mut self) -> Result<Option<Value>, String> {
        let Some(base) = self.atom()? else {
            return Ok(None);
        };
        if self.peek_op(&["**"]).is_some() {
            self.i += 1;
            let Some(e) = self.power()? else {
                return Ok(None);
            };
            return binop("**", base, e).map(Some);
        }
        Ok(Some(base))
    }
    fn atom(&mut self) -> Result<Option<Value>, String> {
        match self.t.get(self.i) {
            Some(Tok::Num(v)) => {
                self.i += 1;
                Ok(Some(v.clone()))
            }
            Some(Tok::LParen) => {
                self.i += 1;
                let v = self.expr()?;
                if self.t.get(self.i) != Some(&Tok::RParen) {
                    return Ok(None);
                }
                self.i += 1;
                Ok(v)
            }
            _ => Ok(None), // unary operators and anything else: not evaluated
        }
    }
}

fn binop(op: &str, a: Value, b: Value) -> Result<Value, String> {
    use Value::{Float, Int};
    let zero = |x: &Value| x.as_f64() == Some(0.0);
    if matches!(op, "/" | "//" | "%") && zero(&b) {
        return Err("division by zero".into());
    }
    Ok(match (a, b) {
        (Int(x), Int(y)) => match op {
            "+" => Int(x + y),
            "-" => Int(x - y),
            "*" => Int(x * y),
            "/" => Float(x as f64 / y as f64),
            "//" => {
                let q = x / y;
                Int(if x % y != 0 && ((x < 0) != (y < 0)) {
                    q - 1
                } else {
                    q
                })
            }
            "%" => Int(((x % y) + y) % y),
            "**" if y >= 0 => Int(x.pow(y as u32)),
            "**" => Float((x as f64).powf(y as f64)),
            _ => unreachable!(),
        },
        (a, b) => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            Float(match op {
                "+" => x + y,
                "-" => x - y,
                "*" => x * y,
                "/" => x / y,
                "//" => (x / y).floor(),
                "%" => x - y * (x / y).floor(),
                "**" => x.powf(y),
                _ => unreachable!(),
            })
        }
    })
}
