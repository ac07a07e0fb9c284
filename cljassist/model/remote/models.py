"""The models that complete through a server: :class:`RemoteModel`, and :class:`FallbackModel`,
which completes with the local model when the server fails."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

from cljassist.budgets import BACKEND_TIMEOUT, FALLBACK_RETRY
from cljassist.calibration import Calibration
from cljassist.errors import Cancelled, CljassistError, InputError
from cljassist.model.fim import LEFT_TO_RIGHT, FimFormat, load_fim_table
from cljassist.model.remote.cutter import Cutter
from cljassist.model.remote.events import Reply, parse_completions, parse_infill
from cljassist.model.remote.http import BackendError, HttpClient, TimedOut
from cljassist.model.remote.url import INFILL, INFILL_FORMAT, parse_backend_url
from cljassist.prompt import render_gap
from cljassist.types import CompletionModel, Generation, Prompt, as_prompt, generation_counts

# Estimated bytes per token for count_tokens (see RemoteModel.count_tokens).
_BYTES_PER_TOKEN = 3
# Extra candidates are sampled at this temperature, request i with seed _SEED_BASE + i.
_SAMPLE_TEMPERATURE = 0.6
_SEED_BASE = 1


class _StreamTimedOut(Exception):
    """The exchange ran past its limit; what had been streamed by then comes with it."""

    def __init__(self, reply: Reply, cutter: Cutter):
        super().__init__()
        self.reply, self.cutter = reply, cutter


def text_before_gap(prompt: Prompt, fim: FimFormat) -> str:
    """Everything the model reads before the gap: file header, REPL context block and code prefix.

    ``prompt.before`` when set; else recovered from the text, which is ``fim.render(before,
    suffix)``; else ``header + prefix``.
    """
    if prompt.before:
        return prompt.before
    text = prompt.text
    start, _, end = fim.render("\x00", prompt.suffix).partition("\x00")
    if text.startswith(start) and text.endswith(end) and len(text) >= len(start) + len(end):
        middle = text[len(start): len(text) - len(end)]
        if middle.endswith(prompt.prefix):
            return middle
    return prompt.header + prompt.prefix


class RemoteModel:
    """Candidates from a completion server (see the module docstring for the URL forms).

    ``last_stats`` after :meth:`generate_candidates`::

        backend        the server's URL
        http_ms        time of all HTTP exchanges of the call
        requests       how many were made
        prompt_tokens  the prompt's tokens as the server counted them (when it says)
        reused_tokens  prompt tokens the server had cached (when it says)
        deadline       set when the deadline cut the call short
        extra_error    set when a request for an extra candidate failed (the ones in hand are kept)
    """

    def __init__(self, url: str, timeout_ms: int = BACKEND_TIMEOUT.value, reuse_prompt: bool = True):
        self.target = parse_backend_url(url)
        self.url = self.target.display
        self.timeout_s = max(1, int(timeout_ms)) / 1000.0
        self.reuse_prompt = reuse_prompt  # the server's cache_prompt: keep the evaluated prompt
        self.name: str = f"remote {self.url}"
        self.fim: FimFormat = self._format()
        self.calibration: Calibration | None = None  # which model the server runs is not known
        self.last_stats: dict[str, Any] = {}
        self._http = HttpClient(self.target)
        self._send_logprobs = self.target.logprobs  # dropped for a server that refuses them

    def _format(self) -> FimFormat:
        if self.target.api == INFILL:
            return INFILL_FORMAT
        table = load_fim_table()
        family = self.target.fim_family or LEFT_TO_RIGHT
        if family not in table:
            raise InputError(f"backend URL: unknown FIM family {family!r} (prompts/fim.toml has: {', '.join(table)})")
        return table[family]

    def count_tokens(self, text: str) -> int:
        """An estimate: UTF-8 bytes / 3, rounded up.

        The prompt stage calls this many times per request to fit its budget; asking the server
        (a round trip each) would cost more than the completion.  Code tokenizes at about 3-4 bytes
        per token with the BPE vocabularies of code models, so this errs on the side of a shorter
        prompt; a server whose context is still too small answers an error that says so.
        """
        return math.ceil(len(text.encode("utf-8")) / _BYTES_PER_TOKEN)

    def generate_candidates(self, prompt: Prompt | str, n: int, max_tokens: int, stop: Callable[[str], int | None],
                            deadline_s: float | None = None,
                            cancelled: Callable[[], bool] | None = None, skip: int = 0) -> list[Generation]:
        """Up to ``n`` distinct candidates, the greedy one first; the first ``skip`` left out (a server
        gives no other way to them than making them again: they are made and dropped).

        Each HTTP exchange is bounded by the backend timeout and by what is left of ``deadline_s``.
        A server too slow for the timeout is a :class:`BackendError`; one too slow for the deadline
        only ends the call: as with the local model, the candidate being streamed keeps its text so
        far (finish='deadline') and no further request starts (a server that had sent nothing yet
        gives no candidate).  ``cancelled`` is checked before each request and, from a watchdog
        thread, during it (so it must be thread-safe, e.g. ``threading.Event.is_set``).
        /infill is sent the prompt's parts (all before the gap, and the suffix), the
        completions API its text. Both as they are: a server cannot be held to chosen tokens, so
        there is no token healing here (``prompt.healed`` is not read, and a prompt is never healed
        before it is sent; see cljassist/model/healing.py).
        """
        started = time.perf_counter()
        end_at = time.monotonic() + deadline_s if deadline_s is not None else None
        prompt = as_prompt(prompt)
        n, max_tokens = generation_counts(n, max_tokens)
        stats: dict[str, Any] = {"backend": self.url, "http_ms": 0.0, "requests": 0}
        self.last_stats = stats
        out: list[Generation] = []
        seen: set[str] = set()
        attempt = 0
        # the greedy request, then sampled ones: a few more than needed, as some repeat a text
        while len(out) < n and attempt < max(1, 2 * n - 1):
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled before the request to the completion server")
            body = self._body(prompt, max_tokens, attempt)
            try:
                generation = self._one(body, stop, end_at, cancelled, stats)
            except BackendError as exc:
                if not out:
                    raise
                stats["extra_error"] = str(exc)
                break
            attempt += 1
            if generation is None:  # the deadline passed
                break
            if generation.text not in seen:
                seen.add(generation.text)
                out.append(generation)
        stats["http_ms"] = round(stats["http_ms"], 2)
        stats["total_ms"] = round((time.perf_counter() - started) * 1000.0, 2)
        return out[max(0, skip):]

    def _one(self, body: dict[str, Any], stop: Callable[[str], int | None], end_at: float | None,
             cancelled: Callable[[], bool] | None, stats: dict[str, Any]) -> Generation | None:
        """One request and its candidate; None when the deadline ran out before or during it."""
        limit, by_deadline = self.timeout_s, False
        if end_at is not None:
            left = end_at - time.monotonic()
            if left <= 0:
                stats["deadline"] = "the deadline passed before the request"
                return None
            if left < limit:
                limit, by_deadline = left, True
        t0 = time.perf_counter()
        finish: str | None = None
        try:
            reply, cutter = self._exchange(body, stop, limit, cancelled, stats)
        except _StreamTimedOut as exc:
            if not by_deadline:
                raise BackendError(f"the completion server at {self.url} did not answer within "
                                   f"{self.timeout_s * 1000:.0f} ms") from None
            stats["deadline"] = f"the deadline passed while waiting for the server ({limit * 1000:.0f} ms)"
            if not exc.cutter.text:
                return None
            reply, cutter, finish = exc.reply, exc.cutter, "deadline"  # keep what was streamed, as the local model does
        finally:
            stats["http_ms"] += (time.perf_counter() - t0) * 1000.0
        for key, value in reply.stats.items():
            stats.setdefault(key, value)  # the first (greedy) request's prompt counts
        ended = cutter.keep is not None
        text = cutter.text[: cutter.keep] if ended else cutter.text
        n_tokens, logprob = self._tokens_used(reply, cutter.consumed, cut=ended)
        finish = cutter.finish or finish or reply.finish or "eos"
        return Generation(text=text, logprob=logprob, n_tokens=n_tokens, finish=finish,
                          ms=(time.perf_counter() - t0) * 1000.0)

    def _exchange(self, body: dict[str, Any], stop: Callable[[str], int | None], limit_s: float,
                  cancelled: Callable[[], bool] | None, stats: dict[str, Any]) -> tuple[Reply, Cutter]:
        """Send ``body``; the reply (streamed or whole) and where the candidate ends in it."""
        parse = parse_infill if self.target.api == INFILL else parse_completions
        for attempt in (1, 2):
            reply, cutter = Reply(), Cutter(stop, self.fim.stop)

            def on_event(event: Any) -> bool:
                part = parse(event, self.url, True)
                reply.add(part)
                # the server would go on to max_tokens: hang up once the candidate has ended
                return cutter.feed(part.text) and part.finish is None

            stats["requests"] += 1
            try:
                whole = self._http.exchange(body, limit_s, cancelled, on_event)
            except TimedOut:
                raise _StreamTimedOut(reply, cutter) from None
            except BackendError as exc:
                # llama-cpp-python and some OpenAI-compatible servers refuse "logprobs": go on without
                if attempt == 1 and "logprobs" in body and "logprob" in str(exc).lower():
                    self._send_logprobs = False
                    body = {k: v for k, v in body.items() if k != "logprobs"}
                    continue
                raise
            if whole is not None:  # a server that does not stream answered in one piece
                reply.add(parse(whole, self.url, False))
                reply.pieces.clear()  # one piece of many tokens: no token count to take from it
                cutter.feed(reply.text)
            return reply, cutter
        raise AssertionError("unreachable")

    def _body(self, prompt: Prompt, max_tokens: int, attempt: int) -> dict[str, Any]:
        sampling: dict[str, Any] = {"temperature": 0.0} if attempt == 0 else \
            {"temperature": _SAMPLE_TEMPERATURE, "seed": _SEED_BASE + attempt}
        # no repeat penalty (llama.cpp and llama-cpp-python have one by default; the local model does
        # not); streamed, so that the request can end as soon as the stop rule ends the candidate
        common = {**sampling, "repeat_penalty": 1.0, "stream": True, "cache_prompt": self.reuse_prompt}
        if self.target.api == INFILL:
            return {"input_prefix": text_before_gap(prompt, self.fim), "input_suffix": prompt.suffix, "prompt": "",
                    "n_predict": max_tokens, "n_probs": 1, **common}
        body: dict[str, Any] = {"prompt": prompt.text, "max_tokens": max_tokens, **common}
        stops = [s for s in self.fim.stop if s]
        if stops:
            body["stop"] = stops
        if self._send_logprobs:
            body["logprobs"] = 1
        if self.target.model:
            body["model"] = self.target.model
        return body

    def _tokens_used(self, reply: Reply, consumed: int, cut: bool) -> tuple[int, float]:
        """(tokens, summed log-prob) of the tokens that produced the first ``consumed`` characters,
        the one that holds the last of them included, as the local model counts them.  From the
        tokens the server gave log-probs for, else from the streamed pieces (one token each, log-prob
        unknown: 0.0), else the server's token count or an estimate."""
        wanted = reply.text[:consumed]
        for texts, logprobs in ((reply.token_texts, reply.token_logprobs), (reply.pieces, None)):
            if texts and "".join(texts).startswith(wanted):
                count, total, covered = 0, 0.0, 0
                for i, piece in enumerate(texts):
                    if covered >= consumed and count > 0:
                        break
                    covered += len(piece)
                    count += 1
                    total += logprobs[i] if logprobs is not None else 0.0
                return count, total
        if reply.n_tokens is not None and not cut:
            return max(1, reply.n_tokens), 0.0
        return max(1, self.count_tokens(wanted)), 0.0

    def score_continuations(self, prompt: Prompt | str, texts: Sequence[str], most: int,
                            ends: Callable[[str], bool] | None = None,
                            cancelled: Callable[[], bool] | None = None,
                            deadline_s: float | None = None) -> list[Generation | None]:
        """None for each: a completion server generates, it does not score given text."""
        return [None] * len(texts)

    def preload(self, text: str, cancelled: Callable[[], bool] | None = None) -> int:
        """Nothing to do: the server keeps its own evaluated prompt (``cache_prompt``)."""
        return 0

    def forget(self) -> None:
        """Nothing to do: with ``reuse_prompt`` off the server is asked not to keep the prompt."""

    def close(self) -> None:
        self._http.close_connection()

    def __repr__(self) -> str:
        return f"RemoteModel({self.url!r}, fim={self.fim.family})"


