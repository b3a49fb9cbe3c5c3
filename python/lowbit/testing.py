"""Helpers shared by lowbit's tests."""
from .models import default_model_path  # noqa: F401
