//! The OpenAPI 3.1 document of Peregrine's API, built from the wire types of this crate.
//!
//! [`document`] returns it as a `utoipa` value, [`json`] as pretty JSON. The operations are
//! described here, on stand-in functions (the handlers live in `peregrine-server`); the
//! schemas come from `#[derive(ToSchema)]` on the wire types, so a change to a type changes
//! the document.
//!
//! Two layers:
//! - [`contract`]: the wire types describe Groq's contract, every field the parser takes,
//!   with the ranges and enumerations of Groq's reference that the validation layer checks;
//! - [`document`] then narrows the chat request with [`peregrine_limits`] to what this server
//!   runs today (no reasoning or search parameters, text-only content, function tools only),
//!   so that a request the schema allows is one the server can run (cross-field and per-model
//!   rules aside: see [`peregrine_limits`]).
//!
//! Every 4xx/5xx answer is Groq's [`ErrorEnvelope`]; the statuses listed per operation
//! include every one the server can send for it (403 for a foreign origin or host, 408 for
//! a stalled body, 415 for a body that is not JSON, 431 for oversized headers). `/health`
//! needs no key and answers its own JSON on 503. The server serves the document at
//! `GET /openapi.json`.

use std::collections::BTreeMap;

use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::batches::{Batch, BatchList, BatchOutputLine, CreateBatchRequest};
use crate::chat::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ContentPart,
    FunctionDefinition, JsonSchemaFormat, Tool,
};
use crate::error::ErrorEnvelope;
use crate::files::{FileDeleted, FileList, FileObject};
use crate::fine_tunings::{
    CreateFineTuningRequest, FineTuningDeleted, FineTuningList, FineTuningResponse,
};
use crate::models::{Model, ModelList};
use crate::wire::schema as s;

/// The OpenAPI document of Peregrine's API: [`contract`] narrowed by [`peregrine_limits`].
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = contract();
    if let Some(components) = doc.components.as_mut() {
        peregrine_limits(&mut components.schemas);
    }
    doc
}

/// The same operations with the request schemas of Groq's contract: every field and shape
/// the request parser accepts, including those Peregrine refuses today.
pub fn contract() -> utoipa::openapi::OpenApi {
    PeregrineApi::openapi()
}

/// [`document`] as pretty-printed JSON.
pub fn json() -> String {
    document()
        .to_pretty_json()
        .expect("an OpenAPI document always serialises")
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Peregrine",
        description = "Groq Cloud's OpenAI-compatible text API (chat completions, models, \
                       files, batches), served by Peregrine. Every error answer is \
                       `{\"error\":{\"message\",\"type\",\"code\"?,\"param\"?,\"failed_generation\"?}}`.",
    ),
    servers((url = "/")),
    paths(
        chat_completions,
        list_models,
        retrieve_model,
        upload_file,
        list_files,
        retrieve_file,
        delete_file,
        file_content,
        create_batch,
        list_batches,
        retrieve_batch,
        cancel_batch,
        create_fine_tuning,
        list_fine_tunings,
        retrieve_fine_tuning,
        delete_fine_tuning,
        health,
    ),
    components(schemas(ErrorEnvelope, ChatCompletionChunk, BatchOutputLine)),
    security(("bearer" = [])),
    modifiers(&Security, &ClosedMessages),
    tags(
        (name = "chat", description = "Chat completions, whole or streamed as server-sent events."),
        (name = "models", description = "The models this server serves, aliases included."),
        (name = "files", description = "JSONL input files for batches, and their results."),
        (name = "batches", description = "Asynchronous batches of chat completions."),
        (name = "fine-tuning", description = "LoRA adapters registered over a served model (under /v1 only)."),
        (name = "health", description = "Liveness of the engines; no key needed."),
    ),
)]
struct PeregrineApi;

// --- Errors -------------------------------------------------------------------------------

/// What each error status means on this server.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => "The request is invalid (`invalid_request_error`; `param` names the field).",
        401 => "Missing or unknown API key (`invalid_api_key`).",
        403 => "A web page's origin or a `Host` name the server does not serve (`origin_not_allowed`, `host_not_allowed`).",
        404 => "No such model, file, batch or URL (`model_not_found`, `not_found`, `unknown_url`).",
        408 => "The request body stalled (`request_timeout`).",
        413 => "The body is too large (`request_too_large`).",
        415 => "The body's content type is not accepted (`unsupported_media_type`).",
        431 => "The request's headers are too large (`request_header_fields_too_large`).",
        429 => "The server is at capacity (`rate_limit_exceeded`); see `retry-after`.",
        498 => "The `flex` tier is at capacity (`capacity_exceeded`).",
        500 => "A failure of the server (`internal_server_error`).",
        503 => "The server cannot serve the request now.",
        _ => "An error.",
    }
}

/// Error answers with these statuses, each an [`ErrorEnvelope`].
fn error_responses(statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|&status| {
            let body = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorEnvelope::name())))
                .build();
            let response = ResponseBuilder::new()
                .description(error_description(status))
                .content("application/json", body)
                .build();
            (status.to_string(), response.into())
        })
        .collect()
}

/// A set of error statuses, used in an operation's `responses(...)`.
macro_rules! errors {
    ($(#[$meta:meta])* $name:ident = [$($status:literal),*]) => {
        $(#[$meta])*
        struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                error_responses(&[$($status),*])
            }
        }
    };
}

