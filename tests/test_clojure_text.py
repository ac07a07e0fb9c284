"""Unit tests for cljassist.clojure_text (reader-level scanning, parsing, cursor context)."""

from __future__ import annotations

import pytest

from cljassist.clojure_text import (
    Node,
    ScanState,
    analyze_cursor,
    file_namespace,
    imbalance,
    is_balanced,
    parse,
    scan,
    syntax_errors,
    top_level_forms,
)


def kinds(text: str) -> list[str]:
    return [n.kind for n in parse(text)]


def spans(text: str) -> list[str]:
    return [text[a:b] for a, b in top_level_forms(text)]


# --- reader features ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"(a \) b)", [r"(a \) b)"]),
        (r"(a \( b)", [r"(a \( b)"]),
        (r'"\""', [r'"\""']),
        (r'#"\d+\""', [r'#"\d+\""']),
        ('"a ; not a comment" b', ['"a ; not a comment"', "b"]),
        ("(a ;comment )\n b)", ["(a ;comment )\n b)"]),
        (r"[\; x]", [r"[\; x]"]),
        (r'[\" x]', [r'[\" x]']),
        (r"[\newline \space \u03BB \o101 \a]", [r"[\newline \space \u03BB \o101 \a]"]),
        ("#! shebang (\n(a)", ["(a)"]),
        ("#_ (a b) c", ["c"]),
        ("#_ #_ a b c", ["c"]),
        ("#_#_a b c d", ["c", "d"]),
        ("^:private (defn f [])", ["^:private (defn f [])"]),
        ("^{:a 1} x y", ["^{:a 1} x", "y"]),
        ("#^String x", ["#^String x"]),
        ("#?(:clj a :cljs b) c", ["#?(:clj a :cljs b)", "c"]),
        ("[#?@(:clj [a b])] c", ["[#?@(:clj [a b])]", "c"]),
        ('#inst "2020-01-01" #uuid "x"', ['#inst "2020-01-01"', '#uuid "x"']),
        ("#js {:a 1} #foo/bar [1 2]", ["#js {:a 1}", "#foo/bar [1 2]"]),
        ("##Inf ##-Inf ##NaN", ["##Inf", "##-Inf", "##NaN"]),
        ("`(a ~b ~@c) 'd @e #'f", ["`(a ~b ~@c)", "'d", "@e", "#'f"]),
        ("#(+ % %2) #{1 2}", ["#(+ % %2)", "#{1 2}"]),
        ("#:a{:b 1} #::{:c 2} #::s{:d 3}", ["#:a{:b 1}", "#::{:c 2}", "#::s{:d 3}"]),
        ("::alias/kw :a/b ::c", ["::alias/kw", ":a/b", "::c"]),
        ("a#{}", ["a#", "{}"]),  # '#' continues a symbol (gensym)
        ("x' y", ["x'", "y"]),
        ("' #_ a b", ["' #_ a b"]),
        ("1 -2 +3 - + 0x1F 1/2 1.5e3M 7N", ["1", "-2", "+3", "-", "+", "0x1F", "1/2", "1.5e3M", "7N"]),
        ("a,b", ["a", "b"]),
    ],
)
def test_top_level_forms(text, expected):
    assert spans(text) == expected
    assert is_balanced(text)
    assert syntax_errors(text) == []


def test_node_kinds():
    text = "(a) [b] {c d} #{e} #(f) #?(:clj g) #?@(:clj [h]) #:n{:i 1} sym :kw 1 \"s\" \\c #\"r\" ##Inf"
    assert kinds(text) == [
        "list", "vector", "map", "set", "fn", "reader-cond", "reader-cond-splicing", "namespaced-map",
        "symbol", "keyword", "number", "string", "char", "regex", "symbolic",
    ]
    text = "'a `b ~c ~@d @e #'f ^m g #tag h"
    assert kinds(text) == ["quote", "syntax-quote", "unquote", "unquote-splicing", "deref", "var", "meta", "tagged"]
    meta = parse("^{:a 1} x")[0]
    assert [c.kind for c in meta.children] == ["map", "symbol"]
    tagged = parse("#foo/bar [1]")[0]
    assert [(c.kind, "#foo/bar [1]"[c.start:c.end]) for c in tagged.children] == [("symbol", "foo/bar"), ("vector", "[1]")]


def test_node_offsets_and_children():
    text = "(defn f [x] #_(ignored) (inc x))"
    (top,) = parse(text)
    assert (top.kind, top.start, top.end, top.closed) == ("list", 0, len(text), True)
    assert [text[c.start:c.end] for c in top.children] == ["defn", "f", "[x]", "(inc x)"]
    assert isinstance(top, Node)


def test_include_trivia():
    text = "; c\n#_a (b #_c ; d\n)"
    assert kinds(text) == ["list"]
    nodes = parse(text, include_trivia=True)
    assert [n.kind for n in nodes] == ["comment", "discard", "list"]
    assert [c.kind for c in nodes[2].children] == ["symbol", "discard", "comment"]


