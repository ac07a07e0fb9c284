"""The `<CURSOR>` watcher: filling, never losing an edit, its own writes, debouncing, editors that
save by rename, huge/binary files; a stress test with concurrent writers; one run for real."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from cljassist.cli import build_parser
from cljassist.clojure_text.reader import is_balanced
from cljassist.config import Settings
from cljassist.engine import Engine
from cljassist.errors import InputError
from cljassist import fileio
from cljassist.fileio import WriteResult, write_if_unchanged
from cljassist.frontends.watch import (
    COMMENT_PREFIX,
    MAX_FILE_BYTES,
    Debouncer,
    MarkerFiller,
    Status,
    Watcher,
    is_watched_source,
    main_watch,
)
from cljassist.types import CompletionResult, Suggestion
from tests.fakes import ScriptedModel
from tests.waiting import wait_until

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
MARKER = "<CURSOR>"
WAIT_S = 30  # only to avoid hangs; nothing asserts on time


def ok(text: str, **checks) -> Suggestion:
    return Suggestion(text, 0.9, {"balanced": True, "reads": True, "compiles": True, **checks})


def failing(text: str) -> Suggestion:
    return Suggestion(text, 0.5, {"balanced": True, "reads": True, "compiles": False}, error="Unable to resolve symbol")


class FakeEngine:
    """Answers from `answer(request)`; `before(request, call_number)` runs first (to edit the file
    mid-completion); `delay` widens races."""

    def __init__(self, answer=lambda request: [ok("(inc x)")], before=None, delay: float = 0.0):
        self.answer = answer
        self.before = before
        self.delay = delay
        self.requests = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        return len(self.requests)

    def complete(self, request, n=None, cancelled=None):
        with self._lock:
            self.requests.append(request)
            call = len(self.requests)
        if self.before is not None:
            self.before(request, call)
        time.sleep(self.delay)
        suggestions = self.answer(request)
        return CompletionResult(suggestions, ms=1.0, repl="off", withheld=sum(not s.checks.get("compiles", True)
                                                                              for s in suggestions))


def filler_for(engine, tmp_path, dry_run=False):
    out, err = io.StringIO(), io.StringIO()
    return MarkerFiller(engine, dry_run=dry_run, out=out, err=err, root=tmp_path), out, err


def save_by_rename(path: Path, text: str) -> None:
    """An atomic-save editor: a hidden temp file next to it, then a rename onto it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


SOURCE = "(ns app.core)\n\n(defn f [x]\n  (+ 1 <CURSOR>))\n"


# ------------------------------------------------------------------------------------------------
# MarkerFiller.process


def test_fills_marker_with_the_best_passing_suggestion_and_comments_the_alternatives(tmp_path):
    path = tmp_path / "core.clj"
    path.write_text(SOURCE)
    os.chmod(path, 0o640)
    # The real engine (no REPL) over a scripted model: only `balanced` runs.
    engine = Engine(ScriptedModel(["x))", "(inc x)))"]), Settings(candidates=2))
    filler, out, _ = filler_for(engine, tmp_path)

    outcome = filler.process(path)

    assert outcome.status is Status.FILLED
    assert path.read_text() == ("(ns app.core)\n\n(defn f [x]\n  (+ 1 x))\n"
                                "  ;; cljassist: 1) chosen 0.74 [balanced] 2) (inc x) 0.74 [balanced]\n")
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert "filled core.clj:4: x" in out.getvalue()
    assert [p.name for p in tmp_path.iterdir()] == ["core.clj"]  # no temp file left behind


def test_comment_shows_each_alternatives_checks_and_says_when_there_is_none(tmp_path):
    path = tmp_path / "core.clj"
    path.write_text(SOURCE)
    answers = [[ok("x"), failing("y"), Suggestion("(+ 2 3)", 0.4, {"balanced": True, "evaluated": True}, value="5")],
               [ok("x")]]
    engine = FakeEngine(lambda request: answers[engine.calls - 1])
    filler, _, _ = filler_for(engine, tmp_path)

    filler.process(path)
    lines = path.read_text().splitlines()
    assert lines[4] == ("  ;; cljassist: 1) chosen 0.90 [balanced reads compiles] 2) y 0.50 [balanced reads !compiles] "
                        "3) (+ 2 3) 0.40 [balanced evaluated] => 5")

    path.write_text(SOURCE)
    filler.process(path)
    assert path.read_text().splitlines()[4] == "  ;; cljassist: 1) chosen 0.90 [balanced reads compiles] (no alternatives)"