errors! {
    /// `POST /chat/completions`: validation, auth, model lookup, body size, admission, and
    /// Groq's other documented statuses.
    ChatErrors = [400, 401, 403, 404, 408, 413, 415, 429, 431, 498, 500, 503]
}
errors! {
    /// A listing that takes no parameters.
    ListErrors = [400, 401, 403, 408, 431, 500]
}
errors! {
    /// An operation on one resource named in the path.
    ItemErrors = [400, 401, 403, 404, 408, 431, 500]
}
errors! {
    /// `POST /files`: multipart upload.
    UploadErrors = [400, 401, 403, 408, 413, 415, 431, 500]
}
errors! {
    /// `POST /batches`: JSON body.
    CreateBatchErrors = [400, 401, 403, 404, 408, 413, 415, 431, 500]
}

// --- Operations (stand-ins for the handlers of peregrine-server) ---------------------------

/// Creates a chat completion.
///
/// With `"stream": true` the answer is `text/event-stream`: `data: ` lines each holding a
/// `ChatCompletionChunk` (or an `ErrorEnvelope` when generation fails midway), ending with
/// `data: [DONE]`.
#[utoipa::path(
    post,
    path = "/openai/v1/chat/completions",
    tag = "chat",
    operation_id = "createChatCompletion",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion, or its stream of chunks.", content(
            (ChatCompletion = "application/json"),
            (String = "text/event-stream"),
        )),
        ChatErrors,
    ),
)]
#[allow(dead_code)]
fn chat_completions() {}

/// Lists the models, aliases included.
#[utoipa::path(
    get,
    path = "/openai/v1/models",
    tag = "models",
    operation_id = "listModels",
    responses((status = 200, description = "The models.", body = ModelList), ListErrors),
)]
#[allow(dead_code)]
fn list_models() {}

/// One model, by id or alias.
#[utoipa::path(
    get,
    path = "/openai/v1/models/{model}",
    tag = "models",
    operation_id = "retrieveModel",
    params(("model" = String, Path, description = "A model id or alias.")),
    responses((status = 200, description = "The model.", body = Model), ItemErrors),
)]
#[allow(dead_code)]
fn retrieve_model() {}

/// The multipart form of `POST /files`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct FileUpload {
    /// At most 200 MB. `batch`: JSONL, one batch request a line, at most 50,000 lines.
    /// `fine_tuning`: a ZIP of `adapter_model.safetensors` and `adapter_config.json`.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
    /// `batch` or `fine_tuning`.
    #[schema(schema_with = purpose_schema)]
    purpose: String,
}

fn purpose_schema() -> ObjectBuilder {
    s::string_enum(&["batch", "fine_tuning"])
}

/// Uploads a batch input file or a LoRA adapter ZIP.
#[utoipa::path(
    post,
    path = "/openai/v1/files",
    tag = "files",
    operation_id = "uploadFile",
    request_body(content = FileUpload, content_type = "multipart/form-data"),
    responses((status = 200, description = "The stored file.", body = FileObject), UploadErrors),
)]
#[allow(dead_code)]
fn upload_file() {}

/// Lists the stored files, newest first.
#[utoipa::path(
    get,
    path = "/openai/v1/files",
    tag = "files",
    operation_id = "listFiles",
    responses((status = 200, description = "The files.", body = FileList), ListErrors),
)]
#[allow(dead_code)]
fn list_files() {}

/// One file's description.
#[utoipa::path(
    get,
    path = "/openai/v1/files/{file_id}",
    tag = "files",
    operation_id = "retrieveFile",
    params(("file_id" = String, Path, description = "`file_` and a ULID.")),
    responses((status = 200, description = "The file.", body = FileObject), ItemErrors),
)]
#[allow(dead_code)]
fn retrieve_file() {}

/// Deletes a file.
#[utoipa::path(
    delete,
    path = "/openai/v1/files/{file_id}",
    tag = "files",
    operation_id = "deleteFile",
    params(("file_id" = String, Path, description = "`file_` and a ULID.")),
    responses((status = 200, description = "The file is gone.", body = FileDeleted), ItemErrors),
)]
#[allow(dead_code)]
fn delete_file() {}

/// A file's bytes.
#[utoipa::path(
    get,
    path = "/openai/v1/files/{file_id}/content",
    tag = "files",
    operation_id = "downloadFile",
    params(("file_id" = String, Path, description = "`file_` and a ULID.")),
    responses(
        (status = 200, description = "The contents, as uploaded or written by a batch.",
            content(("application/octet-stream"))),
        ItemErrors,
    ),
)]
#[allow(dead_code)]
fn file_content() {}

/// Registers an uploaded LoRA adapter ZIP over a served model: converted, loaded, and
/// served as `data.fine_tuned_model` to the caller's organization.
#[utoipa::path(
    post,
    path = "/v1/fine_tunings",
    tag = "fine-tuning",
    operation_id = "createFineTuning",
    request_body = CreateFineTuningRequest,
    responses((status = 200, description = "The new fine tuning.", body = FineTuningResponse), CreateBatchErrors),
)]
#[allow(dead_code)]
fn create_fine_tuning() {}

/// Lists the organization's fine tunings, newest first.
#[utoipa::path(
    get,
    path = "/v1/fine_tunings",
    tag = "fine-tuning",
    operation_id = "listFineTunings",
    responses((status = 200, description = "The fine tunings.", body = FineTuningList), ListErrors),
)]
#[allow(dead_code)]
fn list_fine_tunings() {}

