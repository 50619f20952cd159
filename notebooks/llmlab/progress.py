"""One progress bar for the whole course: live in JupyterLab, and readable once the notebook is saved.

In a live kernel `progress_bar` is `tqdm.auto`'s bar (a widget in Jupyter, text in a terminal). A widget bar
saved into a notebook keeps only its first drawing in the plain-text fallback that GitHub and text viewers show
("0%"). So when a notebook is executed headless (LLMLAB_HEADLESS=1, set by tools/run_notebooks.py) the bar is a
text bar that draws nothing while it runs and prints its final line when it closes: what the saved notebook keeps
is "training: 100%|██████████| 600/600 [00:29<00:00, 20.4it/s]".
"""

import io
import os
import sys

from tqdm.auto import tqdm as live_tqdm
from tqdm.std import tqdm as text_tqdm


class FinalLineBar(text_tqdm):
    """A text tqdm that keeps quiet while it runs and prints its final state, once, when it is closed."""

    def __init__(self, *args, **kwargs):
        kwargs["file"] = io.StringIO()  # the running redraws go nowhere
        kwargs.setdefault("ascii", False)
        kwargs.setdefault("smoothing", 0)  # the rate printed at the end is the average over the whole run
        super().__init__(*args, **kwargs)

    def close(self):
        if self.disable:  # disabled from the start, or already closed
            return super().close()
        if self.total is not None and self.n > self.total:  # planned low (e.g. epochs of varying size):
            self.total = self.n  # show the count reached, not a bar that lost its total
        final = str(self)  # the state at the end, before closing freezes the bar
        leave = self.leave
        super().close()
        if leave:
            print(final, file=sys.stdout, flush=True)


def headless() -> bool:
    """True when the notebook is executed without a browser (tools/run_notebooks.py) and saved afterwards."""
    return os.environ.get("LLMLAB_HEADLESS") == "1"


def progress_bar(iterable=None, **kwargs):
    """tqdm's bar, with tqdm's arguments: a live widget in Jupyter; a final text line in a saved notebook."""
    bar = FinalLineBar if headless() else live_tqdm
    return bar(iterable, **kwargs)
