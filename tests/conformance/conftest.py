import pytest


@pytest.fixture(scope="session")
def peer(model_path):
    """llama.cpp, through llama-cpp-python: the oracle."""
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path, n_ctx=1024, n_batch=512, n_threads=2, logits_all=True, verbose=False, seed=0)
