//! JSON Schema validation of tool arguments and JSON answers, with the
//! `jsonschema` crate (every draft, `$ref` to local definitions as pydantic
//! and zod emit them). A caller's schema is compiled once per request, with
//! no remote `$ref` resolution (this service must not fetch what a schema
//! points at) and the `regex` engine for `pattern` (linear time: a hostile
//! pattern cannot stall the function).
//!
//! Linear time is not bounded memory. A bounded repeat of a large Unicode
//! class (`[\w\p{L}]{150}`, 15 bytes) compiles to about 8 MB of regex
//! program, under the engine's 10 MiB limit per pattern, so 256 of them, 22 KB
//! of `tools`, took the chat function to 2.1 GB. Each request therefore has a
//! [`PatternBudget`]: every pattern is measured, compiled as jsonschema will
//! compile it, before jsonschema sees the schema, and a request whose patterns
//! would need more is a 400 that names the pattern.

use jsonschema::{PatternOptions, Validator};
use regex_automata::meta;
use serde_json::Value;
use std::collections::HashSet;

pub(crate) struct Schema {
    /// The schema as compact JSON text, for the model's instruction. The tree
    /// it was parsed into is dropped once compiled: kept, it would cost
    /// several times the text again for every tool.
    pub(crate) source: String,
    validator: Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("source", &self.source)
            .finish()
    }
}

/// Why a caller's schema was refused: the sentence ends the 400's message.
#[derive(Debug, PartialEq)]
pub(crate) enum Refused {
    /// Not a JSON Schema (or not JSON): what is wrong with it.
    Invalid(String),
    /// Its patterns would take more memory than the request has left.
    Costly(String),
}

/// At most this many problems are told (to the model, when it must correct).
const MAX_PROBLEMS: usize = 5;

/// What the compiled patterns of one request's schemas may take, in all.
/// With the validators of the largest `tools` accepted (23 MB) this is under
/// half of the smallest memory the chat function is given (128 MB). One of
/// the costly patterns above fits (BENCHMARKS.md has what it took).
const PATTERN_BUDGET: usize = 24 << 20;

/// The lazy DFA's cache of each pattern (the `regex` crate's default is
/// 2 MiB): it grows while matching, up to this. Arguments and answers are
/// short, so a small cache costs little time; a pattern whose DFA needs more
/// is searched by the PikeVM, still in linear time.
const DFA_CACHE: usize = 64 << 10;

/// What a `RepeatedClass` holds at most: an ASCII mask, 256 block indexes,
/// the distinct blocks of 256 bits, and ranges past the BMP.
const REPEATED_CLASS: usize = 16 << 10;

/// The memory of compiled patterns one request may still spend. The regex
/// engine reports what a compiled pattern holds. A pattern is charged twice
/// that, plus its lazy DFA's cache: the copy compiled here to measure it is
/// freed before jsonschema compiles its own, but the allocator does not
/// always hand that memory to the next, and matching adds caches (the
/// PikeVM's grow with the program: under a fifth of it, measured).
pub(crate) struct PatternBudget {
    left: usize,
}

impl PatternBudget {
    pub(crate) fn new() -> Self {
        Self {
            left: PATTERN_BUDGET,
        }
    }

    /// Charge every pattern of `tree` (the values of `pattern`, the names in
    /// `patternProperties`), each distinct one once (jsonschema compiles a
    /// pattern once per schema). The error names the pattern that did not fit.
    fn charge(&mut self, tree: &Value) -> Result<(), Refused> {
        let mut patterns = Vec::new();
        collect_patterns(tree, &mut patterns);
        let mut seen = HashSet::new();
        let mut left = self.left;
        for pattern in patterns {
            if !seen.insert(pattern) {
                continue;
            }
            match cost(pattern, left) {
                Some(cost) => left -= cost,
                None => {
                    let shown: String = pattern.chars().take(80).collect();
                    let more = if shown.len() < pattern.len() {
                        "…"
                    } else {
                        ""
                    };
                    return Err(Refused::Costly(format!(
                        "the pattern `{shown}{more}` would not fit in what is left of the {} MiB \
                         this request's patterns may take once compiled; use fewer or simpler \
                         patterns (repeats of a large Unicode class, such as `\\p{{L}}{{100}}` \
                         inside a longer pattern, cost the most)",
                        PATTERN_BUDGET >> 20
                    )));
                }
            }
        }
        self.left = left;
        Ok(())
    }
}