/// One fine tuning.
#[utoipa::path(
    get,
    path = "/v1/fine_tunings/{id}",
    tag = "fine-tuning",
    operation_id = "getFineTuning",
    params(("id" = String, Path, description = "`ft_` and a ULID.")),
    responses((status = 200, description = "The fine tuning.", body = FineTuningResponse), ItemErrors),
)]
#[allow(dead_code)]
fn retrieve_fine_tuning() {}

/// Deletes a fine tuning: its model is no longer served (running requests finish).
#[utoipa::path(
    delete,
    path = "/v1/fine_tunings/{id}",
    tag = "fine-tuning",
    operation_id = "deleteFineTuning",
    params(("id" = String, Path, description = "`ft_` and a ULID.")),
    responses((status = 200, description = "Deleted.", body = FineTuningDeleted), ItemErrors),
)]
#[allow(dead_code)]
fn delete_fine_tuning() {}

/// Creates a batch from an uploaded file.
#[utoipa::path(
    post,
    path = "/openai/v1/batches",
    tag = "batches",
    operation_id = "createBatch",
    request_body = CreateBatchRequest,
    responses((status = 200, description = "The new batch.", body = Batch), CreateBatchErrors),
)]
#[allow(dead_code)]
fn create_batch() {}

/// Lists batches, newest first, a page at a time (or those named by `id`).
#[utoipa::path(
    get,
    path = "/openai/v1/batches",
    tag = "batches",
    operation_id = "listBatches",
    params(
        ("cursor" = Option<String>, Query,
            description = "`paging.next_cursor` of the previous page."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100,
            description = "Batches per page (default 20)."),
        ("id" = Option<Vec<String>>, Query, explode, max_items = 200,
            description = "Only these batches (repeat the parameter); `cursor` and `limit` are then ignored."),
    ),
    responses((status = 200, description = "A page of batches.", body = BatchList), ListErrors),
)]
#[allow(dead_code)]
fn list_batches() {}

/// One batch.
#[utoipa::path(
    get,
    path = "/openai/v1/batches/{batch_id}",
    tag = "batches",
    operation_id = "retrieveBatch",
    params(("batch_id" = String, Path, description = "`batch_` and a ULID.")),
    responses((status = 200, description = "The batch.", body = Batch), ItemErrors),
)]
#[allow(dead_code)]
fn retrieve_batch() {}

/// Cancels a batch that has not finished (400 once it has).
#[utoipa::path(
    post,
    path = "/openai/v1/batches/{batch_id}/cancel",
    tag = "batches",
    operation_id = "cancelBatch",
    params(("batch_id" = String, Path, description = "`batch_` and a ULID.")),
    responses((status = 200, description = "The batch, now `cancelling`.", body = Batch), ItemErrors),
)]
#[allow(dead_code)]
fn cancel_batch() {}

/// `GET /health` (peregrine-server's `health.rs`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct Health {
    /// `ok`, or `unavailable` when an engine thread has stopped.
    #[schema(schema_with = health_status_schema)]
    status: String,
    models: Vec<ModelHealth>,
}

/// One served model's engine.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ModelHealth {
    id: String,
    /// `running` or `stopped`.
    #[schema(schema_with = engine_schema)]
    engine: String,
    /// Requests waiting for a sequence slot.
    queue_depth: u64,
}

fn health_status_schema() -> ObjectBuilder {
    s::string_enum(&["ok", "unavailable"])
}

fn engine_schema() -> ObjectBuilder {
    s::string_enum(&["running", "stopped"])
}

/// Whether every model's engine is running. No key needed.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    operation_id = "health",
    security(),
    responses(
        (status = 200, description = "Every engine runs.", body = Health),
        (status = 503, description = "An engine has stopped.", body = Health),
    ),
)]
#[allow(dead_code)]
fn health() {}

// --- Modifiers ------------------------------------------------------------------------------

/// `Authorization: Bearer <key>` (when the server is configured with keys).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `additionalProperties: false` on each arm of `ChatMessage`: the parser refuses a field the
/// role does not define, which the derive cannot say (deserialisation is hand-written).
struct ClosedMessages;

