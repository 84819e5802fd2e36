//! The Responses API as a second wire format over chat completions, not a second
//! implementation: a request becomes a chat request ([`to_chat`]), which then meets the same
//! parsing rules, preparation, engine and tool loop as any chat request; a chat completion
//! becomes a response ([`response`]); a chat stream's chunks become the Responses events
//! ([`EventWriter`]). Decision 0021.

use std::collections::BTreeMap;

use peregrine_protocol::chat::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ContentPart,
    FunctionCall, FunctionDefinition, FunctionName, ImageUrl, JsonSchemaFormat, MessageContent,
    ResponseFormat, Tool, ToolCall, ToolChoice, Usage,
};
use peregrine_protocol::responses::{
    IncompleteDetails, Input, InputContent, InputItem, OutputItem, OutputText, ReasoningText,
    ResponseError, ResponseObject, ResponseUsage, ResponsesRequest, ResponsesTool,
    ResponsesToolChoice, StreamEvent, TextConfigOut, TextFormat, TokenDetails,
};
use serde_json::{json, Map, Value};

use crate::error::ServiceError;

/// Groq's cap on `metadata` pairs.
pub const MAX_METADATA: usize = 16;

/// What a response repeats of its request.
#[derive(Debug, Clone)]
pub struct Echo {
    pub max_output_tokens: Option<i64>,
    pub tools: Vec<ResponsesTool>,
    pub tool_choice: Value,
    pub format: TextFormat,
    pub reasoning: Option<peregrine_protocol::responses::ReasoningConfig>,
    pub metadata: BTreeMap<String, String>,
    pub temperature: f64,
    pub top_p: f64,
    pub user: Option<String>,
    pub service_tier: String,
    pub parallel_tool_calls: bool,
    /// `Groq-Beta: inference-metrics`: the timings go into `metadata`.
    pub metrics: bool,
    /// Where each chat message came from, as a Responses path (`instructions`, `input`,
    /// `input[3]`): errors about a message name the item the client sent.
    pub sources: Vec<String>,
}

impl Echo {
    /// A chat preparation error about this request, naming its fields as the Responses
    /// API does.
    pub fn rename(&self, err: ServiceError) -> ServiceError {
        err.rename_fields(|path| self.responses_path(path))
    }

    /// A chat request's field path as the Responses request's; other text as it is.
    fn responses_path(&self, path: &str) -> String {
        if let Some(rest) = path.strip_prefix("messages[") {
            let (index, tail) = rest.split_once(']').unwrap_or((rest, ""));
            let source = index
                .parse::<usize>()
                .ok()
                .and_then(|i| self.sources.get(i));
            return match source {
                // The instructions or a string input are one text: the part path is moot.
                Some(s) if !s.ends_with(']') => s.clone(),
                Some(s) => format!("{s}{tail}"),
                None => "input".into(),
            };
        }
        if let Some(rest) = path.strip_prefix("tools[") {
            // Responses tools are flat: `tools[i].name`, not `tools[i].function.name`.
            return format!("tools[{}", rest.replacen("].function.", "].", 1));
        }
        let renames = [
            ("messages", "input"),
            ("max_completion_tokens", "max_output_tokens"),
            ("response_format.json_schema.", "text.format."),
            ("response_format", "text.format"),
            ("reasoning_effort", "reasoning.effort"),
        ];
        for (chat, responses) in renames {
            if let Some(tail) = path.strip_prefix(chat) {
                if tail.is_empty() || chat.ends_with('.') || tail.starts_with(['.', '[']) {
                    return format!("{responses}{tail}");
                }
            }
        }
        path.to_string()
    }
}

fn invalid(message: String) -> ServiceError {
    ServiceError::BadRequest(message)
}

