//! The grammar layer over the mock's byte vocabulary: masks, commits, completion, failures.

use crate::common;

use common::{feed, grammars};
use peregrine_engine::{MockVocab, TokenId, Vocab};
use peregrine_grammar::{GrammarError, GrammarLimits, GrammarSpec, Grammars, OutputError};
use serde_json::json;

#[test]
fn json_object_accepts_an_object_and_completes() {
    let g = grammars();
    let mut c = g.compile(&GrammarSpec::JsonObject).unwrap();
    feed(&mut c, r#"{"a": 1, "b": [true, null]}"#).unwrap();
    assert!(c.is_complete());
    c.compute_mask().unwrap();
    // Only end-of-generation tokens remain.
    assert!(c.allows(257) && c.allows(258));
    assert!(!c.allows(TokenId::from(b' ')));
    assert_eq!(c.check_output(r#"{"a": 1, "b": [true, null]}"#), Ok(()));
}

#[test]
fn json_object_refuses_a_bare_array_and_free_whitespace() {
    let g = grammars();
    let mut c = g.compile(&GrammarSpec::JsonObject).unwrap();
    assert!(feed(&mut c, "[").is_err());
    let mut c = g.compile(&GrammarSpec::JsonObject).unwrap();
    assert!(feed(&mut c, "{\n").is_err());
}

#[test]
fn masks_apply_to_logits() {
    let g = grammars();
    let mut c = g.compile(&GrammarSpec::JsonObject).unwrap();
    c.compute_mask().unwrap();
    let mut logits = vec![1.0f32; MockVocab.n_vocab()];
    c.apply(&mut logits);
    assert_eq!(logits[usize::from(b'{')], 1.0);
    assert_eq!(logits[usize::from(b'a')], f32::NEG_INFINITY);
    assert_eq!(logits[257], f32::NEG_INFINITY, "EOS before the value");
}

#[test]
fn a_schema_constrains_keys_and_types() {
    let g = grammars();
    let schema = json!({
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9},
                       "e": {"enum": ["x", "y"]}},
        "required": ["n", "e"],
        "additionalProperties": false
    });
    let spec = GrammarSpec::JsonSchema(schema);
    let mut c = g.compile(&spec).unwrap();
    feed(&mut c, r#"{"n": 7, "e": "y"}"#).unwrap();
    assert!(c.is_complete());
    let mut c = g.compile(&spec).unwrap();
    assert!(feed(&mut c, r#"{"n": 12"#).is_err(), "maximum is enforced");
    let mut c = g.compile(&spec).unwrap();
    assert!(
        feed(&mut c, r#"{"n": 1, "e": "z"#).is_err(),
        "enum is enforced"
    );
    assert_eq!(g.cached(), 1, "one compile, then the cache");
}

#[test]
fn an_incomplete_value_is_reported() {
    let g = grammars();
    let mut c = g.compile(&GrammarSpec::JsonObject).unwrap();
    feed(&mut c, r#"{"a": "#).unwrap();
    assert!(!c.is_complete());
    assert_eq!(c.check_output(r#"{"a": "#), Err(OutputError::Incomplete));
}

#[test]
fn unsupported_keywords_fail_closed_and_name_the_keyword() {
    let g = grammars();
    let schema = json!({"type": "array", "items": {"type": "integer"}, "uniqueItems": true});
    match g.compile(&GrammarSpec::JsonSchema(schema)) {
        Err(GrammarError::Unsupported(m)) => assert!(m.contains("uniqueItems"), "{m}"),
        other => panic!("expected Unsupported, got {:?}", other.err()),
    }
}

#[test]
fn an_invalid_schema_is_refused() {
    let g = grammars();
    let schema = json!({"type": "no-such-type"});
    assert!(g.compile(&GrammarSpec::JsonSchema(schema)).is_err());
}

#[test]
fn a_schema_over_the_limits_costs_one_error() {
    let limits = GrammarLimits {
        compile_fuel: 2_000,
        max_grammar_size: 200,
        ..GrammarLimits::default()
    };
    let g = Grammars::new(std::sync::Arc::new(MockVocab), limits).unwrap();
    let props: serde_json::Map<String, serde_json::Value> = (0..200)
        .map(|i| {
            (
                format!("field_{i}"),
                json!({"type": "string", "pattern": "^[a-z]{3,40}[0-9]{2,9}$"}),
            )
        })
        .collect();
    let schema = json!({"type": "object", "properties": props});
    let e = g.compile(&GrammarSpec::JsonSchema(schema));
    assert!(
        matches!(e, Err(GrammarError::Unsupported(_))),
        "{:?}",
        e.err()
    );
    // The compiler is still usable.
    assert!(g.compile(&GrammarSpec::JsonObject).is_ok());
}

#[test]
fn root_recursion_compiles() {
    let g = grammars();
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
        "required": ["name", "children"],
        "additionalProperties": false
    });
    let mut c = g.compile(&GrammarSpec::JsonSchema(schema)).unwrap();
    feed(
        &mut c,
        r#"{"name": "a", "children": [{"name": "b", "children": []}]}"#,
    )
    .unwrap();
    assert!(c.is_complete());
}

/// A schema of about `bytes` bytes of text (a long `description`).
fn schema_of(bytes: usize, tag: usize) -> GrammarSpec {
    GrammarSpec::JsonSchema(json!({
        "type": "object",
        "description": format!("{tag}:{}", "x".repeat(bytes)),
        "properties": {"a": {"type": "integer"}},
    }))
}

#[test]
fn the_cache_is_bounded_by_the_bytes_of_its_specs() {
    let limits = GrammarLimits {
        cache_entries: 100,
        cache_bytes: 40_000,
        ..GrammarLimits::default()
    };
    let g = Grammars::new(std::sync::Arc::new(MockVocab), limits).unwrap();
    for tag in 0..10 {
        g.compile(&schema_of(9_000, tag)).unwrap();
        assert!(
            g.cached_bytes() <= 40_000,
            "{} bytes held",
            g.cached_bytes()
        );
    }
    // Four of about 9 KB fit in 40 KB; the oldest went first.
    assert_eq!(g.cached(), 4);
    // A spec over a quarter of the budget is compiled but not kept.
    g.compile(&schema_of(20_000, 99)).unwrap();
    assert_eq!(g.cached(), 4);
    assert!(g.cached_bytes() <= 40_000);
}
