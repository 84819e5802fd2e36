//! Chat templates rendered with the real templates shipped in model repos, checked against
//! the exact strings transformers' `apply_chat_template` produces for them.

use peregrine_text::{
    ChatTemplate, RenderedPrompt, TemplateError, TemplateInput, TemplateMessage, TemplateToolCall,
};
use serde_json::json;

const QWEN25: &str = include_str!("fixtures/qwen2.5-instruct.jinja");
const SMOLLM2: &str = include_str!("fixtures/smollm2.jinja");
const LLAMA32: &str = include_str!("fixtures/llama-3.2-instruct.jinja");

const QWEN_DEFAULT_SYSTEM: &str =
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n";

fn qwen() -> ChatTemplate {
    ChatTemplate::new(QWEN25, "", "<|im_end|>").unwrap()
}

fn smollm() -> ChatTemplate {
    ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap()
}

fn llama() -> ChatTemplate {
    ChatTemplate::new(LLAMA32, "<|begin_of_text|>", "<|eot_id|>").unwrap()
}

fn msg(role: &str, content: &str) -> TemplateMessage {
    TemplateMessage::text(role, content)
}

fn weather_tool() -> serde_json::Value {
    json!({
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"]
            }
        }
    })
}

fn call(id: &str, city: &str) -> TemplateToolCall {
    TemplateToolCall {
        id: id.to_owned(),
        name: "get_weather".to_owned(),
        arguments: json!({"city": city}),
    }
}

fn assistant_calls(calls: Vec<TemplateToolCall>) -> TemplateMessage {
    TemplateMessage {
        role: "assistant".to_owned(),
        tool_calls: Some(calls),
        ..TemplateMessage::default()
    }
}

fn tool_result(id: &str, content: &str) -> TemplateMessage {
    TemplateMessage {
        tool_call_id: Some(id.to_owned()),
        ..msg("tool", content)
    }
}

fn prompt(template: &ChatTemplate, messages: Vec<TemplateMessage>) -> String {
    let rendered = template.render_prompt(messages, None).unwrap();
    assert_eq!(rendered.prefill, None);
    rendered.text
}

/// Renders with a template that calls `strftime_now`, retrying if the date changed meanwhile.
fn with_today(render: impl Fn() -> String, expected: impl Fn(&str) -> String) {
    loop {
        let before = chrono::Local::now().format("%d %b %Y").to_string();
        let got = render();
        let after = chrono::Local::now().format("%d %b %Y").to_string();
        if before == after {
            assert_eq!(got, expected(&before));
            return;
        }
    }
}

// ---------------------------------------------------------------- Qwen2.5-Instruct / Coder

