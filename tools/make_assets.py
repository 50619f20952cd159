"""Draw the course's static diagrams into assets/ (run once after changing one; the PNGs are committed).

    python tools/make_assets.py            # writes every diagram
    python tools/make_assets.py --check    # exits 1 if a committed PNG differs from what this script draws

A diagram that shows no data (boxes and arrows) is an image file that a notebook displays, not twenty lines of
plotting code in a teaching cell. The drawing is deterministic: fixed sizes, the Agg backend, no timestamps.
"""

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
PNG_METADATA = {"Software": None}  # no matplotlib version in the file: the bytes depend only on the drawing


def training_stages():
    """Notebook 00: the stages that make an assistant, and the notebook of this course that builds each."""
    stages = [
        ("Pretraining", "predict the next token\non trillions of tokens", "base model", "06"),
        ("Supervised\nfine-tuning", "imitate good answers\nto instructions", "instruct model", "08"),
        ("Reward\nmodeling", "learn which of two\nanswers people prefer", "reward model", "09"),
        ("Reinforcement\nlearning", "maximise the reward\n(and verifiable rewards)", "aligned / reasoning\nmodel",
         "10–11"),
    ]
    fig, ax = plt.subplots(figsize=(11, 2.8))
    for i, (name, how, result, notebook) in enumerate(stages):
        x = i * 3
        ax.add_patch(plt.Rectangle((x, 0), 2.4, 2, facecolor="tab:blue", alpha=0.15 + 0.2 * i, edgecolor="k"))
        ax.text(x + 1.2, 1.45, name, ha="center", va="center", fontsize=11, weight="bold")
        ax.text(x + 1.2, 0.75, how, ha="center", va="center", fontsize=8.5)
        ax.text(x + 1.2, -0.45, f"→ {result}\n(notebook {notebook})", ha="center", va="center", fontsize=8.5)
        if i < len(stages) - 1:
            ax.annotate("", xy=(x + 2.95, 1), xytext=(x + 2.45, 1), arrowprops={"arrowstyle": "->", "lw": 2})
    ax.set_xlim(-0.2, 11.6)
    ax.set_ylim(-1.1, 2.2)
    ax.axis("off")
    ax.set_title("How an assistant is made: the stages, and where this course builds each")
    return fig


DIAGRAMS = {"training_stages.png": training_stages}


def render(draw) -> bytes:
    fig = draw()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata=PNG_METADATA)
    plt.close(fig)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args()
    ASSETS_DIR.mkdir(exist_ok=True)
    stale = []
    for name, draw in DIAGRAMS.items():
        path, image = ASSETS_DIR / name, render(draw)
        if args.check:
            if not path.exists() or path.read_bytes() != image:
                stale.append(name)
        else:
            path.write_bytes(image)
            print(f"wrote assets/{name} ({len(image) / 1e3:.0f} kB)")
    if stale:
        sys.exit(f"assets out of date (run python tools/make_assets.py): {stale}")


if __name__ == "__main__":
    main()
