"""Reading the server's replies: an OpenAI-style completion or llama.cpp's /infill answer, whole or
one streamed event at a time, into text, finish reason, token log-probs and prompt statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cljassist.model.remote.http import BackendError, one_line

@dataclass
class Part:
    """A whole reply, or one event of a streamed one."""

    text: str
    finish: str | None  # 'eos' | 'length' on the part that ends the completion, else None
    token_texts: list[str] | None = None
    token_logprobs: list[float] | None = None
    n_tokens: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    """One completion as the server sent it, put together from its parts."""

    text: str = ""
    finish: str | None = None
    pieces: list[str] = field(default_factory=list)  # each part's text: one token each when streamed
    token_texts: list[str] = field(default_factory=list)  # tokens the server gave log-probs for
    token_logprobs: list[float] = field(default_factory=list)
    n_tokens: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, part: Part) -> None:
        self.text += part.text
        if part.text:
            self.pieces.append(part.text)
        if part.token_texts is not None and part.token_logprobs is not None:
            self.token_texts.extend(part.token_texts)
            self.token_logprobs.extend(part.token_logprobs)
        if part.finish is not None:
            self.finish = part.finish
        if part.n_tokens is not None:
            self.n_tokens = part.n_tokens
        for key, value in part.stats.items():
            self.stats.setdefault(key, value)


def _finish_of(reason: Any) -> str:
    """The server's end reason as a Generation.finish: only a token limit is 'length'; EOS and our
    FIM stop texts are what the local model calls 'eos'."""
    return "length" if reason in ("length", "limit") else "eos"


def _unexpected(where: str, what: str, obj: Any) -> BackendError:
    return BackendError(f"the completion server at {where} sent an unexpected reply ({what}): "
                        f"{one_line(json.dumps(obj))[:120]}")


def parse_completions(obj: Any, where: str, event: bool) -> Part:
    """An OpenAI-style completion, or one chunk of a streamed one (where a usage-only chunk has no
    choices)."""
    if not isinstance(obj, dict):
        raise _unexpected(where, "not an object", obj)
    choices = obj.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if choice is None or not isinstance(choice.get("text"), str):
        if not event or choices:
            raise _unexpected(where, "no choices[0].text", obj)
        choice = {"text": ""}
    texts, logprobs = _completion_logprobs(choice.get("logprobs"))
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
    stats: dict[str, Any] = {}
    if isinstance(usage.get("prompt_tokens"), int):
        stats["prompt_tokens"] = usage["prompt_tokens"]
    timings = obj.get("timings") if isinstance(obj.get("timings"), dict) else {}
    if isinstance(timings.get("cache_n"), int):
        stats["reused_tokens"] = timings["cache_n"]
    n_tokens = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else None
    reason = choice.get("finish_reason")
    finish = _finish_of(reason) if reason is not None or not event else None
    return Part(choice["text"], finish, texts, logprobs, n_tokens, stats)


def _completion_logprobs(lp: Any) -> tuple[list[str] | None, list[float] | None]:
    """Token texts and log-probs: OpenAI's legacy {"tokens", "token_logprobs"} (llama-cpp-python)
    or the {"content": [{"token", "logprob"}]} shape (llama.cpp)."""
    if not isinstance(lp, dict):
        return None, None
    if isinstance(lp.get("tokens"), list) and isinstance(lp.get("token_logprobs"), list):
        return _pairs(zip(lp["tokens"], lp["token_logprobs"]))
    if isinstance(lp.get("content"), list):
        return _pairs((d.get("token"), d.get("logprob")) for d in lp["content"] if isinstance(d, dict))
    return None, None


def _pairs(items: Any) -> tuple[list[str] | None, list[float] | None]:
    texts: list[str] = []
    values: list[float] = []
    for text, value in items:
        if not isinstance(text, str) or not isinstance(value, (int, float)):
            return None, None
        texts.append(text)
        values.append(float(value))
    return texts, values


def parse_infill(obj: Any, where: str, event: bool) -> Part:
    """llama.cpp's /infill reply, or one event of a streamed one ("stop": true on the last)."""
    if not isinstance(obj, dict):
        raise _unexpected(where, "not an object", obj)
    content = obj.get("content", "" if event else None)
    if not isinstance(content, str):
        raise _unexpected(where, "no content", obj)
    probs = obj.get("completion_probabilities")
    texts, logprobs = (None, None)
    if isinstance(probs, list):
        texts, logprobs = _pairs((d.get("token"), d.get("logprob")) for d in probs if isinstance(d, dict))
    stats: dict[str, Any] = {}
    timings = obj.get("timings") if isinstance(obj.get("timings"), dict) else {}
    if isinstance(obj.get("tokens_evaluated"), int):
        stats["prompt_tokens"] = obj["tokens_evaluated"]
    cached = timings.get("cache_n", obj.get("tokens_cached"))
    if isinstance(cached, int):
        stats["reused_tokens"] = cached
    n_tokens = obj.get("tokens_predicted") if isinstance(obj.get("tokens_predicted"), int) else None
    finish = _finish_of(obj.get("stop_type")) if obj.get("stop") is True or not event else None
    return Part(content, finish, texts, logprobs, n_tokens, stats)