#[test]
fn qwen_plain_chat_gets_the_default_system_prompt() {
    assert_eq!(
        prompt(&qwen(), vec![msg("user", "Hello")]),
        format!("{QWEN_DEFAULT_SYSTEM}<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    );
}

#[test]
fn qwen_system_prompt_replaces_the_default() {
    assert_eq!(
        prompt(&qwen(), vec![msg("system", "Be brief."), msg("user", "Hi")]),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn qwen_developer_role_is_rendered_as_system() {
    assert_eq!(
        prompt(
            &qwen(),
            vec![msg("developer", "Be brief."), msg("user", "Hi")]
        ),
        prompt(&qwen(), vec![msg("system", "Be brief."), msg("user", "Hi")]),
    );
}

#[test]
fn qwen_multi_turn_without_generation_prompt() {
    let input = TemplateInput {
        messages: vec![
            msg("user", "1+1?"),
            msg("assistant", "2"),
            msg("user", "2+2?"),
        ],
        tools: None,
        add_generation_prompt: false,
        vars: Default::default(),
    };
    assert_eq!(
        qwen().render(&input).unwrap(),
        format!(
            "{QWEN_DEFAULT_SYSTEM}<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n\
             <|im_start|>user\n2+2?<|im_end|>\n"
        )
    );
}

const QWEN_TOOLS_SECTION: &str = "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather\", \
\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}\n\
</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n\
<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n";

#[test]
fn qwen_tools_go_in_the_system_prompt_as_python_json() {
    let rendered = qwen()
        .render_prompt(
            vec![msg("user", "Weather in Paris?")],
            Some(vec![weather_tool()]),
        )
        .unwrap();
    assert_eq!(
        rendered.text,
        format!(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\
             {QWEN_TOOLS_SECTION}<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
        )
    );
}

#[test]
fn qwen_empty_tool_list_is_no_tools() {
    let with_empty = qwen()
        .render_prompt(vec![msg("user", "Hi")], Some(vec![]))
        .unwrap();
    assert_eq!(with_empty.text, prompt(&qwen(), vec![msg("user", "Hi")]));
}

#[test]
fn qwen_assistant_tool_calls_and_grouped_tool_results() {
    let messages = vec![
        msg("system", "You answer weather questions."),
        msg("user", "Paris or Lyon: which is warmer?"),
        assistant_calls(vec![call("call_1", "Paris"), call("call_2", "Lyon")]),
        tool_result("call_1", "18C"),
        tool_result("call_2", "21C"),
        msg("assistant", "Lyon."),
        msg("user", "And Zürich?"),
        TemplateMessage {
            content: Some("Checking.".to_owned()),
            ..assistant_calls(vec![call("call_3", "Zürich")])
        },
        tool_result("call_3", "12C"),
    ];
    let rendered = qwen()
        .render_prompt(messages, Some(vec![weather_tool()]))
        .unwrap();
    assert_eq!(
        rendered.text,
        format!(
            "<|im_start|>system\nYou answer weather questions.{QWEN_TOOLS_SECTION}\
             <|im_start|>user\nParis or Lyon: which is warmer?<|im_end|>\n\
             <|im_start|>assistant\n\
             <tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Paris\"}}}}\n</tool_call>\n\
             <tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Lyon\"}}}}\n</tool_call><|im_end|>\n\
             <|im_start|>user\n<tool_response>\n18C\n</tool_response>\n<tool_response>\n21C\n</tool_response><|im_end|>\n\
             <|im_start|>assistant\nLyon.<|im_end|>\n\
             <|im_start|>user\nAnd Zürich?<|im_end|>\n\
             <|im_start|>assistant\nChecking.\n\
             <tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Zürich\"}}}}\n</tool_call><|im_end|>\n\
             <|im_start|>user\n<tool_response>\n12C\n</tool_response><|im_end|>\n\
             <|im_start|>assistant\n"
        )
    );
}

#[test]
fn qwen_prefill_continues_the_last_assistant_message() {
    let rendered = qwen()
        .render_prompt(
            vec![
                msg("user", "Write a haiku."),
                msg("assistant", "Autumn moon, "),
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        rendered,
        RenderedPrompt {
            text: format!(
                "{QWEN_DEFAULT_SYSTEM}<|im_start|>user\nWrite a haiku.<|im_end|>\n<|im_start|>assistant\nAutumn moon, "
            ),
            prefill: Some("Autumn moon, ".to_owned()),
        }
    );
}

#[test]
fn qwen_prefill_with_empty_content_opens_the_turn() {
    let rendered = qwen()
        .render_prompt(vec![msg("user", "Hi"), msg("assistant", "")], None)
        .unwrap();
    assert_eq!(rendered.text, prompt(&qwen(), vec![msg("user", "Hi")]));
    assert_eq!(rendered.prefill, None);
}

#[test]
fn qwen_trailing_assistant_tool_call_is_not_prefill() {
    let rendered = qwen()
        .render_prompt(
            vec![msg("user", "Hi"), assistant_calls(vec![call("c", "Oslo")])],
            None,
        )
        .unwrap();
    assert_eq!(rendered.prefill, None);
    assert!(rendered
        .text
        .ends_with("</tool_call><|im_end|>\n<|im_start|>assistant\n"));
}

// ---------------------------------------------------------------- SmolLM2 (ChatML)

#[test]
fn smollm_plain_chat_gets_the_default_system_prompt() {
    assert_eq!(
        prompt(&smollm(), vec![msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Bye")]),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n\
         <|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn smollm_system_and_developer_prompts() {
    let want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(
        prompt(
            &smollm(),
            vec![msg("system", "Be brief."), msg("user", "Hi")]
        ),
        want
    );
    assert_eq!(
        prompt(
            &smollm(),
            vec![msg("developer", "Be brief."), msg("user", "Hi")]
        ),
        want
    );
}

#[test]
fn smollm_prefill() {
    let rendered = smollm()
        .render_prompt(
            vec![msg("user", "Hi"), msg("assistant", "{\"answer\":")],
            None,
        )
        .unwrap();
    assert_eq!(
        rendered.text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n{\"answer\":"
    );
    assert_eq!(rendered.prefill.as_deref(), Some("{\"answer\":"));
}

#[test]
fn smollm_missing_content_is_a_render_error() {
    let message = TemplateMessage {
        role: "user".to_owned(),
        ..TemplateMessage::default()
    };
    let err = smollm().render_prompt(vec![message], None).unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)), "{err:?}");
}

// ---------------------------------------------------------------- Llama 3.2 (3.1 family)

#[test]
fn llama_plain_chat_with_todays_date() {
    with_today(
        || {
            prompt(
                &llama(),
                vec![msg("system", "  Be brief. "), msg("user", "Hi")],
            )
        },
        |date| {
            format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
                 Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n\
                 Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
            )
        },
    );
}

const LLAMA_TOOL_JSON: &str = r#"{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {
                    "type": "string"
                }
            },
            "required": [
                "city"
            ]
        }
    }
}"#;

