"""Property tests for cljassist.clojure_text on random text and on generated Clojure."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cljassist.clojure_text import analyze_cursor, imbalance, is_balanced, parse, scan, syntax_errors, top_level_forms

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = settings(max_examples=400, deadline=None)

# --- generated well-formed Clojure: (text, offsets of its structural delimiters) -------------

Rendered = tuple[str, tuple[int, ...]]


def _leaf(s: str) -> Rendered:
    return (s, ())


symbols = st.sampled_from(["a", "foo", "x#", "a'b", "+", "-", "->>", "ns/f", "%", "%1", "nil", "a.b/c", "<=", "*x*", "?q!"])
keywords = st.sampled_from([":a", ":ns/k", "::k", "::al/k", ":a#b", ":1"])
numbers = st.sampled_from(["0", "1", "-2", "+3", "1.5", "1e3", "0x1F", "1/2", "7N", "1.0M", "2r101"])
strings = st.sampled_from(['""', '"a"', '"a b ; c"', r'"\""', r'"\\"', '"(]{"', r'"x\ny"', '"multi\nline"', r'"\u03bb"'])
chars = st.sampled_from([r"\a", r"\(", r"\)", r"\[", r"\}", r"\;", r'\"', r"\\", r"\newline", r"\space", r"\u03BB", r"\o101", r"\,"])
regexes = st.sampled_from([r'#"\d+"', r'#"\""', r'#"[(]"', r'#"a;b"'])
symbolics = st.sampled_from(["##Inf", "##-Inf", "##NaN"])
atoms = st.one_of(symbols, keywords, numbers, strings, chars, regexes, symbolics).map(_leaf)

separators = st.sampled_from([" ", "\n", ", ", " ; comment ) ] }\n", " #_ x ", " #_#_ a \"b\" ", "\t", " #_(a [b]) "])


def _join(items: list[Rendered], seps: list[str]) -> Rendered:
    text = ""
    delims: list[int] = []
    for i, (s, d) in enumerate(items):
        if i:
            text += seps[i % len(seps)]
        delims.extend(len(text) + x for x in d)
        text += s
    return text, tuple(delims)


def _coll(opener: str, closer: str):
    def build(args) -> Rendered:
        items, seps = args
        body, d = _join(items, seps)
        text = opener + body + closer
        return text, (len(opener) - 1, *(len(opener) + x for x in d), len(text) - 1)

    return build


def _prefixed(prefix: str):
    return lambda r: (prefix + r[0], tuple(len(prefix) + x for x in r[1]))


def _extend(children):
    seps = st.lists(separators, min_size=1, max_size=3)
    items = st.lists(children, max_size=5)
    pairs = st.lists(children, max_size=3).map(lambda xs: [y for x in xs for y in (x, x)])
    fn_body = st.lists(atoms, max_size=4)
    return st.one_of(
        st.tuples(items, seps).map(_coll("(", ")")),
        st.tuples(items, seps).map(_coll("[", "]")),
        st.tuples(pairs, seps).map(_coll("{", "}")),
        st.tuples(items, seps).map(_coll("#{", "}")),
        st.tuples(fn_body, seps).map(_coll("#(", ")")),
        st.tuples(pairs, seps).map(_coll("#:ns{", "}")),
        st.tuples(pairs, seps).map(_coll("#::{", "}")),
        st.tuples(st.lists(children, max_size=2).map(lambda xs: [y for x in xs for y in (_leaf(":clj"), x)]), seps).map(
            _coll("#?(", ")")
        ),
        children.map(_prefixed("'")),
        children.map(_prefixed("`")),
        children.map(_prefixed("~")),
        children.map(_prefixed("~@")),
        children.map(_prefixed("@")),
        children.map(_prefixed("#'")),
        children.map(_prefixed("^:meta ")),
        children.map(_prefixed("^{:a 1} ")),
        children.map(_prefixed("#^String ")),
        children.map(_prefixed("#inst ")),
        children.map(_prefixed("#foo/bar ")),
    )


forms = st.recursive(atoms, _extend, max_leaves=12)


@st.composite
def programs(draw):
    items = draw(st.lists(forms, min_size=0, max_size=6))
    seps = draw(st.lists(st.sampled_from([" ", "\n", "\n\n", " ; c\n", "\n#_ (x)\n", " #_ #_ a b "]), min_size=1, max_size=3))
    lead = draw(st.sampled_from(["", "; head\n", "#!/usr/bin/env bb\n", "#_ skipped "]))
    trail = draw(st.sampled_from(["", "\n", " ; tail", " #_ t"]))
    text = lead
    bounds = []
    delims: list[int] = []
    for i, (s, d) in enumerate(items):
        if i:
            text += seps[i % len(seps)]
        bounds.append((len(text), len(text) + len(s)))
        delims.extend(len(text) + x for x in d)
        text += s
    return text + trail, bounds, delims


@SETTINGS
@given(programs())
def test_generated_programs_read_as_generated(prog):
    text, bounds, delims = prog
    assert is_balanced(text)
    assert top_level_forms(text) == bounds
    assert syntax_errors(text) == []
    for d in delims:
        assert text[d] in "()[]{}", (text, d)


@SETTINGS
@given(programs(), st.data())
def test_deleting_a_delimiter_unbalances(prog, data):
    text, _, delims = prog
    if not delims:
        return
    d = data.draw(st.sampled_from(delims))
    broken = text[:d] + text[d + 1:]
    assert imbalance(broken) > 0, (text, d)


@SETTINGS
@given(programs(), st.data())
def test_scan_resumes_on_generated(prog, data):
    text = prog[0]
    i = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(i, len(text)))
    assert scan(text[j:], scan(text[i:j], scan(text[:i]))) == scan(text)


tricky = st.text(alphabet='()[]{}#"\\;\'`~@^:_?!%+-10a \n,=</.&x', max_size=60)


@FAST
@given(tricky, tricky)
def test_scan_resumable_on_arbitrary_text(a, b):
    assert scan(b, scan(a)) == scan(a + b)
    assert scan(a + b).offset == len(a) + len(b)


@FAST
@given(st.one_of(tricky, st.text(max_size=80)), st.data())
def test_never_raises_on_arbitrary_text(text, data):
    nodes = parse(text)
    parse(text, include_trivia=True)
    syntax_errors(text)
    imbalance(text)
    last = 0
    for a, b in top_level_forms(text):
        assert last <= a < b <= len(text)
        last = b
    assert all(0 <= n.start < n.end <= len(text) for n in nodes)
    offset = data.draw(st.integers(0, len(text)))
    ctx = analyze_cursor(text, offset)
    assert ctx.symbol_start <= offset
    assert text[ctx.symbol_start:offset] == ctx.symbol_prefix
