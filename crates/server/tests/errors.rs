//! Every way preparation refuses a chat request, through the router: the status, Groq's
//! envelope, the exact message, the `param` that names the field, and the `code`. One row a
//! rule (`PrepareError`'s variants), plus the refusals decided before preparation.

use crate::common;

use common::{app, chat, Setup};
use serde_json::{json, Value};

/// One refusal: the request's fields over a minimal valid request, and what must come back.
struct Case {
    name: &'static str,
    body: Value,
    status: u16,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

fn case(name: &'static str, fields: Value, message: &str, param: &'static str) -> Case {
    Case {
        name,
        body: fields,
        status: 400,
        message: message.to_string(),
        param: Some(param),
        code: None,
    }
}

const USER: &str = "hi";

/// A tool definition named `name` with `parameters`.
fn tool(name: &str, parameters: Value) -> Value {
    json!({"type": "function", "function": {"name": name, "parameters": parameters}})
}

fn strict_tool(name: &str, parameters: Value) -> Value {
    json!({"type": "function", "function": {"name": name, "parameters": parameters, "strict": true}})
}

fn object(props: Value) -> Value {
    json!({"type": "object", "properties": props})
}

fn schema_format(json_schema: Value) -> Value {
    json!({"type": "json_schema", "json_schema": json_schema})
}

fn range_cases() -> Vec<Case> {
    vec![
        case("no messages", json!({"messages": []}), "`messages` must contain at least one message", "messages"),
        case("n", json!({"n": 2}), "`n` must be 1, got 2", "n"),
        case("temperature", json!({"temperature": 3}), "`temperature` must be between 0 and 2, got 3", "temperature"),
        case("top_p", json!({"top_p": 1.5}), "`top_p` must be between 0 and 1, got 1.5", "top_p"),
        case("frequency_penalty", json!({"frequency_penalty": -3}), "`frequency_penalty` must be between -2 and 2, got -3", "frequency_penalty"),
        case("presence_penalty", json!({"presence_penalty": 2.5}), "`presence_penalty` must be between -2 and 2, got 2.5", "presence_penalty"),
        case("stop count", json!({"stop": ["a", "b", "c", "d", "e"]}), "`stop` may contain at most 4 sequences, got 5", "stop"),
        case("stop length", json!({"stop": "x".repeat(1025)}), "`stop` sequences may be at most 1024 bytes long, got 1025", "stop"),
        case("top_logprobs range", json!({"logprobs": true, "top_logprobs": 21}), "`top_logprobs` must be between 0 and 20, got 21", "top_logprobs"),
        case("top_logprobs alone", json!({"top_logprobs": 2}), "`top_logprobs` requires `logprobs` to be true", "top_logprobs"),
        case("logit_bias count", json!({"logit_bias": (0..301).map(|i| (i.to_string(), json!(1))).collect::<serde_json::Map<String, Value>>()}), "`logit_bias` may contain at most 300 entries, got 301", "logit_bias"),
        case("logit_bias key", json!({"logit_bias": {"999999": 1}}), "`logit_bias` key `999999` is not a token id of this model", "logit_bias"),
        case("logit_bias value", json!({"logit_bias": {"5": 101}}), "`logit_bias` values must be between -100 and 100, got 101 for token 5", "logit_bias"),
        case("service_tier", json!({"service_tier": "gold"}), "`service_tier` must be one of auto, on_demand, flex, performance, got 'gold'", "service_tier"),
        case("max_tokens small", json!({"max_tokens": 0}), "`max_tokens` must be at least 1, got 0", "max_tokens"),
        case("max_completion_tokens large", json!({"max_completion_tokens": 100000}), "`max_completion_tokens` must be less than or equal to `256`, the maximum value for `max_completion_tokens` is less than the `context_window` for this model", "max_completion_tokens"),
    ]
}

fn unsupported(name: &'static str, fields: Value, feature: &str, param: &'static str) -> Case {
    let message = format!("`{feature}` is not supported with this model");
    case(name, fields, &message, param)
}

fn feature_cases() -> Vec<Case> {
    vec![
        unsupported(
            "functions",
            json!({"functions": [{"name": "f"}]}),
            "functions",
            "functions",
        ),
        unsupported(
            "function_call",
            json!({"function_call": "auto"}),
            "function_call",
            "function_call",
        ),
        unsupported(
            "reasoning_format",
            json!({"reasoning_format": "parsed"}),
            "reasoning_format",
            "reasoning_format",
        ),
        unsupported(
            "include_reasoning",
            json!({"include_reasoning": true}),
            "include_reasoning",
            "include_reasoning",
        ),
        unsupported(
            "reasoning_effort",
            json!({"reasoning_effort": "low"}),
            "reasoning_effort",
            "reasoning_effort",
        ),
        unsupported(
            "documents",
            json!({"documents": [{"text": "d"}]}),
            "documents",
            "documents",
        ),
        unsupported(
            "compound_custom",
            json!({"compound_custom": {}}),
            "compound_custom",
            "compound_custom",
        ),
        unsupported(
            "search_settings",
            json!({"search_settings": {}}),
            "search_settings",
            "search_settings",
        ),
        unsupported(
            "include_domains",
            json!({"include_domains": ["a.com"]}),
            "search_settings",
            "search_settings",
        ),
        unsupported(
            "image_url",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://a/b.png"}}]}]}),
            "image_url",
            "messages[0].content",
        ),
    ]
}

fn message_cases() -> Vec<Case> {
    let bad_json = serde_json::from_str::<Value>("{bad")
        .unwrap_err()
        .to_string();
    let history = json!({"messages": [
        {"role": "user", "content": USER},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "1"},
    ]});
    let long = "w".repeat(240);
    let longer = "w".repeat(4000);
    vec![
        case("empty parts", json!({"messages": [{"role": "user", "content": []}]}), "`messages[0].content` must contain at least one part", "messages[0].content"),
        case("history arguments", history, &format!("`messages[1].tool_calls`: arguments of `f` are not valid JSON: {bad_json}"), "messages[1].tool_calls"),
        Case {
            code: Some("context_length_exceeded"),
            // The mock's tokens are bytes: ChatML markers (1 each), "user\n", the text, "\n",
            // "assistant\n".
            ..case("context", json!({"messages": [{"role": "user", "content": long}]}), "Please reduce the length of the messages or completion. The prompt has 259 tokens but the context window of this model is 256 tokens.", "messages")
        },
        Case {
            code: Some("context_length_exceeded"),
            // Refused on its bytes, before rendering: the mock's longest token text is
            // `<|endoftext|>`, 13 bytes.
            ..case("context by bytes", json!({"messages": [{"role": "user", "content": longer}]}), "Please reduce the length of the messages or completion. The prompt's 4000 bytes are at least 307 tokens but the context window of this model is 256 tokens.", "messages")
        },
    ]
}

