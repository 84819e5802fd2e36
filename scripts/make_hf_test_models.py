#!/usr/bin/env python3
"""Test models made with the ecosystem's own tools: transformers, peft and llama.cpp's
conversion scripts (from the llama.cpp tree in the llama-cpp-python source package,
`scripts/llama-server-peer --source`).

    <venv-models>/bin/python scripts/make_hf_test_models.py reasoning  # {"model": ...}
    <venv-models>/bin/python scripts/make_hf_test_models.py lora       # JSON, below
    <venv-models>/bin/python scripts/make_hf_test_models.py vision     # {"model": ..., "mmproj": ...}

Run it with the Python of the model-tools environment (`scripts/setup.sh --python` makes
~/.cache/peregrine/venv-models with torch, transformers and peft). Each prints one JSON
object. Output is cached under ~/.cache/peregrine/test-models/hf/, keyed by this file, the
models it builds on and the llama.cpp version.

`reasoning`: a tiny Qwen3 (2 layers, 64 wide: Qwen3's public config shrunk) with Qwen3's
real tokenizer and chat template, for the reasoning tests. transformers' `Qwen3ForCausalLM`
initialises it randomly; then the token embeddings and the output matrix are replaced by
the designed bigram path of `scripts/make_test_models.py` (`design_weights`) and every
block's o_proj and down_proj are zeroed, so that greedy decoding follows a fixed script
(`<think>Okay thinking.</think>\n\nHello!`) and the tests can assert exact text; the
attention, gate and up projections and the norms stay transformers' random initialisation.
The tokenizer is rebuilt with the `tokenizers` package from the Qwen2.5 vocabulary and
merges of the pulled default model plus Qwen3's added tokens (`<think>` ...), with Qwen2's
pre-tokenizer; llama.cpp's `convert_hf_to_gguf.py` recognises it as `qwen2` by hashing its
tokenization of a check text, so it tokenizes as the real one does. The template is
Qwen/Qwen3-0.6B's, from the sha256-pinned llama-cpp-python sdist
(`scripts/make_test_models.py templates`). `verify_reasoning` then reads the converted GGUF
back and runs the whole graph in numpy to check the script.

`lora`: random LoRA adapters for the default model.

* `config_dir`: Qwen2.5-Coder-0.5B-Instruct's public `config.json` (written below, and
  checked against the default model GGUF's own metadata, so the adapters fit that model);
* `zero`, `a`: PEFT adapter ZIPs (`adapter_model.safetensors` + `adapter_config.json`, as
  Groq takes them) for that model, rank 8 on q_proj, v_proj, o_proj and down_proj of every
  layer. transformers builds the model from the config and peft's `get_peft_model` adds the
  LoRA layers, so names, shapes and the config file are exactly what a PEFT fine-tune saves.
  `zero` keeps peft's own initialisation (random A, B = 0: the adapter adds nothing); `a`
  has random B as well (a seeded normal draw), so it changes the model's output;
* `a_llamacpp`: adapter `a` converted by llama.cpp's own `convert_lora_to_gguf.py` (from the
  llama.cpp tree in the llama-cpp-python source package, `scripts/llama-server-peer
  --source`), as F32: the oracle that tests/e2e/test_lora_peer.py loads into llama-server
  with `--lora`.

The base weights transformers creates are never initialised nor saved (the model is built
on the `meta` device and only the adapter's tensors are materialised): an adapter does not
depend on them.

`vision`: a random-weight vision encoder and projector for SmolLM2-135M-Instruct (the real
text model, as pulled), in LLaVA-1.5's shape shrunk: transformers' `CLIPVisionModel` from a
tiny config (64x64 pixels in 8x8 patches, so 64 image positions; 3 blocks 48 wide, LLaVA
reading the one before last), randomly initialised by transformers, and LLaVA's two-layer
GELU MLP projector up to SmolLM2's width (a `torch.nn.Sequential`, saved as LLaVA's
`llava.projector`), converted by llama.cpp's `convert_image_encoder_to_gguf.py` into the
mmproj GGUF (projector type `mlp`) that llama.cpp's multimodal library loads. The
projector's last layer is drawn at a small scale (VISION_OUT_STD) so image embeddings sit
near the size of SmolLM2's token embeddings.

What this proves is flow, shapes and arithmetic; random weights say nothing about quality.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("PEREGRINE_HOME", Path.home() / ".cache" / "peregrine"))
MODEL = Path(os.environ.get(
    "PEREGRINE_DEFAULT_MODEL", HOME / "models" / "qwen2.5-coder-0.5b-instruct.gguf"))
OUT = HOME / "test-models" / "hf"

# https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct/blob/main/config.json
PUBLIC_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 896,
    "initializer_range": 0.02,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "max_window_layers": 24,
    "model_type": "qwen2",
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}
# What the GGUF must say for the config above to be its model's.
GGUF_KEYS = {
    "general.architecture": "qwen2",
    "qwen2.block_count": "num_hidden_layers",
    "qwen2.embedding_length": "hidden_size",
    "qwen2.feed_forward_length": "intermediate_size",
    "qwen2.attention.head_count": "num_attention_heads",
    "qwen2.attention.head_count_kv": "num_key_value_heads",
}
RANK, ALPHA = 8, 16
TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]
# Standard deviation of adapter a's B entries: enough to change the greedy answer of the
# 0.5B model, little enough that it still writes words (scale alpha/r = 2).
B_STD = 0.02
SEED = 15


def log(msg: str) -> None:
    print(f"make_hf_test_models: {msg}", file=sys.stderr, flush=True)


def gguf_module():
    """The `gguf` package of llama.cpp's own tree (the converters' version of it)."""
    sys.path.insert(0, llama_cpp_tree() + "/gguf-py")
    import gguf

    return gguf


def check_gguf_matches_config() -> None:
    r = gguf_module().GGUFReader(MODEL)
    for key, want in GGUF_KEYS.items():
        got = r.get_field(key).contents()
        want = want if key == "general.architecture" else PUBLIC_CONFIG[want]
        assert got == want, f"{MODEL.name}: {key} is {got}, the public config says {want}"
    n_vocab = len(r.get_field("tokenizer.ggml.tokens").contents())
    # The GGUF's vocabulary is the tokenizer's (151665); the config pads the embedding.
    assert n_vocab <= PUBLIC_CONFIG["vocab_size"], n_vocab


@functools.cache
def llama_cpp_tree() -> str:
    out = subprocess.run([str(REPO / "scripts" / "llama-server-peer"), "--source"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def cache_key(model: Path, extra: bytes = b"") -> str:
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(extra)
    st = model.stat()
    h.update(f"{model.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(llama_cpp_tree().encode())
    return h.hexdigest()[:16]


def read_manifest(path: Path, key: str) -> dict | None:
    """What an earlier run made, if it was made from the same inputs and is all there."""
    if not path.is_file():
        return None
    cached = json.loads(path.read_text())
    files = [p for k, p in cached.items() if k != "key"]
    if cached.get("key") != key or not all(Path(p).exists() for p in files):
        return None
    log(f"{path.name}: up to date")
    return cached


def previous_build(kind: str, model: Path, pull_id: str, extra: bytes = b"") -> tuple[Path, str, dict | None]:
    """A build's manifest path and cache key, and what an earlier run made from the same
    inputs (None: build it). `model` is the pulled GGUF the build starts from."""
    if not model.is_file():
        raise SystemExit(f"{model} is missing: run `peregrine pull {pull_id}`")
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = OUT / f"{kind}.json"
    key = cache_key(model, extra)
    return manifest, key, read_manifest(manifest, key)


def build_adapters(config_dir: Path) -> dict[str, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir)
    out = {}
    for which in ("zero", "a"):
        torch.manual_seed(SEED)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        lora = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0,
                          bias="none", task_type="CAUSAL_LM")
        with torch.device("meta"):
            model = get_peft_model(model, lora)
        # Materialise and initialise the adapter's tensors only, as peft does on a real
        # model: A Kaiming-uniform, B zero.
        n = 0
        for module in model.modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                for part in (module.lora_A["default"], module.lora_B["default"]):
                    part.to_empty(device="cpu")
                module.reset_lora_parameters("default", True)
                if which == "a":
                    torch.nn.init.normal_(module.lora_B["default"].weight, std=B_STD)
                n += 1
        assert n == len(TARGETS) * config.num_hidden_layers, n
        folder = OUT / f"qwen2.5-coder-0.5b-{which}"
        model.save_pretrained(folder)
        saved = json.loads((folder / "adapter_config.json").read_text())
        assert saved["r"] == RANK and sorted(saved["target_modules"]) == sorted(TARGETS)
        out[which] = folder
        log(f"{which}: {n} LoRA pairs saved by peft in {folder}")
    return out


def zip_folder(folder: Path) -> Path:
    path = folder.parent / (folder.name + ".zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            z.write(folder / name, name)
    return path


def convert_with_llama_cpp(folder: Path, config_dir: Path) -> Path:
    out = folder.with_name(folder.name + "-llamacpp.gguf")
    script = Path(llama_cpp_tree()) / "convert_lora_to_gguf.py"
    subprocess.run([sys.executable, str(script), "--base", str(config_dir), "--outtype", "f32",
                    "--outfile", str(out), str(folder)], check=True,
                   stdout=sys.stderr, stderr=sys.stderr)
    return out


def build_lora() -> dict:
    manifest, key, cached = previous_build("lora", MODEL, "qwen2.5-coder-0.5b-instruct")
    if cached:
        return cached
    check_gguf_matches_config()
    config_dir = OUT / "qwen2.5-coder-0.5b-config"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "config.json").write_text(json.dumps(PUBLIC_CONFIG, indent=2))
    folders = build_adapters(config_dir)
    result = {
        "config_dir": str(config_dir),
        "zero": str(zip_folder(folders["zero"])),
        "a": str(zip_folder(folders["a"])),
        "a_llamacpp": str(convert_with_llama_cpp(folders["a"], config_dir)),
        "key": key,
    }
    manifest.write_text(json.dumps(result))
    return result


VISION_TEXT_MODEL = HOME / "models" / "smollm2-135m-instruct.gguf"
VISION_SEED = 7
# transformers' CLIPVisionConfig, shrunk; LLaVA-1.5 reads the block before the last one.
VISION_CONFIG = {
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": 64,
    "patch_size": 8,
    "projection_dim": 48,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
VISION_MM_HIDDEN = 96
VISION_OUT_STD = 0.05


def text_width(path: Path) -> int:
    r = gguf_module().GGUFReader(path)
    arch = r.get_field("general.architecture").contents()
    return int(r.get_field(f"{arch}.embedding_length").contents())


def build_vision() -> dict:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    manifest, key, cached = previous_build("vision", VISION_TEXT_MODEL, "smollm2-135m-instruct")
    if cached:
        return cached
    n_text = text_width(VISION_TEXT_MODEL)
    torch.manual_seed(VISION_SEED)
    clip_dir = OUT / "clip-vision-tiny"
    CLIPVisionModel(CLIPVisionConfig(**VISION_CONFIG)).save_pretrained(clip_dir)
    width = VISION_CONFIG["hidden_size"]
    projector = torch.nn.Sequential(torch.nn.Linear(width, VISION_MM_HIDDEN), torch.nn.GELU(),
                                    torch.nn.Linear(VISION_MM_HIDDEN, n_text))
    torch.nn.init.normal_(projector[2].weight, std=VISION_OUT_STD / VISION_MM_HIDDEN ** 0.5)
    torch.nn.init.zeros_(projector[2].bias)
    projector_file = OUT / "llava.projector"
    torch.save({f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()}, projector_file)
    converted = OUT / "mmproj-out"
    script = Path(llama_cpp_tree()) / "tools" / "mtmd" / "legacy-models" / "convert_image_encoder_to_gguf.py"
    env = {**os.environ, "PYTHONPATH": llama_cpp_tree() + "/gguf-py"}
    subprocess.run([sys.executable, str(script), "-m", str(clip_dir), "--clip-model-is-vision",
                    "--llava-projector", str(projector_file), "--output-dir", str(converted),
                    "--image-mean", "0.5", "0.5", "0.5", "--image-std", "0.5", "0.5", "0.5",
                    "--use-f32"], check=True, env=env, stdout=sys.stderr, stderr=sys.stderr)
    mmproj = OUT / "smollm2-vision-mmproj.gguf"
    (converted / "mmproj-model-f32.gguf").replace(mmproj)
    log(f"vision: {mmproj} ({mmproj.stat().st_size / 1e3:.0f} kB), projector to width {n_text}")
    result = {"model": str(VISION_TEXT_MODEL), "mmproj": str(mmproj), "key": key}
    manifest.write_text(json.dumps(result))
    return result


REASONING_CONFIG = {  # Qwen/Qwen3-0.6B's config.json, shrunk (not tied: the design needs its own output)
    "hidden_size": "N_EMBD",
    "intermediate_size": "N_FF",
    "num_hidden_layers": "N_LAYER",
    "num_attention_heads": "N_HEAD",
    "num_key_value_heads": "N_HEAD_KV",
    "head_dim": "HEAD_DIM",
    "max_position_embeddings": "N_CTX",
    "rope_theta": "ROPE_BASE",
    "rms_norm_eps": "RMS_EPS",
}
QWEN3_PRE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
FIRST_ADDED = 151643  # <|endoftext|>: the Qwen vocabulary's added tokens start here
LAST_ADDED = 151668  # </think>


def design_module():
    """scripts/make_test_models.py, whose reasoning design this model shares."""
    gguf_module()  # make_test_models imports `gguf`
    sys.path.insert(0, str(REPO / "scripts"))
    import make_test_models

    return make_test_models


def qwen_tokenizer(vocab: dict, template: str, folder: Path) -> None:
    """Qwen3's tokenizer files, rebuilt from a GGUF's vocabulary with `tokenizers`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    toks, types = vocab["tokens"], vocab["types"]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(toks[:FIRST_ADDED])},
                     merges=[tuple(m.split(" ")) for m in vocab["merges"]], byte_fallback=False)
    tk = Tokenizer(bpe)
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN3_PRE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tk.add_tokens([AddedToken(toks[i], special=types[i] == 3, normalized=False)
                   for i in range(FIRST_ADDED, LAST_ADDED + 1)])
    for i in range(FIRST_ADDED, LAST_ADDED + 1):
        assert tk.token_to_id(toks[i]) == i, (i, toks[i])
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", clean_up_tokenization_spaces=False)
    fast.chat_template = template
    fast.save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["add_bos_token"] = False  # Qwen adds no BOS
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def build_reasoning() -> dict:
    import numpy as np
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    manifest, key, cached = previous_build(
        "reasoning", MODEL, "qwen2.5-coder-0.5b-instruct",
        extra=(REPO / "scripts" / "make_test_models.py").read_bytes())
    if cached:
        return cached
    mtm = design_module()
    template = (mtm.ensure_templates() / mtm.QWEN3_TEMPLATE).read_text()
    vocab = mtm.read_vocab(MODEL)
    chain = mtm.chain_ids(vocab["tokens"])
    folder = OUT / "qwen3-reasoning-tiny"
    qwen_tokenizer(vocab, template, folder)

    config = Qwen3Config(vocab_size=len(vocab["tokens"]), tie_word_embeddings=False,
                         bos_token_id=mtm.BOS_ID, eos_token_id=mtm.EOS_ID,
                         **{k: getattr(mtm, v) for k, v in REASONING_CONFIG.items()})
    torch.manual_seed(SEED)
    model = Qwen3ForCausalLM(config)
    design = mtm.design_weights(len(vocab["tokens"]), chain)
    designed = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight"}
    for b in range(mtm.N_LAYER):
        designed[f"blk.{b}.attn_output.weight"] = f"model.layers.{b}.self_attn.o_proj.weight"
        designed[f"blk.{b}.ffn_down.weight"] = f"model.layers.{b}.mlp.down_proj.weight"
    state = model.state_dict()
    with torch.no_grad():
        for gguf_name, hf_name in designed.items():
            assert tuple(state[hf_name].shape) == design[gguf_name].shape, hf_name
            state[hf_name].copy_(torch.from_numpy(design[gguf_name].astype(np.float32)))
    model.save_pretrained(folder)

    gguf_path = OUT / "qwen3-reasoning-tiny.gguf"
    part = gguf_path.with_name(gguf_path.name + ".part")
    subprocess.run([sys.executable, str(Path(llama_cpp_tree()) / "convert_hf_to_gguf.py"),
                    str(folder), "--outtype", "f16", "--outfile", str(part),
                    "--model-name", "Peregrine test Qwen3 reasoning tiny"],
                   check=True, stdout=sys.stderr, stderr=sys.stderr)
    mtm.verify_reasoning(part, vocab, chain)
    part.replace(gguf_path)
    result = {"model": str(gguf_path), "key": key}
    manifest.write_text(json.dumps(result))
    return result


BUILDERS = {"reasoning": build_reasoning, "lora": build_lora, "vision": build_vision}


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in BUILDERS:
        raise SystemExit(f"usage: make_hf_test_models.py {{{'|'.join(BUILDERS)}}}")
    print(json.dumps(BUILDERS[sys.argv[1]]()))


if __name__ == "__main__":
    main()
