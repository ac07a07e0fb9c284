"""`cljassist repl`: a Clojure prompt in the terminal, on the user's nREPL, with ghost-text suggestions.

The pieces, each usable (and tested) without the others:

* `input_is_complete` / `continuation_indent`: Enter submits a form only when our reader says it is
  complete (no open delimiter, not inside a string); otherwise it starts an indented new line.
  A stray closing delimiter submits too, so the REPL reports the error instead of waiting forever.
* `Evaluator` (cljassist.repl.evaluator): evaluation on a session of its own, output streamed,
  Ctrl-C sent as nREPL `interrupt`.
* `EngineAutoSuggest`: a prompt_toolkit AutoSuggest backed by the engine through a
  CompletionService. The model runs on the service's worker thread, never the UI thread; a
  keystroke cancels the request in flight (prompt_toolkit then asks again for the newer text), and a
  result is shown only if the buffer has not changed meanwhile. Typing what the ghost text already
  says keeps the rest of it without asking the model again. A terminal does not auto-pair
  delimiters, so the request's suffix is the closers an auto-pairing editor would have after the
  cursor (`implied_closers`), and the ghost text is the suggestion followed by them: Tab gives a
  complete form that Enter evaluates.
* `TerminalRepl`: the PromptSession (namespace prompt, multi-line input, history, key bindings)
  and the read-eval-print loop; input, output and the printer's stream are injectable for tests.
* `main_repl`: wiring for `cljassist repl`: finds (or starts) the nREPL, loads the model once.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import get_app
from prompt_toolkit.auto_suggest import AutoSuggest, Suggestion
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.document import Document
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import Condition, has_focus
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings

from cljassist.budgets import TERMINAL_DEBOUNCE
from cljassist.clojure_text.closers import implied_closers
from cljassist.clojure_text.indent import continuation_indent
from cljassist.clojure_text.reader import scan
from cljassist.types import CompletionRequest, CompletionResult
from cljassist.errors import Cancelled, ReplTimeout, ReplUnavailable
from cljassist.repl.evaluator import DEFAULT_NAMESPACE, EvalOutcome, Evaluator

__all__ = [
    "input_is_complete", "next_word", "history_path", "Printer", "EngineAutoSuggest", "TerminalRepl", "main_repl",
]

REPL_BUFFER_ID = "repl"  # the CompletionService buffer: each keystroke's request supersedes the last
_INCOMPLETE_MODES = ("string", "regex", "char")  # the text ends inside one of these: keep reading


# ---------------------------------------------------------------------------------------------
# When is a form complete, and how far to indent the next line


def input_is_complete(text: str) -> bool:
    """True when Enter should submit `text`: something besides whitespace, and either every form
    is closed (not inside a string, regex or after a lone backslash) or a closing delimiter matches
    nothing, which no further input can fix, so the REPL should report it now."""
    if not text.strip():
        return False
    state = scan(text)
    if state.unmatched_closers:
        return True
    return not state.stack and state.mode not in _INCOMPLETE_MODES


def submits_on_enter(document: Document) -> bool:
    """Enter submits a complete form when the cursor is on its last line; inside an earlier line
    of a multi-line form, Enter keeps editing (a new line), as in an editor."""
    on_last_line = document.cursor_position_row == document.line_count - 1
    return on_last_line and input_is_complete(document.text)


# Right arrow takes one "word" of a suggestion: leading blanks, then a run of symbol characters
# or else a single delimiter/quote character.
_WORD = re.compile(r"\s*(?:[^\s()\[\]{}\"]+|.)", re.DOTALL)


def next_word(suggestion: str) -> str:
    match = _WORD.match(suggestion)
    return match.group(0) if match else suggestion


def history_path(environ: dict | None = None) -> Path:
    """$XDG_CACHE_HOME/cljassist/repl-history (default ~/.cache/cljassist/repl-history)."""
    environ = os.environ if environ is None else environ
    cache = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(cache) / "cljassist" / "repl-history"


def open_history(path: Path, printer: "Printer") -> History:
    """FileHistory at `path`, its folder created on demand; in memory (with a notice) if it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError as exc:
        printer.info(f"history kept in memory only: cannot write {path} ({exc.strerror or exc})")
        return InMemoryHistory()
    return FileHistory(str(path))


# ---------------------------------------------------------------------------------------------
# Printing


