//! The bytes of a request's images (`image_url` parts), for a vision model: `data:` URLs
//! decoded (Groq's 4 MB cap, else 413), http(s) URLs fetched behind the same SSRF guard as
//! website visits (Groq's 20 MB cap, else 400). Decoding the pixels and the count and size
//! limits are the runtime's (`peregrine_runtime::prepare_with_images`).

use base64::Engine as _;
use peregrine_protocol::chat::{ChatMessage, ContentPart, MessageContent};
use peregrine_runtime::prepare::{image_parts, MAX_IMAGES};
use peregrine_runtime::PrepareError;
use peregrine_tools::{FetchConfig, Fetcher};

use crate::error::ServiceError;

/// Groq's cap on a base64 image.
pub const MAX_DATA_URL_BYTES: usize = 4 << 20;
/// Groq's cap on an image fetched by URL.
pub const MAX_URL_IMAGE_BYTES: usize = 20 << 20;

/// Fetches images for one server: the visit guard's allow-list and timeout.
#[derive(Clone, Debug)]
pub struct ImageFetcher {
    fetcher: Fetcher,
}

impl ImageFetcher {
    pub fn new(cfg: FetchConfig) -> Self {
        Self {
            fetcher: Fetcher::new(FetchConfig {
                max_bytes: MAX_URL_IMAGE_BYTES,
                ..cfg
            }),
        }
    }

    /// Each `image_url` part's bytes, in the order `image_parts` lists them. Past Groq's
    /// count the request is refused before anything is fetched.
    pub async fn fetch_all(&self, messages: &[ChatMessage]) -> Result<Vec<Vec<u8>>, ServiceError> {
        let parts = image_parts(messages);
        if parts.len() > MAX_IMAGES {
            return Err(PrepareError::TooManyImages(parts.len()).into());
        }
        let mut out = Vec::with_capacity(parts.len());
        for (i, j) in parts {
            let url = image_url(messages, i, j).unwrap_or_default();
            let param = format!("messages[{i}].content[{j}].image_url.url");
            out.push(self.one(url, param).await?);
        }
        Ok(out)
    }

    async fn one(&self, url: &str, param: String) -> Result<Vec<u8>, ServiceError> {
        if let Some(rest) = url.strip_prefix("data:") {
            return data_url(rest, param);
        }
        let bad = |message: String| ServiceError::BadImage {
            param: param.clone(),
            message,
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(bad("must be an http(s) URL or a base64 `data:` URL".into()));
        }
        self.fetcher
            .fetch_bytes(url, MAX_URL_IMAGE_BYTES)
            .await
            .map_err(|e| bad(format!("the image could not be fetched: {e}")))
    }
}

/// The URL of part `j` of message `i`.
fn image_url(messages: &[ChatMessage], i: usize, j: usize) -> Option<&str> {
    let content = match messages.get(i)? {
        ChatMessage::User { content, .. }
        | ChatMessage::System { content, .. }
        | ChatMessage::Developer { content, .. }
        | ChatMessage::Tool { content, .. } => content,
        ChatMessage::Assistant { content, .. } => content.as_ref()?,
        ChatMessage::Function { .. } => return None,
    };
    match content {
        MessageContent::Parts(parts) => match parts.get(j)? {
            ContentPart::ImageUrl { image_url } => Some(image_url.url.as_str()),
            _ => None,
        },
        MessageContent::Text(_) => None,
    }
}

/// A `data:[<type>];base64,<data>` URL's bytes (what follows `data:`).
fn data_url(rest: &str, param: String) -> Result<Vec<u8>, ServiceError> {
    let bad = |message: &str| ServiceError::BadImage {
        param: param.clone(),
        message: message.into(),
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| bad("a `data:` URL needs a comma before its data"))?;
    if !meta.ends_with(";base64") {
        return Err(bad(
            "a `data:` image URL must be base64 (`data:image/png;base64,...`)",
        ));
    }
    // Decoded size from the encoded length: refused before decoding.
    if data.len() / 4 * 3 > MAX_DATA_URL_BYTES {
        return Err(ServiceError::ImageTooLarge {
            param,
            limit: MAX_DATA_URL_BYTES,
        });
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| bad(&format!("the base64 data does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_decode_within_the_cap() {
        let p = || "messages[0].content[1].image_url.url".to_string();
        assert_eq!(
            data_url("image/png;base64,AAEC", p()).unwrap(),
            vec![0, 1, 2]
        );
        let e = data_url("image/png,AAEC", p()).unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
        let e = data_url("image/png;base64,@@@", p()).unwrap_err();
        assert!(e.to_string().contains("does not decode"), "{e}");
        let big = format!(
            "image/png;base64,{}",
            "A".repeat(MAX_DATA_URL_BYTES / 3 * 4 + 8)
        );
        let e = data_url(&big, p()).unwrap_err();
        assert_eq!(e.status(), 413, "{e}");
        assert!(
            e.to_string()
                .starts_with("`messages[0].content[1].image_url.url`"),
            "{e}"
        );
    }
}
