//! Images of a request (`image_url` content parts): counted against Groq's limit, decoded
//! and prepared by the model's projector. Fetching them (URLs, `data:` URLs) is the
//! service's: what arrives here is each part's bytes, in the order the parts appear.

use peregrine_engine::PreparedImage;
use peregrine_protocol::chat::{ChatMessage, ContentPart, MessageContent};

use super::PrepareError;
use crate::model::ModelContext;

/// Groq's limit on images per request.
pub const MAX_IMAGES: usize = 5;
/// Groq's limit on an image's size: 33 megapixels.
pub const MAX_IMAGE_PIXELS: u64 = 33_000_000;

/// Where each `image_url` part of the conversation is: (message index, part index), in
/// order.
pub fn image_parts(messages: &[ChatMessage]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let content = match m {
            ChatMessage::System { content, .. }
            | ChatMessage::Developer { content, .. }
            | ChatMessage::User { content, .. }
            | ChatMessage::Tool { content, .. } => Some(content),
            ChatMessage::Assistant { content, .. } => content.as_ref(),
            ChatMessage::Function { .. } => None,
        };
        if let Some(MessageContent::Parts(parts)) = content {
            for (j, p) in parts.iter().enumerate() {
                if matches!(p, ContentPart::ImageUrl { .. }) {
                    out.push((i, j));
                }
            }
        }
    }
    out
}

/// Prepares the request's images (`bytes`: each part's, in order) for `model`: refused
/// when the model has no projector, past [`MAX_IMAGES`], and per image when it does not
/// decode or is too large.
pub(super) fn prepare(
    messages: &[ChatMessage],
    model: &ModelContext,
    bytes: &[Vec<u8>],
) -> Result<Vec<PreparedImage>, PrepareError> {
    let parts = image_parts(messages);
    let Some(&(first, _)) = parts.first() else {
        return Ok(Vec::new());
    };
    let Some(vision) = &model.vision else {
        return Err(PrepareError::Unsupported {
            feature: "image_url",
            at: Some(format!("messages[{first}].content")),
        });
    };
    if parts.len() > MAX_IMAGES {
        return Err(PrepareError::TooManyImages(parts.len()));
    }
    if bytes.len() != parts.len() {
        return Err(PrepareError::ImagesMissing {
            parts: parts.len(),
            fetched: bytes.len(),
        });
    }
    (parts.iter().zip(bytes))
        .map(|(&(message, part), b)| {
            vision
                .prepare(b, MAX_IMAGE_PIXELS)
                .map_err(|error| PrepareError::Image {
                    message,
                    part,
                    error,
                })
        })
        .collect()
}
