"""lowbit: a llama.cpp-style LLM runtime for GGUF models, quantization done right."""
# Developer builds put the compiled _core in <build>/py/lowbit; extend_path lets
# `PYTHONPATH=python:<build>/py` find it beside these sources.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

from ._core import FormatError, LowbitError  # noqa: E402
from .llm import LLM  # noqa: E402

__version__ = "0.1.0"
__all__ = ["LLM", "LowbitError", "FormatError", "__version__"]
