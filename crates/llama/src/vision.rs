//! Images, through llama.cpp's multimodal library (`mtmd`): a projector file (`mmproj`)
//! loaded beside the text model decodes and prepares images on the request side
//! ([`LlamaVision::prepare`]) and computes them into a sequence on the engine thread
//! ([`LlamaVision::decode`]).
//!
//! One projector context serves both sides: preparing only reads it, computing writes its
//! output buffer, hence the `RwLock`.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, RwLock};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::mtmd::{
    mtmd_default_marker, MtmdBitmap, MtmdContext, MtmdContextParams, MtmdInputChunks, MtmdInputText,
};
use peregrine_engine::{EngineError, ImageError, PreparedImage, SeqId, Vision};

/// A loaded projector.
pub struct LlamaVision {
    ctx: RwLock<MtmdContext>,
}

/// What [`PreparedImage::data`] holds for this backend: the image's chunks (the image and
/// any tokens its projector wraps it in), preprocessed.
struct ImageChunks(MtmdInputChunks);

impl LlamaVision {
    /// Loads the projector at `path` for `model`. Refused: a projector without a vision
    /// encoder (audio only), one whose width is not the model's (llama.cpp checks), and
    /// M-RoPE models (Qwen2-VL and kin), whose image positions are not one per token.
    pub fn load(path: &Path, model: &LlamaModel, n_threads: i32) -> Result<Self, EngineError> {
        let load_err = |what: String| EngineError::Load(format!("{}: {what}", path.display()));
        let params = MtmdContextParams {
            use_gpu: cfg!(feature = "cuda"),
            print_timings: false,
            n_threads,
            ..MtmdContextParams::default()
        };
        let text = path
            .to_str()
            .ok_or_else(|| load_err("the path is not UTF-8".into()))?;
        let ctx = MtmdContext::init_from_file(text, model, &params).map_err(|e| {
            load_err(format!(
                "llama.cpp could not load it as a projector for this model ({e}; its log says why)"
            ))
        })?;
        if !ctx.support_vision() {
            return Err(load_err("the projector has no vision encoder".into()));
        }
        if ctx.decode_use_mrope() {
            return Err(load_err(
                "M-RoPE vision models (the Qwen2-VL family) are not supported yet".into(),
            ));
        }
        Ok(Self {
            ctx: RwLock::new(ctx),
        })
    }

    /// Computes `image` into `seq` at positions `pos..`, in passes of at most `n_batch`.
    pub(crate) fn decode(
        &self,
        image: &PreparedImage,
        llama: &mut LlamaContext<'_>,
        seq: SeqId,
        pos: u32,
        n_batch: u32,
    ) -> Result<(), EngineError> {
        let chunks = image.data.downcast_ref::<ImageChunks>().ok_or_else(|| {
            EngineError::Decode("the image was prepared for another model".into())
        })?;
        let mut ctx = self.ctx.write().unwrap_or_else(|e| e.into_inner());
        let end = chunks
            .0
            .eval_chunks(
                &mut ctx,
                llama,
                pos as i32,
                seq.0 as i32,
                n_batch as i32,
                false,
            )
            .map_err(|e| EngineError::Decode(format!("computing an image: {e}")))?;
        let expected = pos as i32 + image.n_tokens as i32;
        if end != expected {
            return Err(EngineError::Decode(format!(
                "the image ended at position {end}, not {expected}"
            )));
        }
        Ok(())
    }
}

impl Vision for LlamaVision {
    fn prepare(&self, bytes: &[u8], max_pixels: u64) -> Result<PreparedImage, ImageError> {
        let ctx = self.ctx.read().unwrap_or_else(|e| e.into_inner());
        let undecodable = || ImageError::Decode("not a PNG, JPEG, GIF, BMP or WebP image".into());
        // The size first, from the header alone: a huge image is refused before its pixels
        // are decoded.
        let header = MtmdBitmap::from_buffer(&ctx, bytes, true).map_err(|_| undecodable())?;
        let (width, height) = (header.nx(), header.ny());
        if u64::from(width) * u64::from(height) > max_pixels {
            return Err(ImageError::TooLarge {
                width,
                height,
                max: max_pixels,
            });
        }
        let bitmap = MtmdBitmap::from_buffer(&ctx, bytes, false).map_err(|_| undecodable())?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (width, height).hash(&mut hasher);
        bitmap.data().hash(&mut hasher);
        let hash = hasher.finish();
        let text = MtmdInputText {
            text: mtmd_default_marker().to_string(),
            add_special: false,
            parse_special: true,
        };
        let chunks = ctx
            .tokenize(text, &[&bitmap])
            .map_err(|e| ImageError::Prepare(e.to_string()))?;
        let n_tokens = u32::try_from(chunks.total_positions())
            .map_err(|_| ImageError::Prepare("a negative position count".into()))?;
        Ok(PreparedImage {
            n_tokens,
            hash,
            width,
            height,
            data: Arc::new(ImageChunks(chunks)),
        })
    }
}
