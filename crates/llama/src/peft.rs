//! A PEFT LoRA adapter, as Groq takes it (a ZIP of `adapter_model.safetensors` and
//! `adapter_config.json`), checked and converted to llama.cpp's adapter GGUF, the way
//! llama.cpp's `convert_lora_to_gguf.py` converts it.
//!
//! Checks (Groq's rules, and what llama.cpp needs): exactly those two files (at the root, or
//! in one folder), `r` in {8, 16, 32, 64}, plain LoRA (no DoRA, no bias), target modules that
//! a llama-family model has (`q_proj` ... `down_proj`), tensors of layers the base has, `A`
//! of shape (r, in) and `B` of shape (out, r) for every module. llama.cpp then checks each
//! tensor against the model's own shapes when the adapter loads.
//!
//! The conversion: tensor names become llama.cpp's (`blk.N.attn_q.weight.lora_a`), values
//! F32, and, for the `llama` architecture, the rows of `q_proj` / `k_proj`'s `B` are
//! permuted as `convert_hf_to_gguf.py` permutes those weights for llama.cpp's rotary layout.
//!
//! The GGUF is written here: a header, four metadata keys and F32 tensors, about sixty
//! lines against a dependency for the whole format.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const CONFIG: &str = "adapter_config.json";
const WEIGHTS: &str = "adapter_model.safetensors";
/// Groq's ranks.
const RANKS: [u64; 4] = [8, 16, 32, 64];
/// Most bytes one file of the ZIP may inflate to (a ZIP bomb stops here).
const MAX_INFLATED: u64 = 4 << 30;

/// What the conversion needs to know of the base model.
#[derive(Clone, Debug)]
pub struct BaseShape {
    pub arch: String,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
}

/// Why an adapter ZIP was refused; the message is for the client.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PeftError {
    #[error("the file is not a valid ZIP archive: {0}")]
    Zip(String),
    #[error("the ZIP must hold exactly `adapter_model.safetensors` and `adapter_config.json`, found: {0}")]
    Files(String),
    #[error("`adapter_config.json`: {0}")]
    Config(String),
    #[error("`adapter_config.json`: `r` must be one of 8, 16, 32 or 64, got {0}")]
    Rank(String),
    #[error("`adapter_config.json`: target module `{0}` does not exist in the base model (known: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)")]
    Module(String),
    #[error("`adapter_model.safetensors`: {0}")]
    Weights(String),
}

/// A converted adapter.
#[derive(Debug)]
pub struct Converted {
    /// The adapter GGUF.
    pub gguf: Vec<u8>,
    pub rank: u32,
    pub alpha: f32,
    /// The modules it adapts, PEFT's names.
    pub modules: Vec<String>,
}

/// PEFT module -> llama.cpp tensor.
fn gguf_module(m: &str) -> Option<&'static str> {
    Some(match m {
        "q_proj" => "attn_q",
        "k_proj" => "attn_k",
        "v_proj" => "attn_v",
        "o_proj" => "attn_output",
        "gate_proj" => "ffn_gate",
        "up_proj" => "ffn_up",
        "down_proj" => "ffn_down",
        _ => return None,
    })
}

/// Checks and converts an adapter ZIP for `base`.
pub fn convert(zip: &[u8], base: &BaseShape) -> Result<Converted, PeftError> {
    let (config, weights) = read_zip(zip)?;
    let (rank, alpha, modules) = read_config(&config)?;
    let tensors = read_weights(&weights, rank, &modules, base)?;
    let meta = [
        ("general.architecture", Meta::Str(base.arch.clone())),
        ("general.type", Meta::Str("adapter".into())),
        ("adapter.type", Meta::Str("lora".into())),
        ("adapter.lora.alpha", Meta::F32(alpha)),
    ];
    Ok(Converted {
        gguf: write_gguf(&meta, &tensors),
        rank: rank as u32,
        alpha,
        modules,
    })
}