/// The chat request a Responses request stands for, and what its response repeats.
/// `reasons`: the model returns reasoning, which a response gives as its own output item
/// (chat's `include_reasoning: true`).
pub fn to_chat(
    req: ResponsesRequest,
    reasons: bool,
    metrics: bool,
) -> Result<(ChatCompletionRequest, Echo), ServiceError> {
    refuse_unsupported(&req)?;
    if req
        .metadata
        .as_ref()
        .is_some_and(|m| m.len() > MAX_METADATA)
    {
        return Err(ServiceError::InvalidParam {
            message: format!("`metadata` may have at most {MAX_METADATA} pairs"),
            param: "metadata",
        });
    }
    let (messages, sources) = chat_messages(&req)?;
    let format = (req.text.as_ref())
        .and_then(|t| t.format.clone())
        .unwrap_or(TextFormat::Text);
    let tools = req.tools.clone().unwrap_or_default();
    let chat_tools = (tools.iter().enumerate())
        .map(|(i, t)| chat_tool(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    let chat = ChatCompletionRequest {
        messages,
        model: req.model.clone(),
        temperature: req.temperature,
        top_p: req.top_p,
        max_completion_tokens: req.max_output_tokens,
        stream: req.stream,
        response_format: response_format(&format),
        tools: (!chat_tools.is_empty()).then_some(chat_tools),
        tool_choice: req.tool_choice.as_ref().map(chat_choice).transpose()?,
        parallel_tool_calls: req.parallel_tool_calls,
        include_reasoning: reasons.then_some(true),
        reasoning_effort: req.reasoning.as_ref().and_then(|r| r.effort.clone()),
        service_tier: chat_tier(req.service_tier.as_deref())?,
        user: req.user.clone(),
        ..Default::default()
    };
    let echo = Echo {
        max_output_tokens: req.max_output_tokens,
        tools,
        tool_choice: match &req.tool_choice {
            None => json!("auto"),
            Some(c) => serde_json::to_value(c).unwrap_or(Value::Null),
        },
        format,
        reasoning: req.reasoning.clone(),
        metadata: req.metadata.clone().unwrap_or_default(),
        temperature: req.temperature.unwrap_or(1.0),
        top_p: req.top_p.unwrap_or(1.0),
        user: req.user.clone(),
        service_tier: req.service_tier.clone().unwrap_or_else(|| "default".into()),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        metrics,
        sources,
    };
    Ok((chat, echo))
}

/// The conversation a request stands for (`instructions` as a system message first), and
/// where each message came from, as a Responses path.
fn chat_messages(req: &ResponsesRequest) -> Result<(Vec<ChatMessage>, Vec<String>), ServiceError> {
    let mut messages = Vec::new();
    let mut sources = Vec::new();
    if let Some(i) = &req.instructions {
        messages.push(ChatMessage::System {
            content: MessageContent::Text(i.clone()),
            name: None,
        });
        sources.push("instructions".to_string());
    }
    match &req.input {
        Input::Text(t) => {
            messages.push(ChatMessage::user(t.clone()));
            sources.push("input".to_string());
        }
        Input::Items(items) => {
            for (i, item) in items.iter().enumerate() {
                add_item(&mut messages, i, item)?;
                // An item adds one message or none (a call joins the assistant's message).
                sources.resize(messages.len(), format!("input[{i}]"));
            }
        }
    }
    Ok((messages, sources))
}

/// The Responses tiers (`auto`, `default`, `flex`) as chat's (`default` is `on_demand`).
fn chat_tier(tier: Option<&str>) -> Result<Option<String>, ServiceError> {
    match tier {
        None => Ok(None),
        Some("default") => Ok(Some("on_demand".into())),
        Some(t @ ("auto" | "flex")) => Ok(Some(t.into())),
        Some(t) => Err(ServiceError::InvalidParam {
            message: format!("`service_tier`: '{t}' is not one of 'auto', 'default', 'flex'"),
            param: "service_tier",
        }),
    }
}

/// A tier as a response names it.
fn tier_name(chat_tier: &str) -> String {
    match chat_tier {
        "on_demand" => "default".into(),
        t => t.into(),
    }
}

/// Groq's unsupported fields: refused, never ignored. `null` (and an empty `include`,
/// which asks for nothing) pass; `store` only as `false`, `truncation` only as `disabled`.
fn refuse_unsupported(req: &ResponsesRequest) -> Result<(), ServiceError> {
    let set = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
    let unsupported = [
        ("previous_response_id", set(&req.previous_response_id)),
        (
            "include",
            (req.include.as_ref()).is_some_and(|v| !v.is_null() && v != &json!([])),
        ),
        ("safety_identifier", set(&req.safety_identifier)),
        ("prompt_cache_key", set(&req.prompt_cache_key)),
        ("store", req.store == Some(true)),
        (
            "truncation",
            req.truncation.as_deref().is_some_and(|t| t != "disabled"),
        ),
    ];
    match unsupported.iter().find(|(_, bad)| *bad) {
        Some((field, _)) => Err(ServiceError::InvalidParam {
            message: format!("`{field}` is not supported"),
            param: field,
        }),
        None => Ok(()),
    }
}

/// Adds input item `i` to the conversation. Function calls join the assistant message
/// before them (a response's text and its calls are one chat turn).
fn add_item(
    messages: &mut Vec<ChatMessage>,
    i: usize,
    item: &InputItem,
) -> Result<(), ServiceError> {
    let need = |v: &Option<String>, field: &str| {
        v.clone()
            .ok_or_else(|| invalid(format!("property 'input[{i}].{field}' is missing")))
    };
    match item.kind.as_deref() {
        None | Some("message") => messages.push(message(i, item)?),
        Some("function_call") => {
            let call = ToolCall {
                id: need(&item.call_id, "call_id")?,
                kind: "function".into(),
                function: FunctionCall {
                    name: need(&item.name, "name")?,
                    arguments: need(&item.arguments, "arguments")?,
                },
            };
            match messages.last_mut() {
                Some(ChatMessage::Assistant { tool_calls, .. }) => {
                    tool_calls.get_or_insert_with(Vec::new).push(call)
                }
                _ => messages.push(ChatMessage::Assistant {
                    content: None,
                    name: None,
                    reasoning: None,
                    tool_calls: Some(vec![call]),
                    function_call: None,
                }),
            }
        }
        Some("function_call_output") => messages.push(ChatMessage::Tool {
            content: MessageContent::Text(need(&item.output, "output")?),
            tool_call_id: need(&item.call_id, "call_id")?,
            name: None,
        }),
        // An earlier response's reasoning, passed back: the model does not read its own
        // past reasoning (chat drops it from history the same way).
        Some("reasoning") => {}
        Some(other) => {
            return Err(invalid(format!(
                "`input[{i}].type`: '{other}' is not supported; use 'message', \
                 'function_call', 'function_call_output' or 'reasoning'"
            )))
        }
    }
    Ok(())
}

/// A message item as a chat message.
fn message(i: usize, item: &InputItem) -> Result<ChatMessage, ServiceError> {
    let role = (item.role.as_deref())
        .ok_or_else(|| invalid(format!("property 'input[{i}].role' is missing")))?;
    let content = (item.content.as_ref())
        .ok_or_else(|| invalid(format!("property 'input[{i}].content' is missing")))?;
    let content = chat_content(i, role, content)?;
    Ok(match role {
        "user" => ChatMessage::User {
            content,
            name: None,
        },
        "system" => ChatMessage::System {
            content,
            name: None,
        },
        "developer" => ChatMessage::Developer {
            content,
            name: None,
        },
        "assistant" => ChatMessage::Assistant {
            content: Some(content),
            name: None,
            reasoning: None,
            tool_calls: None,
            function_call: None,
        },
        other => {
            return Err(invalid(format!(
                "`input[{i}].role`: '{other}' is not one of 'user', 'assistant', 'system', \
                 'developer'"
            )))
        }
    })
}

/// A message's content as chat content: text parts as text, images (user messages only)
/// as `image_url` parts.
fn chat_content(
    i: usize,
    role: &str,
    content: &InputContent,
) -> Result<MessageContent, ServiceError> {
    let parts = match content {
        InputContent::Text(t) => return Ok(MessageContent::Text(t.clone())),
        InputContent::Parts(parts) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let at = format!("input[{i}].content[{j}]");
        let text = |p: &peregrine_protocol::responses::InputPart| {
            (p.text.clone()).ok_or_else(|| invalid(format!("property '{at}.text' is missing")))
        };
        out.push(match (p.kind.as_str(), role) {
            ("input_text" | "output_text" | "text", _) => ContentPart::Text { text: text(p)? },
            ("input_image", "user") => ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: (p.image_url.clone())
                        .ok_or_else(|| invalid(format!("property '{at}.image_url' is missing")))?,
                    detail: p.detail.clone(),
                },
            },
            ("input_image", _) => {
                return Err(invalid(format!(
                    "`{at}`: images are only supported in user messages"
                )))
            }
            (other, _) => {
                return Err(invalid(format!(
                    "`{at}.type`: '{other}' is not supported; use 'input_text' or 'input_image'"
                )))
            }
        });
    }
    Ok(MessageContent::Parts(out))
}

