"""`cljassist repl`: form completeness, the Evaluator on the real nREPL, and the prompt itself driven
through prompt_toolkit's pipe input (keys in, buffer state and printed output observed)."""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from cljassist.errors import Cancelled
from cljassist.frontends.service import CompletionService
from cljassist.clojure_text.closers import implied_closers
from cljassist.frontends.terminal import (
    EngineAutoSuggest,
    Printer,
    TerminalRepl,
    continuation_indent,
    history_path,
    input_is_complete,
    next_word,
    open_history,
    top_suggestion,
)
from cljassist.types import CompletionResult, Suggestion
from cljassist.repl.client import NreplClient
from cljassist.repl.evaluator import Evaluator
from cljassist.repl.local_server import start_local_nrepl
from tests import fakes
from tests.fixtures_repl import TEST_JVM_OPTS
from tests.waiting import wait_until

WAIT_S = 30  # generous: only there so a broken test fails instead of hanging
ENTER, ESC, TAB, CTRL_C, CTRL_D = "\r", "\x1b", "\t", "\x03", "\x04"
RIGHT, LEFT = "\x1b[C", "\x1b[D"


# ---------------------------------------------------------------------------------------------
# Form completeness and editing helpers


@pytest.mark.parametrize("text", ["(+ 1 2)", "42", ":kw", "(+ 1\n 2)", "(foo)  ; a comment",
                                  '"a (string"', "(foo))", "]", "(let [x 1)", r"\a", "[1 2] {:a 1}"])
def test_complete_input_submits(text):
    assert input_is_complete(text)


@pytest.mark.parametrize("text", ["", "   \n ", "(+ 1", '(str "a', '"unterminated', "(let [x 1]",
                                  "#{1 2", "#(inc %", "(foo ; ) closed only in a comment", "(foo \\",
                                  '#"regex'])
def test_incomplete_input_continues(text):
    assert not input_is_complete(text)


def test_continuation_indent_follows_the_innermost_open_form():
    assert continuation_indent("(defn f [x]") == "  "
    assert continuation_indent("(let [a 1") == "      "  # one past the bracket at column 5
    assert continuation_indent("(foo\n  {:a 1") == "   "  # the brace is at column 2 of line 2
    assert continuation_indent("#(inc") == "   "
    assert continuation_indent('(str "abc') == ""  # inside a string: no indentation added
    assert continuation_indent("(+ 1 2)") == ""


def test_implied_closers_are_what_an_auto_pairing_editor_would_add():
    assert implied_closers("(map inc [1 2") == "])"
    assert implied_closers('(str "a') == '")'
    assert implied_closers("#{1 #(inc") == ")}"
    assert implied_closers("(foo ; note") == "\n)"
    assert implied_closers("(+ 1 2)") == ""
    assert implied_closers("(str \\") is None  # a character literal is being typed


def test_top_suggestion_appends_the_closers_to_a_one_line_suggestion():
    def result(text):
        return CompletionResult([Suggestion(text, 0.5)], 1.0)

    assert top_suggestion(result(" 1"), ")") == " 1)"
    assert top_suggestion(result(" 1\n  2"), ")") == " 1"
    assert top_suggestion(result("\n  2"), ")") is None
    assert top_suggestion(CompletionResult([], 1.0), ")") is None


def test_next_word_takes_a_symbol_or_one_delimiter():
    assert next_word(" inc [1 2 3])") == " inc"
    assert next_word(" [1 2 3])") == " ["
    assert next_word(")") == ")"
    assert next_word('"hello world"') == '"'


