"""Every limit of time and size cljassist works within, declared once, each with its reason.

Modules read their limits from here (`budgets.REPL_TIMEOUT.value`), never from a literal of their own,
and the defaults of `config.Settings` are these values. README.md's Configuration section holds the
table `python3 -m cljassist.budgets --markdown` prints; tests/test_budgets.py fails when they differ.

The prompt's token budgets live here too, not in prompts/completion.toml: that file says how a
prompt is laid out and rendered (shares, cut steps, context line formats), this one how big things
may get, so a reader finds every limit in one table and the README is generated from plain data.

This module imports nothing of cljassist: every stage can read it.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass

_BYTE_UNITS = ((1024 * 1024, "MiB"), (1024, "KiB"))


@dataclass(frozen=True)
class Budget:
    stage: str  # the pipeline stage (or front-end) that the limit bounds
    name: str
    value: int | float | None  # None: no limit
    unit: str  # "tokens", "ms", "s", "bytes", "chars", "entries" or a count's noun
    override: str  # where a user changes it (config key, flag); "" when only this table does
    reason: str

    @property
    def seconds(self) -> float | None:
        """A time limit in seconds, whatever unit it is declared in."""
        if self.value is None:
            return None
        if self.unit == "ms":
            return self.value / 1000
        if self.unit == "s":
            return float(self.value)
        raise TypeError(f"{self.name} is in {self.unit}, not a time")

    def shown(self) -> str:
        if self.value is None:
            return "none"
        if self.unit == "bytes":
            for size, label in _BYTE_UNITS:
                if self.value >= size and self.value % size == 0:
                    return f"{self.value // size} {label}"
        return f"{self.value:g} {self.unit}"


PROMPT_TOKENS = Budget(
    "prompt", "prompt", 768, "tokens", "`:max-prompt-tokens`, `--max-prompt-tokens`",
    "everything the model reads (context, prefix, suffix, FIM tokens); prompt evaluation dominates "
    "latency on a laptop CPU (~100-200 tokens/s per core for the 135M model)")
KEYSTROKE_PROMPT_TOKENS = Budget(
    "prompt", "prompt, as you type", 384, "tokens", "`:max-prompt-tokens`, `--max-prompt-tokens`",
    "`serve`, `proxy`, `repl`, `bench --typing`: a cold 768-token prompt took 3.8 s here, 384 tokens 1.3 s")
CONTEXT_TOKENS = Budget(
    "prompt", "REPL context block", 256, "tokens", "",
    "live context lines, most relevant first, the rest dropped; reserved in the prompt budget so the "
    "code before the block is known, and evaluated, before the REPL answers")
CROSSFILE_TOKENS = Budget(
    "prompt", "other files' definitions", 256, "tokens", "`:repo-prompt false`, `--no-repo-prompt` turn them off",
    "repository layout (Qwen): the definitions the code at the cursor uses from other files, within the "
    "prompt budget and at most its `definitions_share` (prompts/completion.toml); the code gets what they leave")
DEFINITION_LINES = Budget(
    "prompt", "lines of one such definition", 12, "lines", "",
    "signature, docstring and the start of the body say what a function does; the rest is cut")
NEW_TOKENS = Budget(
    "model", "suggestion length", 64, "tokens", "`:max-new-tokens`, `--max-new-tokens`",
    "generation stops at the end of the form, so a long limit costs only when the model rambles")
CANDIDATES = Budget(
    "model", "candidates", 3, "per request", "`:candidates`, `-n`",
    "each candidate is one more generation; three give the checks and the ranking a choice")
KEYSTROKE_CANDIDATES = Budget(
    "model", "candidates, as you type", 1, "per request", "`:candidates`, `-n`; a request's `n` asks for more",
    "ghost text shows one suggestion: it is generated and checked alone, so it comes first; a request for more "
    "at the same place reuses it (and the prompt's evaluation) and generates only the rest")
CONTEXT_WINDOW = Budget(
    "model", "model context window", 4096, "tokens", "`:n-ctx`",
    "holds the prompt and the generated tokens with room to spare; larger costs memory, not speed")
PROMPT_TOKENS_MIN = Budget(
    "prompt", "smallest prompt allowed", 64, "tokens", "",
    "`:max-prompt-tokens` below this, or an `:n-ctx` leaving less after `:max-new-tokens`, is refused: the FIM "
    "tokens and a line or two of code are the least a model can complete from")
NEW_TOKENS_MAX = Budget(
    "model", "longest suggestion length allowed", 512, "tokens", "",
    "`:max-new-tokens` above this is refused: a suggestion is a form or a few lines, and each token "
    "is one more decode")
CONTEXT_WINDOW_MAX = Budget(
    "model", "largest context window allowed", 32768, "tokens", "",
    "`:n-ctx` above this is refused: the named models train on at most this (Qwen2.5-Coder), and the "
    "KV cache's memory grows with it")
SETTING_TIMEOUT_MAX = Budget(
    "model", "longest time setting allowed", 600000, "ms", "",
    "`:deadline-ms`, `:repl-timeout-ms`, `:backend-timeout-ms` above this are refused: more is a unit slip "
    "(seconds given as ms), and every request could wait that long")
DEADLINE = Budget(
    "model", "generation deadline", None, "ms", "`:deadline-ms`, `--deadline-ms`",
    "explicit requests (`complete`, `watch`, bench cases) wait for every candidate")
KEYSTROKE_DEADLINE = Budget(
    "model", "generation deadline, as you type", 200, "ms", "`:deadline-ms`, `--deadline-ms`",
    "after the prompt is read: a suggestion later than this is typed over anyway. Past it no further candidate "
    "is generated (of the names steered in, the likeliest alone is scored), and none checked in the REPL once "
    "one has passed; the result says which it cut")
SPECULATED_TOKENS = Budget(
    "model", "tokens guessed ahead per model pass", 8, "tokens", "`:speculate false` turns guessing off",
    "speculative decoding checks this many guessed tokens in one pass; a pass over a few more tokens "
    "costs little more than over one, and a guess this far ahead rarely holds")
SPECULATION_TIE = Budget(
    "model", "lead a guessed pass's pick needs", 1.0, "nats", "",
    "a pass over several tokens computes logits slightly off those of one token at a time; a step "
    "whose two best tokens are closer than this is evaluated again alone, so the pick is greedy's")
LOOKUP_NGRAM = Budget(
    "model", "n-gram prompt lookup matches", 3, "tokens", "",
    "the last tokens looked up earlier in the prompt to guess what follows: shorter matches guessed "
    "wrong too often to pay for their pass here, longer ones are rarer and no surer in code")
KV_STATES = Budget(
    "model", "evaluated prompts kept", 8, "prompts", "",
    "each buffer's evaluated prompt is kept (a copy of its KV cache), so going back to the buffer, a "
    "second editor or a daemon's other clients evaluate nothing again; the least recently used goes first")
KV_STATES_MEMORY = Budget(
    "model", "memory of the evaluated prompts kept", 256 * 1024 * 1024, "bytes", "",
    "a kept prompt costs its KV cache: 23 KB a token for SmolLM2, so 16 MB for 700 tokens (measured "
    "here); with a draft model, each model keeps its own")
KV_RESTORE_GAIN = Budget(
    "model", "tokens a kept prompt must save", 32, "tokens", "",
    "copying a kept prompt back costs the same however little of it is used (3 ms for 700 tokens of "
    "SmolLM2 here): one that shares fewer tokens more than the evaluated context is not restored")
SAME_BUFFER_SHARE = Budget(
    "model", "share of two prompts that makes them one buffer's", 0.5, "of the shorter", "",
    "typing changes the middle of a prompt, another file all of it: a prompt sharing this much of its "
    "start and end with a kept one replaces it instead of being kept beside it")
CANCEL_CHUNK = Budget(
    "model", "prompt chunk between cancel checks", 64, "tokens", "",
    "a newer keystroke cancels the request between chunks; smaller stops sooner, larger evaluates faster")
REPL_TIMEOUT = Budget(
    "REPL", "REPL context and checks, per request", 2000, "ms", "`:repl-timeout-ms`",
    "what one request may wait on the REPL in all, its context and every candidate's checks together: "
    "a busy or hung REPL must not hold up a suggestion; past this, completion goes on without it")
REPL_INTERRUPT_WAIT = Budget(
    "REPL", "interrupt after a timed-out call", 500, "ms", "",
    "kept out of the request's REPL time for the interrupt: a live REPL answers it at once, one that "
    "does not is left out of later requests until a probe answers")
REPL_PROBE_INTERVAL = Budget(
    "REPL", "probe of a REPL that stopped answering", 2, "s", "",
    "a `describe` in the background at most this often; requests meanwhile go on without the REPL")
CROSSFILE_TIME = Budget(
    "context", "finding other files' definitions", 200, "ms", "",
    "sources read once per file and modification time, then only looked up; a slow disk must not hold "
    "up a suggestion: past this the prompt goes without them")
NREPL_CONNECT_TIMEOUT = Budget(
    "REPL", "nREPL connect", 5, "s", "",
    "a port that does not accept by then is not a live nREPL")
NREPL_REQUEST_TIMEOUT = Budget(
    "REPL", "one nREPL op, by default", 10, "s", "",
    "ops on the completion path pass the REPL timeout instead; the others answer at once when the REPL is alive")
SAFE_EVAL_TIME = Budget(
    "REPL", "`--eval safe`: computing a suggestion's value", 1000, "ms", "",
    "computed on a thread of its own that is stopped past this (at most a third of the request's REPL time "
    "left, so the answer still comes within it); a pure form that runs longer is an endless loop or too big to show")
TOOLING_SETUP = Budget(
    "REPL", "our tooling session: clone and load its helper", 10, "s", "",
    "once per connection, not per request (the request that sets up may wait this long on the REPL "
    "instead of its REPL time); a cold JVM compiles the helper in seconds")
NREPL_LOAD_TIMEOUT = Budget(
    "REPL", "nREPL load-file", 30, "s", "",
    "loading a file compiles it and what it requires; a cold JVM takes seconds")
NREPL_START_TIMEOUT = Budget(
    "REPL", "starting a local nREPL", 60, "s", "",
    "`cljassist nrepl` and the tests start a JVM and load nREPL: seconds, more on a slow machine")
NREPL_STOP = Budget(
    "REPL", "stopping a local nREPL", 10, "s", "",
    "a JVM asked to exit gets this long, then it is killed")
CONTEXT_CACHE_ENTRIES = Budget(
    "REPL", "REPL lookups cached", 4096, "entries", "",
    "per cache (matches, vars), then simply cleared; a session looks up a few hundred names")
REPL_MATCHES = Budget(
    "REPL", "vars matching the symbol being typed", 64, "names", "",
    "the candidates the REPL steers with, and the list a name is checked against (fewer sent: all "
    "of them); the context block shows the first few; `re` matches 50 vars of clojure.core")
REPL_PUBLICS = Budget(
    "REPL", "public vars of an aliased namespace", 400, "names", "",
    "read once per namespace change; the context block shows the first few, the rest complete `alias/`")
STEER_SCORED = Budget(
    "model", "names scored as candidates", 8, "per request", "`:steer false`, `--no-steer` turns it off",
    "the names completing the typed symbol whose first token is likeliest are scored in full, one "
    "decode a token each (~10 ms a token for the default model here)")
RECENT_RESULTS = Budget(
    "cache", "recent results", 128, "entries", "`:cache false` turns it off",
    "answers backspace, undo and prefetched places; more would rarely be hit again")
RECENT_RESULTS_TTL = Budget(
    "cache", "recent result lifetime", 120, "s", "`:cache false` turns it off",
    "a result older than this likely reflects code (or REPL state) that has since changed")
CACHE_KEY_PREFIX = Budget(
    "cache", "text before the cursor in a cache key", 4096, "chars", "",
    "enough to tell places apart, short enough that hashing costs nothing next to a model call")
CACHE_KEY_SUFFIX = Budget(
    "cache", "text after the cursor in a cache key", 1024, "chars", "",
    "the code after the cursor changes the answer less than the code before it")
BACKEND_TIMEOUT = Budget(
    "remote", "one server request", 10000, "ms", "`:backend-timeout-ms`, `--backend-timeout-ms`",
    "a server slower than this is treated as down (and, with `:backend-fallback`, the local model answers)")
FALLBACK_RETRY = Budget(
    "remote", "server left alone after a failure", 20, "s", "",
    "with `:backend-fallback`: a dead or hanging server does not add its timeout to every request")
REMOTE_WATCH_INTERVAL = Budget(
    "remote", "cancel and clock checks during HTTP", 0.02, "s", "",
    "a cancelled request stops waiting for the server within this")
SERVER_MESSAGE = Budget(
    "remote", "server message quoted in an error", 300, "chars", "",
    "enough for the server's reason, not a whole HTML error page")
REQUEST_SUGGESTIONS = Budget(
    "front-ends", "suggestions one request may ask for", 10, "per request", "",
    "each costs a generation (`-n 1000` ran 80 s here); `-n`, `:candidates` or a request's `n` above this is refused")
DAEMON_LINE = Budget(
    "front-ends", "daemon request line", 8 * 1024 * 1024, "bytes", "",
    "a whole buffer fits; a runaway client does not eat the memory")
DAEMON_CONNECTIONS = Budget(
    "front-ends", "daemon connections at once", 64, "connections", "",
    "each is two threads; editors and the nREPL middleware hold one or connect per request, a client "
    "past this is told so and closed")
DAEMON_IDLE = Budget(
    "front-ends", "daemon connection idle", 300, "s", "",
    "a client that sends nothing and waits for no reply this long is disconnected (the middleware "
    "connects per request, an editor reconnects)")
DAEMON_QUEUED = Budget(
    "front-ends", "daemon replies queued for one client", 4 * 1024 * 1024, "bytes", "",
    "a client that stops reading is dropped past this (a reply is a few KiB), so it cannot fill the memory")
DAEMON_PROBE_TIMEOUT = Budget(
    "front-ends", "probe of a running daemon", 2, "s", "",
    "a live daemon answers ping at once (it never waits for the engine)")
PROXY_REFUSE_WAIT = Budget(
    "front-ends", "proxy client's first request, upstream down", 10, "s", "",
    "the client gets the error as the reply to its request, not as a dropped connection")
PROXY_FOLLOW_POLL = Budget(
    "front-ends", "`proxy` reading .nrepl-port for a restarted upstream", 0.5, "s", "",
    "without `--upstream`, an upstream restarted on another port is followed within this; the file is tiny")
WORKER_STOP = Budget(
    "front-ends", "request under way at exit", 10, "s", "",
    "the completion worker and `watch` end the request they run (cancelled between prompt chunks) within this")
THREAD_JOIN = Budget(
    "front-ends", "connection threads at exit", 5, "s", "",
    "they end as soon as their socket closes; this bounds a stuck one so that exit does not hang")
MIDDLEWARE_INJECT = Budget(
    "front-ends", "`serve` putting the middleware into the REPL", 30, "s", "",
    "the REPL compiles the middleware, which a cold JVM takes seconds to do")
MIDDLEWARE_RELEASE = Budget(
    "front-ends", "`serve` releasing the middleware at exit", 5, "s", "",
    "a REPL that does not answer must not hold up the daemon's exit")
REPL_SESSION_OP = Budget(
    "front-ends", "`repl` session clone and interrupt", 5, "s", "",
    "instant on a live REPL; one that does not answer by then is treated as gone")
REPL_SESSION_CLOSE = Budget(
    "front-ends", "`repl` closing its session at exit", 2, "s", "",
    "the session dies with the connection anyway; exit does not wait long for it")
TERMINAL_DEBOUNCE = Budget(
    "front-ends", "`repl` pause before asking", 0.1, "s", "",
    "keys typed faster than this are one request")
TERMINAL_INTERRUPT_GRACE = Budget(
    "front-ends", "`repl` interrupted evaluation", 10, "s", "",
    "how long an interrupted evaluation may take to stop before the prompt gives up waiting on it")
WATCH_DEBOUNCE = Budget(
    "front-ends", "`watch` quiet time after a save", 0.3, "s", "",
    "a burst of saves, or an editor's rename dance, is one fill")
SOURCE_FILE = Budget(
    "front-ends", "source file read (`complete`, `watch`)", 1024 * 1024, "bytes", "",
    "bigger files are refused: not hand-edited source, and slow to scan; only regular files are read "
    "(a FIFO would block, a device never ends)")
WATCH_SHOWN = Budget(
    "front-ends", "`watch` alternative in a comment", 60, "chars", "",
    "a longer alternative is cut, keeping the comment line short")

STATS_FILE = Budget(
    "statistics", "what-was-kept file (both generations)", 16 * 1024 * 1024, "bytes", "`:stats false`, `--no-stats` turn it off",
    "one line of about 100 bytes per suggestion shown, accepted or kept; past half of this the file is "
    "renamed to `stats.jsonl.1` (replacing the older one), so the two never hold more")
STATS_SIDS = Budget(
    "statistics", "suggestions remembered for `accepted`/`retained`", 8192, "entries", "",
    "a few hundred bytes each; typing with a reply every 300 ms and 3 suggestions each fills it in "
    "about 13 minutes, longer than a sid lives")
STATS_SID_TTL = Budget(
    "statistics", "a suggestion's sid, unused", 300, "s", "",
    "an accept comes while the ghost text is shown, `retained` 30 s after it; older sids are refused "
    "as expired")
STATS_QUEUE = Budget(
    "statistics", "statistics lines waiting for the disk", 4096, "lines", "",
    "written by a thread of their own, so a reply never waits for the disk; past this (a stuck disk) "
    "lines are dropped, with one warning")

# Latency targets a default model must meet (scripts/evidence.py decide measures each candidate
# against them; nothing enforces them at run time).
ONE_SHOT_P50_TARGET = Budget(
    "default model", "one-shot p50 (`complete`, `watch`, `bench CASES`)", 3, "s", "",
    "someone waits for an asked-for suggestion; the one-shot default is the best model that is this fast")
TYPING_WARM_P50_TARGET = Budget(
    "default model", "as-you-type warm p50 over all keystrokes (`bench --typing`)", 300, "ms", "",
    "a suggestion later than a typing pause is typed over; the as-you-type default must be this fast")
TYPING_WARM_P95_TARGET = Budget(
    "default model", "as-you-type warm p95 over all keystrokes (`bench --typing`)", 800, "ms", "",
    "the slow tail is what is felt as lag")
TABLE: tuple[Budget, ...] = tuple(v for v in globals().copy().values() if isinstance(v, Budget))


class TimeBudget:
    """The seconds one request may still wait on something (the REPL), however many calls it makes:
    each call is given what is left, and what it waited is charged. Only waiting counts (the model
    generating between the context and the checks does not). Thread-safe: the context is gathered
    on another thread than the checks run on."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.total = float(seconds)
        self._spent = 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self.ended: str | None = None  # why no more calls are made, once one failed

    @property
    def spent(self) -> float:
        return self._spent

    def left(self) -> float:
        """Seconds still to wait; 0 once spent or ended."""
        with self._lock:
            return 0.0 if self.ended is not None else max(0.0, self.total - self._spent)

    def at_least(self, seconds: float) -> None:
        """Raise the total to `seconds` (a setup step that is allowed longer than a request)."""
        with self._lock:
            self.total = max(self.total, float(seconds))

    def end(self, reason: str) -> None:
        """No more waiting in this request (a call failed: the rest would only wait for it too)."""
        with self._lock:
            self.ended = self.ended or reason

    def charge_since(self, started: float) -> float:
        """Charge the time since `started` (a `now()` reading); returns the seconds charged."""
        waited = max(0.0, self._clock() - started)
        with self._lock:
            self._spent += waited
        return waited

    def now(self) -> float:
        return self._clock()

def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The table as README.md's Configuration section shows it."""
    rows = ["| stage | limit | default | set with | why |", "|---|---|---|---|---|"]
    for budget in TABLE:
        rows.append("| " + " | ".join(_cell(c) for c in (
            budget.stage, budget.name, budget.shown(), budget.override or "fixed", budget.reason)) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m cljassist.budgets", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the table as README.md holds it")
    parser.parse_args(argv)
    print(markdown(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
