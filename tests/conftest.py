import os

import pytest

from lowbit.models import default_model_path

WIKITEXT_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "wikitext-2")


@pytest.fixture(scope="session")
def model_path() -> str:
    # The default model is part of the test extra: a missing install fails loudly here.
    return default_model_path()


@pytest.fixture(scope="session")
def llm(model_path):
    from lowbit import LLM

    return LLM(model_path, n_ctx=1024, n_threads=2, seed=1234)


@pytest.fixture(scope="session")
def wikitext_test() -> str:
    path = os.path.join(WIKITEXT_DIR, "test.txt")
    if not os.path.exists(path):
        pytest.skip("wikitext-2 test.txt not found beside the repository (../shared/data)")
    with open(path, encoding="utf-8") as f:
        return f.read()