impl Modify for ClosedMessages {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let schemas = &mut openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas;
        if let Some(RefOr::T(Schema::OneOf(roles))) = schemas.get_mut(&*ChatMessage::name()) {
            for arm in &mut roles.items {
                if let RefOr::T(Schema::Object(o)) = arm {
                    o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
}

/// Request fields of Groq's API that Peregrine refuses with a 400 (`... is not supported
/// with this model`) unless they are `null` (or the given empty value). Mirrors
/// `reject_unsupported` in peregrine-runtime's `prepare/params.rs`, and its
/// `prepare/reasoning.rs` for a model without reasoning (a reasoning model accepts the
/// reasoning fields: a per-model rule the document does not express).
const REFUSED_FIELDS: &[(&str, Option<Unset>)] = &[
    ("functions", Some(Unset::EmptyArray)),
    ("function_call", None),
    ("reasoning_format", None),
    ("include_reasoning", Some(Unset::False)),
    ("reasoning_effort", None),
    ("documents", Some(Unset::EmptyArray)),
    ("compound_custom", None),
    ("search_settings", None),
    ("include_domains", None),
    ("exclude_domains", None),
];

/// A value besides `null` that leaves a refused feature off.
#[derive(Clone, Copy)]
enum Unset {
    EmptyArray,
    False,
}

/// Narrows the schemas to what Peregrine's server accepts today, where it accepts less than
/// Groq's API that the wire types describe:
/// - the fields of `REFUSED_FIELDS` may only be `null` (or their empty value);
/// - content parts are text only (`image_url` parts need a vision model, which the default
///   one is not; `document` parts are refused);
/// - `tools[]` are functions only, and `response_format.json_schema.schema` is required;
/// - `logit_bias` keys are ids below 10,000, which every model's vocabulary has, and at
///   most [`MAX_LOGIT_BIAS_ENTRIES`] of them;
///
/// Still not expressed (a request can fit the schema and get a 400): rules across fields
/// (`top_logprobs` needs `logprobs: true`; `tool_choice` `required` needs `tools` and a named
/// one must be among them; `response_format` JSON with tools needs `tool_choice: "none"`),
/// per-model limits (`max_completion_tokens` above the model's, a prompt longer than its
/// context, what its chat template accepts), and the contents of embedded JSON: tool-call
/// `arguments` in the history must be JSON, and `parameters` / `json_schema.schema` must be
/// schemas the grammar compiler takes (with `strict`, strict mode's rules).
/// The server's cap on `logit_bias` entries (the runtime's `MAX_LOGIT_BIAS`).
pub const MAX_LOGIT_BIAS_ENTRIES: usize = 300;

pub fn peregrine_limits(schemas: &mut BTreeMap<String, RefOr<Schema>>) {
    if let Some(request) = object_mut(schemas, &ChatCompletionRequest::name()) {
        if let Some(RefOr::T(Schema::Object(bias))) = request.properties.get_mut("logit_bias") {
            bias.property_names = Some(Box::new(s::string().pattern(Some("^[0-9]{1,4}$")).into()));
            bias.max_properties = Some(MAX_LOGIT_BIAS_ENTRIES);
        }
        for &(field, unset) in REFUSED_FIELDS {
            let allowed = match unset {
                None => s::null().into(),
                Some(Unset::EmptyArray) => ArrayBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
                    .max_items(Some(0))
                    .into(),
                Some(Unset::False) => ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::Boolean, Type::Null]))
                    .enum_values(Some([
                        serde_json::Value::Bool(false),
                        serde_json::Value::Null,
                    ]))
                    .into(),
            };
            let description = format!("Part of Groq's API; Peregrine refuses `{field}` today.");
            request.properties.insert(
                field.to_owned(),
                RefOr::T(with_description(allowed, description)),
            );
        }
    }
    if let Some(RefOr::T(Schema::OneOf(parts))) = schemas.get_mut(&*ContentPart::name()) {
        // Keep the `text` arm only.
        parts.items.truncate(1);
    }
    if let Some(tool) = object_mut(schemas, &Tool::name()) {
        tool.properties
            .insert("type".to_owned(), s::string_enum(&["function"]).into());
        if !tool.required.iter().any(|r| r == "function") {
            tool.required.push("function".to_owned());
        }
        tool.properties.insert(
            "function".to_owned(),
            Ref::from_schema_name(FunctionDefinition::name()).into(),
        );
    }
    if let Some(format) = object_mut(schemas, &JsonSchemaFormat::name()) {
        format.properties.insert(
            "schema".to_owned(),
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some("The JSON Schema (required by Peregrine)."))
                .into(),
        );
        format.required.push("schema".to_owned());
    }
}

fn object_mut<'a>(
    schemas: &'a mut BTreeMap<String, RefOr<Schema>>,
    name: &str,
) -> Option<&'a mut utoipa::openapi::schema::Object> {
    match schemas.get_mut(name) {
        Some(RefOr::T(Schema::Object(o))) => Some(o),
        _ => None,
    }
}