/// A tool as chat's: functions nested under `function`, built-in tools as they are.
fn chat_tool(i: usize, t: &ResponsesTool) -> Result<Tool, ServiceError> {
    if t.kind != "function" {
        let mut extra = t.extra.clone();
        for (k, v) in [("name", &t.name), ("description", &t.description)] {
            if let Some(v) = v {
                extra.insert(k.into(), json!(v));
            }
        }
        return Ok(Tool {
            kind: t.kind.clone(),
            function: None,
            extra,
        });
    }
    if let Some(k) = t.extra.keys().next() {
        return Err(invalid(format!("property 'tools[{i}].{k}' is unsupported")));
    }
    let name = (t.name.clone())
        .ok_or_else(|| invalid(format!("property 'tools[{i}].name' is missing")))?;
    Ok(Tool::function(FunctionDefinition {
        name,
        description: t.description.clone(),
        parameters: t.parameters.clone(),
        strict: t.strict,
    }))
}

fn chat_choice(c: &ResponsesToolChoice) -> Result<ToolChoice, ServiceError> {
    Ok(match c {
        ResponsesToolChoice::Mode(m) => ToolChoice::Mode(m.clone()),
        ResponsesToolChoice::Function { kind, name } if kind == "function" => ToolChoice::Named {
            kind: kind.clone(),
            function: FunctionName { name: name.clone() },
        },
        ResponsesToolChoice::Function { kind, .. } => {
            return Err(ServiceError::InvalidParam {
                message: format!("`tool_choice.type`: '{kind}' is not supported; use 'function'"),
                param: "tool_choice",
            })
        }
    })
}