def test_unclosed_forms():
    text = "(a [b {c"
    (top,) = parse(text)
    assert not top.closed and top.end == len(text)
    assert top_level_forms(text) == [(0, len(text))]
    assert not parse('"abc')[0].closed
    assert not parse("'")[0].closed
    assert parse("(a ')")[0].children[1].closed is False


def test_parse_never_raises_on_garbage():
    for text in [")", "]]]", "#", "#<", "#_", "#?", "#?@", "#:", "\\", "\"\\", "#\"", "^", "(#_)", "#=x", "#::", "(]"]:
        parse(text)
        parse(text, include_trivia=True)
        syntax_errors(text)
        scan(text)
        analyze_cursor(text, len(text))


def test_unmatched_closers_are_skipped():
    assert top_level_forms("a ) b") == [(0, 1), (4, 5)]
    assert spans("(a ] b)") == ["(a ] b)"]
    st = scan("(a ] b)")
    assert st.unmatched_closers == 1 and st.stack == []


# --- scan / imbalance -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, n",
    [
        ("", 0),
        ("(a [b] {c d})", 0),
        ("(", 1),
        (")", 1),
        ("(]", 2),
        ("((a)", 1),
        ('"abc', 1),
        ('#"abc', 1),
        ("\\", 1),
        ("(a \\)", 1),
        ('("a)"', 1),
        ("; (((", 0),
        ("#_(", 1),
        ("#{#(", 2),
    ],
)
def test_imbalance(text, n):
    assert imbalance(text) == n
    assert is_balanced(text) == (n == 0)


def test_scan_stack_and_modes():
    st = scan("(a [b #{c #(d")
    assert st.stack == [("(", 0), ("[", 3), ("#{", 6), ("#(", 10)]
    assert st.mode == "code" and st.offset == len("(a [b #{c #(d")
    assert scan('(a "b').mode == "string"
    assert scan('(a #"b').mode == "regex"
    assert scan("(a ; b").mode == "comment"
    assert scan("(a \\").mode == "char"
    assert scan("#?(:clj x").stack == [("(", 2)]
    assert scan("#::{:a").stack == [("{", 3)]


def test_scan_does_not_mutate_state():
    a = scan("(a [")
    before = a.copy()
    scan("])", a)
    assert a == before


@pytest.mark.parametrize(
    "text",
    [
        '(defn f [x] "doc \\" ;x" (let [a \\( b #"\\d\\"" c #{1} d #(+ %)] (str a)))',
        "#_ #_ a b (c ^:m #?@(:clj [d]) #inst \"x\" ##Inf #:a{:b 1} ::x/y) x#{} 1#{} +#{} -1",
        "; comment (\n#! sheb (\n(a \\newline \\u03BB 'b `c ~d ~@e @f #'g)",
    ],
)
def test_scan_resumable_at_every_split(text):
    whole = scan(text)
    for i in range(len(text) + 1):
        assert scan(text[i:], scan(text[:i])) == whole, i
    # three chunks
    for i in range(0, len(text), 3):
        for j in range(i, len(text), 5):
            assert scan(text[j:], scan(text[i:j], scan(text[:i]))) == whole


# --- syntax_errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["{:a}", "(a", "a)", '"abc', "#=(+ 1 2)", "#(#(x))", "\\foo", '"\\q"', "08", ":", "a:", "#?@(:clj [a])",
     "#my.Rec{:a 1}", "'", "#:a [1]"],
)
def test_syntax_errors(text):
    assert syntax_errors(text)


# --- file_namespace ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ns",
    [
        ("(ns foo.bar (:require [x]))", "foo.bar"),
        ("; header\n(ns ^:no-doc foo.bar\n  \"doc\"\n  (:require x))", "foo.bar"),
        ("(ns ^{:doc \"x\" :author \"y\"} a.b)", "a.b"),
        ("#_(ns wrong) (ns right)", "right"),
        ("(in-ns 'user.x)", "user.x"),
        ("(def x 1)", None),
        ("(comment (ns inner))", None),
        ('"(ns nope)" (ns yes)', "yes"),
        ("(clojure.core/ns q)", "q"),
    ],
)
def test_file_namespace(text, ns):
    assert file_namespace(text) == ns


# --- cursor -------------------------------------------------------------------------------------


def at(text: str):
    offset = text.index("|")
    return analyze_cursor(text.replace("|", "", 1), offset)


def test_cursor_symbol_prefix_and_enclosing():
    c = at("(ns a.b)\n(defn f [x]\n  (str/jo| x))")
    assert c.namespace == "a.b"
    assert c.symbol_prefix == "str/jo"
    assert c.symbol_start == c.offset - len("str/jo")
    assert [(e.opener, e.head) for e in c.enclosing] == [("(", None), ("(", "defn")]
    assert c.top_level == (9, len("(ns a.b)\n(defn f [x]\n  (str/jo x))"))
    assert c.locals == ("x",)
    assert not c.in_string and not c.in_comment