def test_comment_marks_a_check_not_run_on_purpose_and_says_why(tmp_path):
    path = tmp_path / "core.clj"
    path.write_text(SOURCE)
    macro = Suggestion("(m x)", 0.9, {"balanced": True, "reads": True, "compiles": "not checked (macro my.app/m)"})
    engine = FakeEngine(lambda request: [macro])
    filler, _, _ = filler_for(engine, tmp_path)
    filler.process(path)
    assert path.read_text().splitlines()[4] == ("  ;; cljassist: 1) chosen 0.90 [balanced reads ?compiles] (macro my.app/m) "
                                                "(no alternatives)")


def test_dry_run_prints_path_line_suggestion_and_alternatives_and_writes_nothing(tmp_path):
    path = tmp_path / "core.clj"
    path.write_text(SOURCE)
    before = path.stat()
    engine = FakeEngine(lambda request: [ok("x"), ok("(inc x)")])
    filler, out, _ = filler_for(engine, tmp_path, dry_run=True)

    outcome = filler.process(path)

    assert outcome.status is Status.DRY_RUN
    assert path.read_text() == SOURCE and path.stat().st_mtime_ns == before.st_mtime_ns
    assert out.getvalue() == ("cljassist: core.clj:4: x  "
                              ";; cljassist: 1) chosen 0.90 [balanced reads compiles] 2) (inc x) 0.90 [balanced reads compiles]\n")


def test_no_passing_suggestion_leaves_the_file_untouched_and_says_why(tmp_path):
    path = tmp_path / "core.clj"
    path.write_text(SOURCE)
    before = path.stat()
    engine = FakeEngine(lambda request: [failing("(undefined-fn x)")])
    filler, out, err = filler_for(engine, tmp_path)

    outcome = filler.process(path)

    assert outcome.status is Status.NOT_FILLED
    assert path.read_text() == SOURCE and path.stat().st_mtime_ns == before.st_mtime_ns
    assert err.getvalue() == ("cljassist: core.clj:4: marker kept: no suggestion passed the checks "
                              "(1 withheld; REPL off)\n")
    assert out.getvalue() == ""
    # The marker stays, so the next save tries again.
    assert filler.process(path).status is Status.NOT_FILLED and engine.calls == 2


def test_a_suggestion_holding_the_marker_is_never_used(tmp_path):
    path = tmp_path / "core.clj"
    path.write_text(SOURCE)
    filler, _, _ = filler_for(FakeEngine(lambda request: [ok("(f <CURSOR>)")]), tmp_path)
    assert filler.process(path).status is Status.NOT_FILLED
    assert path.read_text() == SOURCE


def test_huge_binary_and_non_utf8_files_are_skipped_with_a_reason_once_per_version(tmp_path):
    engine = FakeEngine()
    filler, _, err = filler_for(engine, tmp_path)
    huge = tmp_path / "huge.clj"
    huge.write_text(MARKER + ";" * MAX_FILE_BYTES)
    binary = tmp_path / "binary.clj"
    binary.write_bytes(b"(ns x)\0" + MARKER.encode())
    latin1 = tmp_path / "latin1.clj"
    latin1.write_bytes("(ns x) ; caf\u00e9 ".encode("latin-1") + MARKER.encode())

    for _ in range(3):  # repeated events for the same version say it once
        for path in (huge, binary, latin1):
            assert filler.process(path).status is Status.SKIPPED
    assert err.getvalue().splitlines() == [
        f"cljassist: huge.clj: skipped: larger than 1 MiB ({MAX_FILE_BYTES + len(MARKER)} bytes)",
        "cljassist: binary.clj: skipped: binary (holds NUL bytes)",
        "cljassist: latin1.clj: skipped: not UTF-8 text (invalid continuation byte at byte 12)",
    ]
    binary.write_bytes(b"(ns y)\0" + MARKER.encode())  # a new version is reported again
    filler.process(binary)
    assert err.getvalue().count("binary.clj: skipped") == 2
    assert engine.calls == 0