fn response_format(f: &TextFormat) -> Option<ResponseFormat> {
    match f {
        TextFormat::Text => None,
        TextFormat::JsonObject => Some(ResponseFormat::JsonObject),
        TextFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        } => Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: name.clone(),
                description: description.clone(),
                schema: Some(schema.clone()),
                strict: *strict,
            },
        }),
    }
}

/// A fresh id: `prefix` and a lower-case ULID, as Groq's `resp_01k3...`.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// The response skeleton: everything but `output`, `status`, `usage` and the error.
fn skeleton(id: String, created_at: i64, model: &str, echo: &Echo) -> ResponseObject {
    ResponseObject {
        id,
        object: Default::default(),
        status: "in_progress".into(),
        created_at,
        output: Vec::new(),
        previous_response_id: None,
        model: model.to_string(),
        reasoning: echo.reasoning.clone(),
        max_output_tokens: echo.max_output_tokens,
        text: TextConfigOut {
            format: echo.format.clone(),
        },
        tools: echo.tools.clone(),
        tool_choice: echo.tool_choice.clone(),
        truncation: "disabled".into(),
        metadata: echo.metadata.clone(),
        temperature: echo.temperature,
        top_p: echo.top_p,
        user: echo.user.clone(),
        service_tier: echo.service_tier.clone(),
        background: false,
        error: None,
        incomplete_details: None,
        usage: None,
        parallel_tool_calls: echo.parallel_tool_calls,
        store: false,
        top_logprobs: 0,
        max_tool_calls: None,
    }
}

fn response_usage(u: &Usage) -> ResponseUsage {
    let reasoning = (u.completion_tokens_details.as_ref()).map_or(0, |d| d.reasoning_tokens);
    ResponseUsage {
        input_tokens: u.prompt_tokens,
        input_tokens_details: TokenDetails {
            cached_tokens: (u.prompt_tokens_details.as_ref()).map_or(0, |d| d.cached_tokens),
            reasoning_tokens: 0,
        },
        output_tokens: u.completion_tokens,
        output_tokens_details: TokenDetails {
            cached_tokens: 0,
            reasoning_tokens: reasoning,
        },
        total_tokens: u.total_tokens,
    }
}

/// Ends a response: status from chat's finish reason, usage, and the timings in
/// `metadata` when asked for (as strings, as Groq gives them).
fn finish(r: &mut ResponseObject, finish_reason: &str, usage: &Usage, echo: &Echo) {
    if finish_reason == "length" {
        r.status = "incomplete".into();
        r.incomplete_details = Some(IncompleteDetails {
            reason: "max_output_tokens".into(),
        });
    } else {
        r.status = "completed".into();
    }
    r.usage = Some(response_usage(usage));
    if echo.metrics {
        for (k, v) in [
            ("completion_time", usage.completion_time),
            ("prompt_time", usage.prompt_time),
            ("queue_time", usage.queue_time),
            ("total_time", usage.total_time),
        ] {
            r.metadata.insert(k.into(), v.to_string());
        }
    }
}

fn item_status(finish_reason: &str) -> String {
    if finish_reason == "length" {
        "incomplete"
    } else {
        "completed"
    }
    .into()
}

fn reasoning_item(id: String, text: String, status: String) -> OutputItem {
    OutputItem::Reasoning {
        id,
        status,
        content: vec![ReasoningText {
            kind: Default::default(),
            text,
        }],
        summary: Vec::new(),
    }
}

fn message_item(id: String, text: String, status: String) -> OutputItem {
    OutputItem::Message {
        id,
        status,
        role: Default::default(),
        content: vec![OutputText {
            kind: Default::default(),
            text,
            annotations: Vec::new(),
            logprobs: None,
        }],
    }
}

fn call_item(call_id: String, name: String, arguments: String) -> OutputItem {
    OutputItem::FunctionCall {
        id: new_id("fc"),
        call_id,
        name,
        arguments,
        status: "completed".into(),
    }
}