/// What `pattern` costs compiled as jsonschema 0.61 compiles it, or `None`
/// when that is more than `left`. jsonschema translates it from
/// ECMA-262, then matches it by the cheapest form that reads it: an
/// anchored sequence of small classes by a table (with the translation
/// compiled lazily for non-ASCII text, which is charged); `^X{m,n}$`
/// over one class by counting (`RepeatedClass`, a table of bits, never a
/// regex); otherwise the regex with counts at its edges reduced
/// (`Collapsed`), or the whole translation. A pattern the engine does not
/// read costs nothing here: jsonschema refuses the schema.
fn cost(pattern: &str, left: usize) -> Option<usize> {
    use jsonschema_regex::{search_form, to_rust_regex, Search, Sequence};
    // Lookarounds have no translation: jsonschema refuses those schemas
    // (their `pattern` "is not a regex"; a test below holds it to that).
    let Ok(translated) = to_rust_regex(pattern) else {
        return Some(0);
    };
    let compiled = if Sequence::compile(&translated).is_some() {
        translated
    } else {
        match search_form(pattern, &translated) {
            Some(Search::RepeatedClass(_)) => {
                return (REPEATED_CLASS <= left).then_some(REPEATED_CLASS)
            }
            Some(Search::Collapsed(collapsed)) => collapsed.into(),
            None => translated,
        }
    };
    let config = meta::Config::new()
        .nfa_size_limit(Some(left))
        .onepass_size_limit(Some(left))
        .hybrid_cache_capacity(DFA_CACHE)
        .dfa_size_limit(Some(DFA_CACHE));
    let cost = match meta::Regex::builder().configure(config).build(&compiled) {
        Ok(regex) => 2 * regex.memory_usage() + DFA_CACHE,
        Err(e) if e.size_limit().is_some() => return None,
        Err(_) => 0,
    };
    (cost <= left).then_some(cost)
}

/// The patterns in `value`, a schema, at any depth. Data that looks like a
/// pattern (in `const` or `examples`) is counted too: it only ever costs more.
fn collect_patterns<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("pattern", Value::String(p)) => out.push(p),
                    ("patternProperties", Value::Object(names)) => {
                        out.extend(names.keys().map(String::as_str));
                    }
                    _ => {}
                }
                collect_patterns(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, out)),
        _ => {}
    }
}

impl Schema {
    /// Compile the JSON text `source`, its patterns charged to `budget`.
    /// The tree it is parsed into lives only while it is compiled.
    pub(crate) fn compile(source: &str, budget: &mut PatternBudget) -> Result<Self, Refused> {
        let tree: Value =
            serde_json::from_str(source).map_err(|e| Refused::Invalid(e.to_string()))?;
        budget.charge(&tree)?;
        let validator = jsonschema::options()
            .with_pattern_options(
                PatternOptions::regex()
                    .size_limit(PATTERN_BUDGET)
                    .dfa_size_limit(DFA_CACHE),
            )
            .build(&tree)
            .map_err(|e| Refused::Invalid(e.to_string()))?;
        Ok(Self {
            source: tree.to_string(),
            validator,
        })
    }