def test_a_file_changed_during_completion_is_not_written_and_the_next_save_fills_it(tmp_path):
    path = tmp_path / "core.clj"
    path.write_text(SOURCE)

    def user_types_meanwhile(request, call):
        if call == 1:
            with open(path, "a") as f:
                f.write(";; typed while the model ran\n")

    engine = FakeEngine(before=user_types_meanwhile)
    filler, _, err = filler_for(engine, tmp_path)

    assert filler.process(path).status is Status.CHANGED
    assert path.read_text() == SOURCE + ";; typed while the model ran\n"
    assert "changed while completing; not written, the next save tries again" in err.getvalue()

    outcome = filler.process(path)  # the save that changed it
    assert outcome.status is Status.FILLED
    text = path.read_text()
    assert MARKER not in text and "(+ 1 (inc x)))" in text and text.endswith(";; typed while the model ran\n")
    assert [p.name for p in tmp_path.iterdir()] == ["core.clj"]


def test_a_file_deleted_before_or_during_completion_is_never_brought_back(tmp_path):
    path = tmp_path / "core.clj"
    filler, out, err = filler_for(FakeEngine(before=lambda request, call: path.unlink()), tmp_path)
    assert filler.process(path).status is Status.MISSING
    path.write_text(SOURCE)
    assert filler.process(path).status is Status.CHANGED
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_its_own_write_is_ignored_once_and_an_unchanged_resave_retries(tmp_path):
    path = tmp_path / "core.clj"
    path.write_text("(def a <CURSOR>)\n(def b <CURSOR>)\n")
    # The first marker fills, the second has nothing passing: the written file still holds a marker.
    engine = FakeEngine(lambda request: [ok("1")] if request.prefix.endswith("(def a ") else [failing("zz")])
    filler, _, _ = filler_for(engine, tmp_path)

    assert filler.process(path).status is Status.FILLED
    written = path.read_text()
    assert written == "(def a 1)\n;; cljassist: 1) chosen 0.90 [balanced reads compiles] (no alternatives)\n(def b <CURSOR>)\n"
    assert engine.calls == 2
    assert filler.process(path).status is Status.OWN_WRITE  # the event of our own write
    assert engine.calls == 2
    assert filler.process(path).status is Status.NOT_FILLED  # the user saves it again: retried
    assert engine.calls == 3 and path.read_text() == written


def test_several_markers_fill_top_to_bottom_each_seeing_the_ones_above_filled(tmp_path):
    path = tmp_path / "core.cljc"
    path.write_text("(def a <CURSOR>)\n(def b [<CURSOR> <CURSOR>])\n")
    values = iter(["1", "2", "3"])
    engine = FakeEngine(lambda request: [ok(next(values))])
    filler, out, _ = filler_for(engine, tmp_path)

    outcome = filler.process(path)

    assert [(f.line, f.text) for f in outcome.fills] == [(1, "1"), (2, "2"), (2, "3")]
    assert [(r.prefix, r.suffix) for r in engine.requests] == [
        ("(def a ", ")\n(def b [ ])\n"),
        ("(def a 1)\n(def b [", " ])\n"),
        ("(def a 1)\n(def b [2 ", "])\n"),
    ]
    comment = ";; cljassist: 1) chosen 0.90 [balanced reads compiles] (no alternatives)"
    assert path.read_text() == f"(def a 1)\n{comment}\n(def b [2 3])\n{comment}\n{comment}\n"
    assert all(r.file == str(path) for r in engine.requests)


