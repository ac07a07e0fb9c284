"""Prompt stage: turn (prefix, suffix, live context) into the model's prompt within a token budget.

The code around the cursor gets the budget first; context lines get what `max_context_tokens` allows.
Cuts fall on line boundaries so the model never sees half a line at the edges.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from cljassist.model.fim import FimFormat, prompts_dir


@dataclass(frozen=True)
class PromptBudget:
    max_prompt_tokens: int
    suffix_share: float
    max_context_tokens: int
    chars_per_token_guess: float


@dataclass(frozen=True)
class PromptTemplates:
    budget: PromptBudget
    context_header: str
    context_line: str
    file_header: str


@lru_cache(maxsize=4)
def load_templates(path: Path | None = None) -> PromptTemplates:
    data = tomllib.loads((path or prompts_dir() / "completion.toml").read_text(encoding="utf-8"))
    return PromptTemplates(
        budget=PromptBudget(**data["budget"]),
        context_header=data["context"]["header"],
        context_line=data["context"]["line"],
        file_header=data["file"]["header"],
    )


@dataclass(frozen=True)
class Prompt:
    text: str
    prefix: str  # the part of the request's prefix the model sees
    suffix: str  # the part of the suffix the model sees ('' for left-to-right models)
    context_lines: tuple[str, ...]
    tokens: int


def build_prompt(
    prefix: str,
    suffix: str,
    fim: FimFormat,
    count_tokens: Callable[[str], int],
    context_lines: Sequence[str] = (),
    namespace: str | None = None,
    file_label: str | None = None,
    templates: PromptTemplates | None = None,
    max_prompt_tokens: int | None = None,
) -> Prompt:
    t = templates or load_templates()
    budget = max_prompt_tokens or t.budget.max_prompt_tokens

    header = t.file_header.format(file=file_label) + "\n" if file_label else ""
    chosen_context = _fit_context(context_lines, namespace, t, count_tokens)
    header += chosen_context[1]
    code_budget = max(64, budget - count_tokens(header) - count_tokens(fim.render("", "")))

    if fim.is_fim:
        suffix_budget = int(code_budget * t.budget.suffix_share)
        kept_suffix = _keep_head_lines(suffix, suffix_budget, t.budget.chars_per_token_guess, count_tokens)
        prefix_budget = code_budget - count_tokens(kept_suffix)
    else:
        kept_suffix, prefix_budget = "", code_budget
    kept_prefix = _keep_tail_lines(prefix, prefix_budget, t.budget.chars_per_token_guess, count_tokens)

    text = fim.render(header + kept_prefix, kept_suffix)
    return Prompt(text, kept_prefix, kept_suffix, chosen_context[0], count_tokens(text))


def _fit_context(lines, namespace, t: PromptTemplates, count_tokens) -> tuple[tuple[str, ...], str]:
    """Most relevant first: keep lines while they fit in the context budget."""
    if not lines:
        return (), ""
    block = t.context_header.format(namespace=namespace or "user") + "\n"
    kept: list[str] = []
    for line in lines:
        rendered = t.context_line.format(text=line) + "\n"
        if count_tokens(block + rendered) > t.budget.max_context_tokens:
            break
        block += rendered
        kept.append(line)
    return (tuple(kept), block) if kept else ((), "")


def _keep_tail_lines(text: str, budget: int, chars_per_token: float, count_tokens) -> str:
    """The longest tail of `text` within `budget` tokens, starting at a line start when cut."""
    if budget <= 0:
        return ""
    cut = text[-int(budget * chars_per_token):] if len(text) > budget * chars_per_token else text
    while cut and count_tokens(cut) > budget:
        cut = cut[len(cut) // 8 or 1:]
    if len(cut) < len(text):
        newline = cut.find("\n")
        if 0 <= newline < len(cut) - 1:
            cut = cut[newline + 1:]
    return cut


def _keep_head_lines(text: str, budget: int, chars_per_token: float, count_tokens) -> str:
    """The longest head of `text` within `budget` tokens, ending at a line end when cut."""
    if budget <= 0:
        return ""
    cut = text[: int(budget * chars_per_token)]
    while cut and count_tokens(cut) > budget:
        cut = cut[: len(cut) - (len(cut) // 8 or 1)]
    if len(cut) < len(text):
        newline = cut.rfind("\n")
        if newline > 0:
            cut = cut[: newline + 1]
    return cut