class Printer:
    """Writes what the REPL says to one stream (out and err interleave in the order they arrive);
    keeps track of whether the cursor is at the start of a line so the next prompt starts on one."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self._at_line_start = True
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            self.stream.write(text)
            self.stream.flush()
            self._at_line_start = text.endswith("\n")

    def out(self, text: str) -> None:
        self.write(text)

    def err(self, text: str) -> None:
        self.write(text)

    def value(self, text: str) -> None:
        self.fresh_line()
        self.write(text + "\n")

    def info(self, message: str) -> None:
        self.fresh_line()
        self.write(f";; {message}\n")

    def after_ctrl_c(self) -> None:
        """The terminal may have echoed ^C where the cursor was: go on from a new line."""
        self.write("\n")

    def fresh_line(self) -> None:
        if not self._at_line_start:
            self.write("\n")


# ---------------------------------------------------------------------------------------------
# Ghost text


class EngineAutoSuggest(AutoSuggest):
    """prompt_toolkit AutoSuggest answered by the engine on the CompletionService's worker thread."""

    def __init__(self, service, namespace: Callable[[], str | None] = lambda: None,
                 buffer_id: str = REPL_BUFFER_ID, debounce_s: float = TERMINAL_DEBOUNCE.seconds) -> None:
        self.service = service
        self.namespace = namespace
        self.buffer_id = buffer_id
        self.debounce_s = debounce_s  # let a burst of keystrokes settle before waking the model
        self.last_error: str | None = None  # the engine's last failure, for diagnosis
        self._ticket = None
        self._shown: tuple[str, str] | None = None  # (text it was made for, suggestion)
        self._shown_score: float | None = None  # its score, shown at the right of the prompt

    def attach(self, buffer: Buffer) -> None:
        """Cancel the request in flight as soon as the text changes: its answer would be for old
        text, and prompt_toolkit asks again for the new text once the current call returns."""
        buffer.on_text_changed += lambda _buffer: self.cancel("the input changed")

    def cancel(self, reason: str = "cancelled") -> None:
        ticket = self._ticket
        if ticket is not None and not ticket.future.done():
            ticket.cancel(reason)

    def dismiss(self) -> None:
        """Esc: drop the request in flight and the remembered suggestion."""
        self.cancel("dismissed")
        self._shown = None
        self._shown_score = None

    def get_suggestion(self, buffer: Buffer, document: Document) -> Suggestion | None:
        return None  # only the asynchronous path is used: the model never runs on the UI thread

    async def get_suggestion_async(self, buffer: Buffer, document: Document) -> Suggestion | None:
        text = document.text
        if not text.strip() or not document.is_cursor_at_the_end:
            return None  # ghost text shows only at the end of the input
        rest = self._rest_of_shown(text)
        if rest:
            return Suggestion(rest)
        if self.debounce_s:
            await asyncio.sleep(self.debounce_s)
            if buffer.document != document:
                return None  # prompt_toolkit retries with the newer text
        closers = implied_closers(text)
        if closers is None or (not closers and text.rstrip()[-1] in ')]}"'):
            return None  # a character literal being typed, or a finished form waiting for Enter
        # The suffix is what an auto-pairing editor would hold after the cursor: with an empty one,
        # every candidate short of closing the whole form would fail the `reads` check.
        request = CompletionRequest(text, closers, namespace=self.namespace())
        try:
            self._ticket = ticket = self.service.submit(request, buffer=self.buffer_id)
        except Cancelled:
            return None  # the service is shutting down
        result = await self._outcome(ticket)
        if result is None or buffer.document != document:
            return None
        shown = top_suggestion(result, closers)
        self._shown = (text, shown) if shown else None
        self._shown_score = result.suggestions[0].score if shown else None
        return Suggestion(shown) if shown else None

    def score_hint(self) -> str:
        """The score of the ghost text on screen (right of the prompt), or nothing."""
        buffer = get_app().current_buffer
        if self._shown_score is None or not (buffer.suggestion and buffer.suggestion.text):
            return ""
        return f"score {self._shown_score:.2f}"

    def _rest_of_shown(self, text: str) -> str | None:
        """When the user typed (or accepted) the start of the last suggestion, the rest of it."""
        if self._shown is None:
            return None
        base, shown = self._shown
        typed = text[len(base):]
        if text.startswith(base) and typed and shown.startswith(typed) and len(shown) > len(typed):
            return shown[len(typed):]
        return None

    async def _outcome(self, ticket) -> CompletionResult | None:
        """The ticket's result, awaited without blocking the event loop; None when it was cancelled
        or failed (the failure is kept in `last_error`: suggestions are best-effort)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future = loop.create_future()

        def settle(done) -> None:
            if waiter.done():
                return
            if done.cancelled():
                waiter.set_result(None)
            elif done.exception() is not None:
                if not isinstance(done.exception(), Cancelled):
                    self.last_error = str(done.exception()) or type(done.exception()).__name__
                waiter.set_result(None)
            else:
                waiter.set_result(done.result())

        def on_done(done) -> None:  # runs on the engine's worker thread
            try:
                loop.call_soon_threadsafe(settle, done)
            except RuntimeError:
                pass  # the prompt (and its loop) is gone

        ticket.future.add_done_callback(on_done)
        try:
            return await waiter
        except asyncio.CancelledError:
            ticket.cancel("the prompt closed")
            raise


def top_suggestion(result: CompletionResult, closers: str = "") -> str | None:
    """The ghost text: the best suggestion followed by the closers the request assumed, so that Tab
    gives a complete form. A multi-line suggestion shows its first line only (ghost text is one
    line; the rest is suggested again once that line is accepted)."""
    if not result.suggestions:
        return None
    text = result.suggestions[0].text
    if "\n" in text or "\n" in closers:
        text = text.split("\n", 1)[0]
        return text if text.strip() else None
    return text + closers if text.strip() else None


# ---------------------------------------------------------------------------------------------
# The prompt


def repl_key_bindings(suggester: EngineAutoSuggest | None) -> KeyBindings:
    """Enter (submit when complete), Esc-Enter (always submit), Tab / Right / Esc for ghost text.
    They apply to the input buffer only, so reverse search (Ctrl-R) keeps its own keys."""
    bindings = KeyBindings()
    in_input = has_focus(DEFAULT_BUFFER)

    @Condition
    def suggestion_shown() -> bool:
        buffer = get_app().current_buffer
        return bool(buffer.suggestion and buffer.suggestion.text and buffer.document.is_cursor_at_the_end)

    @bindings.add("enter", filter=in_input)
    def _enter(event) -> None:
        buffer = event.current_buffer
        if not buffer.text.strip():
            buffer.reset()
            event.app.exit(result="")  # an empty line: a fresh prompt, nothing evaluated
        elif submits_on_enter(buffer.document):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n" + continuation_indent(buffer.document.text_before_cursor))

    @bindings.add("escape", "enter", filter=in_input)
    def _submit(event) -> None:
        event.current_buffer.validate_and_handle()

    @bindings.add("tab", filter=in_input)
    def _tab(event) -> None:
        buffer = event.current_buffer
        if suggestion_shown():
            buffer.insert_text(buffer.suggestion.text)
        else:
            buffer.insert_text("  ")

    @bindings.add("right", filter=in_input & suggestion_shown)
    def _accept_word(event) -> None:
        buffer = event.current_buffer
        buffer.insert_text(next_word(buffer.suggestion.text))

    @bindings.add("escape", filter=in_input)
    def _dismiss(event) -> None:
        event.current_buffer.suggestion = None
        if suggester is not None:
            suggester.dismiss()
        event.app.invalidate()

    return bindings


def _continuation_prompt(width: int, line_number: int, is_soft_wrap: bool) -> str:
    return " " * width  # continuation lines line up with the first line's text


class TerminalRepl:
    """The read-eval-print loop. `evaluator` None: no REPL, suggestions only."""

    def __init__(self, evaluator: Evaluator | None, suggester: EngineAutoSuggest | None,
                 printer: Printer, history: History | None = None, input=None, output=None,
                 no_eval_reason: str = "no nREPL connected: evaluation is off") -> None:
        self.evaluator = evaluator
        self.suggester = suggester
        self.printer = printer
        self.no_eval_reason = no_eval_reason
        self.session: PromptSession = PromptSession(
            multiline=True,
            key_bindings=repl_key_bindings(suggester),
            auto_suggest=suggester,
            history=history if history is not None else InMemoryHistory(),
            prompt_continuation=_continuation_prompt,
            rprompt=suggester.score_hint if suggester is not None else None,
            reserve_space_for_menu=0,
            enable_open_in_editor=False,
            input=input,
            output=output,
        )
        if suggester is not None:
            suggester.attach(self.session.default_buffer)

    @property
    def ns(self) -> str:
        return self.evaluator.ns if self.evaluator is not None else DEFAULT_NAMESPACE

    def prompt_text(self) -> str:
        return f"{self.ns}=> "

    def read(self) -> str | None:
        """The next submitted input; "" after Ctrl-C (the line is cleared); None on Ctrl-D."""
        try:
            return self.session.prompt(self.prompt_text())
        except KeyboardInterrupt:
            return ""
        except EOFError:
            return None
        finally:
            if self.suggester is not None:
                self.suggester.dismiss()  # the next prompt starts afresh (perhaps in another ns)

    def run(self) -> int:
        while (code := self.read()) is not None:
            if code.strip():
                self.evaluate(code)
        return 0

    def evaluate(self, code: str) -> EvalOutcome | None:
        printer = self.printer
        if self.evaluator is None:
            printer.info(self.no_eval_reason)
            return None
        try:
            note = self.evaluator.ensure_session()
            if note:
                printer.info(note)
            outcome = self.evaluator.eval(code, on_out=printer.out, on_err=printer.err, on_value=printer.value,
                                          on_interrupt=printer.after_ctrl_c)
        except (ReplUnavailable, ReplTimeout) as exc:
            printer.info(f"evaluation failed: {exc}. The prompt keeps running: evaluation reconnects on "
                         "the next input; suggestions go on without the REPL meanwhile")
            return None
        except KeyboardInterrupt:  # Ctrl-C before the eval was even sent
            printer.info("interrupted")
            return None
        for note in outcome.notes:
            printer.info(note)
        if outcome.interrupted:
            printer.info("interrupted")
        if outcome.error and not (outcome.interrupted and outcome.error == "java.lang.InterruptedException"):
            printer.info(f"exception: {outcome.error}" if "." in outcome.error else outcome.error)
        printer.fresh_line()
        return outcome


# ---------------------------------------------------------------------------------------------
# `cljassist repl`


@dataclass
class ReplTarget:
    """The nREPL the prompt evaluates on: a client, where it came from, and the server we started
    (if we did), which is stopped on exit."""

    client: object  # NreplClient
    endpoint: str
    source: str
    local: object | None = None  # LocalNrepl
    from_port_file: bool = False  # found through .nrepl-port: each reconnect looks there again

    def close(self) -> None:
        self.client.close()
        if self.local is not None:
            self.local.stop()


def connect_or_start_nrepl(settings, cwd: Path, explicit: bool, printer: Printer) -> ReplTarget:
    """--nrepl (or the config's :nrepl), else the nearest .nrepl-port, else a local nREPL started
    here. An explicitly named REPL that is unreachable is an error; a stale port file is not."""
    from cljassist.repl.client import NreplClient
    from cljassist.repl.discovery import find_port_file, port_file_locator, resolve_endpoint
    from cljassist.repl.local_server import start_local_nrepl

    endpoint = resolve_endpoint(settings.nrepl, cwd)
    if endpoint is not None:
        source = "--nrepl" if explicit else (":nrepl in the config" if settings.nrepl else str(find_port_file(cwd)))
        locate = None if settings.nrepl else port_file_locator(cwd)
        try:
            client = NreplClient.connect(*endpoint, timeout=settings.repl_timeout_ms / 1000, locate=locate)
            return ReplTarget(client, f"{endpoint[0]}:{endpoint[1]}", source, from_port_file=locate is not None)
        except ReplUnavailable as exc:
            if explicit:
                raise
            printer.info(f"{exc} (from {source}); starting a local nREPL instead")
    else:
        printer.info(f"no nREPL found (no .nrepl-port in {cwd} or above); starting a local one from the Debian jars")
    local = start_local_nrepl(cwd, [])  # in its own session: our Ctrl-C never reaches it
    try:
        client = NreplClient.connect(local.host, local.port, timeout=settings.repl_timeout_ms / 1000)
    except ReplUnavailable:
        local.stop()
        raise
    printer.info(f"started nREPL on {local.endpoint} in {cwd}; it stops when this prompt exits")
    return ReplTarget(client, local.endpoint, "started here", local)


def main_repl(args) -> int:
    """`cljassist repl [--nrepl HOST:PORT | --no-repl] + model options`."""
    from cljassist.frontends.bootstrap import open_frontend, settings_from_args

    cwd = Path.cwd()
    settings = settings_from_args(args, cwd, keystrokes=True)
    printer = Printer(sys.stdout)
    no_repl = bool(getattr(args, "no_repl", False))
    target: ReplTarget | None = None
    evaluator = None
    try:
        if not no_repl:
            target = connect_or_start_nrepl(settings, cwd, getattr(args, "nrepl", None) is not None, printer)
            evaluator = Evaluator(target.client)
        printer.info("loading the model…")
        # the engine uses the REPL the prompt evaluates on, and follows its .nrepl-port as the prompt does
        follow = target is not None and target.from_port_file
        engine_settings = settings.with_overrides(nrepl=target.endpoint) if target and not follow else settings
        with open_frontend(engine_settings, near=cwd, no_repl=target is None, explicit=not follow,
                           service=True) as front:
            suggester = EngineAutoSuggest(front.service, namespace=lambda: evaluator.ns if evaluator else None)
            history = open_history(history_path(), printer)
            where = f"nREPL {target.endpoint} ({target.source})" if target else "no REPL (--no-repl): suggestions only"
            printer.info(f"cljassist repl on {where}; model {front.engine.model.name}")
            printer.info("Enter evaluates a complete form (Esc Enter: always); Tab accepts the suggestion, "
                         "Right one word, Esc dismisses; Ctrl-C interrupts, Ctrl-D exits")
            repl = TerminalRepl(evaluator, suggester, printer, history,
                                no_eval_reason="no REPL (--no-repl): evaluation is off")
            return repl.run()
    finally:
        if evaluator is not None:
            evaluator.close()
        if target is not None:
            target.close()