    /// What is wrong with `instance`, if anything: one line per problem, each
    /// naming where (a JSON pointer into the instance).
    pub(crate) fn problems(&self, instance: &Value) -> Option<String> {
        let problems: Vec<String> = self
            .validator
            .iter_errors(instance)
            .take(MAX_PROBLEMS)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("at {at}: {e}")
                }
            })
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates_with_local_refs_and_reports_where() {
        // The shape pydantic emits for a nested model.
        let s = Schema::compile(
            &json!({
            "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
            "type": "object",
            "properties": {"city": {"$ref": "#/$defs/City"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
            "additionalProperties": false
        }).to_string(), &mut PatternBudget::new())
        .unwrap();
        assert_eq!(
            s.problems(&json!({"city": {"name": "巴黎"}, "days": 3})),
            None
        );
        let p = s.problems(&json!({"city": {}, "days": 0})).unwrap();
        assert!(p.contains("/city") && p.contains("name"), "{p}");
        assert!(p.contains("/days"), "{p}");
        assert!(s
            .problems(&json!({"city": {"name": "x"}, "extra": 1}))
            .is_some());
    }

    #[test]
    fn invalid_schemas_and_remote_refs_are_refused() {
        let compile = |v: Value| Schema::compile(&v.to_string(), &mut PatternBudget::new());
        assert!(compile(json!({"type": "no-such-type"})).is_err());
        assert!(compile(json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(compile(json!({"type": "string", "pattern": "(a+)+$"})).is_ok());
        // Lookarounds are refused, not compiled: the pattern budget charges
        // them nothing, which is right only while this holds.
        for pattern in ["^(?=.*[A-Z]).{8,}$", "^(?=[\\w\\p{L}]{150})x", "a(?!b)"] {
            let refused = compile(json!({"type": "string", "pattern": pattern}));
            assert!(
                matches!(refused, Err(Refused::Invalid(_))),
                "{pattern}: {refused:?}"
            );
        }
    }

    /// A property of this costly pattern (about 8 MB of program each).
    fn costly(n: usize) -> Value {
        json!({"type": "string", "pattern": format!("[\\w\\p{{L}}]{{{n}}}x")})
    }

    #[test]
    fn costly_patterns_are_refused_once_the_request_budget_is_spent() {
        let mut budget = PatternBudget::new();
        // One fits, and is checked (a second copy of a pattern costs
        // nothing: jsonschema compiles it once per schema).
        let one = json!({"type": "object", "properties": {"a": costly(150), "b": costly(150)}});
        let s = Schema::compile(&one.to_string(), &mut budget).unwrap();
        assert!(s.problems(&json!({"a": "short"})).is_some());
        let left = budget.left;
        let pattern = costly(150)["pattern"].as_str().unwrap().to_string();
        let charged = cost(&pattern, PATTERN_BUDGET).unwrap();
        assert!(charged > 12 << 20, "{charged}");
        assert_eq!(left, PATTERN_BUDGET - charged);
        // The next schema of the same request finds the budget spent, and
        // is not charged for the cheap pattern before the costly one.
        let next = json!({"type": "object", "properties": {
            "c": {"type": "string", "pattern": "^[a-z]+$"}, "d": costly(151)
        }});
        match Schema::compile(&next.to_string(), &mut budget) {
            Err(Refused::Costly(m)) => assert!(m.contains("[\\w\\p{L}]{151}x"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(budget.left, left);
        // A fresh request has it all.
        assert!(Schema::compile(&next.to_string(), &mut PatternBudget::new()).is_ok());
        // Every place a pattern is: `patternProperties`' names, nested
        // schemas, definitions.
        for schema in [
            json!({"patternProperties": {"[\\w\\p{L}]{150}x": {}, "[\\w\\p{L}]{151}x": {}}}),
            json!({"items": {"anyOf": [costly(150), costly(151)]}}),
            json!({"$defs": {"a": costly(150), "b": costly(151)}}),
        ] {
            assert!(
                matches!(
                    Schema::compile(&schema.to_string(), &mut PatternBudget::new()),
                    Err(Refused::Costly(_))
                ),
                "{schema}"
            );
        }
    }

    #[test]
    fn everyday_patterns_fit_many_times_over() {
        // What pydantic and zod users write, 8 patterns in each of 32 tools
        // (each about 70 KB, most of it the lazy DFA's cache: about 350 fit).
        let everyday = [
            "^[A-Z]{2}-\\d{4}$",
            "^[\\w.+-]+@[\\w-]+\\.[\\w.-]+$",
            "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
            "^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?(Z|[+-]\\d{2}:\\d{2})$",
            "^\\+?[1-9]\\d{1,14}$",
            "^[\\p{L} '-]{1,100}$",
            "^https?://[^\\s/$.?#].[^\\s]*$",
            "^[a-z0-9]+(?:-[a-z0-9]+)*$",
        ];
        let mut budget = PatternBudget::new();
        for tool in 0..32 {
            let properties: serde_json::Map<String, Value> = everyday
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("p{i}"), json!({"type": "string", "pattern": p})))
                .collect();
            let schema = json!({"type": "object", "properties": properties});
            if let Err(e) = Schema::compile(&schema.to_string(), &mut budget) {
                panic!("tool {tool}: {e:?}");
            }
        }
        let s = Schema::compile(
            &json!({"type": "string", "pattern": everyday[5]}).to_string(),
            &mut budget,
        )
        .unwrap();
        assert_eq!(s.problems(&json!("Zoë O'Brien")), None);
        assert!(s.problems(&json!("R2-D2")).is_some());
    }
}