/// A chat completion as a response: its reasoning, its message, its calls, in that order.
pub fn response(c: ChatCompletion, echo: &Echo) -> ResponseObject {
    let mut r = skeleton(new_id("resp"), c.created, &c.model, echo);
    if let Some(tier) = &c.service_tier {
        r.service_tier = tier_name(tier);
    }
    let Some(choice) = c.choices.into_iter().next() else {
        finish(&mut r, "stop", &c.usage, echo);
        return r;
    };
    let status = item_status(&choice.finish_reason);
    let m = choice.message;
    if let Some(text) = m.reasoning.filter(|t| !t.is_empty()) {
        r.output
            .push(reasoning_item(new_id("rs"), text, status.clone()));
    }
    let calls = m.tool_calls.unwrap_or_default();
    let content = m.content.unwrap_or_default();
    if !content.is_empty() || calls.is_empty() {
        r.output.push(message_item(new_id("msg"), content, status));
    }
    for call in calls {
        r.output.push(call_item(
            call.id,
            call.function.name,
            call.function.arguments,
        ));
    }
    finish(&mut r, &choice.finish_reason, &c.usage, echo);
    r
}

/// The text item being streamed.
struct Open {
    reasoning: bool,
    id: String,
    index: usize,
    text: String,
}

/// Turns a chat stream's chunks into the Responses events: `response.created` and
/// `response.in_progress`, each output item added, its text as deltas, done, and at the end
/// `response.completed` (or `response.incomplete`, or `response.failed`), every event with
/// its `sequence_number`.
pub struct EventWriter {
    echo: Echo,
    response: Option<ResponseObject>,
    open: Option<Open>,
    seq: u64,
}

impl EventWriter {
    pub fn new(echo: Echo) -> Self {
        EventWriter {
            echo,
            response: None,
            open: None,
            seq: 0,
        }
    }

    fn event(&mut self, kind: &'static str, fields: Value) -> StreamEvent {
        let seq = self.seq;
        self.seq += 1;
        StreamEvent {
            kind,
            sequence_number: seq,
            fields: match fields {
                Value::Object(m) => m,
                _ => Map::new(),
            },
        }
    }

    fn snapshot(&self) -> Value {
        serde_json::to_value(&self.response).unwrap_or(Value::Null)
    }

