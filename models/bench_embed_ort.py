#!/usr/bin/env python3
"""The onnxruntime side of `models/bench-embed.sh`.

  bench_embed_ort.py texts OUTDIR
      writes OUTDIR/long.txt (64 chunks of 200 words of models/eval/heldout.txt, overlapping
      windows) and OUTDIR/short.txt (64 sentences), one text per line
  bench_embed_ort.py run MODEL.onnx IDS.json THREADS ROUNDS
      embeds the word-piece ids (a JSON array of arrays, `thermo embed --tokenize`) on
      onnxruntime the way thermo batches them (sorted by length, groups of at most 16 texts
      and 4096 padded tokens, each padded to its longest under the attention mask); after one
      untimed pass, prints {"threads": .., "texts_per_s": ..} for the best of ROUNDS passes
"""
import json
import os
import sys
import time

BATCH_TEXTS = 16
BATCH_TOKENS = 4096


def write_texts(out):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "eval", "heldout.txt")) as f:
        text = f.read()
    words = text.split()
    long = [" ".join(words[(i * 13 + j) % len(words)] for j in range(200)) for i in range(64)]
    sentences = [s.strip() + "." for s in text.replace("\n", " ").split(".")]
    sentences = [s for s in sentences if 4 <= len(s.split()) <= 30]
    short = [sentences[i % len(sentences)] for i in range(64)]
    for name, texts in (("long.txt", long), ("short.txt", short)):
        with open(os.path.join(out, name), "w") as f:
            f.write("\n".join(texts) + "\n")


def batches(lengths):
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups, current = [], []
    for i in order:
        if current and (len(current) >= BATCH_TEXTS or (len(current) + 1) * lengths[i] > BATCH_TOKENS):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def run(model, ids_path, threads, rounds):
    import numpy as np
    import onnxruntime as ort

    with open(ids_path) as f:
        ids = json.load(f)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    feeds = []
    for group in batches([len(s) for s in ids]):
        n = max(len(ids[i]) for i in group)
        shape = (len(group), n)
        input_ids = np.zeros(shape, np.int64)
        mask = np.zeros(shape, np.int64)
        positions = np.zeros(shape, np.int64)
        for r, i in enumerate(group):
            seq = ids[i]
            input_ids[r, : len(seq)] = seq
            mask[r, : len(seq)] = 1
            positions[r, : len(seq)] = np.arange(len(seq))
        feeds.append({"input_ids": input_ids, "attention_mask": mask, "position_ids": positions})

    def one_pass():
        for feed in feeds:
            session.run(None, feed)

    one_pass()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        one_pass()
        best = min(best, time.perf_counter() - t)
    print(json.dumps({"threads": threads, "texts_per_s": len(ids) / best}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "texts":
        write_texts(sys.argv[2])
    elif len(sys.argv) == 6 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(__doc__)
