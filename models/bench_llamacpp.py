"""llama.cpp peer figures for bench-llm.sh: the same measurements as `thermo bench llm`
(prefill on 32- and 128-token prompts, decode over 64 tokens after a 32-token prompt, best of
3, peak RSS of the process, seconds to load) through the llama_cpp Python binding. With
--json, prints one JSON object with the same keys as `thermo bench llm --json`."""
import json
import resource
import sys
import time

from llama_cpp import Llama

TEXT = (
    "The Raspberry Pi is a series of small single-board computers developed in the United "
    "Kingdom. It is widely used in education, robotics and home automation because it is cheap, "
    "quiet and draws little power. Running a language model on such a board turns most of that "
    "power into heat, and the firmware slows the processor down when the chip gets too hot. A "
    "governor that paces the work can keep the temperature steady and the speed predictable, "
    "which is what a user of an offline assistant wants. "
)


def main() -> None:
    path, threads = sys.argv[1], int(sys.argv[2])
    t = time.perf_counter()
    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512,
                n_batch=512, verbose=False)
    load_s = time.perf_counter() - t
    ids = []
    while len(ids) < 128:
        ids += llm.tokenize(TEXT.encode(), add_bos=False)

    def prefill(n: int) -> float:
        best = 0.0
        for _ in range(3):
            llm.reset()
            t = time.perf_counter()
            llm.eval(ids[:n])
            best = max(best, n / (time.perf_counter() - t))
        return best

    p32, p128 = prefill(32), prefill(128)
    best = 0.0
    for _ in range(3):
        llm.reset()
        llm.eval(ids[:32])
        t = time.perf_counter()
        for _ in range(64):
            tok = llm.sample(temp=0.0)
            llm.eval([tok])
        best = max(best, 64 / (time.perf_counter() - t))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    if "--json" in sys.argv[3:]:
        print(json.dumps({"model": f"llama.cpp {path}", "threads": threads, "prefill32_tps": p32,
                          "prefill128_tps": p128, "decode64_tps": best, "peak_rss_mb": rss_mb,
                          "load_s": load_s}))
    else:
        print(f"| llama.cpp {path} | {threads} | {p32:.1f} | {p128:.1f} | {best:.1f} | {rss_mb:.0f} | {load_s:.2f} |")


if __name__ == "__main__":
    main()