def test_history_path_follows_xdg_cache_home(tmp_path):
    assert history_path({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "cljassist" / "repl-history"
    assert history_path({"HOME": str(tmp_path)}) == tmp_path / ".cache" / "cljassist" / "repl-history"


# ---------------------------------------------------------------------------------------------
# The Evaluator on the real nREPL


class Captured:
    def __init__(self):
        self.events: list[tuple[str, str]] = []

    def out(self, text):
        self.events.append(("out", text))

    def err(self, text):
        self.events.append(("err", text))

    def value(self, text):
        self.events.append(("value", text))


@pytest.fixture
def evaluator(nrepl_client):
    return Evaluator(nrepl_client)


def test_eval_streams_out_err_and_values_in_order(evaluator):
    seen = Captured()
    outcome = evaluator.eval('(println "hi") (binding [*out* *err*] (println "oops")) (+ 1 2)',
                             on_out=seen.out, on_err=seen.err, on_value=seen.value)
    assert seen.events == [("out", "hi\n"), ("value", "nil"), ("err", "oops\n"), ("value", "nil"), ("value", "3")]
    assert outcome.values == ["nil", "nil", "3"] and outcome.error is None and outcome.ns == "user"


def test_eval_reports_the_exception_class_and_tracks_the_namespace(evaluator):
    seen = Captured()
    outcome = evaluator.eval("(ns terminal.eval-test) (/ 1 0)", on_err=seen.err)
    assert outcome.error == "java.lang.ArithmeticException"
    assert "Divide by zero" in "".join(text for _, text in seen.events)
    assert outcome.ns == evaluator.ns == "terminal.eval-test"


def test_evaluation_session_is_its_own(nrepl_client, evaluator):
    assert evaluator.session in nrepl_client.sessions
    evaluator.eval("(def only-here 1)")
    evaluator.eval("(ns elsewhere)")
    assert nrepl_client.eval("(str *ns*)").values == ['"user"']  # a sessionless eval is unaffected


def test_interrupt_stops_a_long_eval_and_the_session_still_works(evaluator):
    results = []
    worker = threading.Thread(target=lambda: results.append(evaluator.eval("(Thread/sleep 60000)")))
    worker.start()
    wait_until(lambda: evaluator._running is not None, "the eval to be sent")
    time.sleep(0.3)  # let it reach Thread/sleep
    assert evaluator.interrupt()
    worker.join(WAIT_S)
    assert not worker.is_alive(), "the interrupted eval did not return"
    assert results[0].interrupted
    assert evaluator.eval("(+ 1 1)").values == ["2"]
    assert not evaluator.interrupt()  # nothing running


def test_ctrl_c_during_eval_sends_interrupt(evaluator):
    """The real Ctrl-C path: SIGINT in the evaluating (main) thread becomes an nREPL interrupt."""

    def press_ctrl_c():
        wait_until(lambda: evaluator._running is not None, "the eval to be sent")
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    # Python's own SIGINT handler, as in a terminal: a shell that runs the tests in the background
    # starts them with SIGINT ignored, and Ctrl-C would then never reach the eval
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        outcome = evaluator.eval("(Thread/sleep 60000)")
        presser.join(WAIT_S)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert outcome.interrupted
    assert evaluator.eval('(str "still" "here")').values == ['"stillhere"']


def test_lost_connection_gets_a_new_session_on_the_next_eval(nrepl_server):
    client = NreplClient.connect(nrepl_server.host, nrepl_server.port)
    try:
        evaluator = Evaluator(client)
        evaluator.eval("(ns before-the-drop)")
        old_session = evaluator.session
        client._conn.shutdown("test: the connection dropped")
        outcome = evaluator.eval("(+ 2 3)")
        assert outcome.values == ["5"]
        assert evaluator.session != old_session and evaluator.ns == "user"
        assert any("new session" in note for note in outcome.notes)
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# The prompt, driven through pipe input


class FakeEngine(fakes.FakeEngine):
    """Suggests from a table keyed by the text before the cursor; records every request."""

    def __init__(self, table: dict[str, str]):
        self.table = table
        self.requests = []

    def complete(self, request, n=None, cancelled=None):
        self.requests.append(request)
        text = self.table.get(request.prefix)
        suggestions = [Suggestion(text, 0.9, {"balanced": True})] if text else []
        return CompletionResult(suggestions, 1.0, namespace=request.namespace)


class Driver:
    """A TerminalRepl running its loop in a thread, fed by a pipe; `output` is what it printed."""

    def __init__(self, pipe, evaluator=None, engine=None, history=None):
        self.pipe = pipe
        self.output = io.StringIO()
        self.printer = Printer(self.output)
        self.service = CompletionService(engine) if engine is not None else None
        self.suggester = None
        if self.service is not None:
            self.suggester = EngineAutoSuggest(self.service, namespace=lambda: evaluator.ns if evaluator else "user",
                                               debounce_s=0)
        self.repl = TerminalRepl(evaluator, self.suggester, self.printer, history, input=pipe, output=DummyOutput())
        self.exit_code = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.exit_code = self.repl.run()

    @property
    def buffer(self):
        return self.repl.session.default_buffer

    def prompting(self) -> bool:
        app = self.repl.session.app
        return app.is_running and not app.is_done

    def send(self, keys: str) -> None:
        wait_until(self.prompting, "the prompt")
        self.pipe.send_text(keys)

    def wait_for_text(self, text: str) -> None:
        wait_until(lambda: self.buffer.text == text, f"input {text!r} (have {self.buffer.text!r})")

    def wait_for_output(self, text: str) -> str:
        return wait_until(lambda: text in self.output.getvalue() and self.output.getvalue(),
                          f"{text!r} in the output (have {self.output.getvalue()!r})")

    def wait_for_suggestion(self, text: str) -> None:
        wait_until(lambda: self.buffer.suggestion is not None and self.buffer.suggestion.text == text,
                   f"suggestion {text!r} (have {self.buffer.suggestion!r})")

    def close(self) -> None:
        if self.thread.is_alive():
            self.send(CTRL_C + CTRL_D)
            self.thread.join(WAIT_S)
        if self.service is not None:
            self.service.close()


@pytest.fixture
def pipe():
    with create_pipe_input() as pipe_input:
        yield pipe_input


@pytest.fixture
def drive(pipe):
    drivers = []

    def start(**kwargs) -> Driver:
        drivers.append(Driver(pipe, **kwargs))
        return drivers[-1]

    yield start
    for driver in drivers:
        driver.close()


def test_incomplete_form_continues_and_complete_one_is_evaluated(drive, evaluator):
    d = drive(evaluator=evaluator)
    d.send("(+ 1" + ENTER)
    d.wait_for_text("(+ 1\n  ")  # Enter inside an open form: a new, indented line
    assert d.prompting() and d.output.getvalue() == ""
    d.send("2)" + ENTER)
    d.wait_for_output("3\n")
    d.send('(do (println "out here") (binding [*out* *err*] (print "err here")) :done)' + ENTER)
    printed = d.wait_for_output(":done\n")
    assert "out here\n" in printed and "err here" in printed
    d.send("(str \"a" + ENTER)  # inside a string: not complete either
    d.wait_for_text('(str "a\n')
    d.send('")' + ENTER)
    d.wait_for_output('"a\\n"\n')


def test_stray_closer_submits_so_the_repl_reports_it(drive, evaluator):
    d = drive(evaluator=evaluator)
    d.send("(+ 1 2))" + ENTER)
    printed = d.wait_for_output("Unmatched delimiter")
    assert "3\n" in printed


def test_escape_enter_submits_even_an_incomplete_form(drive, evaluator):
    d = drive(evaluator=evaluator)
    d.send("(+ 1 2" + ESC + ENTER)
    d.wait_for_output("EOF while reading")


def test_ns_switch_changes_the_prompt_and_errors_show_the_class(drive, evaluator):
    d = drive(evaluator=evaluator)
    assert d.repl.prompt_text() == "user=> "
    d.send("(ns foo)" + ENTER)
    d.wait_for_output("nil\n")
    wait_until(lambda: d.prompting() and d.repl.session.message == "foo=> ", "the foo=> prompt")
    d.send("(/ 1 0)" + ENTER)
    printed = d.wait_for_output("java.lang.ArithmeticException")
    assert "Divide by zero" in printed


def test_ctrl_c_at_the_prompt_clears_the_line(drive, evaluator):
    d = drive(evaluator=evaluator)
    d.send("(+ 1")
    d.wait_for_text("(+ 1")
    d.send(CTRL_C)
    d.wait_for_text("")
    d.send("(+ 40 2)" + ENTER)
    d.wait_for_output("42\n")
    assert "(+ 1" not in d.output.getvalue()


def test_ctrl_d_exits(drive, evaluator):
    d = drive(evaluator=evaluator)
    d.send(CTRL_D)
    d.thread.join(WAIT_S)
    assert not d.thread.is_alive() and d.exit_code == 0


def test_history_file_is_written(drive, evaluator, tmp_path):
    path = history_path({"XDG_CACHE_HOME": str(tmp_path / "cache")})
    d = drive(evaluator=evaluator, history=open_history(path, Printer(io.StringIO())))
    assert path.is_file()  # created on demand, folder included
    d.send("(+ 1 2)" + ENTER)
    d.wait_for_output("3\n")
    wait_until(lambda: "(+ 1 2)" in path.read_text(), "the history file to hold the input")


def test_dead_repl_is_reported_and_the_prompt_keeps_running(drive, tmp_path):
    """A REPL of its own, stopped mid-session: evaluation fails with a message, the prompt and the
    suggestions go on."""
    server = start_local_nrepl(tmp_path, timeout=120, jvm_opts=TEST_JVM_OPTS)
    client = NreplClient.connect(server.host, server.port)
    try:
        d = drive(evaluator=Evaluator(client), engine=FakeEngine({"(inc": " 1"}))
        d.send("(+ 1 2)" + ENTER)
        d.wait_for_output("3\n")
        server.stop()
        d.send("(+ 3 4)" + ENTER)
        printed = d.wait_for_output("prompt keeps running")
        assert f"nREPL at {server.host}:{server.port}" in printed and "\n7\n" not in printed
        d.send("(inc")
        d.wait_for_suggestion(" 1)")
        d.send(CTRL_C + "(+ 5 6)" + ENTER)  # still failing, still a clear message
        wait_until(lambda: d.output.getvalue().count("prompt keeps running") == 2, "the second failure")
    finally:
        client.close()
        server.stop()


# Ghost text, with a fake engine behind the real CompletionService


def test_tab_accepts_the_ghost_suggestion(drive, evaluator):
    engine = FakeEngine({"(map": " inc [1 2 3]"})
    d = drive(evaluator=evaluator, engine=engine)
    d.send("(map")
    d.wait_for_suggestion(" inc [1 2 3])")
    d.send(TAB)
    d.wait_for_text("(map inc [1 2 3])")
    d.send(ENTER)
    d.wait_for_output("(2 3 4)\n")
    assert all(r.prefix.strip() for r in engine.requests), "asked the engine about empty input"
    assert {r.namespace for r in engine.requests} == {"user"}
    assert {r.suffix for r in engine.requests} == {")"}  # the closer an auto-pairing editor would add


def test_escape_dismisses_the_suggestion(drive):
    engine = FakeEngine({"(map": " inc [1 2 3]"})
    d = drive(engine=engine)
    d.send("(map")
    d.wait_for_suggestion(" inc [1 2 3])")
    d.send(ESC)
    wait_until(lambda: d.buffer.suggestion is None, "the suggestion to be dismissed")
    d.send(TAB)  # no suggestion now: Tab indents instead
    d.wait_for_text("(map  ")


def test_right_accepts_one_word_and_keeps_the_rest(drive):
    engine = FakeEngine({"(map": " inc [1 2 3]"})
    d = drive(engine=engine)
    d.send("(map")
    d.wait_for_suggestion(" inc [1 2 3])")
    asked = len(engine.requests)
    d.send(RIGHT)
    d.wait_for_text("(map inc")
    d.wait_for_suggestion(" [1 2 3])")  # the rest of the same suggestion, without asking again
    d.send(" [1")  # typing what the ghost text says keeps it too
    d.wait_for_suggestion(" 2 3])")
    assert len(engine.requests) == asked


def test_right_moves_the_cursor_when_not_at_the_end(drive):
    engine = FakeEngine({"(map": " inc [1 2 3]"})
    d = drive(engine=engine)
    d.send("(map")
    d.wait_for_suggestion(" inc [1 2 3])")
    d.send(LEFT)
    wait_until(lambda: d.buffer.cursor_position == 3, "the cursor to move left")
    d.send(RIGHT)
    wait_until(lambda: d.buffer.cursor_position == 4, "the cursor to move right")
    assert d.buffer.text == "(map"


def test_a_keystroke_cancels_the_request_in_flight(drive):
    class SlowEngine(FakeEngine):
        def __init__(self, table):
            super().__init__(table)
            self.cancelled_prefixes = []

        def complete(self, request, n=None, cancelled=None):
            if request.prefix == "(ma":
                self.requests.append(request)
                wait_until(cancelled, "the keystroke to cancel the request", interval=0.01)  # a long generation
                self.cancelled_prefixes.append(request.prefix)
                raise Cancelled("cancelled during generation")
            return super().complete(request, n, cancelled)

    engine = SlowEngine({"(map": " inc [1 2 3]", "(ma": " never shown"})
    d = drive(engine=engine)
    d.send("(ma")
    wait_until(lambda: any(r.prefix == "(ma" for r in engine.requests), "the first request")
    d.send("p")
    d.wait_for_suggestion(" inc [1 2 3])")
    assert engine.cancelled_prefixes == ["(ma"]


def test_an_interrupt_sent_before_the_eval_started_is_sent_again(evaluator):
    """On a busy machine Ctrl-C can reach the REPL before the eval it is meant for has started:
    nREPL answers that the session is idle, and the interrupt is asked again until it lands."""
    answers = iter([{"done", "session-idle"}, {"done", "session-idle"}, {"done", "interrupted"}])
    sent = []
    real_interrupt = evaluator.client.interrupt

    def interrupt(session, interrupt_id=None, timeout=None):
        sent.append(interrupt_id)
        status = next(answers, None)
        if status is None or "interrupted" in status:
            return real_interrupt(session, interrupt_id=interrupt_id, timeout=timeout)
        return status

    evaluator.client.interrupt = interrupt
    try:
        worker_results = []
        worker = threading.Thread(target=lambda: worker_results.append(evaluator.eval("(Thread/sleep 60000)")))
        worker.start()
        wait_until(lambda: evaluator._running is not None, "the eval to be sent")
        time.sleep(0.3)
        assert evaluator.interrupt()
        worker.join(WAIT_S)
        assert not worker.is_alive() and worker_results[0].interrupted
        assert len(sent) == 3
    finally:
        del evaluator.client.interrupt
