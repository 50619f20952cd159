"""Benchmark: inference speed of the course's base model, two ways.

    python bench/inference.py          # full mode (the real base model); about a minute once "base" is cached

kv_cache   greedy generation of 256 new tokens after one end-of-text token, with and without the KV cache:
           tokens/s of each and the speedup (the issue aims for at least 6x).
llama_cpp  the same model exported to GGUF (f32), run by llama-cpp-python, against llmlab with its KV cache:
           tokens/s of each for 256 greedy tokens and the ratio (aim: at least 3x); both on the same threads,
           and the greedy tokens are checked to be identical.

Each figure is the best of a few runs (other programs on the machine only ever slow a run down), and each side
runs at the thread count that suits it best, 1 or all of them: one new token is too little work to share out,
while the uncached forward over the whole sequence gains from a second core. No side is handicapped. The figures
are merged into bench/results.json under "benchmarks" (read, modified, written: other tools write other keys).
Set LLMLAB_MODE=fast for a quick check with the toy model.
"""

import json
import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LLMLAB_MODE", "full")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "notebooks"))

import torch  # noqa: E402

from llmlab import runtime  # noqa: E402
from llmlab.export import export_gguf, llama_cpp_speed, load_gguf  # noqa: E402
from llmlab.generation import generate, generation_speed  # noqa: E402
from llmlab.pretraining import base_model  # noqa: E402
from llmlab.tokenizer import course_tokenizer  # noqa: E402

RESULTS_FILE = REPO_ROOT / "bench" / "results.json"
NEW_TOKENS = 256
REPEATS = 5


def at_best_thread_count(measure) -> tuple[float, int]:
    """(the highest tokens/s measure(threads) gives, at how many threads), over 1 thread and all of them."""
    default = torch.get_num_threads()
    best = (0.0, default)
    try:
        for threads in sorted({1, default}):
            torch.set_num_threads(threads)
            best = max(best, (measure(threads), threads))
    finally:
        torch.set_num_threads(default)
    return best


def main() -> dict:
    runtime.seed_everything(0)
    tokenizer, model = course_tokenizer(), base_model().cpu().eval()
    eot = tokenizer.eos_token_id
    # the whole generation must fit the context window, or the cache cannot be used
    new_tokens = min(NEW_TOKENS, model.config.block_size - 1)
    prompt = torch.tensor([[eot]])

    for use_cache in (True, False):  # warm-up: the first runs allocate memory and prepare kernels
        generation_speed(model, prompt, new_tokens, use_cache=use_cache, repeats=1)
    cached, cached_threads = at_best_thread_count(
        lambda threads: generation_speed(model, prompt, new_tokens, use_cache=True, repeats=REPEATS))
    uncached, uncached_threads = at_best_thread_count(
        lambda threads: generation_speed(model, prompt, new_tokens, use_cache=False, repeats=REPEATS))
    kv = {"new_tokens": new_tokens, "tokens_per_s_cached": round(cached, 1),
          "tokens_per_s_uncached": round(uncached, 1), "speedup": round(cached / uncached, 2), "aim": 6.0,
          "threads_cached": cached_threads, "threads_uncached": uncached_threads}

    ours = generate(model, prompt, new_tokens, temperature=0)[0, 1:].tolist()
    with tempfile.TemporaryDirectory() as scratch:
        path = export_gguf(model, tokenizer, Path(scratch) / "base.gguf")
        runs = {}

        def llama_cpp_tokens_per_s(threads: int) -> float:
            llm = load_gguf(path, n_threads=threads)
            try:
                speed, runs[threads] = llama_cpp_speed(llm, [eot], new_tokens, repeats=REPEATS)
            finally:
                llm.close()
            return speed

        llama, llama_threads = at_best_thread_count(llama_cpp_tokens_per_s)
        theirs = runs[llama_threads]
        size = path.stat().st_size
    # llama.cpp stops after end-of-text; compare the tokens both wrote
    same = theirs == ours[:len(theirs)]
    llama_figures = {"new_tokens": len(theirs), "tokens_per_s_llama_cpp": round(llama, 1),
                     "tokens_per_s_llmlab": round(cached, 1), "ratio": round(llama / cached, 2), "aim": 3.0,
                     "same_greedy_tokens": same, "gguf": "f32", "gguf_bytes": size,
                     "threads_llama_cpp": llama_threads, "threads_llmlab": cached_threads}

    figures = {"kv_cache": kv, "llama_cpp": llama_figures,
               "model": {"parameters": model.num_parameters(), "mode": runtime.MODE}}
    results = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
    results.setdefault("benchmarks", {})
    results["benchmarks"]["kv_cache"] = {**kv, "model_parameters": model.num_parameters(),
                                         "mode": runtime.MODE}
    results["benchmarks"]["llama_cpp"] = {**llama_figures, "mode": runtime.MODE}
    results.setdefault("machine", {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                   "python": platform.python_version()})
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return figures


if __name__ == "__main__":
    for name, row in main().items():
        print(f"{name}: {row}")