#[test]
fn llama_tools_in_first_user_message_then_call_and_result() {
    let messages = vec![
        msg("user", "Weather in Paris?"),
        assistant_calls(vec![call("call_1", "Paris")]),
        tool_result("call_1", "18C"),
    ];
    with_today(
        || {
            llama()
                .render_prompt(messages.clone(), Some(vec![weather_tool()]))
                .unwrap()
                .text
        },
        |date| {
            format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
                 Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: {date}\n\n<|eot_id|>\
                 <|start_header_id|>user<|end_header_id|>\n\n\
                 Given the following functions, please respond with a JSON for a function call \
                 with its proper arguments that best answers the given prompt.\n\n\
                 Respond in the format {{\"name\": function name, \"parameters\": dictionary of argument name and its value}}.\
                 Do not use variables.\n\n{LLAMA_TOOL_JSON}\n\nWeather in Paris?<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n\
                 {{\"name\": \"get_weather\", \"parameters\": {{\"city\": \"Paris\"}}}}<|eot_id|>\
                 <|start_header_id|>ipython<|end_header_id|>\n\n\"18C\"<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
            )
        },
    );
}

#[test]
fn llama_raise_exception_reaches_the_caller_verbatim() {
    let err = llama()
        .render_prompt(vec![msg("system", "S")], Some(vec![weather_tool()]))
        .unwrap_err();
    assert_eq!(
        err,
        TemplateError::Raised(
            "Cannot put tools in the first user message when there's no first user message!"
                .to_owned()
        )
    );
    assert_eq!(
        err.to_string(),
        "Cannot put tools in the first user message when there's no first user message!"
    );

    let two_calls = vec![
        msg("user", "Both?"),
        assistant_calls(vec![call("a", "Paris"), call("b", "Lyon")]),
    ];
    let err = llama().render_prompt(two_calls, None).unwrap_err();
    assert_eq!(
        err,
        TemplateError::Raised("This model only supports single tool-calls at once!".to_owned())
    );
}

#[test]
fn llama_prefill_keeps_trailing_space_despite_trim() {
    with_today(
        || {
            let rendered = llama()
                .render_prompt(vec![msg("user", "Hi"), msg("assistant", "Sure, ")], None)
                .unwrap();
            assert_eq!(rendered.prefill.as_deref(), Some("Sure, "));
            rendered.text
        },
        |date| {
            format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
                 Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n<|eot_id|>\
                 <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\nSure, "
            )
        },
    );
}

// ---------------------------------------------------------------- environment details

fn render_inline(source: &str, messages: Vec<TemplateMessage>) -> Result<String, TemplateError> {
    ChatTemplate::new(source, "<s>", "</s>")?.render(&TemplateInput {
        messages,
        tools: None,
        add_generation_prompt: false,
        vars: Default::default(),
    })
}

#[test]
fn tojson_is_python_json_dumps() {
    let tool = json!({"b": [1, 2.5, true, null], "a": "<ü & \"q\"\n>", "e": {}, "l": []});
    let input = TemplateInput {
        messages: vec![],
        tools: Some(vec![tool]),
        add_generation_prompt: false,
        vars: Default::default(),
    };
    let t = ChatTemplate::new("{{ tools[0] | tojson }}", "", "").unwrap();
    assert_eq!(
        t.render(&input).unwrap(),
        r#"{"b": [1, 2.5, true, null], "a": "<ü & \"q\"\n>", "e": {}, "l": []}"#
    );
    let t = ChatTemplate::new("{{ tools[0].b | tojson(indent=2) }}", "", "").unwrap();
    assert_eq!(
        t.render(&input).unwrap(),
        "[\n  1,\n  2.5,\n  true,\n  null\n]"
    );
    let t = ChatTemplate::new("{{ tools[0].b | tojson(2) }}", "", "").unwrap();
    assert_eq!(
        t.render(&input).unwrap(),
        "[\n  1,\n  2.5,\n  true,\n  null\n]"
    );
    let t = ChatTemplate::new(
        "{{ tools[0] | tojson(separators=(',', ':'), sort_keys=true, ensure_ascii=true) }}",
        "",
        "",
    )
    .unwrap();
    assert_eq!(
        t.render(&input).unwrap(),
        r#"{"a":"<\u00fc & \"q\"\n>","b":[1,2.5,true,null],"e":{},"l":[]}"#
    );
}