def test_comment_goes_after_a_multi_line_fill_keeps_crlf_and_ends_an_unterminated_file(tmp_path):
    path = tmp_path / "core.clj"
    path.write_bytes(b"(let [x 1]\r\n  <CURSOR>)")
    filler, _, _ = filler_for(FakeEngine(lambda request: [ok("(do\r\n    x)")]), tmp_path)
    filler.process(path)
    assert path.read_bytes() == (b"(let [x 1]\r\n  (do\r\n    x))\n"
                                 b"  ;; cljassist: 1) chosen 0.90 [balanced reads compiles] (no alternatives)")


# ------------------------------------------------------------------------------------------------
# write_if_unchanged: the window between the final check and the rename


def test_write_keeps_permissions_and_refuses_changed_bytes(tmp_path):
    path = tmp_path / "a.clj"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    assert write_if_unchanged(path, b"not what is there", b"new") is WriteResult.CHANGED
    assert path.read_bytes() == b"old"
    assert write_if_unchanged(path, b"old", b"new") is WriteResult.WRITTEN
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["a.clj"]


def test_write_follows_a_symlink_instead_of_replacing_it(tmp_path):
    real = tmp_path / "real.clj"
    real.write_bytes(b"old")
    link = tmp_path / "link.clj"
    link.symlink_to(real)
    assert write_if_unchanged(link, b"old", b"new") is WriteResult.WRITTEN
    assert link.is_symlink() and real.read_bytes() == b"new"


@pytest.mark.parametrize("editor", ["rename", "in-place"])
def test_a_save_landing_between_the_final_check_and_the_swap_is_put_back(tmp_path, monkeypatch, editor):
    if fileio._RENAMEAT2 is None:
        pytest.skip("renameat2 is not available here")
    path = tmp_path / "a.clj"
    path.write_bytes(b"old")
    real_exchange = fileio._exchange

    def exchange_after_an_editor_save(a, b):
        if b == str(path):  # the swap of our temp file onto the target, not the swap back
            monkeypatch.setattr(fileio, "_exchange", real_exchange)
            if editor == "rename":
                save_by_rename(path, "the user's edit")
            else:
                path.write_text("the user's edit")
        return real_exchange(a, b)

    monkeypatch.setattr(fileio, "_exchange", exchange_after_an_editor_save)
    if fileio._exchange_unsupported:
        pytest.skip("this filesystem refuses RENAME_EXCHANGE")
    assert write_if_unchanged(path, b"old", b"ours") is WriteResult.CHANGED
    assert path.read_text() == "the user's edit"
    assert [p.name for p in tmp_path.iterdir()] == ["a.clj"]


