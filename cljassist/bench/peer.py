"""The peer we measure ourselves against: the same model, prompted as llama.vim prompts it.

`cljassist bench CASES --peer` scores, on the same cases and with the same metrics, what a
llama.vim user with the same GGUF would be shown: no REPL, no context, no stop rules of ours, no
token healing, one greedy candidate. The request is built as llama.vim's ``s:fim_ctx_local`` builds
it with its default configuration, and the prompt as llama.cpp's server renders an ``/infill``
request (``format_infill``); the reply is cut as llama.vim cuts it before showing it. Facts taken
from llama.vim (autoload/llama.vim, 2026-01) and llama.cpp's server, not code:

* the request: ``input_prefix`` = the ``n_prefix`` (256) lines before the cursor's line, each ended
  by a newline; ``prompt`` = the cursor's line up to the cursor; ``input_suffix`` = the rest of that
  line, a newline, and the ``n_suffix`` (64) lines after it, ended by a newline; a cursor line of
  only whitespace is sent as an empty line (the model writes the indentation);
  ``n_predict`` = 128; ``n_indent`` = the cursor line's indentation; no ring-buffer chunks here (a
  benchmark case is one file, and the chunks come from other buffers the user visited);
* the server's prompt: ``<repo_name>myproject\\n<file_sep>filename\\n`` where the vocabulary has those
  tokens, then ``<fim_prefix>{input_prefix}<fim_suffix>{input_suffix}<fim_middle>{prompt}``;
  generation stops at an end-of-generation token, after ``n_predict`` tokens, or (``n_indent``) at
  a new line indented less than the cursor's line, which is cut off after its indentation;
* what llama.vim shows: trailing empty lines dropped; a cursor line of only whitespace takes the
  suggestion's own indentation; nothing at all when the suggestion is only whitespace or only
  repeats text already there (the rest of the cursor's line, the lines after it, or the next
  non-blank line and what follows it).

llama.vim samples with top-k 40 / top-p 0.90 and a time limit; the issue we answer asks for greedy
decoding, which is also what makes the comparison repeatable. A model without FIM tokens cannot be
served ``/infill`` by llama.cpp (the server refuses it), so it has no peer row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from cljassist.bench.metrics import CaseResult
from cljassist.errors import InputError
from cljassist.model.fim import FimFormat
from cljassist.types import CompletionModel, Prompt

LINES_BEFORE = 256  # llama.vim n_prefix
LINES_AFTER = 64  # llama.vim n_suffix
MAX_TOKENS = 128  # llama.vim n_predict
PROJECT_NAME = "myproject"  # what llama.cpp's server writes after the repo-name token
FILE_NAME = "filename"  # and after the file-separator token of the file being completed


@dataclass(frozen=True)
class PeerRequest:
    """The fields of llama.vim's ``/infill`` request for one cursor position."""

    input_prefix: str
    input_suffix: str
    prompt: str  # the cursor's line up to the cursor ("" when the line is only whitespace)
    n_indent: int
    line_prefix: str  # the cursor's line up to the cursor, as it is in the buffer
    line_suffix: str  # the rest of the cursor's line
    lines_after: tuple[str, ...]  # the buffer's lines after the cursor's line


def peer_request(prefix: str, suffix: str) -> PeerRequest:
    """llama.vim's request for a cursor between ``prefix`` and ``suffix``."""
    lines_before = prefix.split("\n")
    line_prefix = lines_before.pop()
    lines_after = suffix.split("\n")
    line_suffix = lines_after.pop(0)
    line = line_prefix + line_suffix
    if line.strip():
        prompt, sent_suffix, indent = line_prefix, line_suffix, len(line) - len(line.lstrip(" \t"))
    else:
        prompt, sent_suffix, indent = "", "", 0
    return PeerRequest(
        input_prefix="".join(f"{ln}\n" for ln in lines_before[-LINES_BEFORE:]),
        input_suffix=sent_suffix + "\n" + "\n".join(lines_after[:LINES_AFTER]) + "\n",
        prompt=prompt,
        n_indent=indent,
        line_prefix=line_prefix,
        line_suffix=line_suffix,
        lines_after=tuple(lines_after),
    )


