"""Prompt stage: turn (prefix, suffix, live context) into the model's prompt within a token budget.

`assemble_prompt` is the one place that decides a prompt: the engine and the training data builder
(cljassist/train/fim_data.py) go through it, and the fallback model re-renders its result for
another FIM format with `render_gap`, so a model is served the layout it was trained on. From a
:class:`PromptInput` (the gap, its file, the cursor's namespace and top-level form, whether a REPL
is attached) and :class:`PromptLimits` it decides the token budget, where the context goes, the
share set aside for it and the file label; `build_prompt` then lays the prompt out as told.

The code around the cursor gets the budget first; context lines get what `max_context_tokens` allows.
Cuts fall on line boundaries so the model never sees half a line at the edges.

Per keystroke the model keeps the evaluated tokens that the new prompt shares with the previous one
(the longest common prefix), so the prompt is laid out stable part first:
  * the prefix's left cut moves in steps of `cut_step_lines` lines, not with every new line typed;
  * with `form_start` (where the top-level form at the cursor begins) and `context_position =
    "before_form"`, the REPL context block sits right before that form, not at the top: when the
    context changes, only the context and the current form are evaluated again, not the whole file;
  * with `reserve_context_tokens`, the code's budget does not depend on the context's actual size,
    so the part before the context (`Prompt.stable`) is known before the REPL has answered and can be
    evaluated while the context is gathered.

A family with a repository layout (fim.toml `[<family>.repo]`, Qwen2.5-Coder) is shown the project:
its name, the definitions the code at the cursor uses from other files (cljassist/crossfile.py),
grouped by file in file order, then this file's path in place of the file-header comment. They come
first, as the model was trained on them, so they are part of `Prompt.stable`: the engine builds the
early prompt with the definitions it showed last for the file (they change only when the code
starts using a name they do not cover), and the REPL's answer then seldom moves the start. They get
at most their own budget (and `definitions_share` of the prompt's), and only what they take is
taken from the code's.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from cljassist.budgets import CONTEXT_TOKENS, CROSSFILE_TOKENS, PROMPT_TOKENS
from cljassist.config import Settings
from cljassist.crossfile import Definition, in_file_order
from cljassist.model.fim import FimFormat, prompts_dir
from cljassist.types import Prompt


@dataclass(frozen=True)
class PromptBudget:
    max_prompt_tokens: int
    suffix_share: float
    max_context_tokens: int
    chars_per_token_guess: float
    definitions_share: float
    cut_step_lines: int = 1


@dataclass(frozen=True)
class PromptTemplates:
    budget: PromptBudget
    context_header: str
    context_line: str
    file_header: str
    context_position: str = "top"  # "top" | "before_form"


@lru_cache(maxsize=4)
def load_templates(path: Path | None = None) -> PromptTemplates:
    data = tomllib.loads((path or prompts_dir() / "completion.toml").read_text(encoding="utf-8"))
    return PromptTemplates(
        budget=PromptBudget(max_prompt_tokens=PROMPT_TOKENS.value, max_context_tokens=CONTEXT_TOKENS.value,
                            **data["budget"]),
        context_header=data["context"]["header"],
        context_line=data["context"]["line"],
        file_header=data["file"]["header"],
        context_position=data["context"].get("position", "top"),
    )


@dataclass(frozen=True)
class PromptInput:
    """A gap as the prompt stage needs it, from the request and the cursor analysis."""

    prefix: str
    suffix: str
    file: str | None = None  # the request's file; the prompt shows its `file_label`
    namespace: str | None = None  # the cursor's namespace, named in the context header
    form_start: int | None = None  # offset in `prefix` of the top-level form at the cursor; None: in none
    repl_attached: bool = False  # a REPL gives context: its share of the budget is set aside
    # the repository layout's project name and this file's path in it; None: no repository layout
    # (the file is named in a comment line)
    project: str | None = None
    project_file: str = ""


@dataclass(frozen=True)
class PromptLimits:
    """Token limits: the budget (`max_prompt_tokens`, else the template's) within what the model's
    window (`n_ctx`) leaves after the tokens it may generate (`max_new_tokens`)."""

    max_prompt_tokens: int | None = None
    n_ctx: int | None = None  # None: no window to fit (a count of the prompt alone)
    max_new_tokens: int = 0

    @classmethod
    def of(cls, settings: Settings) -> "PromptLimits":
        return cls(settings.max_prompt_tokens, settings.n_ctx, settings.max_new_tokens)

    def budget(self, templates: PromptTemplates) -> int:
        budget = self.max_prompt_tokens or templates.budget.max_prompt_tokens
        return budget if self.n_ctx is None else min(budget, self.n_ctx - self.max_new_tokens)


def assemble_prompt(
    gap: PromptInput,
    fim: FimFormat,
    count_tokens: Callable[[str], int],
    limits: PromptLimits = PromptLimits(),
    context_lines: Sequence[str] = (),
    templates: PromptTemplates | None = None,
    definitions: Sequence[Definition] = (),
) -> Prompt:
    """The prompt for `gap` in `fim`, with `context_lines` and other files' `definitions` (each most
    relevant first) as fit; the definitions only where `gap.project` is set and `fim` has a
    repository layout.

    Called once without context lines, it gives the prompt's `stable` start before the REPL has
    answered: with a REPL attached the context's share is set aside whatever it turns out to be,
    so the code's cut (and that start) neither waits for nor moves with the context."""
    t = templates or load_templates()
    return build_prompt(
        gap.prefix,
        gap.suffix,
        fim,
        count_tokens,
        context_lines=context_lines,
        namespace=gap.namespace,
        file_label=file_label(gap.file),
        templates=t,
        max_prompt_tokens=limits.budget(t),
        # outside any top-level form the context goes before the cursor's line
        form_start=gap.form_start if gap.form_start is not None else gap.prefix.rfind("\n") + 1,
        reserve_context_tokens=t.budget.max_context_tokens if gap.repl_attached else 0,
        repo=RepoView(gap.project, gap.project_file, tuple(definitions)) if gap.project is not None else None,
    )