/// The two files' contents.
fn read_zip(zip: &[u8]) -> Result<(Vec<u8>, Vec<u8>), PeftError> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(zip)).map_err(|e| PeftError::Zip(e.to_string()))?;
    let names: Vec<String> = (archive.file_names())
        .filter(|n| !n.ends_with('/'))
        .map(str::to_string)
        .collect();
    let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_string();
    let folder = |n: &str| n.rsplit_once('/').map(|(d, _)| d.to_string());
    let mut found: Vec<String> = names.iter().map(|n| base(n)).collect();
    found.sort();
    let same_folder = names.iter().map(|n| folder(n)).collect::<Vec<_>>();
    let one_folder = same_folder.windows(2).all(|w| w[0] == w[1])
        && same_folder
            .first()
            .is_none_or(|f| f.as_ref().is_none_or(|d| !d.contains('/')));
    if found != [CONFIG, WEIGHTS] || !one_folder {
        return Err(PeftError::Files(names.join(", ")));
    }
    let mut read = |want: &str| -> Result<Vec<u8>, PeftError> {
        let name = names
            .iter()
            .find(|n| base(n) == want)
            .cloned()
            .unwrap_or_default();
        let f = archive
            .by_name(&name)
            .map_err(|e| PeftError::Zip(e.to_string()))?;
        if f.size() > MAX_INFLATED {
            return Err(PeftError::Zip(format!(
                "`{want}` inflates to {} bytes",
                f.size()
            )));
        }
        let mut out = Vec::with_capacity(f.size() as usize);
        f.take(MAX_INFLATED)
            .read_to_end(&mut out)
            .map_err(|e| PeftError::Zip(e.to_string()))?;
        Ok(out)
    };
    Ok((read(CONFIG)?, read(WEIGHTS)?))
}

/// `r`, `lora_alpha` and the target modules.
fn read_config(bytes: &[u8]) -> Result<(u64, f32, Vec<String>), PeftError> {
    let c: Value = serde_json::from_slice(bytes).map_err(|e| PeftError::Config(e.to_string()))?;
    let bad = |m: &str| PeftError::Config(m.to_string());
    if let Some(t) = c.get("peft_type").and_then(Value::as_str) {
        if t != "LORA" {
            return Err(bad(&format!("`peft_type` must be LORA, got {t}")));
        }
    }
    if c.get("use_dora").and_then(Value::as_bool) == Some(true) {
        return Err(bad("DoRA adapters (`use_dora`) are not supported"));
    }
    if c.get("bias")
        .and_then(Value::as_str)
        .is_some_and(|b| b != "none")
    {
        return Err(bad("adapters that train biases (`bias`) are not supported"));
    }
    let r = c.get("r").ok_or_else(|| bad("`r` is required"))?;
    let rank = r
        .as_u64()
        .filter(|r| RANKS.contains(r))
        .ok_or_else(|| PeftError::Rank(r.to_string()))?;
    let alpha = match c.get("lora_alpha") {
        None | Some(Value::Null) => rank as f32,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| bad("`lora_alpha` must be a number"))? as f32,
    };
    let modules: Vec<String> = match c.get("target_modules") {
        Some(Value::Array(m)) => m
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("`target_modules` must be a list of names"))?,
        Some(Value::String(s)) => vec![s.clone()],
        _ => return Err(bad("`target_modules` is required")),
    };
    if modules.is_empty() {
        return Err(bad("`target_modules` is empty"));
    }
    if let Some(m) = modules.iter().find(|m| gguf_module(m).is_none()) {
        return Err(PeftError::Module(m.clone()));
    }
    Ok((rank, alpha, modules))
}

