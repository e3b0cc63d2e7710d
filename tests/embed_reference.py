#!/usr/bin/env python3
"""An independent forward pass of a BERT sentence encoder (all-MiniLM-L6-v2's layout) in numpy,
for checking thermo's embeddings: reads the folder's config.json and model.safetensors itself
(the safetensors header and raw little-endian f32 data, no other package), runs every text
alone in float64 without padding, pools the mean of the token states and scales it to unit
length.

Usage: embed_reference.py MODEL_DIR < ids.json > vectors.json
ids.json is a JSON array of word-piece id arrays (`thermo embed --tokenize TEXT...` prints
one); the output is a JSON array of vectors in the same order.
"""
import json
import math
import struct
import sys

import numpy as np


def read_safetensors(path):
    """Tensor name (without a `bert.` prefix) -> float64 array, for the F32 tensors."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        values = np.frombuffer(data[start:end], dtype="<f4").astype(np.float64)
        key = name[len("bert."):] if name.startswith("bert.") else name
        tensors[key] = values.reshape(info["shape"])
    return tensors


def layer_norm(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def linear(t, prefix, x):
    return x @ t[prefix + ".weight"].T + t[prefix + ".bias"]


_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def encode(t, cfg, ids):
    n = len(ids)
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    hd = cfg["hidden_size"] // heads
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:n]
    if "embeddings.token_type_embeddings.weight" in t:
        x = x + t["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        q, k, v = (
            linear(t, p + "attention.self." + m, x).reshape(n, heads, hd).transpose(1, 0, 2)
            for m in ("query", "key", "value")
        )
        probs = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(hd))
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, heads * hd)
        attn = linear(t, p + "attention.output.dense", ctx)
        x = layer_norm(
            attn + x,
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        h = gelu(linear(t, p + "intermediate.dense", x))
        out = linear(t, p + "output.dense", h)
        x = layer_norm(out + x, t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    mean = x.mean(axis=0)
    return mean / max(np.linalg.norm(mean), 1e-12)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    model = sys.argv[1]
    with open(f"{model}/config.json") as f:
        cfg = json.load(f)
    t = read_safetensors(f"{model}/model.safetensors")
    ids = json.load(sys.stdin)
    vectors = [encode(t, cfg, np.asarray(seq, dtype=np.int64)).tolist() for seq in ids]
    json.dump(vectors, sys.stdout)


if __name__ == "__main__":
    main()
