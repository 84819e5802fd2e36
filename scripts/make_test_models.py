#!/usr/bin/env python3
"""Builds tiny GGUF models for Peregrine's end-to-end tests, and caches them.

    python3 scripts/make_test_models.py reasoning   # prints the model's path on stdout
    python3 scripts/make_test_models.py templates   # prints the extracted templates' folder

Models land in ${PEREGRINE_TEST_MODELS:-~/.cache/peregrine/test-models}. Each is keyed by a
hash of this file, of its inputs and of the `gguf` package's version (a `.key` file beside
it), so a second run with nothing changed writes nothing. Progress goes to stderr.

`reasoning` -> qwen3-reasoning-tiny.gguf: a 2-layer, 64-wide model of architecture `qwen3`,
written with the `gguf` package (the llama.cpp project's own writer), carrying

* the Qwen2.5/Qwen3 byte-level BPE vocabulary and merges, copied from the cached default
  model (qwen2.5-coder-0.5b-instruct.gguf), with Qwen3's four extra non-special tokens
  (151665 <tool_response>, 151666 </tool_response>, 151667 <think>, 151668 </think>) in
  place of Qwen2.5's padding entries;
* the real Qwen3 chat template (Qwen/Qwen3-0.6B's), taken from the llama.cpp sources that
  the pinned llama-cpp-python sdist on PyPI vendors
  (vendor/llama.cpp/models/templates/Qwen-Qwen3-0.6B.jinja), verified by the sdist's
  sha256; nothing of the template is committed to this repository;
* weights designed so that greedy decoding is a bigram model following a fixed script:
  every block's attn_output and ffn_down are zero (the residual stream stays the last
  token's embedding), the chain tokens get orthogonal embedding directions and the output
  matrix maps each to its successor with a large margin, every other token leads to
  <think>. After `<|im_start|>assistant\\n` the model says
  `<think>Okay thinking.</think>\\n\\nHello!<|im_end|>`; after Qwen3's enable_thinking=false
  prompt (ending `<think>\\n\\n</think>\\n\\n`) it says `Hello!<|im_end|>`.

What it proves: that the flow and the shapes of reasoning end to end work against a real
qwen3 GGUF with the real template and tokenizer -- template rendering (enable_thinking
included), tokenization of <think>/</think> as single non-special tokens, streaming,
splitting reasoning from content, stop on <|im_end|>, usage counts. What it cannot: any
quality -- it is not a language model, everything off the script is noise; and with
temperature > 0 its output is still the script only because the margins are huge.

`templates` also leaves openai-gpt-oss-120b.jinja and
deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja from the same sdist in the templates folder.

Later models (a vision model with its projector, LoRA adapters) go in as further entries
of MODELS below.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------

# The llama-cpp-python sdist whose vendored llama.cpp carries the chat templates.
LLAMA_CPP_PYTHON = "llama-cpp-python"
LLAMA_CPP_PYTHON_VERSION = "0.3.16"
LLAMA_CPP_PYTHON_SDIST = "llama_cpp_python-0.3.16.tar.gz"
LLAMA_CPP_PYTHON_SHA256 = "34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6"
TEMPLATES_IN_SDIST = "llama_cpp_python-0.3.16/vendor/llama.cpp/models/templates/"
TEMPLATES = (
    "Qwen-Qwen3-0.6B.jinja",
    "openai-gpt-oss-120b.jinja",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
)
QWEN3_TEMPLATE = "Qwen-Qwen3-0.6B.jinja"

# The model whose vocabulary is copied: Peregrine's default model (`peregrine pull`).
SOURCE_MODEL = "qwen2.5-coder-0.5b-instruct.gguf"


def peregrine_home() -> Path:
    return Path(os.environ.get("PEREGRINE_HOME", Path.home() / ".cache" / "peregrine"))


def cache_dir() -> Path:
    env = os.environ.get("PEREGRINE_TEST_MODELS")
    return Path(env) if env else peregrine_home() / "test-models"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_memo(path: Path) -> str:
    """sha256 of a big input, remembered beside the outputs against its size and mtime."""
    st = path.stat()
    stamp = f"{path.resolve()} {st.st_size} {st.st_mtime_ns}"
    memo = cache_dir() / f".sha256-{path.name}"
    try:
        old_stamp, digest = memo.read_text().rsplit(" ", 1)
        if old_stamp == stamp:
            return digest
    except (OSError, ValueError):
        pass
    log(f"hashing {path} ...")
    digest = sha256_file(path)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(f"{stamp} {digest}")
    return digest


def own_source_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def cache_key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in (own_source_hash(), importlib.metadata.version("gguf"), *parts):
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def is_fresh(path: Path, key: str) -> bool:
    keyfile = path.with_name(path.name + ".key")
    try:
        return path.is_file() and keyfile.read_text().strip() == key
    except OSError:
        return False


def mark_fresh(path: Path, key: str) -> None:
    path.with_name(path.name + ".key").write_text(key + "\n")


# --------------------------------------------------------------------------------------
# Templates: from the llama-cpp-python sdist on PyPI
# --------------------------------------------------------------------------------------


def templates_dir() -> Path:
    return cache_dir() / "templates"


def fetch_sdist(dest: Path) -> Path:
    """The pinned sdist, through pip (hash-checked), or $PEREGRINE_LLAMA_CPP_SDIST."""
    local = os.environ.get("PEREGRINE_LLAMA_CPP_SDIST")
    if local:
        path = Path(local)
    else:
        req = dest / "requirements.txt"
        req.write_text(
            f"{LLAMA_CPP_PYTHON}=={LLAMA_CPP_PYTHON_VERSION} "
            f"--hash=sha256:{LLAMA_CPP_PYTHON_SHA256}\n"
        )
        log(f"downloading the {LLAMA_CPP_PYTHON} {LLAMA_CPP_PYTHON_VERSION} sdist (pip) ...")
        # pip prepares the sdist's metadata, which needs its build backend
        # (scikit-build-core) in an isolated environment; nothing gets compiled.
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--no-deps", "--no-binary", ":all:", "-d", str(dest), "-r", str(req)],
            check=True, stdout=sys.stderr,
        )
        path = dest / LLAMA_CPP_PYTHON_SDIST
    digest = sha256_file(path)
    if digest != LLAMA_CPP_PYTHON_SHA256:
        raise SystemExit(f"{path}: sha256 {digest}, expected {LLAMA_CPP_PYTHON_SHA256}")
    return path


def ensure_templates() -> Path:
    """Extracts TEMPLATES from the pinned sdist into the cache (once); returns the folder."""
    out = templates_dir()
    # Keyed by what is extracted only, so that editing this file does not download again.
    key = hashlib.sha256("\0".join((LLAMA_CPP_PYTHON_SHA256, *TEMPLATES)).encode()).hexdigest()
    stamp = out / "SOURCE"
    if all((out / t).is_file() for t in TEMPLATES) and is_fresh(stamp, key):
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sdist = fetch_sdist(Path(tmp))
        with tarfile.open(sdist, "r:gz") as tar:
            for name in TEMPLATES:
                member = tar.extractfile(TEMPLATES_IN_SDIST + name)
                if member is None:
                    raise SystemExit(f"{sdist}: no {TEMPLATES_IN_SDIST + name}")
                part = out / (name + ".part")
                part.write_bytes(member.read())
                part.replace(out / name)
    stamp.write_text(
        f"{LLAMA_CPP_PYTHON}=={LLAMA_CPP_PYTHON_VERSION} sdist "
        f"sha256:{LLAMA_CPP_PYTHON_SHA256}\n{TEMPLATES_IN_SDIST}\n"
    )
    mark_fresh(stamp, key)
    log(f"templates extracted into {out}")
    return out


# --------------------------------------------------------------------------------------
# Byte-level BPE helpers (GPT-2's byte <-> unicode map, as the Qwen vocabulary uses)
# --------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_DECODER = {c: b for b, c in bytes_to_unicode().items()}


def decode_piece(token: str, token_type: int) -> str:
    """A token's text as llama.cpp renders it (special-aware): byte tokens are decoded."""
    if token_type in (3, 4):  # CONTROL, USER_DEFINED: literal text
        return token
    return bytes(BYTE_DECODER[c] for c in token).decode("utf-8")