/// One converted tensor: its llama.cpp name, numpy-order shape (rows, cols) and values.
struct Tensor {
    name: String,
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

/// The adapter's tensors, checked and renamed, in a stable order.
fn read_weights(
    bytes: &[u8],
    rank: u64,
    modules: &[String],
    base: &BaseShape,
) -> Result<Vec<Tensor>, PeftError> {
    let bad = |m: String| PeftError::Weights(m);
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    // (layer, module) -> [A, B]
    let mut pairs: BTreeMap<(u32, String), [Option<Tensor>; 2]> = BTreeMap::new();
    for (name, view) in st.tensors() {
        let (layer, module, half) = parse_name(&name).ok_or_else(|| {
            bad(format!(
                "tensor `{name}` is not a LoRA weight of a decoder layer"
            ))
        })?;
        if !modules.contains(&module) {
            return Err(bad(format!(
                "tensor `{name}` adapts `{module}`, not in `target_modules`"
            )));
        }
        if layer >= base.n_layer {
            return Err(bad(format!(
                "tensor `{name}`: the base model has {} layers",
                base.n_layer
            )));
        }
        let shape = view.shape();
        let [rows, cols] = shape[..] else {
            return Err(bad(format!("tensor `{name}` is not a matrix: {shape:?}")));
        };
        let r = if half == 0 { rows } else { cols };
        if r as u64 != rank {
            return Err(bad(format!("tensor `{name}` has rank {r}, `r` is {rank}")));
        }
        let mut data = to_f32(view.dtype(), view.data()).ok_or_else(|| {
            bad(format!(
                "tensor `{name}`: dtype {:?} is not F32, F16 or BF16",
                view.dtype()
            ))
        })?;
        if half == 1 && base.arch == "llama" {
            match module.as_str() {
                "q_proj" => data = permute_rows(&data, rows, cols, base.n_head as usize),
                "k_proj" => data = permute_rows(&data, rows, cols, base.n_head_kv as usize),
                _ => {}
            }
        }
        let suffix = if half == 0 { "lora_a" } else { "lora_b" };
        let gguf = gguf_module(&module).unwrap_or("?");
        pairs.entry((layer, module.clone())).or_default()[half] = Some(Tensor {
            name: format!("blk.{layer}.{gguf}.weight.{suffix}"),
            rows,
            cols,
            data,
        });
    }
    if pairs.is_empty() {
        return Err(bad("no LoRA tensors".into()));
    }
    let mut out = Vec::with_capacity(pairs.len() * 2);
    for ((layer, module), [a, b]) in pairs {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(bad(format!(
                "layer {layer} `{module}` needs both lora_A and lora_B"
            )));
        };
        out.push(a);
        out.push(b);
    }
    Ok(out)
}

