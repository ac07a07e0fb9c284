"""Hostile candidates against the REPL compile check (real Debian nREPL, no model): checking a
suggestion never changes the user's program and never runs user code.

Each probe is verified where the user would meet it (inside a defn body, and at the top level of a
file), then: no file written, the user's namespace the same (every mapping, with its var's flags,
root and meta by identity, its aliases, the namespace set), their own `(inc 1)` and `(greet 1)`
still work, and no thread of the JVM is left busy."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cljassist.clojure_text.forms import clj_string
from cljassist.verify.repl_compile import ReplVerifier, load_rules

NS = "vsafe.target"
WAIT = 30.0
# JVM-internal threads (JIT compilers, GC, VM housekeeping) may work a while after code ran; a
# thread of ours (nREPL sessions, futures, agents) must not.
_JVM_INTERNAL = ("C1 ", "C2 ", "VM ", "GC ", "G1 ", "Sweeper", "Service Thread", "Monitor", "Common-Cleaner",
                 "Signal Dispatch", "Finalizer", "Reference Handl", "Notification Th")


def busy_threads(pid: int, window_s: float = 1.0, share: float = 0.25) -> list[tuple[str, float]]:
    """The JVM's own threads (not its JIT/GC/VM ones) that used more than `share` of a CPU over
    `window_s`, read from /proc: (thread name, CPU seconds)."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> dict[str, tuple[str, int]]:
        out = {}
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat, comm = (task / "stat").read_text(), (task / "comm").read_text().strip()
            except OSError:  # the thread ended meanwhile
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # from field 3 (state); utime, stime are 14, 15
            out[task.name] = (comm, int(fields[11]) + int(fields[12]))
        return out

    before = cpu()
    time.sleep(window_s)
    after = cpu()
    used = [(comm, (ticks - before.get(tid, (comm, 0))[1]) / tick) for tid, (comm, ticks) in after.items()]
    return [(comm, s) for comm, s in used if s > share * window_s and not comm.startswith(_JVM_INTERNAL)]


@pytest.fixture
def target(nrepl_client, tmp_path):
    """A fresh user namespace: a function, a macro and an :inline var whose expansion writes a file,
    clojure.test loaded; returns the folder those files would land in."""
    mark = clj_string(str(tmp_path))
    r = nrepl_client.eval(
        f"(remove-ns '{NS}) (ns {NS}) (require 'clojure.test)"
        " (defn greet [x] x)"
        f" (defmacro noisy [& _] (spit (str {mark} \"/macro\") \"ran\") nil)"
        f" (alter-meta! (def sneaky-inline (fn [y] y)) assoc :inline (fn [y] (spit (str {mark} \"/inline\") \"ran\") y))"
        " :ready",
        timeout=WAIT,
    )
    assert r.values[-1:] == [":ready"], r.err
    return tmp_path


def user_state(client) -> str:
    """Every mapping of the user's namespace with its var's flags and the identity of its root and
    meta, its aliases, and the namespaces the REPL has."""
    code = (
        f"(let [n (the-ns '{NS})"
        "      id (fn [x] (System/identityHashCode x))"
        "      var-state (fn [^clojure.lang.Var v] [(str v) (.isDynamic v) (.isBound v) (id (.getRawRoot v)) (id (.meta v))"
        "                                            (select-keys (meta v) [:macro :private :declared :dynamic])])]"
        "  (pr-str [(into (sorted-map) (map (fn [[k v]] [(str k) (if (var? v) (var-state v) (str v))])) (ns-map n))"
        "           (into (sorted-map) (map (fn [[k v]] [(str k) (str v)])) (ns-aliases n))"
        "           (sort (map str (all-ns)))]))"
    )
    r = client.eval(code, timeout=WAIT)
    assert r.values, r.err
    return r.values[-1]


def still_works(client) -> None:
    assert client.eval("[(inc 1) (greet 1) (.isDynamic #'greet)]", ns=NS, timeout=WAIT).values == ["[2 1 false]"]


def refused(head: str) -> tuple[bool, str]:
    return False, f"refused: {head}"


def not_checked(why: str) -> tuple[str, None]:
    return f"not checked ({why})", None


# (candidate, verdict inside a defn body: (compiles, error)). `FILE` stands for a file the candidate
# would write. At the top level a definition is not compiled (compiles None), or only its value or
# body is, inside a fn never called (def, defonce, defn, defmethod).
PROBES = {
    "user-macro": ("(noisy a)", not_checked(f"macro {NS}/noisy")),
    "user-macro-qualified": (f"({NS}/noisy)", not_checked(f"macro {NS}/noisy")),
    "user-macro-through-a-core-macro": ("(-> a noisy)", not_checked(f"macro {NS}/noisy")),
    "user-macro-in-binding": ("(binding [*out* *err*] (noisy))", not_checked(f"macro {NS}/noisy")),
    "user-macro-in-fn-metadata": ("^{:m (noisy)} (fn [] 1)", not_checked(f"macro {NS}/noisy")),
    "user-macro-in-vector-metadata": ("(count ^{:m (noisy)} [a])", not_checked(f"macro {NS}/noisy")),
    "user-inline": ("(sneaky-inline a)", not_checked(f"inline {NS}/sneaky-inline")),
    "declare-inc": ("(declare inc)", refused("declare")),
    "declare-dynamic-greet": ("(declare ^:dynamic greet)", refused("declare")),
    "declare-through-a-core-macro": ("(-> inc declare)", refused("declare")),
    "def-through-a-core-macro": ("(-> greet def)", refused("def")),
    "deftest": ("(clojure.test/deftest t (clojure.test/is (= 1 1)))", refused("clojure.test/deftest")),
    "definline": ('(definline f [y] (spit FILE y))', refused("definline")),
    "defonce": ('(defonce x (spit FILE "x"))', refused("defonce")),
    "defmethod": ("(defmethod print-method ::k [o w] nil)", refused("defmethod")),
    "extend-protocol": ("(extend-protocol clojure.core.protocols/IKVReduce String (kv-reduce [s f i] i))",
                        refused("extend-protocol")),
    "extend-type": ("(extend-type String clojure.core.protocols/IKVReduce (kv-reduce [s f i] i))", refused("extend-type")),
    "deftype": ("(deftype T [x])", refused("deftype")),
    "proxy": ("(proxy [Object] [] (toString [] (str a)))", refused("proxy")),
    "import": ("(import java.util.UUID)", refused("import")),
    "set!": ("(set! *warn-on-reflection* true)", refused("set!")),
    "in-ns": ("(in-ns 'vsafe.elsewhere)", refused("in-ns")),
    "require": ("(require 'clojure.set)", refused("require")),
    "alter-var-root": ("(alter-var-root #'greet (constantly nil))", refused("alter-var-root")),
    "intern": ("(intern *ns* 'leaked 1)", refused("intern")),
    "eval": ('(eval (list (quote spit) FILE "x"))', refused("eval")),
}