class FallbackModel:
    """The remote model, and the local one when the server fails.

    The local model is loaded on first need, not at start: a remote is chosen to spare the laptop's
    memory and start-up time, and with a healthy server the fallback is never used (the default
    SmolLM2 loads in about a second, paid once, on the first failure).  After a failure the server
    is left alone for ``retry_after_s`` so that a dead or hanging server does not add its timeout to
    every keystroke; then it is tried again.

    The prompt was built for the remote's format; when the local model's differs, it is rendered
    again from the prompt's parts (all before the gap, and the suffix if the local model does FIM).
    ``last_stats`` is the remote's, or the local's with ``backend = "local (fallback: <reason>)"``.
    """

    def __init__(self, remote: RemoteModel, local_factory: Callable[[], CompletionModel], retry_after_s: float = FALLBACK_RETRY.seconds):
        self.remote = remote
        self.local_factory = local_factory
        self.retry_after_s = retry_after_s
        self.name: str = remote.name
        self.fim: FimFormat = remote.fim
        self.calibration: Calibration | None = None  # scores of two models mixed: neither table holds
        self.last_stats: dict[str, Any] = {}
        self._local: CompletionModel | None = None
        self._skip_until = 0.0
        self._reason = ""

    def count_tokens(self, text: str) -> int:
        return self.remote.count_tokens(text)

    def generate_candidates(self, prompt: Prompt | str, n: int, max_tokens: int, stop: Callable[[str], int | None],
                            deadline_s: float | None = None,
                            cancelled: Callable[[], bool] | None = None, skip: int = 0) -> list[Generation]:
        started = time.monotonic()
        if started >= self._skip_until:
            try:
                out = self.remote.generate_candidates(prompt, n, max_tokens, stop, deadline_s, cancelled, skip)
                self.last_stats = self.remote.last_stats
                return out
            except BackendError as exc:  # Cancelled goes through: it is no failure of the server
                self._reason = str(exc)
                self._skip_until = time.monotonic() + self.retry_after_s
        local = self._local_model()
        if deadline_s is not None:
            deadline_s = max(0.001, deadline_s - (time.monotonic() - started))
        out = local.generate_candidates(self._local_prompt(prompt, local.fim), n, max_tokens,
                                        stop, deadline_s, cancelled, skip)
        self.last_stats = {**local.last_stats, "backend": f"local (fallback: {self._reason})"}
        return out

    def _local_model(self) -> CompletionModel:
        if self._local is None:
            try:
                self._local = self.local_factory()
            except CljassistError as exc:
                raise BackendError(f"{self._reason}; and the local fallback model failed: {exc}") from None
        return self._local

    def _local_prompt(self, prompt: Prompt | str, local_fim: FimFormat) -> Prompt | str:
        """The prompt in the local model's format, with its parts (so that the local model may heal
        it); a prompt given as finished text goes as it is."""
        if isinstance(prompt, str) or local_fim == self.fim:
            return prompt
        before = text_before_gap(prompt, self.fim)
        suffix = prompt.suffix if local_fim.is_fim else ""
        return dataclasses.replace(prompt, text=render_gap(local_fim, before, prompt.suffix), before=before,
                                   suffix=suffix)

    def score_continuations(self, prompt: Prompt | str, texts: Sequence[str], most: int,
                            ends: Callable[[str], bool] | None = None,
                            cancelled: Callable[[], bool] | None = None,
                            deadline_s: float | None = None) -> list[Generation | None]:
        """The server's answer (None for each): the prompt is the server's, and which model last
        answered changes from one request to the next."""
        return self.remote.score_continuations(prompt, texts, most, ends, cancelled, deadline_s)

    def preload(self, text: str, cancelled: Callable[[], bool] | None = None) -> int:
        """Nothing to do: the prompt's start is rendered for the server's format, and the local
        model, when it answers, renders the prompt in its own."""
        return 0

    def forget(self) -> None:
        if self._local is not None:
            self._local.forget()

    def close(self) -> None:
        self.remote.close()
        if self._local is not None:
            self._local.close()

    def __repr__(self) -> str:
        return f"FallbackModel({self.remote!r}, local={'loaded' if self._local is not None else 'not loaded'})"