def test_without_rename_exchange_it_falls_back_to_os_replace(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    path = tmp_path / "a.clj"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    assert write_if_unchanged(path, b"old", b"new") is WriteResult.WRITTEN
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.clj"]


# ------------------------------------------------------------------------------------------------
# What is watched, and the debouncer (no watchdog, no timing)


def test_which_paths_are_watched(tmp_path):
    watched = ["src/app/core.clj", "src/app/core.cljc", "web/ui.cljs", "core.clj"]
    ignored = ["src/app/core.cl", "README.md", ".git/x.clj", "target/classes/a.clj", "node_modules/x/a.cljs",
               "src/.hidden/a.clj", "src/core.clj~", "src/.#core.clj", "src/#core.clj#", "src/.core.clj.swp",
               "src/4913", "src/.core.clj.tmp", "src/.core.clj.abc.cljassist-tmp"]
    assert [p for p in watched if not is_watched_source(tmp_path / p, tmp_path)] == []
    assert [p for p in ignored if is_watched_source(tmp_path / p, tmp_path)] == []
    assert not is_watched_source(Path("/elsewhere/a.clj"), tmp_path)


def test_debouncer_acts_once_a_path_has_been_quiet():
    now = [0.0]
    debouncer = Debouncer(0.3, clock=lambda: now[0])
    for _ in range(10):  # ten rapid saves
        debouncer.touch("a.clj")
        now[0] += 0.05
        assert debouncer.pop_due() == []
    debouncer.touch("b.clj")
    assert debouncer.next_due_in() == pytest.approx(0.25)
    now[0] += 0.25
    assert debouncer.pop_due() == ["a.clj"]
    assert debouncer.pop_due() == [] and len(debouncer) == 1
    now[0] += 0.05
    assert debouncer.pop_due() == ["b.clj"] and debouncer.next_due_in() is None


# ------------------------------------------------------------------------------------------------
# The Watcher with watchdog's real observer


@pytest.fixture
def running(tmp_path):
    """start(engine, debounce_s) -> (watcher, out, err) on tmp_path/src; stopped at the end."""
    started = []
    (tmp_path / "src").mkdir()

    def start(engine, debounce_s=0.3):
        out, err = io.StringIO(), io.StringIO()
        watcher = Watcher(tmp_path, MarkerFiller(engine, out=out, err=err, root=tmp_path), debounce_s, err=err)
        watcher.start()
        started.append(watcher)
        return watcher, out, err

    yield start
    for watcher in started:
        watcher.stop()


def statuses(watcher) -> list[Status]:
    return [o.status for o in watcher.outcomes()]


def test_watcher_fills_a_saved_file_and_ignores_its_own_write(tmp_path, running):
    path = tmp_path / "src" / "core.clj"
    engine = FakeEngine(lambda request: [ok("1")] if request.prefix.endswith("(def a ") else [failing("zz")])
    watcher, _, _ = running(engine)

    path.write_text("(def a <CURSOR>)\n(def b <CURSOR>)\n")  # the written result still holds a marker

    wait_until(lambda: Status.FILLED in statuses(watcher), "a fill")
    assert watcher.wait_idle(quiet_s=1.0, timeout=WAIT_S)
    assert engine.calls == 2  # one fill of two markers, and not again for our own write
    assert statuses(watcher) == [Status.FILLED, Status.OWN_WRITE]
    assert path.read_text().startswith("(def a 1)\n;; cljassist:")


def test_watcher_debounces_ten_rapid_saves_into_one_fill(tmp_path, running):
    path = tmp_path / "src" / "core.clj"
    engine = FakeEngine()
    watcher, _, _ = running(engine, debounce_s=1.0)  # generous: ten writes take far less

    for i in range(10):
        path.write_text(f";; save {i}\n(def x <CURSOR>)\n")

    wait_until(lambda: Status.FILLED in statuses(watcher), "a fill")
    assert watcher.wait_idle(quiet_s=1.5, timeout=WAIT_S)
    assert engine.calls == 1
    assert path.read_text().startswith(";; save 9\n(def x (inc x))\n;; cljassist:")


@pytest.mark.parametrize("editor", ["atomic-save", "vim-backup"])
def test_watcher_copes_with_editors_that_save_by_rename(tmp_path, running, editor):
    path = tmp_path / "src" / "core.clj"
    path.write_text("(def x 1)\n")
    engine = FakeEngine()
    watcher, _, _ = running(engine)
    text = "(def x 1)\n(def y <CURSOR>)\n"

    if editor == "atomic-save":  # write .core.clj.tmp, rename it onto core.clj
        save_by_rename(path, text)
    else:  # vim: rename core.clj to core.clj~, write a new core.clj, remove the backup
        backup = path.with_name("core.clj~")
        os.rename(path, backup)
        path.write_text(text)
        backup.unlink()

    wait_until(lambda: Status.FILLED in statuses(watcher), "a fill")
    assert watcher.wait_idle(quiet_s=1.0, timeout=WAIT_S)
    assert path.read_text().startswith("(def x 1)\n(def y (inc x))\n;; cljassist:")
    assert engine.calls == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["core.clj"]


def test_watcher_survives_deleted_files_and_ignores_temp_names(tmp_path, running):
    engine = FakeEngine()
    watcher, _, err = running(engine, debounce_s=0.1)
    gone = tmp_path / "src" / "gone.clj"
    gone.write_text("(def x <CURSOR>)\n")
    gone.unlink()
    (tmp_path / "src" / "core.clj~").write_text("(def x <CURSOR>)\n")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "out.clj").write_text("(def x <CURSOR>)\n")
    after = tmp_path / "src" / "after.clj"
    after.write_text("(def y <CURSOR>)\n")

    wait_until(lambda: Status.FILLED in statuses(watcher), "a fill")
    assert watcher.wait_idle(quiet_s=0.5, timeout=WAIT_S)
    assert [r.file for r in engine.requests] == [str(after)]
    assert "internal error" not in err.getvalue()