fn format_cases() -> Vec<Case> {
    let loose = object(json!({"a": {"type": "string"}}));
    let not_const = json!({"type": "object", "properties": {"u": {"type": "string", "not": {"const": "admin"}}}, "required": ["u"], "additionalProperties": false});
    vec![
        case("schema name", json!({"response_format": schema_format(json!({"name": "has space", "schema": loose}))}), "`response_format.json_schema.name` must match [a-zA-Z0-9_-]{1,64}, got 'has space'", "response_format.json_schema.name"),
        case("schema not object", json!({"response_format": schema_format(json!({"name": "s", "schema": 5}))}), "`response_format.json_schema.schema` must be a JSON Schema object", "response_format.json_schema.schema"),
        case("schema missing", json!({"response_format": schema_format(json!({"name": "s"}))}), "`response_format.json_schema.schema` is required", "response_format.json_schema.schema"),
        case("schema strict", json!({"response_format": schema_format(json!({"name": "s", "strict": true, "schema": loose}))}), "`response_format.json_schema.schema`: strict mode: `additionalProperties` must be false on every object at `#`", "response_format.json_schema.schema"),
        case("schema grammar", json!({"response_format": schema_format(json!({"name": "s", "schema": not_const}))}), "`response_format`: the schema cannot be used for constrained decoding: Unimplemented keys: [\"not\"]", "response_format"),
        case("format with tools", json!({"response_format": {"type": "json_object"}, "tools": [tool("f", object(json!({})))]}), "`response_format` json_object / json_schema cannot be combined with tool calls; set `tool_choice` to 'none' or drop `response_format`", "response_format"),
    ]
}