@dataclass(frozen=True)
class RepoView:
    """What a repository layout shows of the project: its name, this file's path, other files'
    definitions (most relevant first)."""

    name: str
    file: str
    definitions: tuple[Definition, ...] = ()


def file_label(file: str | None) -> str | None:
    """Relative paths (benchmark cases) as given; absolute ones by name, to keep the prompt short."""
    if not file:
        return None
    return Path(file).name if Path(file).is_absolute() else file


def render_gap(fim: FimFormat, before: str, suffix: str, preamble: str = "") -> str:
    """The prompt text of everything before the gap and the suffix; a model without FIM tokens
    reads left to right and is not shown the suffix."""
    return fim.render(before, suffix if fim.is_fim else "", preamble)


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
    form_start: int | None = None,
    reserve_context_tokens: int | None = None,
    repo: RepoView | None = None,
) -> Prompt:
    """``form_start``: offset in ``prefix`` of the top-level form at the cursor (see the module doc).
    ``reserve_context_tokens``: budget the code as if the context took this many tokens.
    ``repo``: the project, shown in the repository layout where ``fim`` has one."""
    t = templates or load_templates()
    budget = max_prompt_tokens or t.budget.max_prompt_tokens

    preamble = ""
    if repo is not None and fim.repo is not None:
        file_header = ""  # the layout names the file
        preamble = _fit_definitions(repo, fim, min(CROSSFILE_TOKENS.value, int(budget * t.budget.definitions_share)),
                                    count_tokens)
    else:
        file_header = t.file_header.format(file=file_label) + "\n" if file_label else ""
    chosen_context = _fit_context(context_lines, namespace, t, count_tokens)
    block = chosen_context[1]
    context_cost = count_tokens(block) if reserve_context_tokens is None else reserve_context_tokens
    code_budget = max(64, budget - count_tokens(file_header) - context_cost - count_tokens(fim.render("", "", preamble)))

    if fim.is_fim:
        suffix_budget = int(code_budget * t.budget.suffix_share)
        kept_suffix = _keep_head_lines(suffix, suffix_budget, t.budget.chars_per_token_guess, count_tokens)
        prefix_budget = code_budget - count_tokens(kept_suffix)
    else:
        kept_suffix, prefix_budget = "", code_budget
    kept_prefix = _keep_tail_lines(prefix, prefix_budget, t.budget.chars_per_token_guess, count_tokens,
                                   t.budget.cut_step_lines)

    split = 0  # where the context block goes in kept_prefix
    if t.context_position == "before_form" and form_start is not None:
        split = min(max(0, form_start - (len(prefix) - len(kept_prefix))), len(kept_prefix))
    before = file_header + kept_prefix[:split] + block + kept_prefix[split:]
    text = render_gap(fim, before, kept_suffix, preamble)
    stable = _text_before(fim, file_header + kept_prefix[:split], kept_suffix, preamble)
    header = block if split else file_header + block
    return Prompt(text, kept_prefix, kept_suffix, chosen_context[0], count_tokens(text), header, before, stable,
                  preamble=preamble)


