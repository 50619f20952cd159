"""llmlab: the one helper package of *From Bag-of-Words to Strawberry*.

One module per stage of the course, importable from any notebook with no install
(the notebooks' working folder is `notebooks/`). Data flows one way:
text -> tokenizer -> token ids -> batches -> model -> checkpoint -> fine-tuned models -> evaluation.
"""

from llmlab.runtime import MODE, by_mode, device, environment_report, seed_everything
from llmlab.source import show_source

__all__ = ["MODE", "by_mode", "device", "environment_report", "seed_everything", "show_source"]
