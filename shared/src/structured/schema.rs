//! JSON Schema validation of tool arguments and JSON answers, with the
//! `jsonschema` crate (every draft, `$ref` to local definitions as pydantic
//! and zod emit them). A caller's schema is compiled once per request, with
//! no remote `$ref` resolution (this service must not fetch what a schema
//! points at) and the `regex` engine for `pattern` (linear time: a hostile
//! pattern cannot stall the function).

use jsonschema::{PatternOptions, Validator};
use serde_json::Value;

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

/// At most this many problems are told (to the model, when it must correct).
const MAX_PROBLEMS: usize = 5;

impl Schema {
    /// Compile the JSON text `source`; the error says what is wrong with it.
    /// The tree it is parsed into lives only while it is compiled.
    pub(crate) fn compile(source: &str) -> Result<Self, String> {
        let tree: Value = serde_json::from_str(source).map_err(|e| e.to_string())?;
        let validator = jsonschema::options()
            .with_pattern_options(PatternOptions::regex())
            .build(&tree)
            .map_err(|e| e.to_string())?;
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
        let s = Schema::compile(&json!({
            "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
            "type": "object",
            "properties": {"city": {"$ref": "#/$defs/City"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
            "additionalProperties": false
        }).to_string())
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
        let compile = |v: Value| Schema::compile(&v.to_string());
        assert!(compile(json!({"type": "no-such-type"})).is_err());
        assert!(compile(json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(compile(json!({"type": "string", "pattern": "(a+)+$"})).is_ok());
    }
}
