//! `wolfram_alpha`: Wolfram|Alpha's LLM API (`GET https://www.wolframalpha.com/api/v1/llm-api
//! ?input=...&appid=...`, plain text answers), called with the client's own AppID from
//! `compound_custom.tools.wolfram_settings.authorization`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::tool::{BuiltinTool, ToolFunction, ToolId, ToolRun};

/// Wolfram|Alpha's LLM API.
pub const WOLFRAM_ENDPOINT: &str = "https://www.wolframalpha.com/api/v1/llm-api";

/// The `wolfram` function for one request (its AppID).
pub struct WolframTool {
    endpoint: String,
    app_id: String,
}

impl WolframTool {
    pub fn new(endpoint: String, app_id: String) -> Self {
        WolframTool { endpoint, app_id }
    }

    async fn ask(&self, input: &str) -> Result<String, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .get(&self.endpoint)
            .query(&[("input", input), ("appid", self.app_id.as_str())])
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| e.without_url().to_string())?;
        match status {
            200 => Ok(text),
            // The API's documented answers: 501 when the input is not understood, 403 for a
            // missing or invalid AppID.
            501 => Err(format!(
                "Wolfram|Alpha did not understand the query: {}",
                text.trim()
            )),
            403 => Err("Wolfram|Alpha refused the AppID (`wolfram_settings.authorization`)".into()),
            s => Err(format!("Wolfram|Alpha answered {s}")),
        }
    }
}

#[async_trait]
impl BuiltinTool for WolframTool {
    fn id(&self) -> ToolId {
        ToolId::WolframAlpha
    }

    fn function(&self) -> ToolFunction {
        ToolFunction {
            name: "wolfram",
            description: "Asks Wolfram|Alpha: math, units, science, dates and data, in natural \
                          language or Wolfram Language.",
            parameters: json!({
                "type": "object",
                "properties": {"query": {"type": "string", "description": "The question."}},
                "required": ["query"],
            }),
        }
    }

    async fn run(&mut self, arguments: &Value) -> ToolRun {
        let query = arguments.get("query").and_then(Value::as_str).unwrap_or("");
        let output = match self.ask(query).await {
            Ok(text) => text,
            Err(e) => format!("Error: {e}"),
        };
        ToolRun {
            output,
            ..Default::default()
        }
    }
}