@pytest.mark.security
@pytest.mark.integration
@pytest.mark.parametrize("probe", list(PROBES))
def test_a_hostile_candidate_changes_nothing_and_runs_nothing(probe, target, nrepl_client, nrepl_server):
    text, expected = PROBES[probe]
    text = text.replace("FILE", clj_string(str(target / "written")))
    verifier = ReplVerifier(nrepl_client, timeout_s=5.0)
    before = user_state(nrepl_client)

    inside = verifier.verify(f"(ns {NS})\n(defn g [a]\n  ", text, ")")
    top = verifier.verify(f"(ns {NS})\n", text, "")

    assert (inside.compiles, inside.error) == expected
    if isinstance(expected[0], str):  # a macro never run is not run at the top level either
        assert top.compiles == expected[0]
    assert sorted(p.name for p in target.iterdir()) == []  # no file written
    assert user_state(nrepl_client) == before
    still_works(nrepl_client)
    assert busy_threads(nrepl_server.process.pid) == []


@pytest.mark.security
@pytest.mark.integration
def test_what_escapes_the_first_line_of_defence_is_undone_and_fails_the_check(target, nrepl_client, nrepl_server):
    """A macro trusted by mistake (here: the test trusts the user's namespace) changes the REPL
    while it expands: a var interned, `inc` re-pointed, `greet` made dynamic and private, a
    namespace created and aliased. The snapshot taken before the check sees each, and puts it back."""
    r = nrepl_client.eval(
        "(defmacro rewire [] (intern *ns* 'oops 1) (intern *ns* 'inc) (.setDynamic #'greet)"
        " (alter-meta! #'greet assoc :private true)"
        " (.addAlias *ns* 'made (create-ns 'vsafe.made-by-a-macro)) nil)",
        ns=NS, timeout=WAIT,
    )
    assert r.ok, r.err
    before = user_state(nrepl_client)
    verifier = ReplVerifier(nrepl_client, timeout_s=5.0, rules=load_rules().trusting(NS))
    v = verifier.verify(f"(ns {NS})\n(defn g [a]\n  ", "(rewire)", ")")
    assert (v.reads, v.compiles) == (True, False)
    assert v.error.startswith("changed the REPL's namespaces (undone): "), v.error
    assert user_state(nrepl_client) == before
    still_works(nrepl_client)
    assert busy_threads(nrepl_server.process.pid) == []


@pytest.mark.security
@pytest.mark.integration
def test_the_idle_reading_sees_a_busy_thread(nrepl_client, nrepl_server):
    """The JVM-idle assertion above can fail: a thread spinning in the REPL is seen."""
    spin = "(future (let [end (+ (System/nanoTime) 2500000000)] (while (< (System/nanoTime) end))))"
    assert nrepl_client.eval(spin, timeout=WAIT).ok
    assert busy_threads(nrepl_server.process.pid) != []
    time.sleep(2.0)  # it stops by itself


@pytest.mark.integration
@pytest.mark.parametrize("text", [
    "(let [noisy inc] (noisy a))",  # a local shadows the macro: a call, nothing expanded
    "'(noisy a)",  # quoted: data
    "(binding [*out* *err*] (inc a))",
    "(with-redefs [greet inc] (greet a))",
    "(letfn [(h [x] (when x (inc x)))] (h a))",
    "(reify Object (toString [_] (str (when a 1))))",
    "(case a 1 :one (2 3) (when a :two) :else)",
    "(try (inc a) (catch Exception e (str e (when e 1))) (finally (dec a)))",
    "(for [x [1 2] :when (odd? x) :let [y (* x a)]] (cond-> y true inc))",
    "(doto (java.util.ArrayList.) (.add (when a 1)))",
    "(with-open [r (java.io.StringReader. \"x\")] (.read r))",
    "(loop [i 0] (if (< i a) (recur (inc i)) (-> i inc (doto prn))))",
    "(fn [^String s & more] (.substring s (count more)))",
    "(locking a (some-> a inc))",
    "(greet (clojure.string/upper-case (str a)))",
])
def test_ordinary_candidates_still_compile(text, target, nrepl_client):
    v = ReplVerifier(nrepl_client, timeout_s=5.0).verify(f"(ns {NS})\n(defn g [a]\n  ", text, ")")
    assert (v.reads, v.compiles, v.error) == (True, True, None), v.error
    assert sorted(p.name for p in target.iterdir()) == []