    /// The events of one chat chunk.
    pub fn chunk(&mut self, c: &ChatCompletionChunk) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if self.response.is_none() {
            let mut r = skeleton(new_id("resp"), c.created, &c.model, &self.echo);
            if let Some(t) = &c.service_tier {
                r.service_tier = tier_name(t);
            }
            self.response = Some(r);
            let snap = self.snapshot();
            out.push(self.event("response.created", json!({ "response": snap })));
            out.push(self.event("response.in_progress", json!({ "response": snap })));
        }
        let Some(choice) = c.choices.first() else {
            return out;
        };
        let d = &choice.delta;
        if let Some(t) = d.reasoning.as_ref().filter(|t| !t.is_empty()) {
            self.text(true, t, &mut out);
        }
        if let Some(t) = d.content.as_ref().filter(|t| !t.is_empty()) {
            self.text(false, t, &mut out);
        }
        for call in d.tool_calls.iter().flatten() {
            let f = call.function.clone().unwrap_or_default();
            let item = call_item(
                call.id.clone().unwrap_or_default(),
                f.name.unwrap_or_default(),
                f.arguments.unwrap_or_default(),
            );
            self.call(item, &mut out);
        }
        if let Some(reason) = &choice.finish_reason {
            let usage = (c.x_groq.as_ref())
                .and_then(|x| x.usage.clone())
                .or_else(|| c.usage.clone())
                .unwrap_or_default();
            self.end(reason, &usage, &mut out);
        }
        out
    }

    /// Text for the open item of its kind, opening it (and closing another) first.
    fn text(&mut self, reasoning: bool, delta: &str, out: &mut Vec<StreamEvent>) {
        if self.open.as_ref().is_some_and(|o| o.reasoning != reasoning) {
            self.close("completed", out);
        }
        if self.open.is_none() {
            let index = self.output_len();
            let id = new_id(if reasoning { "rs" } else { "msg" });
            let item = if reasoning {
                reasoning_item(id.clone(), String::new(), "in_progress".into())
            } else {
                message_item(id.clone(), String::new(), "in_progress".into())
            };
            let mut item = serde_json::to_value(item).unwrap_or(Value::Null);
            item["content"] = json!([]);
            out.push(self.event(
                "response.output_item.added",
                json!({ "output_index": index, "item": item }),
            ));
            let part = empty_part(reasoning);
            out.push(self.event(
                "response.content_part.added",
                json!({ "item_id": id, "output_index": index, "content_index": 0, "part": part }),
            ));
            self.open = Some(Open {
                reasoning,
                id,
                index,
                text: String::new(),
            });
        }
        let Some(open) = self.open.as_mut() else {
            return;
        };
        open.text.push_str(delta);
        let (id, index) = (open.id.clone(), open.index);
        let ev = if reasoning {
            self.event(
                "response.reasoning_text.delta",
                json!({ "item_id": id, "output_index": index, "content_index": 0, "delta": delta }),
            )
        } else {
            self.event(
                "response.output_text.delta",
                json!({ "item_id": id, "output_index": index, "content_index": 0,
                        "delta": delta, "logprobs": [] }),
            )
        };
        out.push(ev);
    }

    fn output_len(&self) -> usize {
        self.response.as_ref().map_or(0, |r| r.output.len())
    }

    /// Closes the open text item: its text done, its part done, the item done.
    fn close(&mut self, status: &str, out: &mut Vec<StreamEvent>) {
        let Some(open) = self.open.take() else {
            return;
        };
        let (id, index, text) = (open.id, open.index, open.text);
        let (done, part) = if open.reasoning {
            (
                "response.reasoning_text.done",
                json!({"type": "reasoning_text", "text": text}),
            )
        } else {
            (
                "response.output_text.done",
                json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []}),
            )
        };
        let mut fields =
            json!({ "item_id": id, "output_index": index, "content_index": 0, "text": text });
        if !open.reasoning {
            fields["logprobs"] = json!([]);
        }
        out.push(self.event(done, fields));
        out.push(self.event(
            "response.content_part.done",
            json!({ "item_id": id, "output_index": index, "content_index": 0, "part": part }),
        ));
        let item = if open.reasoning {
            reasoning_item(id, text, status.into())
        } else {
            message_item(id, text, status.into())
        };
        self.item_done(index, item, out);
    }

    fn item_done(&mut self, index: usize, item: OutputItem, out: &mut Vec<StreamEvent>) {
        let value = serde_json::to_value(&item).unwrap_or(Value::Null);
        out.push(self.event(
            "response.output_item.done",
            json!({ "output_index": index, "item": value }),
        ));
        if let Some(r) = self.response.as_mut() {
            r.output.push(item);
        }
    }

    /// A whole function call (Groq streams each call in one piece).
    fn call(&mut self, item: OutputItem, out: &mut Vec<StreamEvent>) {
        self.close("completed", out);
        let OutputItem::FunctionCall { id, arguments, .. } = &item else {
            return;
        };
        let (id, arguments) = (id.clone(), arguments.clone());
        let index = self.output_len();
        let mut added = serde_json::to_value(&item).unwrap_or(Value::Null);
        added["arguments"] = json!("");
        added["status"] = json!("in_progress");
        out.push(self.event(
            "response.output_item.added",
            json!({ "output_index": index, "item": added }),
        ));
        out.push(self.event(
            "response.function_call_arguments.delta",
            json!({ "item_id": id, "output_index": index, "delta": arguments }),
        ));
        out.push(self.event(
            "response.function_call_arguments.done",
            json!({ "item_id": id, "output_index": index, "arguments": arguments }),
        ));
        self.item_done(index, item, out);
    }

    fn end(&mut self, reason: &str, usage: &Usage, out: &mut Vec<StreamEvent>) {
        self.close(&item_status(reason), out);
        let echo = self.echo.clone();
        if let Some(r) = self.response.as_mut() {
            finish(r, reason, usage, &echo);
        }
        let kind = if reason == "length" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        let snap = self.snapshot();
        out.push(self.event(kind, json!({ "response": snap })));
    }

    /// The stream failed (an error the chat stream would send as its error event): the
    /// response ends `failed`, with the error.
    pub fn failed(&mut self, code: &str, message: &str) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        self.close("incomplete", &mut out);
        if let Some(r) = self.response.as_mut() {
            r.status = "failed".into();
            r.error = Some(ResponseError {
                code: code.into(),
                message: message.into(),
            });
        }
        let snap = self.snapshot();
        out.push(self.event("response.failed", json!({ "response": snap })));
        out
    }
}