# The two writers run in a process of their own, as editors do: in-process threads would share
# the GIL with the watcher and stretch its microsecond windows to the interpreter's switch interval.
WRITERS = """
import os, random, sys, threading, time
path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
lock = threading.Lock()  # the writers do not race each other: only the watcher races them
saves_done = threading.Event()
others = []

def read():
    with open(path) as f:
        return f.read()

def editor_saves():  # saves by rename, like an atomic-save editor
    for i in range(50):
        with lock:
            text = read() + f";; save {i}\\n" + (f"(def m{i} <CURSOR>)\\n" if i % 3 == 0 else "")
            tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        time.sleep(rng.uniform(0, 0.06))
    saves_done.set()

def other_writer():  # writes in place, like an editor with backupcopy=yes
    j = 0
    while not saves_done.is_set():
        with lock:
            text = read()
            with open(path, "w") as f:
                f.write(text + f";; other {j}\\n")
        others.append(f";; other {j}")
        j += 1
        time.sleep(rng.uniform(0, 0.08))

threads = [threading.Thread(target=editor_saves), threading.Thread(target=other_writer)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("\\n".join(others))
"""


def test_stress_concurrent_saves_and_edits_lose_nothing(tmp_path, running):
    """An editor saves by rename 50 times (every third save adds a marker) while another writer
    edits the file in place, both read-modify-write of the whole file; the watcher fills markers
    with a slow engine. Every line either writer added must survive, exactly once, and every
    marker ends up filled, with its comment right after it."""
    path = tmp_path / "src" / "core.clj"
    path.write_text("(ns app.core)\n")
    engine = FakeEngine(lambda request: [ok(":filled")], delay=0.005)
    watcher, _, err = running(engine, debounce_s=0.02)  # act between saves, to race them

    writers = subprocess.run([sys.executable, "-c", WRITERS, str(path), "4"], capture_output=True, text=True,
                             timeout=120)
    assert writers.returncode == 0, writers.stderr
    other_lines = [line for line in writers.stdout.splitlines() if line]
    assert watcher.wait_idle(quiet_s=1.0, timeout=60)

    lines = path.read_text().splitlines()
    markers = [f"(def m{i} " for i in range(0, 50, 3)]
    canonical = [re.sub(r"^(\(def m\d+ )(:filled|<CURSOR>)\)$", r"\1?)", line) for line in lines
                 if not line.startswith(COMMENT_PREFIX)]
    expected = (["(ns app.core)"] + [f";; save {i}" for i in range(50)] + other_lines
                + [f"{m}?)" for m in markers])
    assert Counter(canonical) == Counter(expected)  # every writer's line, exactly once
    assert MARKER not in path.read_text()  # and every marker filled in the end
    for marker in markers:
        at = lines.index(f"{marker}:filled)")
        assert lines[at + 1].startswith(COMMENT_PREFIX)
    assert sum(line.startswith(COMMENT_PREFIX) for line in lines) == len(markers)
    assert sorted(p.name for p in path.parent.iterdir()) == ["core.clj"]
    assert "internal error" not in err.getvalue() and "kept in" not in err.getvalue()


# ------------------------------------------------------------------------------------------------
# The command


def watch_args(*argv: str):
    return build_parser().parse_args(["watch", *argv])


def test_watch_needs_an_existing_directory(tmp_path):
    with pytest.raises(InputError, match="no such directory"):
        main_watch(watch_args(str(tmp_path / "nope"), "--no-repl"))
    (tmp_path / "f.clj").write_text("")
    with pytest.raises(InputError, match="not a directory"):
        main_watch(watch_args(str(tmp_path / "f.clj"), "--no-repl"))


