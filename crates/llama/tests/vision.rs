//! Images through llama.cpp's multimodal library on a real text model and a generated
//! projector: SmolLM2-135M (`PEREGRINE_TEST_MODEL`) with the random-weight projector that
//! `scripts/make_hf_test_models.py vision` makes (`PEREGRINE_VISION_MMPROJ`). Without them these
//! tests say so and pass; `scripts/test` always sets both.
//!
//! What they prove: the projector loads through the real loading code, images decode,
//! take their positions in a sequence, and reach the model (different pixels, different
//! logits; the same pixels, the same logits). Not quality: the projector is random.

mod support;

use std::path::PathBuf;

use peregrine_engine::{
    Batch, BatchToken, ContextSettings, Engine, ImageError, ModelSource, SeqId, Vocab,
};
use peregrine_llama::LoadedModel;

fn paths() -> Option<(PathBuf, PathBuf)> {
    let model = support::model_from_env("PEREGRINE_TEST_MODEL", "the vision test")?;
    let mmproj = support::model_from_env("PEREGRINE_VISION_MMPROJ", "the vision test")?;
    Some((model, mmproj))
}

fn context() -> ContextSettings {
    ContextSettings {
        n_ctx_seq: 512,
        n_seq_max: 2,
        n_batch: 128,
        n_threads: 2,
        n_gpu_layers: 0,
    }
}

/// A 24-bit BMP (which llama.cpp's image decoder reads) of `w` x `h` pixels.
fn bmp(w: u32, h: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(b"BM");
    for v in [size, 0, 54, 40] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(w as i32).to_le_bytes());
    out.extend_from_slice(&(h as i32).to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    for v in [0u32, row * h, 2835, 2835, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for y in (0..h).rev() {
        let start = out.len();
        for x in 0..w {
            let [r, g, b] = pixel(x, y);
            out.extend_from_slice(&[b, g, r]);
        }
        out.resize(start + row as usize, 0);
    }
    out
}

/// The logits after `prefix`, the image, then `suffix`, in sequence 0 of a fresh engine.
fn logits_after_image(loaded: &LoadedModel, image: &[u8]) -> (u32, Vec<f32>) {
    let vision = loaded.vision().expect("a projector");
    let prepared = vision.prepare(image, 33_000_000).expect("prepares");
    let mut engine = loaded.engine(&context()).unwrap();
    let vocab = loaded.vocab();
    let prefix = vocab.tokenize("<|im_start|>user\n");
    let suffix = vocab.tokenize_piece("What is this?<|im_end|>\n<|im_start|>assistant\n", true);
    let seq = SeqId(0);
    let mut batch = Batch::default();
    for (i, &t) in prefix.iter().enumerate() {
        batch.push(BatchToken {
            token: t,
            pos: i as u32,
            seq,
            logits: false,
        });
    }
    engine.decode(&batch).unwrap();
    let at = prefix.len() as u32;
    engine
        .decode_image(&prepared, seq, at)
        .expect("the image computes");
    let at = at + prepared.n_tokens;
    batch.clear();
    for (i, &t) in suffix.iter().enumerate() {
        batch.push(BatchToken {
            token: t,
            pos: at + i as u32,
            seq,
            logits: i + 1 == suffix.len(),
        });
    }
    engine.decode(&batch).unwrap();
    (prepared.n_tokens, engine.logits(suffix.len() - 1).to_vec())
}

#[test]
fn an_image_takes_its_positions_and_reaches_the_model() {
    let Some((model, mmproj)) = paths() else {
        return;
    };
    let loaded = LoadedModel::load(&model, 0)
        .unwrap()
        .with_projector(&mmproj, 2)
        .expect("the generated projector loads");
    let red = bmp(32, 24, |_, _| [220, 30, 30]);
    let stripes = bmp(32, 24, |x, _| {
        if x % 8 < 4 {
            [0, 0, 0]
        } else {
            [255, 255, 255]
        }
    });
    let (n, a) = logits_after_image(&loaded, &red);
    // 64x64 pixels in 8x8 patches, whatever the input size (resized).
    assert_eq!(n, 64);
    let (_, again) = logits_after_image(&loaded, &red);
    assert_eq!(a, again, "the same image gives the same logits");
    let (_, b) = logits_after_image(&loaded, &stripes);
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    eprintln!("largest logit difference between the two images: {diff}");
    assert!(
        diff > 1e-3,
        "two images gave the same logits (max diff {diff})"
    );
}

#[test]
fn images_are_refused_clearly() {
    let Some((model, mmproj)) = paths() else {
        return;
    };
    let loaded = LoadedModel::load(&model, 0)
        .unwrap()
        .with_projector(&mmproj, 2)
        .unwrap();
    let vision = loaded.vision().unwrap();
    let e = vision.prepare(b"not an image", 1_000_000).unwrap_err();
    assert!(matches!(e, ImageError::Decode(_)), "{e}");
    let big = bmp(40, 30, |_, _| [1, 2, 3]);
    let e = vision.prepare(&big, 1000).unwrap_err();
    assert_eq!(
        e,
        ImageError::TooLarge {
            width: 40,
            height: 30,
            max: 1000
        }
    );
    // The same image within the limit prepares, with the same hash each time.
    let one = vision.prepare(&big, 1200).unwrap();
    assert_eq!((one.width, one.height), (40, 30));
    assert_eq!(one.hash, vision.prepare(&big, 1200).unwrap().hash);
}

#[test]
fn a_projector_for_another_width_is_refused_at_load() {
    let Some((_, mmproj)) = paths() else {
        return;
    };
    // The default model is 896 wide; the projector writes 576 (SmolLM2's).
    let Some(other) = support::model_from_env("PEREGRINE_DEFAULT_MODEL", "the vision test") else {
        return;
    };
    let e = LoadedModel::load(&other, 0)
        .unwrap()
        .with_projector(&mmproj, 2)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("projector"), "{e}");
}