# --------------------------------------------------------------------------------------
# reasoning: qwen3-reasoning-tiny.gguf
# --------------------------------------------------------------------------------------

QWEN3_ADDED = {
    151665: "<tool_response>",
    151666: "</tool_response>",
    151667: "<think>",
    151668: "</think>",
}
QWEN3_ADDED_IDS = {v: k for k, v in QWEN3_ADDED.items()}
TOKEN_TYPE_USER_DEFINED = 4
BOS_ID = 151643  # <|endoftext|>, also padding, as in Qwen3's GGUFs
EOS_ID = 151645  # <|im_end|>

# The script greedy decoding follows, as token strings of the vocabulary (byte-level BPE:
# "Ġ" is a space, "Ċ" a newline). Each token leads to the next one; every other token
# (the chain's last one included) leads to the first, <think>.
CHAIN = ["<think>", "Okay", "Ġthinking", ".", "</think>", "ĊĊ", "Hello", "!", "<|im_end|>"]

N_EMBD = 64
N_LAYER = 2
N_HEAD = 2
N_HEAD_KV = 1
HEAD_DIM = 32
N_FF = 128
N_CTX = 4096
ROPE_BASE = 1e6
RMS_EPS = 1e-6
LOGIT_WEIGHT = 4.0  # a chain logit is about LOGIT_WEIGHT * sqrt(N_EMBD) = 32
SEED = 20250607