def infill_prompt(fim: FimFormat, request: PeerRequest) -> Prompt:
    """The prompt llama.cpp's server evaluates for ``request`` (read as it is: no token healing)."""
    if not fim.is_fim or fim.order != "PSM":
        raise InputError(f"--peer needs a model with prefix-suffix-middle FIM tokens; {fim.family} has none")
    head = ""
    if fim.tokens.get("repo_name"):
        head += f"{fim.tokens['repo_name']}{PROJECT_NAME}\n"
    if fim.tokens.get("file_sep"):
        head += f"{fim.tokens['file_sep']}{FILE_NAME}\n"
    before = request.input_prefix + request.prompt
    text = head + fim.render(request.input_prefix, request.input_suffix) + request.prompt
    return Prompt(text=text, prefix=before, suffix=request.input_suffix, context_lines=(), tokens=0,
                  before=before, healed="")


def indent_stop(n_indent: int) -> Callable[[str], int | None]:
    """The server's ``n_indent`` rule: a new line that starts with less indentation than
    ``n_indent`` ends the text after that indentation (the line's content is cut)."""

    def stop(text: str) -> int | None:
        if n_indent <= 0:
            return None
        start = 0
        while (newline := text.find("\n", start)) >= 0:
            line = text[newline + 1:]
            content = len(line) - len(line.lstrip(" \t"))
            if content < len(line) and content < n_indent:
                return newline + 1 + content
            start = newline + 1
        return None

    return stop


def shown_suggestion(request: PeerRequest, content: str) -> str | None:
    """What llama.vim inserts at the cursor for the server's ``content``, or None when it shows nothing."""
    lines = content.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return None
    line_prefix = request.line_prefix
    if not request.prompt:  # a whitespace-only line: the suggestion's indentation replaces the line's
        lead = min(len(lines[0]) - len(lines[0].lstrip(" \t")), len(request.line_prefix))
        line_prefix, lines[0] = lines[0][:lead], lines[0][lead:]
    if _repeats_buffer(lines, line_prefix, request):
        return None
    text = "\n".join(lines)
    return text if text.strip() else None


def _repeats_buffer(lines: list[str], line_prefix: str, request: PeerRequest) -> bool:
    """llama.vim's rules for a suggestion that only re-types what the buffer already has."""
    after = list(request.lines_after)
    if len(lines) > 1 and lines[0] == "" and lines[1:] == after[: len(lines) - 1]:
        return True
    if len(lines) == 1 and lines[0] == request.line_suffix:
        return True
    k = 0
    while k < len(after) - 1 and not after[k].strip():
        k += 1
    if not after or line_prefix + lines[0] != after[k]:
        return False
    if len(lines) == 1:
        return True
    if len(lines) == 2:
        following = after[k + 1] if k + 1 < len(after) else ""
        return lines[1] == following[: len(lines[1])]
    return lines[1:-1] == after[k + 1: k + len(lines) - 1]


def run_peer_case(model: CompletionModel, case: dict,
                  score: Callable[[dict, str | None, dict | None, float, dict], CaseResult]) -> CaseResult:
    """One case as llama.vim would complete it with ``model``, scored by ``score`` (the bench's)."""
    request = peer_request(case["prefix"], case["suffix"])
    prompt = infill_prompt(model.fim, request)
    started = time.perf_counter()
    generations = model.generate_candidates(prompt, n=1, max_tokens=MAX_TOKENS, stop=indent_stop(request.n_indent))
    ms = (time.perf_counter() - started) * 1000
    text = shown_suggestion(request, generations[0].text) if generations else None
    return score(case, text, None, ms, {"model": ms})