def test_main_watch_fills_until_sigterm_and_stops_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("cljassist.frontends.common.load_model", lambda settings: ScriptedModel(["x))"]))
    started = threading.Event()
    real_start = Watcher.start

    def start_and_tell(self):
        real_start(self)
        started.set()

    monkeypatch.setattr(Watcher, "start", start_and_tell)
    path = tmp_path / "core.clj"
    handler_before = signal.getsignal(signal.SIGTERM)

    def user():
        if not started.wait(WAIT_S):
            return  # main_watch failed before watching: nothing to stop
        path.write_text(SOURCE)
        try:
            wait_until(lambda: MARKER not in path.read_text(), "the marker to be filled", timeout=WAIT_S)
        finally:  # stop the watch even when the wait failed: the assertions below then say what is missing
            os.kill(os.getpid(), signal.SIGTERM)  # main_watch's handler turns it into a clean stop

    helper = threading.Thread(target=user)
    helper.start()
    code = main_watch(watch_args(str(tmp_path), "--no-repl"))
    helper.join(WAIT_S)

    assert code == 0
    assert "(+ 1 x))\n  ;; cljassist: 1) chosen 0.74 [balanced] (no alternatives)\n" in path.read_text()
    captured = capsys.readouterr()
    assert f"watching {tmp_path.resolve()} for <CURSOR> in .clj, .cljc, .cljs files (REPL off (--no-repl))" \
        in captured.out
    assert "filled core.clj:4: x" in captured.out and "stopped watching" in captured.err
    assert signal.getsignal(signal.SIGTERM) is handler_before  # handlers restored


# ------------------------------------------------------------------------------------------------
# For real: the bundled model and the Debian nREPL, through watchdog


@pytest.mark.integration
def test_real_model_and_repl_fill_a_saved_demo_file_or_say_why(nrepl_server, nrepl_client, default_model, tmp_path):
    from cljassist.frontends.common import open_engine

    project = tmp_path / "project"
    (project / "src" / "demo").mkdir(parents=True)
    (project / ".nrepl-port").write_text(str(nrepl_server.port))
    # demo/todo.clj under a namespace of its own, loaded (its ns form only) so the checks compile.
    text = (DEMO / "src" / "demo" / "todo.clj").read_text().replace("(ns demo.todo", "(ns demo.watch-todo")
    assert text.count(MARKER) == 1
    nrepl_client.eval(text[: text.index("(defn")], timeout=60)
    opened = open_engine(Settings(candidates=2, max_new_tokens=16), near=project, model=default_model)
    assert opened.provider is not None  # found through the project's .nrepl-port
    out, err = io.StringIO(), io.StringIO()
    watcher = Watcher(project, MarkerFiller(opened.engine, out=out, err=err, root=project), 0.3, err=err)
    watcher.start()
    path = project / "src" / "demo" / "todo.clj"
    try:
        path.write_text(text)
        wait_until(lambda: any(o.status in (Status.FILLED, Status.NOT_FILLED) for o in watcher.outcomes()),
                   "a fill, or the reason for none", timeout=180)
        assert watcher.wait_idle(quiet_s=1.0, timeout=60)
    finally:
        watcher.stop()
        opened.provider.close()
        opened.provider.client.close()  # not opened.close(): the model is the session's

    outcome = next(o for o in watcher.outcomes() if o.status in (Status.FILLED, Status.NOT_FILLED))
    (fill,) = outcome.fills
    assert fill.line == 7
    result = path.read_text()
    if outcome.status is Status.FILLED:
        assert MARKER not in result and is_balanced(result)
        prefix, suffix = text.split(MARKER)
        assert result.startswith(prefix + fill.text)
        marker_line_end = result.index("\n", len(prefix) + len(fill.text))
        assert re.match(r" +;; cljassist: 1\) chosen [01]\.\d\d \[balanced reads compiles", result[marker_line_end + 1:])
        assert fill.checks["compiles"] is True
    else:
        assert result == text
        assert f"src/demo/todo.clj:7: marker kept: {fill.reason}" in err.getvalue()
        assert fill.reason.startswith("no suggestion passed the checks")
    assert "internal error" not in err.getvalue()
