"""Named models: the table in cljassist/resources/models.toml, read into typed records.

A model is either one GGUF shipped whole inside a distribution (`ShippedGguf`) or a GGUF published
as chunk distributions that are concatenated into the model cache (`ChunkedGguf`). Every fact about
a named model (packages, versions, sizes, checksums, FIM family, measured numbers) lives in that
table only; this module checks its shape and answers lookups.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cljassist.calibration import LEVELS, PLAIN, Calibration
from cljassist.errors import ModelLoadError, ModelNotFound

REGISTRY_FILE = Path(__file__).resolve().parents[1] / "resources" / "models.toml"
# where the LoRA adapters of tuned models live (package data, like the registry that pins them)
ADAPTER_DIR = Path(__file__).resolve().parents[1] / "resources" / "adapters"
_SHA256 = re.compile(r"[0-9a-f]{64}")

# The two ways a model is used, each with a default of its own: a request someone waits for once
# (`complete`, `watch`, `bench CASES`) can afford a slower, better model than one asked on every
# keystroke (`serve`, `proxy`, `repl`, `bench --typing`).
ONE_SHOT = "one-shot"
AS_YOU_TYPE = "as-you-type"
USES = (ONE_SHOT, AS_YOU_TYPE)


@dataclass(frozen=True)
class Part:
    """One chunk: `file` inside the distribution `package` at exactly `version`."""

    package: str
    version: str
    file: str
    size: int
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ShippedGguf:
    """The largest .gguf inside `package`; `reencode` names the type it is re-encoded to, if any."""

    package: str
    reencode: str | None = None


@dataclass(frozen=True)
class ChunkedGguf:
    """`parts` concatenated in order make `file` (in the model cache) of `size` bytes and `sha256`."""

    file: str
    size: int
    sha256: str
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter (a llama.cpp LoRA GGUF) that the repo ships in ADAPTER_DIR, loaded beside its
    base's file. ``sha256``/``size`` are pinned once an adapter is trained; None: not trained yet,
    and ``how`` says how to train it."""

    file: str  # its name in ADAPTER_DIR
    size: int | None
    sha256: str | None
    how: str  # the command or document that trains it

    @property
    def trained(self) -> bool:
        return self.sha256 is not None

    @property
    def path(self) -> Path:
        return ADAPTER_DIR / self.file


@dataclass(frozen=True)
class Measurement:
    """Numbers one run of our bench printed, with the command, its date and where they are kept."""

    date: str
    command: str
    source: str
    cases: str
    repl: str
    threads: int | None
    em: float | None
    precision: float | None
    es: float | None
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class CalibrationRecord:
    """A model's score table with the command that fitted it, its date and the cases it saw."""

    calibration: Calibration
    date: str
    command: str
    source: str
    cases: str


@dataclass(frozen=True)
class NamedModel:
    name: str
    description: str
    license: str
    fim_family: str
    source: ShippedGguf | ChunkedGguf
    default: tuple[str, ...] = ()  # the USES this model is the default for
    # per use: Settings field -> value, applied beneath the config and the flags while this model is
    # that use's default (config.load_settings)
    default_settings: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)
    measured: tuple[Measurement, ...] = ()
    calibration_record: CalibrationRecord | None = None
    # a tuned model: its base's file (`source` is the base's, `base` its name) plus this adapter
    base: str | None = None
    adapter: LoraAdapter | None = None

    @property
    def calibration(self) -> Calibration | None:
        return self.calibration_record.calibration if self.calibration_record else None

    @property
    def requirements(self) -> tuple[str, ...]:
        """What `pip install` needs to make this model installed."""
        if isinstance(self.source, ChunkedGguf):
            return tuple(p.requirement for p in self.source.parts)
        return (self.source.package,)


class RegistryError(ModelLoadError):
    """The registry table is malformed: a bug in the shipped data, reported with where it is."""


def _measurement(where: str, entry: dict[str, Any]) -> Measurement:
    def number(key: str) -> float | None:
        value = entry.get(key)
        if value is not None and not isinstance(value, (int, float)):
            raise RegistryError(f"{where}: {key} must be a number, got {value!r}")
        return value

    missing = [k for k in ("date", "command", "source", "cases", "repl") if not entry.get(k)]
    if missing:
        raise RegistryError(f"{where}: a measurement needs {', '.join(missing)}")
    return Measurement(date=str(entry["date"]), command=str(entry["command"]), source=str(entry["source"]),
                       cases=str(entry["cases"]), repl=str(entry["repl"]), threads=entry.get("threads"),
                       em=number("em"), precision=number("precision"), es=number("es"),
                       p50_ms=number("p50_ms"), p95_ms=number("p95_ms"))


