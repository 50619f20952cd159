"""Build every trained artifact of the course ahead of a class: `make artifacts` (full mode unless LLMLAB_MODE says).

    python tools/build_artifacts.py            into the course's cache
    python tools/build_artifacts.py --record   also write each build time into bench/results.json ("artifacts")

One line per artifact: its name, whether it was cached or built, and how long it took. The artifacts are built
in the order they depend on each other (tokenizer -> base -> sft -> ...), each by the same call the notebooks use,
so a notebook opened afterwards loads them in a second.
"""

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
os.environ.setdefault("MPLBACKEND", "Agg")  # no window for the live loss plots

from llmlab import paths, runtime  # noqa: E402


def builders():
    """(artifact name, the call that returns it), in dependency order."""
    from llmlab import pretraining, reasoning, reward, rlhf, sft, showdown, tokenizer

    yield "tokenizer", tokenizer.course_tokenizer
    yield "base", pretraining.base_model  # notebook 06
    for name in sft.VARIANTS:  # notebook 08
        yield name, lambda name=name: sft.sft_model(name)
    yield "persona", sft.persona_model
    yield "merged", sft.merged_model
    yield "preference-pairs", reward.preference_pairs  # notebook 09
    yield "reward", reward.reward_model
    for kl_coef in rlhf.KL_SWEEP:  # notebook 10
        yield rlhf.artifact_name(kl_coef), lambda kl_coef=kl_coef: rlhf.rlhf_model(kl_coef)
    yield "dpo", rlhf.dpo_model
    yield "reasoner", reasoning.reasoner_model  # notebook 11
    yield "sft-tools", showdown.tool_model  # notebook 12


def main() -> None:
    print(f"building the course's artifacts in {runtime.MODE} mode into {paths.CACHE_DIR / runtime.MODE}")
    total = time.perf_counter()
    timings = {}
    for name, build in builders():
        start = time.perf_counter()
        said = io.StringIO()
        with contextlib.redirect_stdout(said):  # the builders' own progress bars go to stderr
            build()
        state = "built" if "building it" in said.getvalue() else "cached"
        timings[name] = {"state": state, "seconds": round(time.perf_counter() - start, 1)}
        print(f"{name:<16} {state:<7} {timings[name]['seconds']:7.1f} s", flush=True)
    print(f"all artifacts ready in {time.perf_counter() - total:.0f} s")
    if "--record" in sys.argv:
        results_file = paths.REPO_ROOT / "bench" / "results.json"
        results = json.loads(results_file.read_text()) if results_file.exists() else {}
        results["artifacts"] = {"mode": runtime.MODE, "total_s": round(time.perf_counter() - total, 1), **timings}
        results_file.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
