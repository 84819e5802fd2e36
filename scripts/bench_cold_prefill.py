#!/usr/bin/env python3
"""Cold prefill against what the unified KV cache holds: one `peregrine serve` (default model,
8 slots), a new ~1,700-token prompt with the cache empty, then after seven other slots were
filled with prompts of the same length, then once more. Prints (seconds to the answer of
one token, prompt tokens). Each long prompt moves the idle slots' cells to host memory
before its prefill (decision 0004), so B and C should take what A took. Run from the
repository root after a release build."""
import json
import socket
import subprocess
import tempfile
import time
import urllib.request

s=socket.socket(); s.bind(("127.0.0.1",0)); port=s.getsockname()[1]; s.close()
p=subprocess.Popen(["target/release/peregrine","serve","--port",str(port),"--parallel","8","--ctx-size","4096"],stdout=subprocess.DEVNULL,stderr=tempfile.TemporaryFile())
url=f"http://127.0.0.1:{port}/openai/v1/chat/completions"
for _ in range(120):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health"); break
    except Exception: time.sleep(1)
time.sleep(20)
words="falcon city tower river bridge market district harbor station garden ".split()
def text(tag,n): return f"[{tag}] "+" ".join(words[i%len(words)]+str(i%97) for i in range(n))
def req(system, max_tokens=1):
    body=json.dumps({"model":"qwen2.5-coder-0.5b-instruct","messages":[{"role":"system","content":system},{"role":"user","content":"One word."}],"temperature":0,"max_tokens":max_tokens}).encode()
    t=time.time(); r=urllib.request.urlopen(urllib.request.Request(url,body,{"Content-Type":"application/json"})); d=json.load(r)
    return time.time()-t, d["usage"]["prompt_tokens"]
print("cold A (empty cache):", req(text("A",560)), flush=True)
for i in range(7): req(text(f"fill{i}",560))
print("cold B (7 other slots hold ~1.7k cells each):", req(text("B",560)), flush=True)
print("cold C (same state as B):", req(text("C",560)), flush=True)
p.terminate(); p.wait()