#[test]
fn printing_values_follows_python_str() {
    assert_eq!(
        render_inline(
            "{{ none }} {{ true }} {{ 1.0 }} {{ [1, 'a', none] }} {{ {'k': false} }}",
            vec![]
        )
        .unwrap(),
        "None True 1.0 [1, 'a', None] {'k': False}"
    );
}

#[test]
fn python_string_methods_work() {
    let out = render_inline(
        "{% for m in messages %}{{ m.content.strip().split(' ') | join('|') }}\
         {% if m.content.startswith(' x') %}!{% endif %}{% endfor %}",
        vec![msg("user", " x y ")],
    )
    .unwrap();
    assert_eq!(out, "x|y!");
}

#[test]
fn whitespace_control_matches_transformers() {
    // trim_blocks + lstrip_blocks, no trailing newline kept.
    let source = "{% for m in messages %}\n    {% if true %}\n[{{ m.role }}]\n    {% endif %}\n{% endfor %}\n";
    assert_eq!(
        render_inline(source, vec![msg("user", "x")]).unwrap(),
        "[user]\n"
    );
}

#[test]
fn loop_controls_and_namespace() {
    let source = "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}\
                  {% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}";
    let messages = vec![msg("user", "a"), msg("user", "b"), msg("user", "c")];
    assert_eq!(render_inline(source, messages).unwrap(), "2");
}

#[test]
fn message_keys_present_only_when_set() {
    let source = "{% for m in messages %}{{ 'tool_calls' in m }} {{ m.name is defined }} \
                  {{ m.tool_call_id | default('-') }} {{ m.reasoning_content | default('-') }};{% endfor %}";
    let messages = vec![
        TemplateMessage {
            name: Some("bob".to_owned()),
            ..msg("user", "hi")
        },
        TemplateMessage {
            reasoning: Some("hmm".to_owned()),
            ..assistant_calls(vec![call("c1", "Rome")])
        },
        tool_result("c1", "1C"),
        TemplateMessage {
            tool_calls: Some(vec![]),
            ..msg("assistant", "done")
        },
    ];
    assert_eq!(
        render_inline(source, messages).unwrap(),
        "False True - -;True False - hmm;False False c1 -;False False - -;"
    );
}

#[test]
fn tool_call_shape_matches_transformers() {
    let source = "{% for m in messages %}{{ m.tool_calls | tojson }}{% endfor %}";
    let out = render_inline(source, vec![assistant_calls(vec![call("call_9", "Rome")])]).unwrap();
    assert_eq!(
        out,
        r#"[{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]"#
    );
}

#[test]
fn special_tokens_and_strftime_are_available() {
    let out = render_inline(
        "{{ bos_token }}|{{ eos_token }}|{{ strftime_now('%Y') }}",
        vec![],
    )
    .unwrap();
    assert_eq!(
        out,
        format!("<s>|</s>|{}", chrono::Local::now().format("%Y"))
    );
    let err = render_inline("{{ strftime_now('%Q') }}", vec![]).unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)), "{err:?}");
}

#[test]
fn compile_and_raise_errors_are_distinguished() {
    let err = ChatTemplate::new("{% for %}", "", "").unwrap_err();
    assert!(matches!(err, TemplateError::Compile(_)), "{err:?}");
    let err = render_inline(
        "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}",
        vec![msg("assistant", "x")],
    )
    .unwrap_err();
    assert_eq!(
        err,
        TemplateError::Raised(
            "Conversation roles must alternate user/assistant/user/assistant/...".to_owned()
        )
    );
}

#[test]
fn prefill_falls_back_when_the_template_drops_the_assistant_turn() {
    let source = "{% for m in messages %}{% if m.role == 'user' %}U:{{ m.content }}\n{% endif %}{% endfor %}\
                  {% if add_generation_prompt %}A:{% endif %}";
    let template = ChatTemplate::new(source, "", "").unwrap();
    let rendered = template
        .render_prompt(vec![msg("user", "Hi"), msg("assistant", "Sure")], None)
        .unwrap();
    assert_eq!(
        rendered,
        RenderedPrompt {
            text: "U:Hi\nA:Sure".to_owned(),
            prefill: Some("Sure".to_owned()),
        }
    );
}

#[test]
fn chat_template_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChatTemplate>();
    let template = std::sync::Arc::new(smollm());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let template = std::sync::Arc::clone(&template);
            std::thread::spawn(move || prompt(&template, vec![msg("user", &i.to_string())]))
        })
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        assert!(handle
            .join()
            .unwrap()
            .contains(&format!("user\n{i}<|im_end|>")));
    }
}