def _text_before(fim: FimFormat, head: str, suffix: str, preamble: str = "") -> str:
    """The rendered prompt's text up to the end of ``head`` (the start of the prefix slot)."""
    sentinel = "\x00cljassist-split\x00"
    rendered = fim.render(head + sentinel, suffix, preamble)
    return rendered[: rendered.index(sentinel)]


def _fit_definitions(repo: RepoView, fim: FimFormat, budget: int, count_tokens) -> str:
    """The repository preamble with the most relevant definitions that fit in `budget` tokens more
    than the preamble without any, laid out by file, then position in it."""

    def preamble(chosen: Sequence[Definition]) -> str:
        files: dict[str, list[str]] = {}
        for d in in_file_order(chosen):
            files.setdefault(d.path, []).append(d.text)
        return fim.repo_preamble(repo.name, [(path, "\n\n".join(texts)) for path, texts in files.items()], repo.file)

    limit = count_tokens(preamble(())) + budget
    chosen: list[Definition] = []
    for definition in repo.definitions:
        if count_tokens(preamble([*chosen, definition])) <= limit:
            chosen.append(definition)
    return preamble(chosen)


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


def _keep_tail_lines(text: str, budget: int, chars_per_token: float, count_tokens, step_lines: int = 1) -> str:
    """The longest tail of `text` within `budget` tokens, starting at a line start when cut; with
    `step_lines` > 1 the cut moves on to the next line whose number is a multiple of it, so that it
    stays put while lines are typed at the end (the model's cached prompt stays valid)."""
    if budget <= 0:
        return ""
    cut = text[-int(budget * chars_per_token):] if len(text) > budget * chars_per_token else text
    while cut and count_tokens(cut) > budget:
        cut = cut[len(cut) // 8 or 1:]
    if len(cut) < len(text):
        newline = cut.find("\n")
        if 0 <= newline < len(cut) - 1:
            cut = cut[newline + 1:]
        if step_lines > 1 and cut:
            cut = _cut_at_line_step(text, len(text) - len(cut), step_lines)
    return cut


def _cut_at_line_step(text: str, start: int, step_lines: int) -> str:
    """``text[start:]`` moved forward to the first line start whose 0-based line number is a multiple
    of ``step_lines`` (unchanged when no such line start is left)."""
    line_no = text.count("\n", 0, start)
    target = -(-line_no // step_lines) * step_lines
    position = start
    for _ in range(target - line_no):
        newline = text.find("\n", position)
        if newline < 0 or newline == len(text) - 1:
            return text[start:]
        position = newline + 1
    return text[position:]


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
