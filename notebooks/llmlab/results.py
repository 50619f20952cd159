"""Key figures of a notebook (a loss, an accuracy, a throughput), recorded for `make bench`.

`record("val_loss", 1.87)` returns the value so a cell can show it; when the benchmark runs a notebook it
sets LLMLAB_RESULTS to a JSON file, and every recorded figure is written there.
"""

import json
import os
from pathlib import Path


def record(key: str, value, unit: str = ""):
    path = os.environ.get("LLMLAB_RESULTS")
    if path:
        path = Path(path)
        figures = json.loads(path.read_text()) if path.exists() else {}
        figures[key] = {"value": value, "unit": unit} if unit else value
        path.write_text(json.dumps(figures, indent=2))
    return value