def read_vocab(path: Path):
    import gguf

    log(f"reading the vocabulary of {path} ...")
    r = gguf.GGUFReader(path)

    def field(name):
        f = r.get_field(name)
        if f is None:
            raise SystemExit(f"{path}: no {name}")
        return f.contents()

    vocab = {
        "model": field("tokenizer.ggml.model"),
        "pre": field("tokenizer.ggml.pre"),
        "tokens": list(field("tokenizer.ggml.tokens")),
        "types": [int(t) for t in field("tokenizer.ggml.token_type")],
        "merges": list(field("tokenizer.ggml.merges")),
    }
    for i in QWEN3_ADDED:
        old = vocab["tokens"][i]
        if old != f"[PAD{i}]":
            raise SystemExit(f"{path}: token {i} is {old!r}, expected a padding entry")
    for i, text in QWEN3_ADDED.items():
        vocab["tokens"][i] = text
        vocab["types"][i] = TOKEN_TYPE_USER_DEFINED
    if vocab["tokens"][BOS_ID] != "<|endoftext|>" or vocab["tokens"][EOS_ID] != "<|im_end|>":
        raise SystemExit(f"{path}: not the Qwen2.5 vocabulary")
    return vocab


def chain_ids(tokens: list[str]) -> list[int]:
    index = {}
    for i, t in enumerate(tokens):
        index.setdefault(t, i)
    ids = []
    for t in CHAIN:
        if t not in index:
            raise SystemExit(f"{t!r} is not one token of the vocabulary")
        ids.append(index[t])
    return ids


def design_weights(n_vocab: int, chain: list[int]) -> dict[str, np.ndarray]:
    """Tensors by GGUF name, numpy shape (rows = outputs, columns = inputs)."""
    rng = np.random.default_rng(SEED)
    d, k = N_EMBD, len(chain) - 1  # k chain tokens have a successor: directions e_1..e_k
    assert k + 1 < d
    scale = np.sqrt(d)  # RMSNorm leaves sqrt(d) * e_i as it is

    # Embeddings: chain token c_i (i < k) is sqrt(d) e_{i+1}; every other token (the last
    # chain token included) is sqrt(d) e_0 plus noise in the dimensions the chain leaves.
    embd = np.zeros((n_vocab, d), dtype=np.float32)
    embd[:, 0] = scale
    embd[:, k + 1:] = rng.normal(0.0, 0.5, (n_vocab, d - k - 1))
    for i, tok in enumerate(chain[:-1]):
        embd[tok] = 0.0
        embd[tok, i + 1] = scale

    # Output: small noise, but the successor of c_i reads e_{i+1}, and <think> reads e_0.
    out = rng.normal(0.0, 0.02, (n_vocab, d)).astype(np.float32)
    out[chain[0]] = 0.0
    out[chain[0], 0] = LOGIT_WEIGHT
    for i, tok in enumerate(chain[1:]):
        out[tok] = 0.0
        out[tok, i + 1] = LOGIT_WEIGHT

    t = {
        "token_embd.weight": embd.astype(np.float16),
        "output_norm.weight": np.ones(d, dtype=np.float32),
        "output.weight": out.astype(np.float16),
    }
    q, kv = N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM
    for b in range(N_LAYER):
        p = f"blk.{b}."
        t[p + "attn_norm.weight"] = np.ones(d, dtype=np.float32)
        t[p + "attn_q.weight"] = rng.normal(0.0, 0.02, (q, d)).astype(np.float32)
        t[p + "attn_k.weight"] = rng.normal(0.0, 0.02, (kv, d)).astype(np.float32)
        t[p + "attn_v.weight"] = rng.normal(0.0, 0.02, (kv, d)).astype(np.float32)
        t[p + "attn_q_norm.weight"] = np.ones(HEAD_DIM, dtype=np.float32)
        t[p + "attn_k_norm.weight"] = np.ones(HEAD_DIM, dtype=np.float32)
        t[p + "attn_output.weight"] = np.zeros((d, q), dtype=np.float32)
        t[p + "ffn_norm.weight"] = np.ones(d, dtype=np.float32)
        t[p + "ffn_gate.weight"] = rng.normal(0.0, 0.02, (N_FF, d)).astype(np.float32)
        t[p + "ffn_up.weight"] = rng.normal(0.0, 0.02, (N_FF, d)).astype(np.float32)
        t[p + "ffn_down.weight"] = np.zeros((d, N_FF), dtype=np.float32)
    return t


