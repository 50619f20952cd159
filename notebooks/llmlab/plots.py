"""Plots the whole course draws the same way: titled, labelled, with units."""

import matplotlib.pyplot as plt
from IPython.display import display

plt.rcParams.update(
    {
        "figure.figsize": (7.0, 3.8),
        "figure.dpi": 100,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)


def axes(title: str, xlabel: str, ylabel: str, *, ax=None, figsize=None):
    """A fresh (or given) matplotlib Axes with its title and axis labels set."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax


def heatmap(matrix, row_labels, col_labels, *, title, xlabel, ylabel, ax=None, cmap="viridis", colorbar=""):
    """A labelled heat map of a 2-D array (attention weights, bigram probabilities, similarities)."""
    ax = axes(title, xlabel, ylabel, ax=ax)
    image = ax.imshow(matrix, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(col_labels)), labels=col_labels, fontsize=8)
    ax.set_yticks(range(len(row_labels)), labels=row_labels, fontsize=8)
    ax.grid(False)
    bar = ax.figure.colorbar(image, ax=ax)
    bar.set_label(colorbar)
    return ax


class LiveLossPlot:
    """A loss plot that redraws in place while a model trains (in Jupyter; in a script it draws at the end).

        plot = LiveLossPlot("Pretraining", ylabel="cross-entropy (nats/token)")
        plot.add("train", step, loss); plot.add("validation", step, val_loss)
        plot.show()          # every few steps
    """

    def __init__(self, title: str, *, xlabel: str = "step", ylabel: str = "loss (nats/token)"):
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.series: dict[str, tuple[list, list]] = {}
        self._handle = None

    def add(self, name: str, x: float, y: float) -> None:
        xs, ys = self.series.setdefault(name, ([], []))
        xs.append(x)
        ys.append(y)

    def figure(self):
        fig, ax = plt.subplots()
        axes(self.title, self.xlabel, self.ylabel, ax=ax)
        for name, (xs, ys) in self.series.items():
            ax.plot(xs, ys, label=name, marker="." if len(xs) < 30 else None)
        if self.series:
            ax.legend()
        plt.close(fig)  # shown through the display handle, not by pyplot
        return fig

    def show(self) -> None:
        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
