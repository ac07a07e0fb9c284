"""Fill-in-the-middle prompt formats: the table in prompts/fim.toml and detection from GGUF metadata."""

from __future__ import annotations

import os
import string
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from cljassist.errors import ModelLoadError
from cljassist.model.gguf_info import GgufMetadata

LEFT_TO_RIGHT = "left_to_right"
GENERIC_FIM = "gguf_fim"

_ROLE_KEYS = {
    # role in FimFormat.tokens -> GGUF metadata keys holding its token id (first present wins)
    "fim_prefix": ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"),
    "fim_suffix": ("tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"),
    "fim_middle": ("tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"),
    "fim_pad": ("tokenizer.ggml.fim_pad_token_id",),
    "repo_name": ("tokenizer.ggml.fim_rep_token_id",),
    "file_sep": ("tokenizer.ggml.fim_sep_token_id",),
    "eot": ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eos_token_id"),
}
_CORE_ROLES = ("fim_prefix", "fim_suffix", "fim_middle")

# Written by our exporter (cljassist/train/export.py): the family a fine-tune was trained for.
# Needed where two families share FIM tokens (the PSM and SPM tables of one fine-tune).
FAMILY_KEY = "cljassist.fim_family"


@dataclass(frozen=True)
class RepoLayout:
    """How a family trained on whole repositories names the project and its files before the FIM
    template (the ``[<family>.repo]`` table of fim.toml)."""

    header: str  # {name} and token roles
    file: str  # {path}, {content}
    current: str  # {path}


@dataclass(frozen=True)
class FimFormat:
    """How to build a prompt for one model family, and which token texts end a completion."""

    family: str
    template: str
    tokens: dict[str, str]
    stop: tuple[str, ...]
    is_fim: bool
    order: str = "PSM"
    identify: tuple[str, ...] = field(default=(), compare=False)
    exclude: tuple[str, ...] = field(default=(), compare=False)
    description: str = field(default="", compare=False)
    repo: RepoLayout | None = None  # None: the family has no repository layout

    def __hash__(self) -> int:  # tokens is a dict; hash on the rest
        return hash((self.family, self.template, self.stop, self.is_fim))

    def render(self, prefix: str, suffix: str, preamble: str = "") -> str:
        """The prompt text for ``prefix`` and ``suffix`` (for left-to-right, just the prefix), after
        ``preamble`` (the repository layout's project and files, :meth:`repo_preamble`).

        Only the template is parsed for placeholders; braces inside the code are
        inserted verbatim.
        """
        return preamble + self._fill(self.template, {"prefix": prefix, "suffix": suffix})

    def repo_preamble(self, name: str, files: Sequence[tuple[str, str]], current: str) -> str:
        """The repository layout's text before the template: project ``name``, the other ``files``
        as (path, content), then the ``current`` file's path; "" for a family without one."""
        if self.repo is None:
            return ""
        parts = [self._fill(self.repo.header, {"name": name})]
        parts += [self._fill(self.repo.file, {"path": path, "content": content}) for path, content in files]
        parts.append(self._fill(self.repo.current, {"path": current}))
        return "".join(parts)

    def _fill(self, template: str, slots: dict[str, str]) -> str:
        values = {**self.tokens, **slots}
        out: list[str] = []
        for literal, name, spec, conv in string.Formatter().parse(template):
            out.append(literal)
            if name is None:
                continue
            if name not in values:
                raise ModelLoadError(
                    f"FIM template of {self.family!r} names {{{name}}}, which its tokens table lacks"
                )
            out.append(values[name])
        return "".join(out)

    @property
    def control_texts(self) -> tuple[str, ...]:
        """Every special token text of this format (FIM roles and stops), without duplicates."""
        seen: dict[str, None] = {}
        for t in (*self.tokens.values(), *self.stop):
            if t:
                seen.setdefault(t, None)
        return tuple(seen)


