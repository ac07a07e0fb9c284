"""`--eval safe` against hostile candidates, on the real Debian nREPL (no model: the verifier is
called directly). Each probe asserts the verdict, that no file was written or truncated, that no
var was created or changed, and that the JVM is idle afterwards; the pure suggestions it exists
for still show their value."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cljassist.budgets import TimeBudget
from cljassist.verify.repl_compile import ReplVerifier, choose_target

NS_NAME = "safe.eval.probe"
NS = f"(ns {NS_NAME} (:require [clojure.string :as str]) (:import [java.io FileOutputStream]))\n"
WAIT = 30.0
EVAL_THREAD = "cljassist-safe-eval"  # the name safe_eval.clj gives the thread it computes on

# Every var of every namespace: its root value's identity, whether it is dynamic, its metadata keys.
VARS_FINGERPRINT = (
    "(str (count (all-ns)) \" \" (hash (sort (for [n (all-ns) [s v] (ns-interns n)]"
    " (str v \" \" (System/identityHashCode (.getRawRoot ^clojure.lang.Var v)) \" \""
    " (.isDynamic ^clojure.lang.Var v) \" \" (sort (keys (meta v))))))))"
)
LIVE_EVAL_THREADS = (
    f"(count (filter (fn [^Thread t] (and (.isAlive t) (= \"{EVAL_THREAD}\" (.getName t))))"
    " (keys (Thread/getAllStackTraces))))"
)


@pytest.fixture
def jvm(nrepl_server, nrepl_client):
    r = nrepl_client.eval(NS, timeout=WAIT)
    assert r.ok, r.err
    return Jvm(nrepl_server.process.pid, nrepl_client)


@pytest.fixture
def verifier(jvm):
    return ReplVerifier(jvm.client, timeout_s=2.0, eval_mode="safe")


class Jvm:
    """The nREPL's JVM, watched from fresh sessions of its own (not the verifier's)."""

    def __init__(self, pid: int, client):
        self.pid = pid
        self.client = client

    def value(self, code: str) -> str:
        r = self.client.eval(code, timeout=WAIT)
        assert r.ok and r.values, r.err
        return r.values[-1]

    def vars_fingerprint(self) -> str:
        return self.value(VARS_FINGERPRINT)

    def cpu_seconds(self) -> float:
        """User + system CPU time the whole JVM has used (/proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_over(self, seconds: float) -> float:
        before = self.cpu_seconds()
        time.sleep(seconds)
        return self.cpu_seconds() - before

    def assert_idle(self, window_s: float = 0.5) -> None:
        assert self.value(LIVE_EVAL_THREADS) == "0"
        # idle is ~0; a thread still spinning takes a core, or half of one on a busy machine
        used = self.cpu_over(window_s)
        assert used < window_s / 5, f"JVM used {used:.2f}s of CPU in {window_s}s"


def precious(tmp_path: Path, name: str = "precious.txt") -> Path:
    path = tmp_path / name
    path.write_text("precious")
    return path


def eval_call(verifier: ReplVerifier, code: str) -> dict:
    """The eval step itself, as if the check had let the form through: it must decide on its own."""
    target = choose_target(NS, code, "")
    return verifier._eval(verifier._call_code("eval", target, True, 1.0), TimeBudget(verifier.timeout_s))


def run_probe(jvm: Jvm, verifier: ReplVerifier, tmp_path: Path, template: str):
    """Verify the candidate `template` (<F> stands for a precious file's path) both ways; returns the
    verdict after asserting that nothing was written, no var changed and the JVM is idle."""
    target = precious(tmp_path)
    other = precious(tmp_path, "other.txt")
    code = template.replace("<F>", str(target))
    before = jvm.vars_fingerprint()
    verdict = verifier.verify(NS, code, "")
    direct = eval_call(verifier, code) if verdict.reads else None
    assert verdict.evaluated is not True and verdict.value is None
    if direct is not None:
        assert direct.get("evaluated") is not True, direct
    assert target.read_text() == "precious" and other.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt", "precious.txt"]
    assert jvm.vars_fingerprint() == before
    jvm.assert_idle()
    return verdict, direct


def refused(verdict, direct, reason: str) -> None:
    """Refused before anything ran, saying `reason`: by the eval call on its own, and by the check
    as well wherever the form compiles (the compile check stops some forms first)."""
    assert direct is not None and direct.get("evaluated") is None and reason in direct.get("skipped", ""), direct
    if verdict.compiles is not False:
        assert (verdict.compiles, verdict.evaluated) == (True, None) and reason in (verdict.skipped or ""), verdict


# ------------------------------------------------------------------------------------------------
# metadata is code the compiler evaluates: walked like any other sub-form

METADATA = {
    "vector": ('(vec ^{:x (spit "<F>" "x")} [1 2])', "spit"),
    "map": ('(count ^{:x (spit "<F>" "x")} {:a 1})', "spit"),
    "set": ('(count ^{:x (spit "<F>" "x")} #{1})', "spit"),
    "fn": ('(str ^{:x (spit "<F>" "x")} (fn [] 1))', "spit"),
    "symbol": ('(let [one 1] (inc ^{:x (spit "<F>" "x")} one))', "spit"),
    "binding symbol": ('(let [^{:x (spit "<F>" "x")} one 1] one)', "spit"),
    "parameter vector": ('((fn ^{:x (spit "<F>" "x")} [a] a) 1)', "spit"),
    "the form itself": ('^{:x (spit "<F>" "x")} (inc 1)', "spit"),
    "a type hint": ('(let [s "a"] (str/upper-case ^java.io.FileOutputStream s))', "interop java.io.FileOutputStream"),
    "nested in a quoted-looking map": ('(get ^{:x [(spit "<F>" "x")]} {:a 1} :a)', "spit"),
}


@pytest.mark.security
@pytest.mark.integration
@pytest.mark.parametrize("code, reason", METADATA.values(), ids=METADATA.keys())
def test_metadata_is_walked(jvm, verifier, tmp_path, code, reason):
    refused(*run_probe(jvm, verifier, tmp_path, code), reason)


# ------------------------------------------------------------------------------------------------
# a local named like a special form is a local to a naive walker, the special form to the compiler

SPECIAL_NAMED_LOCALS = {
    "new": ('(let [new 0 FileOutputStream 0] (new FileOutputStream "<F>"))', "special form new"),
    "dot": ('(let [. 0 s "<F>"] (. s toUpperCase))', "special form ."),
    "try": ('(let [try 0 catch 0 Throwable 0 loop* 0 recur 0 e 0]'
            ' (try (loop* [] (recur)) (catch Throwable e 0)))', "special form try"),
    "set!": ('(str (let [set! 0] (set! *warn-on-reflection* true)))', "special form set!"),
    "var": ('(let [var 0] (str (var inc)))', "special form var"),
    "monitor-enter": ('(let [monitor-enter 0 k :lock] (monitor-enter k))', "special form monitor-enter"),
    "fn* name": ('((fn new [] (new FileOutputStream "<F>")))', "special form new"),
    "fn parameter": ('((fn [new FileOutputStream] (new FileOutputStream "<F>")) 0 0)', "special form new"),
    "class name": ('(let [FileOutputStream 0] FileOutputStream)', "class FileOutputStream"),
    "qualified class name": ('(let [java.io.FileOutputStream 0] 1)', "java.io.FileOutputStream"),
    "macro name": ('(let [when 0] (when 1 2))', "macro when"),
}


@pytest.mark.security
@pytest.mark.integration
@pytest.mark.parametrize("code, reason", SPECIAL_NAMED_LOCALS.values(), ids=SPECIAL_NAMED_LOCALS.keys())
def test_locals_named_like_special_forms_refuse_the_form(jvm, verifier, tmp_path, code, reason):
    refused(*run_probe(jvm, verifier, tmp_path, code), reason)


# ------------------------------------------------------------------------------------------------
# interop in every spelling, the special forms that are never allowed, and the ways to run code

NEVER = {
    "constructor": ('(str (FileOutputStream. "<F>"))', "interop FileOutputStream."),
    "qualified constructor": ('(str (java.io.FileOutputStream. "<F>"))', "interop java.io.FileOutputStream."),
    "new": ('(str (new FileOutputStream "<F>"))', "special form new"),
    "method": ('(.toString (FileOutputStream. "<F>"))', "interop .toString"),
    "dot": ('(. "<F>" toUpperCase)', "special form ."),
    "dot-dot": ('(.. "<F>" toUpperCase trim)', "interop .."),
    "static method": ('(System/getProperty "user.home")', "not on allowlist: System/getProperty"),
    "static field": ('(str Math/PI)', "not on allowlist: Math/PI"),
    "class": ('(str java.io.File)', "interop java.io.File"),
    "imported class": ('(str FileOutputStream)', "not on allowlist: FileOutputStream"),
    "threaded constructor": ('(-> "<F>" FileOutputStream.)', "interop FileOutputStream."),
    "threaded method": ('(-> "<F>" .toUpperCase)', "interop .toUpperCase"),
    "memfn": ('((memfn toUpperCase) "<F>")', "not on allowlist: memfn"),
    "try": ('(try (loop [] (recur)) (catch Throwable e 0))', "special form try"),
    "var": ("(str #'inc)", "special form var"),
    "set!": ("(str (set! *warn-on-reflection* true))", "special form set!"),
    "monitor-enter": ("(monitor-enter :k)", "special form monitor-enter"),
    "loop": ("(loop [] (recur))", "not on allowlist: loop"),
    "loop*": ("(loop* [] (recur))", "special form loop*"),
    "throw": ('(throw (ex-info "x" {}))', "special form throw"),
    "letfn": ("(letfn [(f [] 1)] (f))", "not on allowlist: letfn"),
    "eval": ('(str (eval (list (symbol "spit") "<F>" "x")))', "not on allowlist: eval"),
    "read-string": ('(str (read-string "(spit \\"<F>\\" \\"x\\")"))', "not on allowlist: read-string"),
    "load-string": ('(str (load-string "(spit \\"<F>\\" \\"x\\")"))', "not on allowlist: load-string"),
    "resolve": ("((resolve (symbol \"spit\")) \"<F>\" \"x\")", "not on allowlist: resolve"),
    "resolve through apply": ('(apply (resolve (symbol "spit")) ["<F>" "x"])', "not on allowlist: resolve"),
    "intern": ("(str (intern (symbol \"safe.eval.probe\") (symbol \"pwned\") 1))", "not on allowlist: intern"),
    "a function value": ('(apply spit ["<F>" "x"])', "not on allowlist: spit"),
    "a macro as a value": ("(map and [1 2])", "a macro as a value: and"),
    "a syntax-quoted call": ('(str (eval `(spit "<F>" "x")))', "not on allowlist: eval"),
}


@pytest.mark.security
@pytest.mark.integration
@pytest.mark.parametrize("code, reason", NEVER.values(), ids=NEVER.keys())
def test_interop_and_forbidden_forms_are_never_evaluated(jvm, verifier, tmp_path, code, reason):
    refused(*run_probe(jvm, verifier, tmp_path, code), reason)


TOP_LEVEL = {
    "set!": "(set! *warn-on-reflection* true)",
    "eval": '(eval (list (symbol "spit") "<F>" "x"))',
    "intern": '(intern (symbol "safe.eval.probe") (symbol "pwned") 1)',
    "def": '(def pwned (spit "<F>" "x"))',
    "defn": '(defn pwned [] (spit "<F>" "x"))',
}


@pytest.mark.security
@pytest.mark.integration
@pytest.mark.parametrize("code", TOP_LEVEL.values(), ids=TOP_LEVEL.keys())
def test_refused_top_level_heads_are_not_evaluated_either(jvm, verifier, tmp_path, code):
    verdict, direct = run_probe(jvm, verifier, tmp_path, code)
    assert direct.get("evaluated") is None and direct["skipped"].startswith("not evaluated: "), direct


@pytest.mark.security
@pytest.mark.integration
def test_reader_eval_fails_at_read(jvm, verifier, tmp_path):
    verdict, direct = run_probe(jvm, verifier, tmp_path, '(inc #=(spit "<F>" "x"))')
    assert (verdict.reads, verdict.compiles, verdict.evaluated) == (False, None, None)
    assert "EvalReader not allowed" in verdict.error and direct is None


# ------------------------------------------------------------------------------------------------
# the time limit: the value is computed on a thread that is stopped, so the JVM is idle right after

ENDLESS = {
    "count of an endless seq": "(count (range))",
    "last of an endless seq": "(last (map inc (range)))",
    "reduce over an endless seq": "(reduce + (range))",
    "an endless seq in a let and fn": "(let [xs (range)] ((fn [s] (count s)) xs))",
}


@pytest.mark.security
@pytest.mark.integration
@pytest.mark.parametrize("code", ENDLESS.values(), ids=ENDLESS.keys())
def test_an_endless_pure_form_is_stopped_at_the_limit(jvm, verifier, tmp_path, code):
    before = jvm.vars_fingerprint()
    verdict = verifier.verify(NS, code, "")
    assert (verdict.compiles, verdict.evaluated, verdict.error) == (True, False, "timed out")
    # stopped at the limit, not merely abandoned: no thread left, the next second idle
    jvm.assert_idle(window_s=1.0)
    assert jvm.vars_fingerprint() == before
    assert verifier.verify(NS, "(+ 1 2)", "").value == "3"  # our session still answers


@pytest.mark.security
@pytest.mark.integration
def test_the_eval_thread_is_stopped_not_interrupted(jvm, verifier):
    """An endless loop that never looks at its interrupt flag stops too: Thread.stop works on this
    JDK (it throws UnsupportedOperationException from JDK 20 on, where stopping would rely on the
    interrupt and on the refusal of every construct that could catch it)."""
    spins = "(count (filter neg? (range)))"
    verdict = verifier.verify(NS, spins, "")
    assert verdict.error == "timed out" and "did not stop" not in verdict.error
    jvm.assert_idle(window_s=1.0)


@pytest.mark.security
@pytest.mark.integration
def test_an_interrupted_wait_stops_the_eval_thread_too(jvm, verifier):
    """Past the request's REPL time our call is interrupted: the REPL-side wait then stops the
    thread it waits for, whatever limit that thread was given."""
    target = choose_target(NS, "(count (range))", "")
    answer = verifier._eval_or_none(verifier._call_code("eval", target, True, 60.0), TimeBudget(1.5))
    assert answer is None  # not answered within the request's time: interrupted
    jvm.assert_idle(window_s=1.0)
    assert verifier.verify(NS, "(+ 1 2)", "").value == "3"


# ------------------------------------------------------------------------------------------------
# what safe eval is for: pure suggestions still show their value

PURE = {
    '(str/upper-case "ab")': '"AB"',
    "(let [x 2] (* x 3))": "6",
    "(let [[a b] [1 2]] (+ a b))": "3",
    "(->> (range 5) (map inc) (filter even?))": "(2 4)",
    "(some-> {:a 1} :a inc)": "2",
    "(cond-> 1 true inc (pos? 1) (* 10))": "20",
    "(#(+ % 1) 2)": "3",
    "(reduce (fn [acc x] (+ acc x)) 0 [1 2 3])": "6",
    "(update {:a 1} :a inc)": "{:a 2}",
    "(when (pos? 1) :yes)": ":yes",
    "(cond (neg? 1) :neg :else :pos)": ":pos",
    "(and 1 (or nil 2))": "2",
    "(let [inc dec] (inc 1))": "0",
    "(map (juxt first count) [[1 2] [3]])": "([1 2] [3 1])",
    "'(new java.io.File \"x\")": '(new java.io.File "x")',
    "(into #{} (map keyword [\"a\"]))": "#{:a}",
    '(format "%d-%s" 1 "a")': '"1-a"',
}


@pytest.mark.integration
@pytest.mark.parametrize("code, value", PURE.items(), ids=PURE.keys())
def test_pure_suggestions_show_their_value(jvm, verifier, code, value):
    verdict = verifier.verify(NS, code, "")
    assert (verdict.compiles, verdict.evaluated, verdict.value, verdict.error) == (True, True, value, None), verdict
