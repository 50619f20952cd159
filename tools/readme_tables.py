"""The README's timing and benchmark tables, written from bench/results.json (so the two never disagree).

    python tools/readme_tables.py          rewrite the tables between the README's markers
    python tools/readme_tables.py --check  exit 1 if the README's tables differ from results.json (a test runs it)
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README, RESULTS = ROOT / "README.md", ROOT / "bench" / "results.json"
START, END = "<!-- tables from bench/results.json: start -->", "<!-- tables from bench/results.json: end -->"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def tables(results: dict) -> str:
    notebooks = results["notebooks"]
    names = sorted(notebooks)
    rows = [
        "| notebook | " + " | ".join(name[:2] for name in names) + " |",
        "|---" * (len(names) + 1) + "|",
        "| full mode | " + " | ".join(_duration(notebooks[n]["wall_s"]) for n in names) + " |",
        "| peak memory | " + " | ".join(f"{notebooks[n]['peak_rss_mib'] / 1024:.1f} GB" for n in names) + " |",
        "| built there | " + " | ".join(", ".join(notebooks[n].get("built", [])) or "–" for n in names) + " |",
    ]
    caches = sorted({notebooks[n].get("cache", "empty at the start of the run") for n in names})
    lines = [f"Artifact cache in this run: {'; '.join(caches)}.", "\n".join(rows)]
    bench = results.get("benchmarks", {})
    out = ["| benchmark | ours | reference or aim |", "|---|---|---|"]
    speed = notebooks.get("06_pretraining", {}).get("figures", {})
    if "trainer_speedup" in speed:
        out.append(f"| the base model's training step against the earlier recipe, side by side (notebook 06: rows of "
                   f"8 in bfloat16, compiled, fused AdamW; before: rows of 2 in float32) | "
                   f"{_value(speed['trainer_speedup'])}× the tokens/s ({_value(speed['trainer_tokens_per_s_after']):,} "
                   f"against {_value(speed['trainer_tokens_per_s_before']):,}) | aim ≥ 1.3× |")
    if "shakespeare_char" in bench:
        b = bench["shakespeare_char"]
        est = b["val_loss_20_batch_estimates"]
        out.append(f"| the course trainer on nanoGPT's CPU recipe (char-level tinyshakespeare, 4 layers × 128, "
                   f"{b['steps']} steps) | validation loss {b['val_loss']} in {b['wall_s']:.0f} s; nanoGPT's "
                   f"20-batch estimate of it {est['mean']} ± {est['std']} | ≈ {b['reference']['val_loss']} in "
                   f"≈ {b['reference']['wall_s']:.0f} s (nanoGPT README, one 20-batch estimate) |")
    if "kv_cache" in bench:
        b = bench["kv_cache"]
        out.append(f"| KV cache, {b['new_tokens']} new tokens with the base model | {b['speedup']}× faster than "
                   f"no cache ({b['tokens_per_s_cached']:,.0f} against {b['tokens_per_s_uncached']:,.0f} tokens/s) "
                   f"| aim ≥ {b['aim']:g}× |")
    if "llama_cpp" in bench:
        b = bench["llama_cpp"]
        out.append(f"| llama.cpp on the exported GGUF against `llmlab` | {b['ratio']}× the tokens/s "
                   f"({b['tokens_per_s_llama_cpp']:,.0f} against {b['tokens_per_s_llmlab']:,.0f}) | "
                   f"aim ≥ {b['aim']:g}× |")
    built = results.get("artifacts", {})
    if built and all(v.get("state") == "built" for k, v in built.items() if isinstance(v, dict)):
        slowest = max((k for k, v in built.items() if isinstance(v, dict)), key=lambda k: built[k]["seconds"])
        out.append(f"| `make artifacts` from an empty cache: every model of the course ({len(built) - 2} artifacts) | "
                   f"{_duration(built['total_s'])} (the longest: {slowest}, {_duration(built[slowest]['seconds'])}) "
                   "| aim ≤ 20 min |")
    lines.append("The benchmarks `make bench` runs after the notebooks (figures from the same file):\n\n" + "\n".join(out))
    showdown = _showdown(notebooks.get("12_strawberry_showdown", {}).get("figures", {}))
    if showdown:
        lines.append(showdown)
    return "\n\n".join(lines)


def _value(figure):
    return figure["value"] if isinstance(figure, dict) else figure


def _showdown(figures: dict) -> str:
    """Notebook 12's lineup: every model of the course on the same 500 held-out questions, best first."""
    prefix = "showdown_accuracy_"
    accuracy = {key[len(prefix):]: _value(v) for key, v in figures.items() if key.startswith(prefix)}
    if not accuracy:
        return ""
    rows = ["| model | held-out accuracy | \"strawberry\" right, of 20 samples |", "|---|---|---|"]
    for model in sorted(accuracy, key=accuracy.get, reverse=True):
        share = _value(figures.get(f"showdown_strawberry_samples_right_{model}", 0))
        rows.append(f"| {model.replace('_', ' ')} | {accuracy[model]:.1%} | {round(share * 20)} |")
    return ("The showdown of notebook 12 (500 held-out words, never trained on; a constant answer scores 25 %):"
            "\n\n" + "\n".join(rows))


def rewritten(readme: str, results: dict) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the markers {START} ... {END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{tables(results)}\n{END}{tail}"


def main() -> None:
    readme, results = README.read_text(), json.loads(RESULTS.read_text())
    new = rewritten(readme, results)
    if "--check" in sys.argv:
        if new != readme:
            raise SystemExit("README.md's tables differ from bench/results.json: run python tools/readme_tables.py")
        return
    README.write_text(new)


if __name__ == "__main__":
    main()