def prompts_dir() -> Path:
    """The prompts folder: $CLJASSIST_PROMPTS, else <repo>/prompts next to the package."""
    env = os.environ.get("CLJASSIST_PROMPTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "prompts"


def _as_format(family: str, entry: dict[str, Any]) -> FimFormat:
    try:
        tokens = {str(k): str(v) for k, v in dict(entry.get("tokens", {})).items()}
        template = str(entry["template"])
        repo = entry.get("repo")
        layout = None if repo is None else RepoLayout(str(repo["header"]), str(repo["file"]), str(repo["current"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"bad FIM table entry [{family}]: {e}") from e
    is_fim = family != LEFT_TO_RIGHT and all(r in tokens for r in ("fim_prefix", "fim_suffix"))
    return FimFormat(
        family=family,
        template=template,
        tokens=tokens,
        stop=tuple(str(s) for s in entry.get("stop", ())),
        is_fim=is_fim,
        order=str(entry.get("order", "PSM" if is_fim else "L2R")),
        identify=tuple(str(s) for s in entry.get("identify", ())),
        exclude=tuple(str(s) for s in entry.get("exclude", ())),
        description=str(entry.get("description", "")),
        repo=layout,
    )


def load_fim_table(path: str | os.PathLike[str] | None = None) -> dict[str, FimFormat]:
    """Read the FIM table (default: fim.toml in :func:`prompts_dir`), in file order."""
    p = Path(path) if path is not None else prompts_dir() / "fim.toml"
    return dict(_load_cached(str(p.resolve()) if p.exists() else str(p)))


@lru_cache(maxsize=8)
def _load_cached(p: str) -> tuple[tuple[str, FimFormat], ...]:
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as e:
        raise ModelLoadError(f"FIM table not found: {p}") from e
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ModelLoadError(f"cannot read FIM table {p}: {e}") from e
    table = tuple((fam, _as_format(fam, entry)) for fam, entry in data.items() if isinstance(entry, dict))
    if not any(fam == LEFT_TO_RIGHT for fam, _ in table):
        raise ModelLoadError(f"FIM table {p} has no [{LEFT_TO_RIGHT}] entry")
    return table


def _id_text(meta: GgufMetadata, role: str) -> str | None:
    for key in _ROLE_KEYS[role]:
        if key in meta.kv:
            try:
                return meta.token_text(int(meta.kv[key]))
            except (TypeError, ValueError):
                return None
    return None


def _matches_vocab(fmt: FimFormat, vocab: set[str]) -> bool:
    need = fmt.identify or tuple(fmt.tokens[r] for r in _CORE_ROLES if r in fmt.tokens)
    return bool(need) and all(t in vocab for t in need) and not any(t in vocab for t in fmt.exclude)


def detect_fim_format(meta: GgufMetadata, table: dict[str, FimFormat] | None = None) -> FimFormat:
    """The prompt format for the model described by ``meta``.

    1. FIM token-id keys (``tokenizer.ggml.fim_{pre,suf,mid}_token_id`` or the
       older ``prefix/suffix/middle_token_id``): the ids' texts pick the family
       whose FIM tokens are those texts (ties, such as Qwen vs CodeGemma, are
       broken by the vocabulary via ``identify``/``exclude``).  Texts of no known
       family give a generic PSM format built from them.
    2. Otherwise, the first family whose ``identify`` texts are all in the
       vocabulary and whose ``exclude`` texts are not.
    3. Otherwise ``left_to_right``.

    Keys such as ``fim_rep``/``fim_sep`` alone (SmolLM-style vocabularies have
    ``<reponame>``/``<file_sep>``) do not make a model FIM-capable.

    An explicit ``cljassist.fim_family`` key (written by our exporter) naming a family of the
    table wins over all of these.
    """
    table = table if table is not None else load_fim_table()
    explicit = meta.kv.get(FAMILY_KEY)
    if isinstance(explicit, str) and explicit in table:
        return table[explicit]
    fim_families = [f for name, f in table.items() if name != LEFT_TO_RIGHT and f.is_fim]
    vocab = set(meta.tokens)

    id_texts = {role: _id_text(meta, role) for role in _CORE_ROLES}
    if all(id_texts.values()):
        candidates = [
            f for f in fim_families if all(f.tokens.get(r) == id_texts[r] for r in _CORE_ROLES)
        ]
        if len(candidates) > 1 and vocab:
            narrowed = [f for f in candidates if _matches_vocab(f, vocab)]
            candidates = narrowed or candidates
        if candidates:
            return candidates[0]
        return _generic_from_ids(meta, id_texts)  # type: ignore[arg-type]

    if vocab:
        for f in fim_families:
            if _matches_vocab(f, vocab):
                return f
    return table[LEFT_TO_RIGHT]


def _generic_from_ids(meta: GgufMetadata, core: dict[str, str]) -> FimFormat:
    tokens = dict(core)
    stop: list[str] = []
    for role in ("fim_pad", "repo_name", "file_sep", "eot"):
        text = _id_text(meta, role)
        if text:
            tokens[role] = text
            stop.append(text)
    eos = _id_text(meta, "eot")
    stop.extend(t for t in (eos, *core.values()) if t and t not in stop)
    return FimFormat(
        family=GENERIC_FIM,
        template="{fim_prefix}{prefix}{fim_suffix}{suffix}{fim_middle}",
        tokens=tokens,
        stop=tuple(stop),
        is_fim=True,
        order="PSM",
        description="FIM tokens named by the GGUF's fim_*_token_id keys, of no family in fim.toml",
    )


__all__ = ["FimFormat", "RepoLayout", "load_fim_table", "detect_fim_format", "prompts_dir", "LEFT_TO_RIGHT", "GENERIC_FIM",
           "FAMILY_KEY"]
