"""The first code cell of every notebook, and what it installs on Colab.

Every notebook starts with exactly SETUP_CELL (a test checks it). In Colab it fetches the repository and
installs only what Colab lacks, never torch or ipywidgets (Colab's own builds stay). Anywhere else it only
imports llmlab and prints the environment.
"""

import importlib.util
import subprocess
import sys

from llmlab import paths

REPO_URL = "https://github.com/strawberry-course/bag-of-words-to-strawberry"

SETUP_CELL = f'''# Setup (the same first cell in every notebook). In Colab: fetch the course and what Colab lacks.
import os, sys
if "google.colab" in sys.modules and not os.path.exists("llmlab"):
    if not os.path.exists("/content/course"):
        !git clone --quiet --depth 1 {REPO_URL} /content/course
    os.chdir("/content/course/notebooks")
    from llmlab.colab import install_missing; install_missing()
import llmlab
print(llmlab.environment_report())'''

# Import name -> pip name, for what the course uses beyond Colab's image. Never torch or ipywidgets.
# llama-cpp-python is left out: it compiles for minutes, and only notebook 07 uses it (and says how).
COLAB_LACKS = {"gguf": "gguf", "regex": "regex", "safetensors": "safetensors", "tqdm": "tqdm"}


def pinned(pip_name: str) -> str:
    """The requirement for pip_name as environment.yml pins it (the one list of dependencies)."""
    for line in (paths.REPO_ROOT / "environment.yml").read_text().splitlines():
        requirement = line.strip().removeprefix("- ").strip()
        if requirement.split("==")[0].lower() == pip_name.lower():
            return requirement
    return pip_name


def install_missing() -> None:
    """pip-install, at the pinned versions, each package in COLAB_LACKS that is not importable."""
    missing = [pinned(pip) for module, pip in COLAB_LACKS.items() if importlib.util.find_spec(module) is None]
    if missing:
        print("installing", " ".join(missing))
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)