def test_cursor_keyword_and_empty_prefix():
    assert at("{:fo|}").symbol_prefix == ":fo"
    assert at("(::al|)").symbol_prefix == "::al"
    c = at("(foo |)")
    assert c.symbol_prefix == "" and c.symbol_start == c.offset
    assert at("'sym|").symbol_prefix == "sym"
    assert at("#(inc %|)").enclosing[0].opener == "#("


def test_cursor_strings_and_comments():
    c = at('(a "bc|d")')
    assert c.in_string and c.symbol_prefix == ""
    assert at("(a ; b|c\n)").in_comment
    assert not at("(a ; bc\n|)").in_comment
    assert at('#"ab|"').in_string


def test_cursor_top_level():
    assert at("(a) | (b)").top_level is None
    assert at("(a) (b|").top_level == (4, 6)
    assert at("(a)|").top_level is None
    assert at("^:m (a |)").top_level == (0, 8)
    assert at("(a)\n(b |\n(c)").top_level == (4, 11)  # unclosed: runs to the end


def test_cursor_enclosing_forms():
    c = at("(let [a {:b #{(f #?(:clj |))}}])")
    assert [e.opener for e in c.enclosing] == ["#?(", "(", "#{", "{", "[", "("]
    assert c.enclosing[1].head == "f" and c.enclosing[-1].head == "let"
    assert [e.start for e in c.enclosing] == [17, 14, 12, 8, 5, 0]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("(let [a 1 b |] x)", ("a",)),
        ("(let [a 1 b 2] |)", ("b", "a")),
        ("(let [a 1 b (inc |)])", ("a",)),
        ("(let [a 1 a 2] |)", ("a",)),
        ("(loop [i 0 acc []] (recur |))", ("acc", "i")),
        ("(when-let [x (f)] |)", ("x",)),
        ("(if-some [x (f)] | y)", ("x",)),
        ("(binding [*x* 1] |)", ("*x*",)),
        ("(with-open [r (io/reader f)] |)", ("r",)),
        ("(dotimes [i 10] |)", ("i",)),
        ("(let [[a b & more :as all] v] |)", ("all", "more", "b", "a")),
        ("(let [{:keys [a ns/b] :strs [c] :syms [d] :as m :or {a 1}} v] |)", ("m", "d", "c", "b", "a")),
        ("(let [{x :x [y z] :yz} v] |)", ("z", "y", "x")),
        ("(let [{:keys [:k1 ::k2]} v] |)", ("k2", "k1")),
        ("(let [{:a/keys [p q]} v] |)", ("q", "p")),
        ("(let [_ (f) a 1] |)", ("a",)),
        ("(let [^String s x] |)", ("s",)),
        ("(fn [a b] |)", ("b", "a")),
        ("(fn named [a] |)", ("a", "named")),
        ("(fn [a |])", ()),
        ("(defn f \"doc\" {:m 1} [a & rest] |)", ("rest", "a")),
        ("(defn- f [a] |)", ("a",)),
        ("(defmacro m [form] `(do ~|))", ("form",)),
        ("(defn f ([a] |) ([a b] b))", ("a",)),
        ("(defn f ([a] a) ([a b] |))", ("b", "a")),
        ("(fn* [p] |)", ("p",)),
        ("(letfn [(f [x] |) (g [y] y)] (f 1))", ("x", "g", "f")),
        ("(letfn [(f [x] x) (g [y] y)] |)", ("g", "f")),
        ("(for [x xs y ys] |)", ("y", "x")),
        ("(for [x xs :let [y (f x)] :when y z zs] |)", ("z", "y", "x")),
        ("(for [x xs :let [y (f |)]] y)", ("x",)),
        ("(doseq [[k v] m :when k] |)", ("v", "k")),
        ("(doseq [x |] x)", ()),
        ("(try (f) (catch Exception e |))", ("e",)),
        ("(try (f) (catch Exception e (g)) |)", ()),
        ("(let [a 1] (fn [b] (let [c 2] |)))", ("c", "b", "a")),
        ("(let [a 1] (fn [a] |))", ("a",)),
        ("(let [a 1]) |", ()),
        ("(defmethod m :k [x] |)", ("x",)),
        ("(reify P (m [this y] |))", ("y", "this")),
        ("(defrecord R [a b] P (m [this] |))", ("this", "b", "a")),
        ("(as-> x $ (f $ |))", ("$",)),
        ("(let [a 1\n      b |", ("a",)),
    ],
)
def test_cursor_locals(text, expected):
    assert at(text).locals == expected


def test_cursor_at_bounds():
    assert analyze_cursor("", 0).locals == ()
    assert analyze_cursor("(a)", 99).offset == 3
    assert analyze_cursor("(a)", -5).offset == 0
