//! [`PrepareError`]: every reason a chat request is refused before generation, one variant a
//! rule. The message is what the client reads; [`PrepareError::param`] names the request
//! field (Groq's and OpenAI's `param`), so clients and tests need not parse messages.

use peregrine_grammar::strict::StrictError;
use peregrine_grammar::GrammarError;

use super::{
    MAX_IMAGES, MAX_LOGIT_BIAS, MAX_STOP_BYTES, MAX_STOP_SEQUENCES, MAX_TOOLS, MAX_TOP_LOGPROBS,
};

/// Why a request was refused. Messages name the field; `param()` names it for machines.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PrepareError {
    #[error("`messages` must contain at least one message")]
    NoMessages,
    #[error("`n` must be 1, got {0}")]
    N(i64),
    #[error("`{param}` must be between {lo} and {hi}, got {got}")]
    OutOfRange {
        param: &'static str,
        lo: f64,
        hi: f64,
        got: f64,
    },
    #[error("`stop` may contain at most {MAX_STOP_SEQUENCES} sequences, got {0}")]
    TooManyStops(usize),
    #[error("`stop` sequences may be at most {MAX_STOP_BYTES} bytes long, got {0}")]
    StopTooLong(usize),
    #[error("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {0}")]
    TopLogprobs(i64),
    #[error("`top_logprobs` requires `logprobs` to be true")]
    TopLogprobsWithoutLogprobs,
    #[error("`logit_bias` may contain at most {MAX_LOGIT_BIAS} entries, got {0}")]
    TooManyLogitBias(usize),
    #[error("`logit_bias` key `{0}` is not a token id of this model")]
    LogitBiasKey(String),
    #[error("`logit_bias` values must be between -100 and 100, got {value} for token {key}")]
    LogitBiasValue { key: String, value: f64 },
    #[error("`service_tier` must be one of auto, on_demand, flex, performance, got '{0}'")]
    ServiceTier(String),
    #[error("`{param}` must be at least 1, got {got}")]
    MaxTokensTooSmall { param: &'static str, got: i64 },
    #[error("`{param}` must be less than or equal to `{max}`, the maximum value for `{param}` is less than the `context_window` for this model")]
    MaxTokensTooLarge { param: &'static str, max: u32 },
    /// A parameter whose feature this server does not offer (yet): refused, never ignored.
    #[error("`{feature}` is not supported with this model")]
    Unsupported {
        feature: &'static str,
        /// Where it was found, when that is not a top-level field of the same name.
        at: Option<String>,
    },
    #[error("`messages[{0}].content` must contain at least one part")]
    EmptyContent(usize),
    #[error("a request may contain at most {MAX_IMAGES} images, got {0}")]
    TooManyImages(usize),
    #[error("`messages[{message}].content[{part}].image_url`: {error}")]
    Image {
        message: usize,
        part: usize,
        error: peregrine_engine::ImageError,
    },
    /// The service did not hand over every image part's bytes: its bug, not the client's.
    #[error("{parts} image parts but {fetched} images fetched")]
    ImagesMissing { parts: usize, fetched: usize },
    #[error("the chat template dropped {0} of the request's images")]
    ImagesDropped(usize),
    #[error("`messages[{index}].tool_calls`: arguments of `{name}` are not valid JSON: {error}")]
    HistoryArguments {
        index: usize,
        name: String,
        error: String,
    },
    #[error("failed to apply the chat template: {0}")]
    Template(String),
    #[error("the rendered prompt is empty")]
    EmptyPrompt,
    #[error("Please reduce the length of the messages or completion. The prompt has {prompt} tokens but the context window of this model is {context} tokens.")]
    ContextLengthExceeded { prompt: usize, context: u32 },
    #[error("Please reduce the length of the messages or completion. The prompt's {bytes} bytes are at least {at_least} tokens but the context window of this model is {context} tokens.")]
    PromptTooLong {
        bytes: usize,
        at_least: usize,
        context: u32,
    },
    #[error("`response_format.json_schema.name` must match [a-zA-Z0-9_-]{{1,64}}, got '{0}'")]
    SchemaName(String),
    #[error("`response_format.json_schema.schema` must be a JSON Schema object")]
    SchemaNotObject,
    #[error("`response_format.json_schema.schema` is required")]
    SchemaMissing,
    #[error("`response_format.json_schema.schema`: {0}")]
    SchemaStrict(StrictError),
    #[error("`response_format`: {0}")]
    SchemaGrammar(GrammarError),
    #[error("`response_format` json_object / json_schema cannot be combined with tool calls; set `tool_choice` to 'none' or drop `response_format`")]
    FormatWithTools,
    #[error("`tools` may contain at most {MAX_TOOLS} tools, got {0}")]
    TooManyTools(usize),
    #[error("`tools[{index}].type`: tool type '{kind}' is not supported with this model; only 'function' tools are")]
    ToolType { index: usize, kind: String },
    #[error("`tools[{0}].function` is required")]
    ToolFunctionMissing(usize),
    #[error("`tools[{index}].function.name` must match [a-zA-Z0-9_-]{{1,64}}, got '{name}'")]
    ToolName { index: usize, name: String },
    #[error("`tools[{index}].function.name`: duplicate tool name '{name}'")]
    DuplicateTool { index: usize, name: String },
    #[error("`tools[{0}].function.parameters` must be a JSON Schema of an object (`\"type\": \"object\"`)")]
    ToolParametersNotObject(usize),
    #[error("`tools[{index}].function.parameters`: {error}")]
    ToolStrict { index: usize, error: StrictError },
    #[error("`tools[{index}].function.parameters` is not a valid JSON Schema: {error}")]
    ToolSchema { index: usize, error: String },
    #[error("`tools`: {0}")]
    ToolGrammar(GrammarError),
    #[error("`tool_choice` must be one of none, auto, required or a named function, got '{0}'")]
    ToolChoiceMode(String),
    #[error("`tool_choice.type` must be 'function', got '{0}'")]
    ToolChoiceType(String),
    #[error("`tool_choice` cannot name a function when `disable_tool_validation` is set")]
    ToolChoiceUnchecked,
    #[error("`tool_choice` names the function '{0}', which is not in `tools`")]
    ToolChoiceUnknown(String),
    #[error("`tool_choice` is 'required' but the request has no `tools`")]
    ToolChoiceRequiredWithoutTools,
    #[error("`reasoning_format` and `include_reasoning` cannot both be set")]
    FormatWithInclude,
    #[error("`reasoning_format` 'raw' is not supported with JSON mode or tool calls; use 'parsed' or 'hidden'")]
    RawWithJsonOrTools,
    #[error("`reasoning_format` must be one of hidden, raw or parsed, got '{0}'")]
    ReasoningFormat(String),
    #[error(
        "`reasoning_effort` '{got}' is not supported with this model; supported values: {allowed}"
    )]
    ReasoningEffort { got: String, allowed: &'static str },
}