/// `base_model.model.model.layers.N.(self_attn|mlp).MODULE.lora_(A|B)[.default].weight`
/// -> (N, MODULE, 0 for A / 1 for B).
fn parse_name(name: &str) -> Option<(u32, String, usize)> {
    let rest = name.strip_prefix("base_model.model.")?;
    let rest = rest.strip_prefix("model.").unwrap_or(rest);
    let rest = rest.strip_prefix("layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let rest = (rest.strip_prefix("self_attn.")).or_else(|| rest.strip_prefix("mlp."))?;
    let (module, rest) = rest.split_once('.')?;
    let half = match rest {
        "lora_A.weight" | "lora_A.default.weight" => 0,
        "lora_B.weight" | "lora_B.default.weight" => 1,
        _ => return None,
    };
    Some((layer.parse().ok()?, module.to_string(), half))
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => (bytes.chunks_exact(4))
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => (bytes.chunks_exact(2))
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => (bytes.chunks_exact(2))
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// `convert_hf_to_gguf.py`'s `LlamaModel.permute` on the rows of a (rows, cols) matrix:
/// reshape (n_head, 2, rows / n_head / 2, cols), swap axes 1 and 2.
fn permute_rows(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    if n_head == 0 || !rows.is_multiple_of(n_head * 2) {
        return data.to_vec();
    }
    let half = rows / n_head / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..n_head {
        for two in 0..2 {
            for i in 0..half {
                let from = h * 2 * half + two * half + i;
                let to = h * 2 * half + i * 2 + two;
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&data[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

enum Meta {
    Str(String),
    F32(f32),
}

const GGUF_ALIGN: usize = 32;

/// A GGUF v3 file of string / f32 metadata and F32 matrices.
fn write_gguf(meta: &[(&str, Meta)], tensors: &[Tensor]) -> Vec<u8> {
    let mut out = Vec::new();
    let s = |out: &mut Vec<u8>, v: &str| {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    };
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        s(&mut out, k);
        match v {
            Meta::Str(x) => {
                out.extend(8u32.to_le_bytes());
                s(&mut out, x);
            }
            Meta::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
        }
    }
    let padded = |n: usize| n.div_ceil(GGUF_ALIGN) * GGUF_ALIGN;
    let mut offset = 0usize;
    for t in tensors {
        s(&mut out, &t.name);
        out.extend(2u32.to_le_bytes());
        // GGUF lists dimensions fastest first: (rows, cols) is ne [cols, rows].
        out.extend((t.cols as u64).to_le_bytes());
        out.extend((t.rows as u64).to_le_bytes());
        out.extend(0u32.to_le_bytes()); // GGML_TYPE_F32
        out.extend((offset as u64).to_le_bytes());
        offset += padded(t.data.len() * 4);
    }
    out.resize(padded(out.len()), 0);
    for t in tensors {
        let start = out.len();
        for x in &t.data {
            out.extend(x.to_le_bytes());
        }
        out.resize(start + padded(out.len() - start), 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(
            parse_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"),
            Some((3, "q_proj".into(), 0))
        );
        assert_eq!(
            parse_name("base_model.model.model.layers.0.mlp.down_proj.lora_B.default.weight"),
            Some((0, "down_proj".into(), 1))
        );
        assert_eq!(parse_name("base_model.model.lm_head.lora_A.weight"), None);
    }

    #[test]
    fn the_permutation_matches_convert_hf_to_gguf() {
        // 2 heads of 4 rows (half 2), 1 column: rows [h0: 0 1 2 3, h1: 4 5 6 7] become
        // [0 2 1 3, 4 6 5 7] (numpy: reshape(2, 2, 2, 1).swapaxes(1, 2)).
        let rows: Vec<f32> = (0..8).map(|x| x as f32).collect();
        assert_eq!(
            permute_rows(&rows, 8, 1, 2),
            vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
        );
    }

    #[test]
    fn configs_are_checked() {
        let ok =
            br#"{"peft_type":"LORA","r":16,"lora_alpha":32,"target_modules":["q_proj","v_proj"]}"#;
        assert_eq!(read_config(ok).unwrap().0, 16);
        let r4 = br#"{"r":4,"target_modules":["q_proj"]}"#;
        assert!(matches!(read_config(r4), Err(PeftError::Rank(_))));
        let unknown = br#"{"r":8,"target_modules":["q_proj","lm_head"]}"#;
        assert_eq!(
            read_config(unknown),
            Err(PeftError::Module("lm_head".into()))
        );
        let dora = br#"{"r":8,"use_dora":true,"target_modules":["q_proj"]}"#;
        assert!(matches!(read_config(dora), Err(PeftError::Config(_))));
    }

    #[test]
    fn a_file_that_is_not_a_zip_is_refused() {
        let base = BaseShape {
            arch: "llama".into(),
            n_layer: 2,
            n_head: 2,
            n_head_kv: 1,
        };
        assert!(matches!(
            convert(b"not a zip", &base),
            Err(PeftError::Zip(_))
        ));
    }

    #[test]
    fn the_gguf_header_and_alignment() {
        let t = Tensor {
            name: "blk.0.attn_q.weight.lora_a".into(),
            rows: 2,
            cols: 3,
            data: vec![1.0; 6],
        };
        let g = write_gguf(&[("adapter.type", Meta::Str("lora".into()))], &[t]);
        assert_eq!(&g[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(g[4..8].try_into().unwrap()), 3);
        // The data section starts aligned and holds the six values.
        assert_eq!(g.len() % GGUF_ALIGN, 0);
        let data = &g[g.len() - GGUF_ALIGN..g.len() - GGUF_ALIGN + 24];
        assert!(data
            .chunks(4)
            .all(|c| f32::from_le_bytes(c.try_into().unwrap()) == 1.0));
    }
}