fn empty_part(reasoning: bool) -> Value {
    if reasoning {
        json!({"type": "reasoning_text", "text": ""})
    } else {
        json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peregrine_protocol::chat::{
        AssistantMessage, ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta, XGroq,
    };
    use peregrine_protocol::parse::parse_request;
    use peregrine_protocol::responses::REQUEST_FIELDS;

    fn parse(v: Value) -> ResponsesRequest {
        parse_request(v.to_string().as_bytes(), REQUEST_FIELDS).unwrap()
    }

    fn chat(v: Value, reasons: bool) -> ChatCompletionRequest {
        to_chat(parse(v), reasons, false).unwrap().0
    }

    #[test]
    fn a_request_becomes_the_chat_request_it_stands_for() {
        let c = chat(
            json!({"model": "m", "instructions": "Be brief.", "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"},
                {"type": "function_call_output", "call_id": "c2", "output": "2"}],
              "max_output_tokens": 50, "text": {"format": {"type": "json_schema", "name": "s",
                "schema": {"type": "object"}, "strict": true}},
              "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}},
                        {"type": "browser_search"}],
              "tool_choice": {"type": "function", "name": "f"}, "reasoning": {"effort": "high"}}),
            true,
        );
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(v["messages"][1]["content"][1]["image_url"]["detail"], "low");
        // The answer's text and both of its calls are one assistant turn.
        let a = &v["messages"][2];
        assert_eq!(a["content"][0]["text"], "A cat.");
        assert_eq!(a["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["messages"][3],
            json!({"role": "tool", "content": "1", "tool_call_id": "c1"})
        );
        assert_eq!(v["messages"].as_array().unwrap().len(), 5);
        assert_eq!(v["max_completion_tokens"], 50);
        assert_eq!(v["response_format"]["json_schema"]["name"], "s");
        assert_eq!(v["tools"][0]["function"]["name"], "f");
        assert_eq!(v["tools"][1], json!({"type": "browser_search"}));
        assert_eq!(
            v["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert_eq!(v["reasoning_effort"], "high");
        assert_eq!(v["include_reasoning"], true);
        // A string input is one user message; a model without reasoning is asked for none.
        let c = chat(json!({"model": "m", "input": "hi"}), false);
        assert_eq!(c.messages, vec![ChatMessage::user("hi")]);
        assert_eq!(c.include_reasoning, None);
    }

    fn completion(
        content: Option<&str>,
        reasoning: Option<&str>,
        calls: usize,
        finish: &str,
    ) -> ChatCompletion {
        let calls: Vec<ToolCall> = (0..calls)
            .map(|i| ToolCall {
                id: format!("call_{i}"),
                kind: "function".into(),
                function: FunctionCall {
                    name: "f".into(),
                    arguments: "{}".into(),
                },
            })
            .collect();
        let mut c: ChatCompletion = serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant"}, "finish_reason": finish}],
            "usage": {"queue_time": 0.1, "prompt_tokens": 10, "prompt_time": 0.2,
                "completion_tokens": 5, "completion_time": 0.3, "total_tokens": 15, "total_time": 0.5,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 2}},
            "system_fingerprint": "fp", "x_groq": {"id": "req_1"}
        }))
        .unwrap();
        c.choices[0].message = AssistantMessage {
            content: content.map(String::from),
            reasoning: reasoning.map(String::from),
            tool_calls: (!calls.is_empty()).then_some(calls),
            ..Default::default()
        };
        c
    }

    fn echo() -> Echo {
        to_chat(parse(json!({"model": "m", "input": "x"})), false, true)
            .unwrap()
            .1
    }

    #[test]
    fn chat_field_paths_become_the_responses_requests() {
        let (_, echo) = to_chat(
            parse(json!({"model": "m", "instructions": "Be brief.", "input": [
                {"role": "user", "content": "Hi"},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "1"},
                {"role": "user", "content": [{"type": "input_text", "text": "x"}]},
            ]})),
            false,
            false,
        )
        .unwrap();
        let cases = [
            ("messages[0].content", "instructions"),
            ("messages[1].content", "input[0].content"),
            ("messages[2].tool_calls", "input[1].tool_calls"),
            ("messages[3]", "input[2]"),
            (
                "messages[4].content[0].image_url",
                "input[3].content[0].image_url",
            ),
            ("messages[9]", "input"),
            ("messages", "input"),
            ("max_completion_tokens", "max_output_tokens"),
            ("response_format.json_schema.schema", "text.format.schema"),
            ("response_format", "text.format"),
            ("tools[2].function.parameters", "tools[2].parameters"),
            ("tools[2].type", "tools[2].type"),
            ("reasoning_effort", "reasoning.effort"),
            ("tool_choice", "tool_choice"),
            ("context_window", "context_window"),
        ];
        for (chat, responses) in cases {
            assert_eq!(echo.responses_path(chat), responses, "{chat}");
        }
    }

    #[test]
    fn a_preparation_error_names_the_responses_field() {
        let echo = echo();
        let err = ServiceError::InvalidParam {
            message:
                "`max_completion_tokens` must be at most 8, the limit of `max_completion_tokens`"
                    .into(),
            param: "max_completion_tokens",
        };
        let e = echo.rename(err).envelope().error;
        assert_eq!(e.param.as_deref(), Some("max_output_tokens"));
        assert_eq!(
            e.message,
            "`max_output_tokens` must be at most 8, the limit of `max_output_tokens`"
        );
        assert_eq!(e.kind, "invalid_request_error");
        let e = echo
            .rename(ServiceError::ModelNotFound("m".into()))
            .envelope()
            .error;
        assert_eq!(e.param, None);
        assert_eq!(e.code.as_deref(), Some("model_not_found"));
    }

    #[test]
    fn a_completion_becomes_reasoning_message_and_calls_in_order() {
        let r = response(
            completion(Some("Hi."), Some("Think."), 2, "tool_calls"),
            &echo(),
        );
        let v = serde_json::to_value(&r).unwrap();
        let types: Vec<&str> = (v["output"].as_array().unwrap().iter())
            .map(|o| o["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["reasoning", "message", "function_call", "function_call"]
        );
        assert_eq!(
            v["output"][0]["content"][0],
            json!({"type": "reasoning_text", "text": "Think."})
        );
        assert_eq!(v["output"][2]["call_id"], "call_0");
        assert_eq!(v["status"], "completed");
        assert_eq!(
            v["usage"],
            json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "reasoning_tokens": 0},
                   "output_tokens": 5, "output_tokens_details": {"cached_tokens": 0, "reasoning_tokens": 2},
                   "total_tokens": 15})
        );
        assert_eq!(v["metadata"]["total_time"], "0.5");
        // Calls alone: no empty message before them. Cut short: incomplete.
        let r = response(completion(None, None, 1, "tool_calls"), &echo());
        assert_eq!(r.output.len(), 1);
        let r = response(completion(Some("Hi"), None, 0, "length"), &echo());
        assert_eq!(r.status, "incomplete");
        assert_eq!(r.incomplete_details.unwrap().reason, "max_output_tokens");
    }

    fn chunk(delta: Delta, finish: Option<&str>) -> ChatCompletionChunk {
        let mut c: ChatCompletionChunk = serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "system_fingerprint": "fp", "choices": []
        }))
        .unwrap();
        c.choices = vec![ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish.map(String::from),
        }];
        if finish.is_some() {
            c.x_groq = Some(XGroq {
                usage: Some(completion(None, None, 0, "stop").usage),
                ..Default::default()
            });
        }
        c
    }

    #[test]
    fn chunks_become_the_event_sequence() {
        let mut w = EventWriter::new(echo());
        let text = |t: &str| Delta {
            content: Some(t.into()),
            ..Default::default()
        };
        let mut evs = Vec::new();
        for c in [
            chunk(text(""), None),
            chunk(
                Delta {
                    reasoning: Some("Hm.".into()),
                    ..Default::default()
                },
                None,
            ),
            chunk(text("A"), None),
            chunk(text("B"), None),
            chunk(
                Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        id: Some("call_1".into()),
                        kind: Some("function".into()),
                        function: Some(FunctionCallDelta {
                            name: Some("f".into()),
                            arguments: Some("{}".into()),
                        }),
                        index: 0,
                    }]),
                    ..Default::default()
                },
                None,
            ),
            chunk(Delta::default(), Some("tool_calls")),
        ] {
            evs.extend(w.chunk(&c));
        }
        let kinds: Vec<(&str, u64)> = evs.iter().map(|e| (e.kind, e.sequence_number)).collect();
        let want = [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ];
        let got: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
        assert_eq!(got, want);
        assert!(kinds.iter().enumerate().all(|(i, (_, n))| *n == i as u64));
        let done = &evs.last().unwrap().fields["response"];
        assert_eq!(done["output"][1]["content"][0]["text"], "AB");
        assert_eq!(done["output"][1]["id"], evs[10].fields["item_id"]);
        assert_eq!(done["output"][2]["call_id"], "call_1");
        assert_eq!(done["usage"]["total_tokens"], 15);

        // A failure closes the open item and fails the response.
        let mut w = EventWriter::new(echo());
        w.chunk(&chunk(text("A"), None));
        let evs = w.failed("internal_server_error", "boom");
        let last = &evs.last().unwrap().fields["response"];
        assert_eq!(evs.last().unwrap().kind, "response.failed");
        assert_eq!(last["status"], "failed");
        assert_eq!(
            last["error"],
            json!({"code": "internal_server_error", "message": "boom"})
        );
        assert_eq!(last["output"][0]["status"], "incomplete");
    }
}