fn with_description(schema: Schema, description: String) -> Schema {
    match schema {
        Schema::Object(mut o) => {
            o.description = Some(description);
            Schema::Object(o)
        }
        Schema::Array(mut a) => {
            a.description = Some(description);
            Schema::Array(a)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::{json, Value};

    use super::*;
    use crate::batches::{BatchError, BatchErrors, Paging, RequestCounts};
    use crate::chat::{
        AssistantMessage, AssistantRole, ChatCompletionChunkObject, ChatCompletionObject, Choice,
        ChoiceLogprobs, ChunkChoice, CompletionTokensDetails, Delta, FunctionCall,
        FunctionCallDelta, PromptTokensDetails, TokenLogprob, ToolCall, ToolCallDelta, TopLogprob,
        Usage, XGroq,
    };
    use crate::error::ErrorObject;
    use crate::models::ModelObject;

    /// Every operation: (path, method).
    const OPERATIONS: &[(&str, &str)] = &[
        ("/openai/v1/chat/completions", "post"),
        ("/openai/v1/models", "get"),
        ("/openai/v1/models/{model}", "get"),
        ("/openai/v1/files", "post"),
        ("/openai/v1/files", "get"),
        ("/openai/v1/files/{file_id}", "get"),
        ("/openai/v1/files/{file_id}", "delete"),
        ("/openai/v1/files/{file_id}/content", "get"),
        ("/openai/v1/batches", "post"),
        ("/openai/v1/batches", "get"),
        ("/openai/v1/batches/{batch_id}", "get"),
        ("/openai/v1/batches/{batch_id}/cancel", "post"),
        ("/v1/fine_tunings", "post"),
        ("/v1/fine_tunings", "get"),
        ("/v1/fine_tunings/{id}", "get"),
        ("/v1/fine_tunings/{id}", "delete"),
        ("/health", "get"),
    ];

    fn doc_json() -> Value {
        serde_json::from_str(&json()).expect("the document is JSON")
    }

    /// A validator for the component schema `name` of `doc`, its `$ref`s resolved inside
    /// the embedded components.
    fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "no component {name}"
        );
        let schema = json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": doc["components"],
        });
        jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Asserts `value` (as serialised) is valid against component `name` of [`document`].
    fn assert_conforms(name: &str, value: &impl Serialize) {
        let instance = serde_json::to_value(value).unwrap();
        assert_valid(&doc_json(), name, &instance);
    }

    fn assert_valid(doc: &Value, name: &str, instance: &Value) {
        let v = validator(doc, name);
        let errors: Vec<String> = v
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {instance}\n{errors:#?}");
    }

    fn assert_invalid(doc: &Value, name: &str, instance: &Value) {
        assert!(
            !validator(doc, name).is_valid(instance),
            "{name} should refuse {instance}"
        );
    }

    #[test]
    fn document_serialises_with_every_operation() {
        let doc = doc_json();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "Peregrine");
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in OPERATIONS {
            assert!(
                paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} is missing"
            );
        }
        let count: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(count, OPERATIONS.len(), "an operation not in the list");
        // Operation ids are unique.
        let mut ids: Vec<&str> = paths
            .values()
            .flat_map(|p| p.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), OPERATIONS.len());
    }

    #[test]
    fn bearer_everywhere_but_health() {
        let doc = doc_json();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"],
            json!({"type": "http", "scheme": "bearer"})
        );
        assert_eq!(doc["security"], json!([{"bearer": []}]));
        assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([]));
        for (path, method) in OPERATIONS.iter().filter(|(p, _)| *p != "/health") {
            assert!(
                doc["paths"][path][method].get("security").is_none(),
                "{method} {path} overrides the global security"
            );
        }
    }

    #[test]
    fn every_error_answer_is_the_envelope() {
        let doc = doc_json();
        for (path, method) in OPERATIONS.iter().filter(|(p, _)| *p != "/health") {
            let responses = doc["paths"][path][method]["responses"].as_object().unwrap();
            assert!(responses.contains_key("200"), "{method} {path}");
            for status in ["400", "401", "500"] {
                assert!(responses.contains_key(status), "{method} {path} {status}");
            }
            for (status, response) in responses.iter().filter(|(s, _)| *s != "200") {
                assert_eq!(
                    response["content"],
                    json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}),
                    "{method} {path} {status}"
                );
            }
        }
        let chat = &doc["paths"]["/openai/v1/chat/completions"]["post"]["responses"];
        let statuses: Vec<&String> = chat.as_object().unwrap().keys().collect();
        assert_eq!(
            statuses,
            [
                "200", "400", "401", "403", "404", "408", "413", "415", "429", "431", "498", "500",
                "503"
            ]
        );
        let ok = &chat["200"]["content"];
        assert_eq!(
            ok["application/json"]["schema"]["$ref"],
            "#/components/schemas/ChatCompletion"
        );
        assert_eq!(ok["text/event-stream"]["schema"]["type"], "string");
        let health = &doc["paths"]["/health"]["get"]["responses"];
        assert_eq!(
            health["503"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Health"
        );
    }

    #[test]
    fn request_bodies_and_parameters() {
        let doc = doc_json();
        let body = |path: &str| doc["paths"][path]["post"]["requestBody"].clone();
        assert_eq!(
            body("/openai/v1/chat/completions")["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ChatCompletionRequest"
        );
        assert_eq!(
            body("/openai/v1/batches")["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/CreateBatchRequest"
        );
        let upload = &doc["components"]["schemas"]["FileUpload"];
        assert_eq!(
            body("/openai/v1/files")["content"]["multipart/form-data"]["schema"]["$ref"],
            "#/components/schemas/FileUpload"
        );
        assert_eq!(upload["required"], json!(["file", "purpose"]));
        assert_eq!(upload["properties"]["file"]["format"], "binary");

        let params = doc["paths"]["/openai/v1/batches"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["cursor", "limit", "id"]);
        assert!(params
            .iter()
            .all(|p| p["in"] == "query" && p["required"] == false));
        for (path, method) in OPERATIONS.iter().filter(|(p, _)| p.ends_with('}')) {
            let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
            assert_eq!(params[0]["in"], "path", "{path}");
            assert_eq!(params[0]["required"], true, "{path}");
        }
    }

    #[test]
    fn chat_request_schema() {
        let doc = doc_json();
        let request = &doc["components"]["schemas"]["ChatCompletionRequest"];
        assert_eq!(request["required"], json!(["messages", "model"]));
        assert_eq!(request["additionalProperties"], false);
        assert_eq!(request["properties"]["messages"]["minItems"], 1);
        let props = request["properties"].as_object().unwrap();
        let keys: Vec<&str> = props.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            crate::chat::REQUEST_FIELDS,
            "one property per request field"
        );

        let ok = json!({
            "model": "llama-3.1-8b-instant",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}], "name": null},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "content": "22C", "tool_call_id": "call_1"}
            ],
            "temperature": 0.2, "top_p": 1, "max_completion_tokens": 64, "stop": ["\n\n"], "seed": 7,
            "stream": false, "stream_options": null, "n": 1,
            "response_format": {"type": "text"},
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "auto", "parallel_tool_calls": true, "functions": [],
            "include_reasoning": false, "service_tier": "on_demand", "user": "u1",
            "logit_bias": {"15": -100}, "logprobs": true, "top_logprobs": 2,
            "metadata": {"k": "v"}, "store": false, "citation_options": null, "reasoning_effort": null
        });
        assert_valid(&doc, "ChatCompletionRequest", &ok);
        crate::parse::parse_chat_request(ok.to_string().as_bytes()).unwrap();

        let with = |field: &str, value: Value| {
            let mut v = ok.clone();
            v[field] = value;
            v
        };
        let without = |field: &str| {
            let mut v = ok.clone();
            v.as_object_mut().unwrap().remove(field);
            v
        };
        let refused = [
            without("model"),
            without("messages"),
            with("messages", json!([])),
            with("temperature", json!(2.5)),
            with("top_p", json!(-0.1)),
            with("n", json!(2)),
            with("max_completion_tokens", json!(0)),
            with("top_logprobs", json!(21)),
            with("stop", json!(["a", "b", "c", "d", "e"])),
            with("tool_choice", json!("sometimes")),
            with("service_tier", json!("gold")),
            with("response_format", json!({"type": "yaml"})),
            with("stream_options", json!({"include_usage": true, "x": 1})),
            with("frobnicate", json!(1)),
            with(
                "messages",
                json!([{"role": "user", "content": "hi", "tool_call_id": "c"}]),
            ),
            with("messages", json!([{"role": "user", "content": 5}])),
            with("messages", json!([{"role": "user", "content": []}])),
            with("messages", json!([{"role": "tool", "content": "x"}])),
            with("messages", json!([{"role": "robot", "content": "x"}])),
            // Groq's API, refused by Peregrine today.
            with("reasoning_effort", json!("low")),
            with("include_reasoning", json!(true)),
            with("search_settings", json!({})),
            with(
                "messages",
                json!([{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]),
            ),
            with("tools", json!([{"type": "browser_search"}])),
            with(
                "response_format",
                json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            ),
        ];
        for body in &refused {
            assert_invalid(&doc, "ChatCompletionRequest", body);
        }
    }

    /// The contract's request schema accepts what the parser accepts (Groq's every field),
    /// and refuses the shapes it refuses.
    #[test]
    fn contract_request_schema_matches_the_parser() {
        let contract = serde_json::to_value(contract()).unwrap();
        let full = crate::chat::full_request();
        assert_valid(&contract, "ChatCompletionRequest", &full);
        assert_invalid(&doc_json(), "ChatCompletionRequest", &full);

        let accepted = [
            json!({"model": "m", "messages": [{"role": "developer", "content": "d", "name": "n"}]}),
            json!({"model": "m", "messages": [{"role": "assistant"}]}),
            json!({"model": "m", "messages": [{"role": "function", "content": null, "name": "f"}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
                {"type": "document", "document": {"id": "d"}}]}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": "\n",
                   "tool_choice": {"type": "function", "function": {"name": "f"}},
                   "function_call": {"name": "f"}, "response_format": {"type": "json_object"},
                   "tools": [{"type": "mcp", "server_label": "deepwiki"}]}),
        ];
        for body in &accepted {
            crate::parse::parse_chat_request(body.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_valid(&contract, "ChatCompletionRequest", body);
        }
        let refused = [
            json!({"model": "m", "messages": [{"role": "user", "content": "hi", "foo": 1}]}),
            json!({"model": "m", "messages": [{"role": "user"}]}),
            json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": []}]}),
            json!({"model": "m", "messages": [], "tools": [{"function": {"name": "f"}}]}),
            json!({"model": "m", "messages": [], "seed": 1.5}),
            json!({"model": 5, "messages": []}),
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}),
        ];
        for body in &refused {
            assert!(crate::parse::parse_chat_request(body.to_string().as_bytes()).is_err());
            assert_invalid(&contract, "ChatCompletionRequest", body);
        }
    }

    fn usage() -> Usage {
        Usage {
            queue_time: 0.012,
            prompt_tokens: 40,
            prompt_time: 0.002,
            completion_tokens: 12,
            completion_time: 0.05,
            total_tokens: 52,
            total_time: 0.052,
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: 32 }),
            completion_tokens_details: None,
        }
    }

    #[test]
    fn chat_completions_conform() {
        let text = ChatCompletion {
            id: "chatcmpl-3f1c2a4e-9f5b-4a63-8d2e-2b8a7c0e1d11".into(),
            object: ChatCompletionObject,
            created: 1_767_225_600,
            model: "llama-3.1-8b-instant".into(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: AssistantRole,
                    content: Some("Paris.".into()),
                    reasoning: None,
                    tool_calls: None,
                    executed_tools: None,
                },
                logprobs: None,
                finish_reason: "stop".into(),
            }],
            usage: Usage::default(),
            usage_breakdown: None,
            system_fingerprint: "fp_0123456789".into(),
            x_groq: XGroq {
                seed: Some(1_234_567),
                ..XGroq::new("req_01jh0000000000000000000000")
            },
            service_tier: Some("on_demand".into()),
        };
        assert_conforms("ChatCompletion", &text);

        let tools = ChatCompletion {
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    content: None,
                    reasoning: Some("The user wants the weather.".into()),
                    tool_calls: Some(vec![ToolCall {
                        id: "call_abcdefghijklmnopqrstuvwx".into(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: "get_weather".into(),
                            arguments: r#"{"city":"Paris"}"#.into(),
                        },
                    }]),
                    ..AssistantMessage::default()
                },
                logprobs: Some(ChoiceLogprobs {
                    content: vec![TokenLogprob {
                        token: "{".into(),
                        logprob: 0.0,
                        bytes: Some(b"{".to_vec()),
                        top_logprobs: vec![
                            TopLogprob {
                                token: "{".into(),
                                logprob: -0.01,
                                bytes: Some(b"{".to_vec()),
                            },
                            // Minus infinity serialises as `null`.
                            TopLogprob {
                                token: String::new(),
                                logprob: f64::NEG_INFINITY,
                                bytes: None,
                            },
                        ],
                    }],
                }),
                finish_reason: "tool_calls".into(),
            }],
            usage: Usage {
                completion_tokens_details: Some(CompletionTokensDetails {
                    reasoning_tokens: 6,
                }),
                ..usage()
            },
            service_tier: None,
            ..text.clone()
        };
        let value = serde_json::to_value(&tools).unwrap();
        assert!(
            value["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["logprob"].is_null()
        );
        assert_conforms("ChatCompletion", &tools);

        let doc = doc_json();
        let mut broken = serde_json::to_value(&text).unwrap();
        broken["object"] = json!("chat.completion.chunk");
        assert_invalid(&doc, "ChatCompletion", &broken);
        broken.as_object_mut().unwrap().remove("object");
        assert_invalid(&doc, "ChatCompletion", &broken);
        let mut broken = serde_json::to_value(&text).unwrap();
        broken["choices"][0]["finish_reason"] = json!("bored");
        assert_invalid(&doc, "ChatCompletion", &broken);
    }

    #[test]
    fn stream_chunks_conform() {
        let chunk = |choices: Vec<ChunkChoice>| ChatCompletionChunk {
            id: "chatcmpl-3f1c2a4e-9f5b-4a63-8d2e-2b8a7c0e1d11".into(),
            object: ChatCompletionChunkObject,
            created: 1_767_225_600,
            model: "llama-3.1-8b-instant".into(),
            system_fingerprint: "fp_0123456789".into(),
            choices,
            x_groq: None,
            usage: None,
            service_tier: None,
        };
        let first = ChatCompletionChunk {
            x_groq: Some(XGroq {
                seed: Some(7),
                ..XGroq::new("req_01jh0000000000000000000000")
            }),
            ..chunk(vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    role: Some(AssistantRole),
                    content: Some(String::new()),
                    ..Delta::default()
                },
                logprobs: None,
                finish_reason: None,
            }])
        };
        let call = chunk(vec![ChunkChoice {
            delta: Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    id: Some("call_1".into()),
                    kind: Some("function".into()),
                    function: Some(FunctionCallDelta {
                        name: Some("get_weather".into()),
                        arguments: Some("{}".into()),
                    }),
                    index: 0,
                }]),
                ..Delta::default()
            },
            ..ChunkChoice::default()
        }]);
        let finish = ChatCompletionChunk {
            x_groq: Some(XGroq {
                usage: Some(usage()),
                ..XGroq::new("req_01jh0000000000000000000000")
            }),
            usage: Some(usage()),
            ..chunk(vec![ChunkChoice {
                finish_reason: Some("length".into()),
                ..ChunkChoice::default()
            }])
        };
        let usage_only = ChatCompletionChunk {
            usage: Some(usage()),
            service_tier: Some("on_demand".into()),
            ..chunk(Vec::new())
        };
        let failed = ChatCompletionChunk {
            x_groq: Some(XGroq {
                error: Some("over_capacity".into()),
                ..XGroq::new("req_01jh0000000000000000000000")
            }),
            ..chunk(Vec::new())
        };
        for c in [first, call, finish, usage_only, failed] {
            assert_conforms("ChatCompletionChunk", &c);
        }
    }

    #[test]
    fn error_envelopes_conform() {
        let envelopes = [
            ErrorObject::invalid_request("Invalid API Key").with_code("invalid_api_key"),
            ErrorObject::invalid_request("property 'foo' is unsupported"),
            ErrorObject::invalid_request("`n` must be 1, got 2").with_param("n"),
            ErrorObject::invalid_request("Tool choice is required, but model did not call a tool")
                .with_code("tool_use_failed")
                .with_failed_generation(""),
            ErrorObject::new("requests", "Rate limit reached").with_code("rate_limit_exceeded"),
            ErrorObject::new(
                "internal_server_error",
                "The server had an error while processing your request. Please try again.",
            ),
        ];
        for e in envelopes {
            assert_conforms("ErrorEnvelope", &ErrorEnvelope::from(e));
        }
        let doc = doc_json();
        assert_valid(
            &doc,
            "ErrorEnvelope",
            &json!({"error": {"message": "m", "type": "t", "code": null}}),
        );
        assert_invalid(&doc, "ErrorEnvelope", &json!({"error": {"message": "m"}}));
        assert_invalid(&doc, "ErrorEnvelope", &json!({"message": "m", "type": "t"}));
    }

    #[test]
    fn models_conform() {
        // Groq's live entry, verbatim (models.rs).
        let live: Model = serde_json::from_str(r#"{"id":"allam-2-7b","object":"model","created":1737672203,"owned_by":"SDAIA","active":true,"context_window":4096,"public_apps":null,"max_completion_tokens":4096,"name":"ALLaM-2-7b","input_modalities":["text"],"output_modalities":["text"],"supported_features":["json_mode"]}"#).unwrap();
        let alias = Model {
            id: "llama3".into(),
            object: ModelObject,
            created: 1_767_225_600,
            owned_by: "Meta".into(),
            active: true,
            context_window: 8192,
            public_apps: None,
            max_completion_tokens: 8192,
            name: Some("Llama 3.1 8B (alias of llama-3.1-8b-instant)".into()),
            input_modalities: vec!["text".into()],
            output_modalities: vec!["text".into()],
            supported_features: vec!["tools".into(), "json_mode".into()],
            alias_of: Some("llama-3.1-8b-instant".into()),
        };
        assert_conforms("Model", &live);
        assert_conforms("Model", &alias);
        assert_conforms("ModelList", &ModelList::new(vec![live, alias]));
        assert_conforms("ModelList", &ModelList::default());
    }

    fn file() -> FileObject {
        serde_json::from_value(json!({
            "id": "file_01jh5kq3v2m8c9d0e1f2g3h4j5",
            "object": "file",
            "bytes": 1234,
            "created_at": 1_767_225_600,
            "filename": "batch.jsonl",
            "purpose": "batch"
        }))
        .unwrap()
    }

    #[test]
    fn files_conform() {
        assert_conforms("FileObject", &file());
        assert_conforms(
            "FileList",
            &FileList {
                data: vec![file()],
                ..FileList::default()
            },
        );
        assert_conforms(
            "FileDeleted",
            &FileDeleted {
                id: file().id,
                object: Default::default(),
                deleted: true,
            },
        );
        let mut wrong = serde_json::to_value(file()).unwrap();
        wrong["object"] = json!("batch");
        assert_invalid(&doc_json(), "FileObject", &wrong);
    }

    fn batch() -> Batch {
        serde_json::from_value(json!({
            "id": "batch_01jh5kq3v2m8c9d0e1f2g3h4j5",
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": null,
            "input_file_id": "file_01jh5kq3v2m8c9d0e1f2g3h4j5",
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": null,
            "error_file_id": null,
            "created_at": 1_767_225_600,
            "in_progress_at": null,
            "expires_at": 1_767_312_000,
            "finalizing_at": null,
            "completed_at": null,
            "failed_at": null,
            "expired_at": null,
            "cancelling_at": null,
            "cancelled_at": null,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": null
        }))
        .unwrap()
    }

    #[test]
    fn batches_conform() {
        assert_conforms("Batch", &batch());
        let failed = Batch {
            status: "failed".into(),
            failed_at: Some(1_767_225_700),
            errors: Some(BatchErrors {
                data: vec![BatchError {
                    code: "invalid_request".into(),
                    message: "`custom_id` is required".into(),
                    param: Some("custom_id".into()),
                    line: Some(3),
                }],
                ..BatchErrors::default()
            }),
            metadata: Some(json!({"job": "nightly"})),
            ..batch()
        };
        assert_conforms("Batch", &failed);
        let done = Batch {
            status: "completed".into(),
            output_file_id: Some("file_01jh5kq3v2m8c9d0e1f2g3h4j6".into()),
            in_progress_at: Some(1_767_225_610),
            finalizing_at: Some(1_767_225_700),
            completed_at: Some(1_767_225_701),
            request_counts: RequestCounts {
                total: 2,
                completed: 2,
                failed: 0,
            },
            ..batch()
        };
        assert_conforms("Batch", &done);
        assert_conforms(
            "BatchList",
            &BatchList {
                data: vec![batch(), failed, done],
                paging: Paging {
                    next_cursor: Some("cursor_eyJpZCI6ImJhdGNoXzEifQ".into()),
                },
                ..BatchList::default()
            },
        );
        assert_conforms("BatchList", &BatchList::default());

        let line: BatchOutputLine = serde_json::from_value(json!({
            "id": "batch_req_out_01jh5kq3v2m8c9d0e1f2g3h4j5",
            "custom_id": "request-1",
            "response": {"status_code": 404, "request_id": "req_01jh",
                         "body": {"error": {"message": "no", "type": "invalid_request_error"}}},
            "error": null
        }))
        .unwrap();
        assert_conforms("BatchOutputLine", &line);

        let doc = doc_json();
        let mut wrong = serde_json::to_value(batch()).unwrap();
        wrong["status"] = json!("sleeping");
        assert_invalid(&doc, "Batch", &wrong);
        wrong = serde_json::to_value(batch()).unwrap();
        wrong.as_object_mut().unwrap().remove("completed_at");
        assert_invalid(&doc, "Batch", &wrong);
    }

    #[test]
    fn create_batch_request_schema() {
        let doc = doc_json();
        let ok = json!({
            "input_file_id": "file_01jh5kq3v2m8c9d0e1f2g3h4j5",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"job": "nightly"}
        });
        assert_valid(&doc, "CreateBatchRequest", &ok);
        for window in ["48h", "168h", "1d", "7d"] {
            let mut v = ok.clone();
            v["completion_window"] = json!(window);
            assert_valid(&doc, "CreateBatchRequest", &v);
        }
        for window in ["23h", "169h", "8d", "0d", "1w", "24"] {
            let mut v = ok.clone();
            v["completion_window"] = json!(window);
            assert_invalid(&doc, "CreateBatchRequest", &v);
        }
        let mut v = ok.clone();
        v["endpoint"] = json!("/v1/embeddings");
        assert_invalid(&doc, "CreateBatchRequest", &v);
        v = ok.clone();
        v["metadata"] = json!({"n": 1});
        assert_invalid(&doc, "CreateBatchRequest", &v);
        v = ok;
        v.as_object_mut().unwrap().remove("input_file_id");
        assert_invalid(&doc, "CreateBatchRequest", &v);
    }

    #[test]
    fn health_conforms() {
        let doc = doc_json();
        assert_valid(
            &doc,
            "Health",
            &json!({"status": "ok", "models": [{"id": "m", "engine": "running", "queue_depth": 0}]}),
        );
        assert_invalid(&doc, "Health", &json!({"status": "fine", "models": []}));
    }
}