def write_reasoning(path: Path, vocab, template: str, tensors: dict[str, np.ndarray]) -> None:
    import gguf

    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3]
    names = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.QWEN3]}
    for name in tensors:
        base = name.removesuffix(".weight")
        generic = base.split(".", 2)
        if base not in names and not (generic[0] == "blk" and f"blk.{{bid}}.{generic[2]}" in names):
            raise SystemExit(f"{name} is not a qwen3 tensor")

    w = gguf.GGUFWriter(path, arch)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name("Peregrine test Qwen3 reasoning tiny")
    w.add_description("Tiny designed qwen3 model for end-to-end tests "
                      "(scripts/make_test_models.py); not a language model")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(ROPE_BASE)
    w.add_layer_norm_rms_eps(RMS_EPS)

    w.add_tokenizer_model(vocab["model"])
    w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    w.add_token_merges(vocab["merges"])
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_eot_token_id(EOS_ID)
    w.add_pad_token_id(BOS_ID)
    w.add_add_bos_token(False)
    w.add_chat_template(template)

    for name, data in tensors.items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def rms_norm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) * weight


def forward(t: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """Logits after the last token: the whole qwen3 graph, as llama.cpp computes it."""
    x = t["token_embd.weight"][ids].astype(np.float32)
    n = len(ids)
    pos = np.arange(n)[:, None]
    inv = ROPE_BASE ** (-np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
    ang = pos * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(v):  # NEOX style: rotate the two halves
        a, b = v[..., : HEAD_DIM // 2], v[..., HEAD_DIM // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
    for b in range(N_LAYER):
        p = f"blk.{b}."
        h = rms_norm(x, t[p + "attn_norm.weight"])
        q = (h @ t[p + "attn_q.weight"].T).reshape(n, N_HEAD, HEAD_DIM)
        k = (h @ t[p + "attn_k.weight"].T).reshape(n, N_HEAD_KV, HEAD_DIM)
        v = (h @ t[p + "attn_v.weight"].T).reshape(n, N_HEAD_KV, HEAD_DIM)
        q = rope(rms_norm(q, t[p + "attn_q_norm.weight"]))
        k = rope(rms_norm(k, t[p + "attn_k_norm.weight"]))
        rep = N_HEAD // N_HEAD_KV
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        att = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(HEAD_DIM) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", att, v).reshape(n, N_HEAD * HEAD_DIM)
        x = x + o @ t[p + "attn_output.weight"].T
        h = rms_norm(x, t[p + "ffn_norm.weight"])
        g = h @ t[p + "ffn_gate.weight"].T
        u = h @ t[p + "ffn_up.weight"].T
        x = x + (g / (1.0 + np.exp(-g)) * u) @ t[p + "ffn_down.weight"].T
    h = rms_norm(x[-1], t["output_norm.weight"])
    return h @ t["output.weight"].astype(np.float32).T


def verify_reasoning(path: Path, vocab, chain: list[int]) -> None:
    """Reads the file back and checks the script greedy decoding should follow."""
    import gguf

    log("verifying (read back, numpy forward pass) ...")
    r = gguf.GGUFReader(path)
    assert r.get_field("general.architecture").contents() == "qwen3"
    tokens = r.get_field("tokenizer.ggml.tokens").contents()
    types = r.get_field("tokenizer.ggml.token_type").contents()
    for i, text in QWEN3_ADDED.items():
        assert tokens[i] == text and types[i] == TOKEN_TYPE_USER_DEFINED, (i, tokens[i])
    assert r.get_field("tokenizer.ggml.eos_token_id").contents() == EOS_ID
    template = r.get_field("tokenizer.chat_template").contents()
    t = {tensor.name: np.asarray(tensor.data) for tensor in r.tensors}
    for b in range(N_LAYER):
        assert not t[f"blk.{b}.attn_output.weight"].any()
        assert not t[f"blk.{b}.ffn_down.weight"].any()

    # The bigram path (embedding -> RMSNorm -> output) along the chain, by margin.
    embd = t["token_embd.weight"].astype(np.float32)
    out = t["output.weight"].astype(np.float32)
    norm = t["output_norm.weight"]

    def next_token(tok: int) -> tuple[int, float]:
        logits = rms_norm(embd[tok], norm) @ out.T
        top2 = np.argpartition(logits, -2)[-2:]
        top2 = top2[np.argsort(logits[top2])[::-1]]
        return int(top2[0]), float(logits[top2[0]] - logits[top2[1]])

    rng = np.random.default_rng(1)
    others = [198, 151644, 151645, 151643, 872, 77091] + list(rng.integers(0, len(tokens), 20))
    checks = [(a, b) for a, b in zip(chain, chain[1:])] + \
             [(int(o), chain[0]) for o in others if int(o) not in chain[:-1]]
    worst = np.inf
    for tok, want in checks:
        got, margin = next_token(tok)
        assert got == want, f"after {tokens[tok]!r}: {tokens[got]!r}, expected {tokens[want]!r}"
        assert margin > 10, f"after {tokens[tok]!r}: margin {margin:.2f}"
        worst = min(worst, margin)
    log(f"  bigram path: {len(checks)} transitions right, smallest logit gap {worst:.1f}")

    # The whole graph on the two prompt endings, greedy to <|im_end|>.
    def generate(prompt_ids: list[int]) -> str:
        ids, text = list(prompt_ids), ""
        for _ in range(16):
            nxt = int(np.argmax(forward(t, ids)))
            if nxt == EOS_ID:
                return text
            text += decode_piece(tokens[nxt], int(types[nxt]))
            ids.append(nxt)
        raise AssertionError(f"no <|im_end|> after {text!r}")

    im_start, user, assistant, nl, nl2 = 151644, 872, 77091, 198, 271
    think, end_think = QWEN3_ADDED_IDS["<think>"], QWEN3_ADDED_IDS["</think>"]
    assert tokens[user] == "user" and tokens[assistant] == "assistant"
    assert "Ċ Ċ" in vocab["merges"] and tokens[nl2] == "ĊĊ"
    head = [im_start, user, nl, 9707, EOS_ID, nl, im_start, assistant, nl]
    got = generate(head)
    assert got == "<think>Okay thinking.</think>\n\nHello!", repr(got)
    got_off = generate(head + [think, nl2, end_think, nl2])
    assert got_off == "Hello!", repr(got_off)
    log(f"  forward pass: thinking -> {got!r}, enable_thinking=false -> {got_off!r}")

    # The template renders those prompt endings (when jinja2 is there to render it).
    try:
        import jinja2
    except ImportError:
        log("  (jinja2 missing: template rendering not checked)")
        return
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    tpl = env.from_string(template)
    msgs = [{"role": "user", "content": "Hello"}]
    on = tpl.render(messages=msgs, add_generation_prompt=True)
    off = tpl.render(messages=msgs, add_generation_prompt=True, enable_thinking=False)
    assert on == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", repr(on)
    assert off == on + "<think>\n\n</think>\n\n", repr(off)
    log("  template: generation prompts render as expected")


def build_reasoning(force: bool = False) -> Path:
    source = peregrine_home() / "models" / SOURCE_MODEL
    if not source.is_file():
        raise SystemExit(f"{source} is missing: run `peregrine pull` for the default model first")
    out = cache_dir() / "qwen3-reasoning-tiny.gguf"
    key = cache_key(sha256_memo(source))
    if not force and is_fresh(out, key):
        log(f"{out} is up to date")
        return out
    started = time.monotonic()
    template = (ensure_templates() / QWEN3_TEMPLATE).read_text()
    vocab = read_vocab(source)
    chain = chain_ids(vocab["tokens"])
    log("chain: " + " -> ".join(f"{vocab['tokens'][i]}({i})" for i in chain))
    tensors = design_weights(len(vocab["tokens"]), chain)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    log(f"writing {part} ...")
    write_reasoning(part, vocab, template, tensors)
    verify_reasoning(part, vocab, chain)
    part.replace(out)
    mark_fresh(out, key)
    log(f"{out}: {out.stat().st_size / 1e6:.1f} MB in {time.monotonic() - started:.1f}s")
    return out


def build_templates(force: bool = False) -> Path:
    if force:
        (templates_dir() / "SOURCE.key").unlink(missing_ok=True)
    return ensure_templates()


# name -> (builder returning the path to print, help)
MODELS = {
    "reasoning": (build_reasoning, "qwen3-reasoning-tiny.gguf: a designed Qwen3 reasoning model"),
    "templates": (build_templates, "chat templates from the pinned llama-cpp-python sdist"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for name, (_, help_) in MODELS.items():
        p = sub.add_parser(name, help=help_)
        p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args()
    print(MODELS[args.what][0](force=args.force))


if __name__ == "__main__":
    main()