fn tool_cases() -> Vec<Case> {
    let f = || tool("f", object(json!({})));
    let many: Vec<Value> = (0..129)
        .map(|i| tool(&format!("t{i}"), object(json!({}))))
        .collect();
    let invalid_schema = object(json!({"a": {"type": "nope"}}));
    let schema_error = jsonschema::validator_for(&invalid_schema)
        .unwrap_err()
        .to_string();
    let not_const = json!({"type": "object", "properties": {"u": {"type": "string", "not": {"const": "admin"}}}, "required": ["u"], "additionalProperties": false});
    vec![
        case("too many tools", json!({"tools": many}), "`tools` may contain at most 128 tools, got 129", "tools"),
        case("tool type", json!({"tools": [{"type": "retrieval"}]}), "`tools[0].type`: tool type 'retrieval' is not supported with this model; only 'function' tools are", "tools[0].type"),
        case("tool function missing", json!({"tools": [{"type": "function"}]}), "`tools[0].function` is required", "tools[0].function"),
        case("tool name", json!({"tools": [tool("bad name", object(json!({})))]}), "`tools[0].function.name` must match [a-zA-Z0-9_-]{1,64}, got 'bad name'", "tools[0].function.name"),
        case("duplicate tool", json!({"tools": [f(), f()]}), "`tools[1].function.name`: duplicate tool name 'f'", "tools[1].function.name"),
        case("tool parameters", json!({"tools": [tool("f", json!({"type": "string"}))]}), "`tools[0].function.parameters` must be a JSON Schema of an object (`\"type\": \"object\"`)", "tools[0].function.parameters"),
        case("tool strict", json!({"tools": [strict_tool("f", object(json!({"a": {"type": "string"}})))]}), "`tools[0].function.parameters`: strict mode: `additionalProperties` must be false on every object at `#`", "tools[0].function.parameters"),
        case("tool schema", json!({"tools": [tool("f", invalid_schema)]}), &format!("`tools[0].function.parameters` is not a valid JSON Schema: {schema_error}"), "tools[0].function.parameters"),
        case("tool grammar", json!({"tools": [strict_tool("f", not_const)], "tool_choice": "required"}), "`tools`: the schema cannot be used for constrained decoding: at 3(9): failed to compile JSON schema: Unimplemented keys: [\"not\"]", "tools"),
        case("tool_choice mode", json!({"tools": [f()], "tool_choice": "sometimes"}), "`tool_choice` must be one of none, auto, required or a named function, got 'sometimes'", "tool_choice"),
        case("tool_choice type", json!({"tools": [f()], "tool_choice": {"type": "x", "function": {"name": "f"}}}), "`tool_choice.type` must be 'function', got 'x'", "tool_choice"),
        case("tool_choice unchecked", json!({"tools": [f()], "disable_tool_validation": true, "tool_choice": {"type": "function", "function": {"name": "f"}}}), "`tool_choice` cannot name a function when `disable_tool_validation` is set", "tool_choice"),
        case("tool_choice unknown", json!({"tools": [f()], "tool_choice": {"type": "function", "function": {"name": "g"}}}), "`tool_choice` names the function 'g', which is not in `tools`", "tool_choice"),
        case("tool_choice required", json!({"tool_choice": "required"}), "`tool_choice` is 'required' but the request has no `tools`", "tool_choice"),
    ]
}

/// Refusals made before preparation: the body's shape and the model.
fn pre_preparation_cases() -> Vec<Case> {
    vec![
        Case {
            name: "unknown property",
            body: json!({"foo": 1}),
            status: 400,
            message: "property 'foo' is unsupported".into(),
            param: None,
            code: None,
        },
        Case {
            name: "unknown model",
            body: json!({"model": "no-such-model"}),
            status: 404,
            message: "The model `no-such-model` does not exist or you do not have access to it."
                .into(),
            param: None,
            code: Some("model_not_found"),
        },
        Case {
            name: "unknown long model",
            body: json!({"model": "m".repeat(100_000)}),
            status: 404,
            // A long id is echoed cut to 256 bytes, not whole.
            message: format!(
                "The model `{}…` does not exist or you do not have access to it.",
                "m".repeat(256)
            ),
            param: None,
            code: Some("model_not_found"),
        },
    ]
}

/// The case's fields over `{"model": "mock-model", "messages": [user "hi"]}`.
fn request(c: &Case) -> Value {
    let mut body = json!({"model": "mock-model", "messages": [{"role": "user", "content": USER}]});
    for (k, v) in c.body.as_object().expect("fields") {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn every_refusal_has_its_status_message_param_and_code() {
    let app = app(Setup::default());
    let cases: Vec<Case> = [
        range_cases(),
        feature_cases(),
        message_cases(),
        format_cases(),
        tool_cases(),
        pre_preparation_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut failures = Vec::new();
    for c in &cases {
        let (status, body) = chat(&app, &request(c).to_string()).await;
        let err = &body["error"];
        let got = (
            status.as_u16(),
            err["message"].as_str().unwrap_or_default(),
            err["param"].as_str(),
            err["code"].as_str(),
            err["type"].as_str(),
        );
        let want = (
            c.status,
            c.message.as_str(),
            c.param,
            c.code,
            Some("invalid_request_error"),
        );
        // The parser's message goes on with a suggestion; the rest are pinned whole.
        let message_ok = if c.name == "unknown property" {
            got.1.starts_with(want.1)
        } else {
            got.1 == want.1
        };
        if !message_ok || (got.0, got.2, got.3, got.4) != (want.0, want.2, want.3, want.4) {
            failures.push(format!("{}:\n  got  {got:?}\n  want {want:?}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