def _calibration(where: str, entry: dict[str, Any]) -> CalibrationRecord:
    missing = [k for k in ("date", "command", "source", "cases", "rule", "min_score", PLAIN) if k not in entry]
    if missing:
        raise RegistryError(f"{where}: a calibration needs {', '.join(missing)}")
    tables = {}
    for level in LEVELS:
        if level not in entry:
            continue
        steps = entry[level]
        try:
            steps = tuple((float(x), float(p)) for x, p in steps)
        except (TypeError, ValueError):
            raise RegistryError(f"{where}: {level} must be a list of [raw confidence, probability] pairs") from None
        in_range = all(0.0 <= v <= 1.0 for step in steps for v in step)
        rising = all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(steps, steps[1:]))
        if not steps or not in_range or not rising:
            raise RegistryError(f"{where}: {level} must be steps within 0..1, rising in both raw confidence "
                                "and probability")
        tables[level] = steps
    min_score = entry["min_score"]
    if not isinstance(min_score, (int, float)) or not 0 <= min_score <= 1:
        raise RegistryError(f"{where}: min_score must be a number from 0 to 1, got {min_score!r}")
    return CalibrationRecord(Calibration(tables, float(min_score), str(entry["rule"])), date=str(entry["date"]),
                             command=str(entry["command"]), source=str(entry["source"]), cases=str(entry["cases"]))


