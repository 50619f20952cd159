"""Benchmark: the course trainer on character-level tinyshakespeare with the well-known CPU recipe.

    python bench/shakespeare_char.py            # about 2-3 minutes on a 2-core CPU

The recipe (nanoGPT's `train_shakespeare_char` as its README shrinks it for a laptop CPU): 4 layers, 4 heads,
128-d, context 64, batch 12, 2000 steps, learning rate 1e-3 with 100 warm-up steps and cosine decay to 1e-4,
AdamW betas (0.9, 0.99), weight decay 0.1, gradient clipping at 1.0, no dropout, no biases; the first 90 % of
the text trains, the last 10 % validates. nanoGPT reports a validation loss of about 1.88 in about 3 minutes
on a laptop CPU. We record tokens/s, wall time and the final validation loss, scored on ALL of the validation
text, and merge them into bench/results.json under benchmarks.shakespeare_char.

nanoGPT's 1.88 is one estimate from 20 random batches of 12 x 64 characters (its --eval_iters=20), which
wobbles from draw to draw. So the same estimate is also drawn many times from our final model: its spread says
how far apart two honest measurements of one model can be, and where 1.88 falls in it.
"""

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "notebooks"))

from llmlab import corpora  # noqa: E402
from llmlab.data import batches, cut_rows, inputs_and_targets  # noqa: E402
from llmlab.gpt import GPT, GPTConfig  # noqa: E402
from llmlab.runtime import seed_everything  # noqa: E402
from llmlab.training import TrainConfig, train  # noqa: E402

RESULTS_FILE = REPO_ROOT / "bench" / "results.json"
ESTIMATE_BATCHES, ESTIMATE_DRAWS = 20, 200  # nanoGPT's --eval_iters=20; how many such estimates we draw
REFERENCE = {"val_loss": 1.88, "wall_s": 180.0, "source": "nanoGPT README, shakespeare_char on a laptop CPU"}

MODEL = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False)
RECIPE = TrainConfig(max_steps=2000, batch_size=12, learning_rate=1e-3, min_lr=1e-4, warmup_steps=100,
                     betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0,
                     eval_interval=250, eval_rows=240)  # periodic checks on 240 rows; all of them at the end


@torch.no_grad()
def twenty_batch_estimates(model, val_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ESTIMATE_DRAWS estimates of the validation loss, each nanoGPT's way: the mean over 20 random batches."""
    model.eval()
    block, batch = MODEL.block_size, RECIPE.batch_size
    estimates = []
    for _ in range(ESTIMATE_DRAWS):
        starts = torch.randint(len(val_ids) - block, (ESTIMATE_BATCHES, batch), generator=generator)
        losses = [model(torch.stack([val_ids[i:i + block] for i in row]),
                        torch.stack([val_ids[i + 1:i + 1 + block] for i in row]))[1] for row in starts]
        estimates.append(torch.stack(losses).mean())
    return torch.stack(estimates)


def main() -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    seed_everything(1337)
    text = corpora.shakespeare()
    chars = sorted(set(text))
    assert len(chars) == MODEL.vocab_size, f"expected 65 distinct characters, found {len(chars)}"
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]

    model = GPT(MODEL)
    generator = torch.Generator().manual_seed(1337)
    train_batches = batches(train_ids, MODEL.block_size, RECIPE.batch_size, pad_id=0, generator=generator)
    val = inputs_and_targets(cut_rows(val_ids, MODEL.block_size), pad_id=0)
    history = train(model, train_batches, RECIPE, val_sets={"val": val}, desc="shakespeare_char")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    estimates = twenty_batch_estimates(model, val_ids, torch.Generator().manual_seed(0))

    figures = {
        "val_loss": round(history.final_val_loss["val"], 4),
        "train_loss_last50": round(history.final_train_loss(), 4),
        "tokens_per_s": round(history.tokens_per_second),
        "train_s": round(history.train_seconds, 1),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),  # CPU time of all threads: with wall_s, shows whether the CPU was shared
        "steps": RECIPE.max_steps,
        "parameters": model.num_parameters(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "reference": REFERENCE,
        "val_loss_20_batch_estimates": {  # nanoGPT's way of measuring, drawn ESTIMATE_DRAWS times
            "draws": ESTIMATE_DRAWS, "mean": round(estimates.mean().item(), 4),
            "std": round(estimates.std().item(), 4), "min": round(estimates.min().item(), 4),
            "max": round(estimates.max().item(), 4),
            "share_at_or_below_reference": round((estimates <= REFERENCE["val_loss"]).float().mean().item(), 3),
        },
        "beats_reference": history.final_val_loss["val"] <= REFERENCE["val_loss"] and wall <= REFERENCE["wall_s"],
    }
    results = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
    results.setdefault("benchmarks", {})["shakespeare_char"] = figures
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    spread = figures["val_loss_20_batch_estimates"]
    print(f"shakespeare_char: val loss {figures['val_loss']} (reference {REFERENCE['val_loss']}); "
          f"20-batch estimates {spread['mean']} ± {spread['std']} ({spread['min']} to {spread['max']}), "
          f"{spread['share_at_or_below_reference']:.0%} of them at or below {REFERENCE['val_loss']}; "
          f"{figures['tokens_per_s']:,} tokens/s, {figures['wall_s']} s wall "
          f"(reference {REFERENCE['wall_s']:.0f} s), {figures['parameters']:,} parameters")
    return figures


if __name__ == "__main__":
    main()
