"""`cljassist bench make` (cljassist/bench/make_cases.py) and the public fixture it produced."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from cljassist.bench.make_cases import CATEGORIES, main_make, make_cases, select_balanced
from cljassist.clojure_text.reader import is_balanced, parse
from cljassist.corpus import Split
from cljassist.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = ROOT / "fixtures" / "bench" / "public.jsonl"
SYMBOL_RE = re.compile(r"[^\s()\[\]{}\"';@^`~\\,]+")

UTIL = '''(ns demo.util
  "Helpers used by demo.core."
  (:require [clojure.string :as str]))

;; (defn not-code [x] (commented-out x))

(defn join-words
  "Joins words with a space: (not a call)."
  [words]
  (str/join " " (map str/trim words)))

(defn shout [s]
  (str (str/upper-case s) "!"))

(def separator ", ")

(defn- pad-left [s width]
  (let [missing (- width (count s))
        spaces (apply str (repeat missing " "))]
    (str spaces s)))
'''

CORE = '''(ns demo.core
  (:require [demo.util :as u :refer [shout]]
            [clojure.string :as str]))

(def greeting "hello (not a form) there")

(defn describe [{:keys [name tags]}]
  (let [title (u/shout name)
        body (u/join-words tags)]
    (cond (empty? tags) title
          :else (str title u/separator body))))

(defn classify [n]
  (case n 0 :zero 1 :one :many))

(defn loud-summary [m]
  (let [total (count m) label (describe m)]
    {:total total :label (shout label)}))

(defn- local-only [xs]
  (->> xs (map inc) (filter odd?) (reduce + 0)))
'''


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "demo").mkdir(parents=True)
    (src / "demo" / "util.clj").write_text(UTIL, encoding="utf-8")
    (src / "demo" / "core.clj").write_text(CORE, encoding="utf-8")
    (src / "README.md").write_text("not clojure\n")
    return src


def _locate(case: dict, text: str) -> int:
    """Offset of the gap in the original file (the case must be an exact slice of it)."""
    whole = case["prefix"] + case["middle"] + case["suffix"]
    at = text.find(whole)
    assert at >= 0, f"{case['id']}: prefix+middle+suffix is not a slice of {case['file']}"
    return at + len(case["prefix"])


def _texts(tree: Path) -> dict[str, str]:
    return {p.relative_to(tree).as_posix(): p.read_text(encoding="utf-8") for p in tree.rglob("*.clj")}


def test_every_category_and_fields(tree: Path):
    cases = make_cases(tree, package="demo-pkg")
    counts = Counter(c["category"] for c in cases)
    assert set(counts) == set(CATEGORIES), counts
    for c in cases:
        assert set(c) >= {"id", "prefix", "suffix", "middle", "category", "file", "ns", "package", "xref"}
        assert c["package"] == "demo-pkg"
        assert c["file"] in ("demo/util.clj", "demo/core.clj")
        assert c["ns"] == {"demo/util.clj": "demo.util", "demo/core.clj": "demo.core"}[c["file"]]
        assert isinstance(c["xref"], bool)
        assert c["middle"].strip()
        assert c["id"].startswith(f"demo-pkg-{c['category']}-")
    assert len({c["id"] for c in cases}) == len(cases)


def test_reconstruction_and_balance(tree: Path):
    texts = _texts(tree)
    for c in make_cases(tree, package="demo"):
        text = texts[c["file"]]
        at = _locate(c, text)
        assert text[at:at + len(c["middle"])] == c["middle"]
        assert is_balanced(c["prefix"] + c["middle"] + c["suffix"]), c["id"]
        if c["category"] == "symbol":
            assert SYMBOL_RE.fullmatch(c["middle"]), c
        else:
            assert is_balanced(c["middle"]), c


def test_category_shapes(tree: Path):
    cases = make_cases(tree, package="demo")
    for c in cases:
        middle, prefix, cat = c["middle"], c["prefix"], c["category"]
        forms = parse(middle)
        if cat == "symbol":
            typed = re.search(r"[^\s()\[\]{}\"';@^`~\\,]*$", prefix).group(0)
            assert len(typed) >= 2, c  # at least two characters typed already
            assert not SYMBOL_RE.match(c["suffix"][:1] or " "), c  # the symbol ends with the middle
        elif cat == "name":
            assert len(forms) == 1 and forms[0].kind == "symbol", c
            assert re.search(r"\((def\S*)\s+(\^\S+\s+)*$", prefix) or re.search(r"[\[\s]$", prefix), c
        elif cat == "arg":
            assert len(forms) == 1 and "\n" not in middle, c
            assert not prefix.rstrip().endswith("("), c  # never the head of the call
        elif cat == "call":
            assert len(forms) == 1 and forms[0].kind == "list" and "\n" not in middle, c
            assert 6 <= len(middle) <= 100
        elif cat == "clause":
            assert len(forms) == 2 and "\n" not in middle, c
        elif cat == "body":
            assert 1 <= len(forms) and len(middle) <= 400, c
    names = {c["middle"] for c in cases if c["category"] == "name"}
    assert {"join-words", "shout", "separator", "describe", "classify"} <= names
    assert {"title", "missing"} & names  # let binding names
    clauses = {c["middle"] for c in cases if c["category"] == "clause"}
    assert "(empty? tags) title" in clauses  # cond clause
    assert "0 :zero" in clauses  # case clause
    assert "title (u/shout name)" in clauses  # binding pair
    assert ":total total" in clauses  # map entry
    bodies = {c["middle"] for c in cases if c["category"] == "body"}
    assert '(str (str/upper-case s) "!")' in bodies
    calls = {c["middle"] for c in cases if c["category"] == "call"}
    assert "(str/upper-case s)" in calls


def test_no_gaps_in_ns_strings_or_comments(tree: Path):
    texts = _texts(tree)
    for c in make_cases(tree, package="demo"):
        text = texts[c["file"]]
        at = _locate(c, text)
        ns_end = parse(text)[0].end
        assert at >= ns_end, c  # nothing from the ns form
        for node in parse(text):
            if node.kind == "string":
                assert not (node.start < at < node.end), c
        line_start = text.rfind("\n", 0, at) + 1
        assert ";" not in text[line_start:at], c  # not inside a line comment
        assert "not a call" not in c["middle"] and "not a form" not in c["middle"]
        assert "commented-out" not in c["middle"]


def test_xref(tree: Path):
    cases = make_cases(tree, package="demo")
    util = [c for c in cases if c["file"] == "demo/util.clj"]
    assert util and not any(c["xref"] for c in util)  # util uses nothing of core
    core = [c for c in cases if c["file"] == "demo/core.clj"]
    aliased = [c for c in core if c["category"] != "symbol" and "u/join-words" in c["middle"]]
    assert aliased and all(c["xref"] for c in aliased)
    referred = [c for c in core if c["middle"] == "(shout label)"]
    assert referred and referred[0]["xref"]  # a bare :refer-ed name
    local = [c for c in core if c["middle"] in ("(count m)", "(map inc)", "0 :zero")]
    assert local and not any(c["xref"] for c in local)
    # a let binding called like something elsewhere is a definition, not a use
    assert not any(c["xref"] for c in core if c["category"] == "name")


def test_determinism_and_limits(tree: Path):
    a = make_cases(tree, package="demo", seed=3)
    b = make_cases(tree, package="demo", seed=3)
    assert a == b
    limited = make_cases(tree, package="demo", per_file_limit=1)
    per = Counter((c["file"], c["category"]) for c in limited)
    assert per and max(per.values()) == 1
    short = make_cases(tree, package="demo", max_context_chars=200)
    assert short
    texts = _texts(tree)
    for c in short:
        assert len(c["prefix"]) <= 200 and len(c["suffix"]) <= 200
        _locate(c, texts[c["file"]])
        assert is_balanced(c["prefix"] + c["middle"] + c["suffix"])
    picked = select_balanced(a, 12, seed=1)
    assert len(picked) == 12
    assert Counter(c["category"] for c in picked) == Counter({cat: 2 for cat in CATEGORIES})
    assert picked == select_balanced(a, 12, seed=1)


def test_package_defaults_to_directory_name(tree: Path):
    cases = make_cases(tree)
    assert {c["package"] for c in cases} == {"src"}


def test_main_make(tree: Path, tmp_path: Path, capsys):
    out = tmp_path / "out" / "cases.jsonl"
    assert main_make(str(tree), str(out), limit=18, package="demo") == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    cases = [json.loads(line) for line in lines]
    assert len(cases) == 18
    assert Counter(c["category"] for c in cases) == Counter({cat: 3 for cat in CATEGORIES})
    assert len({c["id"] for c in cases}) == 18
    printed = capsys.readouterr().out
    assert "symbol=3" in printed and "body=3" in printed
    assert main_make(str(tree), str(out)) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(make_cases(tree))


def test_main_make_errors(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        main_make(str(tmp_path / "nope"), str(tmp_path / "o.jsonl"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("(not clojure)")
    with pytest.raises(InputError, match="no .clj"):
        main_make(str(empty), str(tmp_path / "o.jsonl"))
    with pytest.raises(InputError):
        make_cases(tmp_path / "nope")


# --------------------------------------------------------------------------- public fixture


@pytest.fixture(scope="module")
def public_cases() -> list[dict]:
    assert PUBLIC.exists(), "regenerate with: python scripts/make_public_bench.py"
    return [json.loads(line) for line in PUBLIC.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_public_fixture_fields(public_cases):
    assert 250 <= len(public_cases) <= 350
    for c in public_cases:
        for key in ("id", "prefix", "suffix", "middle", "category", "file", "package"):
            assert isinstance(c[key], str), (key, c.get("id"))
        assert c["ns"] is None or isinstance(c["ns"], str)
        assert isinstance(c["xref"], bool)
        assert c["category"] in CATEGORIES
        assert c["middle"].strip()
        assert not c["file"].startswith("/") and c["file"].endswith((".clj", ".cljc", ".cljs"))
    assert len({c["id"] for c in public_cases}) == len(public_cases)


def test_public_fixture_balance(public_cases):
    split = Split.load()
    assert {c["package"] for c in public_cases} <= set(split.bench)
    assert len({c["package"] for c in public_cases}) >= 10
    counts = Counter(c["category"] for c in public_cases)
    assert min(counts[cat] for cat in CATEGORIES) >= 40, counts
    assert any(c["xref"] for c in public_cases)
    for c in public_cases:
        # the bench sources all read as balanced, so every case does too
        assert is_balanced(c["prefix"] + c["middle"] + c["suffix"]), c["id"]
        if c["category"] == "symbol":
            assert SYMBOL_RE.fullmatch(c["middle"]), c["id"]
        else:
            assert is_balanced(c["middle"]), c["id"]
