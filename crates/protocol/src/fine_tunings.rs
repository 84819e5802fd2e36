//! The fine-tuning API's objects (Groq's `/v1/fine_tunings`, no `/openai` prefix): register
//! an uploaded LoRA adapter ZIP over a base model, list, retrieve, delete. Keys in Groq's
//! order.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::models::ListObject;
use crate::wire::const_str;

const_str! {
    /// `"object":"fine_tuning"`.
    FineTuningObjectKind = "fine_tuning"
}

/// `POST /v1/fine_tunings`. Fields are loose JSON so a wrong type is a 400 naming the field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFineTuningRequest {
    /// A file uploaded with purpose `fine_tuning`: a ZIP of `adapter_model.safetensors` and
    /// `adapter_config.json`.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    pub input_file_id: Option<Value>,
    /// The adapter's name: letters, digits, `-`, `_` and `.`, at most 64 characters.
    #[serde(default)]
    #[schema(value_type = String, required = true, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: Option<Value>,
    /// `lora`.
    #[serde(default, rename = "type")]
    #[schema(value_type = String, required = true, pattern = "^lora$")]
    pub kind: Option<Value>,
    /// A served model (or one of its aliases) the adapter was trained on.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    pub base_model: Option<Value>,
}

/// A registered fine tuning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FineTuning {
    /// `ft_` + a lower-case ULID.
    pub id: String,
    pub name: String,
    pub base_model: String,
    /// `lora`.
    #[serde(rename = "type")]
    pub kind: String,
    pub input_file_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The model id to pass to chat completions: `ft:<base>:<org>/<name>-<hex>`.
    pub fine_tuned_model: String,
}

/// `POST /v1/fine_tunings` and `GET /v1/fine_tunings/{id}`: the object inside `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FineTuningResponse {
    pub id: String,
    /// Always `"fine_tuning"`.
    pub object: FineTuningObjectKind,
    pub data: FineTuning,
}

/// `GET /v1/fine_tunings`: `{"object":"list","data":[...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FineTuningList {
    pub object: ListObject,
    pub data: Vec<FineTuning>,
}

/// `DELETE /v1/fine_tunings/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FineTuningDeleted {
    pub id: String,
    /// Always `"fine_tuning"`.
    pub object: FineTuningObjectKind,
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_have_groqs_shape() {
        let ft = FineTuning {
            id: "ft_01".into(),
            name: "my-lora-adapter".into(),
            base_model: "llama-3.1-8b-instant".into(),
            kind: "lora".into(),
            input_file_id: "file_01".into(),
            created_at: 1749854594,
            fine_tuned_model: "ft:llama-3.1-8b-instant:org_1/my-lora-adapter-ef36419a0010".into(),
        };
        let one = FineTuningResponse {
            id: ft.id.clone(),
            object: FineTuningObjectKind,
            data: ft,
        };
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            r#"{"id":"ft_01","object":"fine_tuning","data":{"id":"ft_01","name":"my-lora-adapter","base_model":"llama-3.1-8b-instant","type":"lora","input_file_id":"file_01","created_at":1749854594,"fine_tuned_model":"ft:llama-3.1-8b-instant:org_1/my-lora-adapter-ef36419a0010"}}"#
        );
        let gone = FineTuningDeleted {
            id: "ft_01".into(),
            object: FineTuningObjectKind,
            deleted: true,
        };
        assert_eq!(
            serde_json::to_string(&gone).unwrap(),
            r#"{"id":"ft_01","object":"fine_tuning","deleted":true}"#
        );
    }

    #[test]
    fn unknown_request_fields_are_refused() {
        let e =
            serde_json::from_str::<CreateFineTuningRequest>(r#"{"input_file_id":"f","epochs":3}"#)
                .unwrap_err();
        assert!(e.to_string().contains("unknown field `epochs`"), "{e}");
    }
}