def _checked_sha(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise RegistryError(f"{where}: sha256 must be 64 lowercase hex digits, got {value!r}")
    return value


def _chunked(where: str, entry: dict[str, Any]) -> ChunkedGguf:
    parts = []
    for i, p in enumerate(entry["parts"], 1):
        at = f"{where} part {i}"
        try:
            parts.append(Part(package=str(p["package"]), version=str(p["version"]), file=str(p["file"]),
                              size=int(p["size"]), sha256=_checked_sha(at, p["sha256"])))
        except (KeyError, TypeError) as exc:
            raise RegistryError(f"{at}: needs package, version, file, size, sha256 ({exc})") from None
    size = int(entry["size"])
    if sum(p.size for p in parts) != size:
        raise RegistryError(f"{where}: its parts add up to {sum(p.size for p in parts)} bytes, not {size}")
    if not parts:
        raise RegistryError(f"{where}: a chunked model needs parts")
    return ChunkedGguf(file=str(entry["file"]), size=size, sha256=_checked_sha(where, entry["sha256"]),
                       parts=tuple(parts))


def _adapter(where: str, entry: Any) -> LoraAdapter:
    if not isinstance(entry, dict) or not entry.get("file") or not entry.get("how"):
        raise RegistryError(f"{where}: adapter must be a table with file and how (and size, sha256 once trained)")
    name = str(entry["file"])
    if "/" in name or "\\" in name or name in (".", ".."):
        raise RegistryError(f"{where}: adapter file must be a plain file name in {ADAPTER_DIR}, got {name!r}")
    pinned = [k for k in ("size", "sha256") if k in entry]
    if len(pinned) == 1:
        raise RegistryError(f"{where}: adapter needs both size and sha256 (or neither, while not trained)")
    size = sha = None
    if pinned:
        size = entry["size"]
        if not isinstance(size, int) or size <= 0:
            raise RegistryError(f"{where}: adapter size must be a positive number of bytes, got {size!r}")
        sha = _checked_sha(f"{where} adapter", entry["sha256"])
    return LoraAdapter(name, size, sha, str(entry["how"]))


def _uses(where: str, value: Any) -> tuple[str, ...]:
    """`default`: a list of USES; `true` means every use."""
    if value is True:
        return USES
    if value is False or value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise RegistryError(f"{where}: default must be a list of uses ({', '.join(USES)}) or true, got {value!r}")
    unknown = [u for u in value if u not in USES]
    if unknown:
        raise RegistryError(f"{where}: default names unknown uses {', '.join(unknown)} (known: {', '.join(USES)})")
    return tuple(u for u in USES if u in value)


def _default_settings(where: str, value: Any, uses: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise RegistryError(f"{where}: default_settings must be a table per use, e.g. [model.default_settings.{AS_YOU_TYPE}]")
    stray = [u for u in value if u not in uses]
    if stray:
        raise RegistryError(f"{where}: default_settings for {', '.join(stray)}, which this model is not the default for")
    return {use: dict(settings) for use, settings in value.items()}


def parse_registry(data: dict[str, Any], origin: str = "models.toml") -> dict[str, NamedModel]:
    """The models of a parsed registry table, by name, in table order."""
    models: dict[str, NamedModel] = {}
    for i, entry in enumerate(data.get("model", ()), 1):
        where = f"{origin}: model {entry.get('name') or i}"
        try:
            base = models.get(str(entry["base"])) if "base" in entry else None
            if "base" in entry and (base is None or base.adapter is not None):
                raise RegistryError(f"{where}: base {entry['base']!r} must name an untuned model listed before it")
            if "base" in entry and "adapter" not in entry:
                raise RegistryError(f"{where}: a model with a base needs an adapter table")
            if base is not None:
                source: ShippedGguf | ChunkedGguf = base.source
            elif "parts" in entry:
                source = _chunked(where, entry)
            else:
                source = ShippedGguf(package=str(entry["package"]), reencode=entry.get("reencode"))
            uses = _uses(where, entry.get("default"))
            model = NamedModel(
                name=str(entry["name"]), description=str(entry["description"]), license=str(entry["license"]),
                fim_family=str(entry["fim_family"]), source=source, default=uses,
                default_settings=_default_settings(where, entry.get("default_settings"), uses),
                measured=tuple(_measurement(f"{where} measurement {k}", m)
                               for k, m in enumerate(entry.get("measured", ()), 1)),
                calibration_record=_calibration(f"{where} calibration", entry["calibration"])
                if "calibration" in entry else None,
                base=base.name if base is not None else None,
                adapter=_adapter(where, entry["adapter"]) if base is not None else None)
        except KeyError as exc:
            raise RegistryError(f"{where}: missing {exc}") from None
        if model.name in models:
            raise RegistryError(f"{where}: the name is used twice")
        models[model.name] = model
    for use in USES:
        defaults = [m.name for m in models.values() if use in m.default]
        if len(defaults) != 1:
            raise RegistryError(f"{origin}: exactly one model must be the default for {use}, "
                                f"found {defaults or 'none'}")
    return models


@lru_cache(maxsize=4)
def load_registry(path: Path = REGISTRY_FILE) -> dict[str, NamedModel]:
    with open(path, "rb") as f:
        return parse_registry(tomllib.load(f), str(path))


def known_names() -> tuple[str, ...]:
    return tuple(load_registry())


def default_model(use: str = ONE_SHOT) -> NamedModel:
    """The model loaded for `use` (one of USES) when neither --model nor :model names one."""
    if use not in USES:
        raise ValueError(f"unknown use {use!r} (known: {', '.join(USES)})")
    return next(m for m in load_registry().values() if use in m.default)


def named_model(name: str) -> NamedModel | None:
    """The named model, or None when `name` names none (it may then be a path)."""
    return load_registry().get(name)


def names_a_file(value: str) -> bool:
    """Whether a --model / :model value is written as a path (a directory part or a .gguf name);
    anything else that is not a file is taken for a mistyped model name."""
    return "/" in value or os.sep in value or value.lower().endswith(".gguf")


def unknown_model_error(value: str, origin: str) -> ModelNotFound:
    """The one-line error for a --model / :model value that is neither a known name nor a file."""
    return ModelNotFound(f"unknown model {value!r} (from {origin}): no such file, and the known names are "
                         f"{', '.join(known_names())} (cljassist models lists them)")


__all__ = ["ONE_SHOT", "AS_YOU_TYPE", "USES", "Part", "ShippedGguf", "ChunkedGguf", "Measurement", "CalibrationRecord",
           "NamedModel", "RegistryError", "REGISTRY_FILE", "LoraAdapter", "ADAPTER_DIR",
           "parse_registry", "load_registry", "known_names", "default_model", "named_model", "names_a_file",
           "unknown_model_error"]
