#!/usr/bin/env python3
"""Chunked perplexity of a GGUF with llama-cpp-python, computed the way llama.cpp's
llama-perplexity does: the text is tokenized once (with BOS when the vocabulary adds one),
cut into non-overlapping chunks of CTX tokens, the first token of each chunk is replaced by
BOS when the vocabulary adds one, each chunk is evaluated from an empty cache, and only the
second half of each chunk is scored (the logits at position first .. CTX-2 predict the tokens
at first+1 .. CTX-1, with first = CTX // 2). Prints `PPL = x.xxxx` for comparison with
`thermo perplexity`.

usage: perplexity_llamacpp.py MODEL.gguf TEXT_FILE [--ctx N] [--threads N]
"""

import argparse
import math
import sys

import numpy as np
from llama_cpp import Llama


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    llm = Llama(
        model_path=args.model,
        n_ctx=args.ctx,
        n_batch=args.ctx,
        logits_all=True,
        n_threads=args.threads,
        verbose=False,
    )
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true"
    with open(args.text, "rb") as f:
        text = f.read()
    tokens = llm.tokenize(text, add_bos=add_bos, special=False)
    n_ctx = args.ctx
    n_chunk = len(tokens) // n_ctx
    if n_chunk < 1 or len(tokens) < 2 * n_ctx:
        print(f"need at least {2 * n_ctx} tokens, the text has {len(tokens)}", file=sys.stderr)
        return 1
    first = n_ctx // 2
    nll = 0.0
    count = 0
    for c in range(n_chunk):
        chunk = list(tokens[c * n_ctx : (c + 1) * n_ctx])
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        logits = np.array(llm.scores[:n_ctx], dtype=np.float64)
        for i in range(first, n_ctx - 1):
            row = logits[i]
            m = row.max()
            logz = m + math.log(np.exp(row - m).sum())
            nll += logz - row[chunk[i + 1]]
            count += 1
        print(f"[{c + 1}] {math.exp(nll / count):.4f}", file=sys.stderr)
    print(f"tokens = {len(tokens)}, chunks = {n_chunk}, scored = {count}, add_bos = {add_bos}")
    print(f"PPL = {math.exp(nll / count):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
