//! `GET /openai/v1/models` and `GET /openai/v1/models/{model}` (docs/wire-contract.md, "Models API").

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::wire::const_str;

const_str! {
    /// `"object":"model"`.
    ModelObject = "model"
}

const_str! {
    /// `"object":"list"`.
    ListObject = "list"
}

/// One model, in the key order of Groq's live list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Model {
    /// The id clients put in `model`.
    pub id: String,
    /// Always `"model"`.
    pub object: ModelObject,
    /// Unix time in seconds.
    pub created: i64,
    /// Who publishes the model (`"Meta"`, `"OpenAI"`, ...).
    pub owned_by: String,
    /// Whether it can be used now.
    pub active: bool,
    /// Context length in tokens.
    pub context_window: u64,
    /// Always written, `null` in every known response.
    #[serde(default)]
    #[schema(required = true)]
    pub public_apps: Option<Value>,
    /// Largest completion the model may produce, in tokens.
    pub max_completion_tokens: u64,
    /// Display name; left out when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `"text"`, `"image"`, `"audio"`.
    #[serde(default)]
    #[schema(required = true)]
    pub input_modalities: Vec<String>,
    /// `"text"`, `"transcription"`, `"speech"`.
    #[serde(default)]
    #[schema(required = true)]
    pub output_modalities: Vec<String>,
    /// `"tools"`, `"json_mode"`, `"structured_outputs"`, `"reasoning"`.
    #[serde(default)]
    #[schema(required = true)]
    pub supported_features: Vec<String>,
    /// Peregrine extension: on an alias entry, the id of the model it resolves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<String>,
}

/// `{"object":"list","data":[...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Always `"list"`.
    pub object: ListObject,
    /// The models.
    pub data: Vec<Model>,
}

impl ModelList {
    /// A list of these models.
    pub fn new(data: Vec<Model>) -> Self {
        Self {
            object: ListObject,
            data,
        }
    }
}

/// Answer to `DELETE /openai/v1/models/{model}`: `{"id","deleted","object"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelDeleted {
    /// The model id.
    pub id: String,
    /// Whether it was deleted.
    pub deleted: bool,
    /// The object type (`"model"`).
    pub object: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_model_entry() {
        // Spec §6, live 2026 list entry, verbatim.
        let live = r#"{"id":"allam-2-7b","object":"model","created":1737672203,"owned_by":"SDAIA","active":true,"context_window":4096,"public_apps":null,"max_completion_tokens":4096,"name":"ALLaM-2-7b","input_modalities":["text"],"output_modalities":["text"],"supported_features":["json_mode"]}"#;
        let model = Model {
            id: "allam-2-7b".into(),
            object: ModelObject,
            created: 1737672203,
            owned_by: "SDAIA".into(),
            active: true,
            context_window: 4096,
            public_apps: None,
            max_completion_tokens: 4096,
            name: Some("ALLaM-2-7b".into()),
            input_modalities: vec!["text".into()],
            output_modalities: vec!["text".into()],
            supported_features: vec!["json_mode".into()],
            alias_of: None,
        };
        assert_eq!(serde_json::to_string(&model).unwrap(), live);
        assert_eq!(serde_json::from_str::<Model>(live).unwrap(), model);

        let list = ModelList::new(vec![model]);
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            format!(r#"{{"object":"list","data":[{live}]}}"#)
        );
    }

    #[test]
    fn entry_without_optional_keys_parses() {
        // Spec §6, live whisper entry: no public_apps, no supported_features.
        let live = r#"{"id":"whisper-large-v3","object":"model","created":1693721698,"owned_by":"OpenAI","active":true,"context_window":448,"max_completion_tokens":448,"name":"Whisper","input_modalities":["audio"],"output_modalities":["transcription"]}"#;
        let model: Model = serde_json::from_str(live).unwrap();
        assert!(model.public_apps.is_none());
        assert!(model.supported_features.is_empty());
    }
}