impl PrepareError {
    /// The request field at fault, as a path (`tools[2].function.name`).
    pub fn param(&self) -> String {
        use PrepareError as E;
        match self {
            E::NoMessages
            | E::Template(_)
            | E::EmptyPrompt
            | E::ContextLengthExceeded { .. }
            | E::PromptTooLong { .. } => "messages".into(),
            E::N(_) => "n".into(),
            E::OutOfRange { param, .. }
            | E::MaxTokensTooSmall { param, .. }
            | E::MaxTokensTooLarge { param, .. } => (*param).into(),
            E::TooManyStops(_) | E::StopTooLong(_) => "stop".into(),
            E::TopLogprobs(_) | E::TopLogprobsWithoutLogprobs => "top_logprobs".into(),
            E::LogitBiasKey(_) | E::LogitBiasValue { .. } | E::TooManyLogitBias(_) => {
                "logit_bias".into()
            }
            E::ServiceTier(_) => "service_tier".into(),
            E::Unsupported { feature, at } => at.clone().unwrap_or_else(|| (*feature).into()),
            E::EmptyContent(i) => format!("messages[{i}].content"),
            E::TooManyImages(_) | E::ImagesMissing { .. } | E::ImagesDropped(_) => {
                "messages".into()
            }
            E::Image { message, part, .. } => format!("messages[{message}].content[{part}]"),
            E::HistoryArguments { index, .. } => format!("messages[{index}].tool_calls"),
            E::SchemaName(_) => "response_format.json_schema.name".into(),
            E::SchemaNotObject | E::SchemaMissing | E::SchemaStrict(_) => {
                "response_format.json_schema.schema".into()
            }
            E::SchemaGrammar(_) | E::FormatWithTools => "response_format".into(),
            E::TooManyTools(_) | E::ToolGrammar(_) => "tools".into(),
            E::ToolType { index, .. } => format!("tools[{index}].type"),
            E::ToolFunctionMissing(i) => format!("tools[{i}].function"),
            E::ToolName { index, .. } | E::DuplicateTool { index, .. } => {
                format!("tools[{index}].function.name")
            }
            E::ToolParametersNotObject(index)
            | E::ToolStrict { index, .. }
            | E::ToolSchema { index, .. } => format!("tools[{index}].function.parameters"),
            E::ToolChoiceMode(_)
            | E::ToolChoiceType(_)
            | E::ToolChoiceUnchecked
            | E::ToolChoiceUnknown(_)
            | E::ToolChoiceRequiredWithoutTools => "tool_choice".into(),
            E::FormatWithInclude | E::RawWithJsonOrTools | E::ReasoningFormat(_) => {
                "reasoning_format".into()
            }
            E::ReasoningEffort { .. } => "reasoning_effort".into(),
        }
    }

    /// Groq's error `code`, for the refusals that have one.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            PrepareError::ContextLengthExceeded { .. } | PrepareError::PromptTooLong { .. } => {
                Some("context_length_exceeded")
            }
            _ => None,
        }
    }
}
