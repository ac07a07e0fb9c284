"""FIM training examples (cljassist/train/fim_data.py) on a tiny synthetic corpus."""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from cljassist.clojure_text import analyze_cursor
from cljassist.corpus import ReservedPackage
from cljassist.model.fim import load_fim_table
from cljassist.prompt import load_templates
from cljassist.train import fim_data
from cljassist.train.fim_data import (
    DEFAULT_MIX,
    LENGTH_BUCKETS,
    add_data_arguments,
    bucket_label,
    context_lines_for,
    index_package,
    is_valid_file,
    main_data,
    make_examples,
)

SPLIT = """
train = ["libalpha-clojure", "libbeta-clojure", "libgamma-clojure"]
bench = ["libbenchy-clojure"]
reserved = ["libsecret-clojure"]
"""

HEADS = ["inc", "dec", "+", "str/join", "map", "filter", "assoc", "get", "vector", "conj", "if", "when"]


def _expr(rng: random.Random, depth: int, names: list[str]) -> str:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice([*names, str(rng.randint(0, 99)), ":k" + str(rng.randint(0, 9)), '"s"', "nil"])
    head = rng.choice(HEADS + names[:2])
    args = " ".join(_expr(rng, depth - 1, names) for _ in range(rng.randint(1, 3)))
    return f"({head} {args})"


def _source(rng: random.Random, ns: str, other: str | None, fns: list[str], other_fns: list[str]) -> str:
    req = "[clojure.string :as str]" + (f"\n            [{other} :as o :refer [{other_fns[0]}]]" if other else "")
    out = [f";; {ns}: generated for tests\n(ns {ns}\n  (:require {req}))\n"]
    for i, name in enumerate(fns):
        params = ["a", "b"] if i % 2 else ["m", "& more"]
        locals_ = [p for p in params if p != "& more"] + ["x"]
        calls = [f"(o/{f} x)" for f in other_fns[:1]] if other else []
        depth = 1 + i % 5
        body = _expr(rng, depth, locals_ + fns[:i])
        out.append(
            f'(defn {name}\n  "Does {name} to its arguments. More words follow here."\n  [{" ".join(params)}]\n'
            f"  (let [x {_expr(rng, 2, locals_[:1])}\n        y {calls[0] if calls else '(inc x)'}]\n"
            f"    {body}))\n"
        )
    out.append(f"(def ^:private table\n  {{:a 1, :b [1 2 3], :c {{:d \"e\"}}}})\n")
    out.append(f"(defmacro with-{fns[0]}\n  \"Runs body with {fns[0]}.\"\n  [& body]\n  `(do ~@body))\n")
    return "\n".join(out)


def write_corpus(root: Path, packages: dict[str, int], seed: int = 1) -> Path:
    """packages: name -> number of files. Returns the corpus dir."""
    rng = random.Random(seed)
    rows = []
    for pkg, n in packages.items():
        short = pkg.removeprefix("lib").removesuffix("-clojure")
        nss = [f"{short}.mod{i}" for i in range(n)]
        fn_names = {ns: [f"{short}-f{i}-{j}" for j in range(8)] for i, ns in enumerate(nss)}
        for i, ns in enumerate(nss):
            other = nss[i - 1] if i else None
            text = _source(rng, ns, other, fn_names[ns], fn_names[other] if other else [])
            rel = ns.replace(".", "/").replace("-", "_") + (".cljc" if i % 3 == 2 else ".clj")
            dest = root / "files" / pkg / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
            # the manifest as `cljassist train corpus` writes it (corpus_build.py)
            rows.append({"package": pkg, "path": f"files/{pkg}/{rel}", "relative": rel,
                         "sha256": hashlib.sha256(text.encode()).hexdigest(), "lines": text.count("\n")})
    (root / "manifest.json").write_text(json.dumps({"files": rows}), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def split_path(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("split") / "split.toml"
    p.write_text(SPLIT, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"),
                        {"libalpha-clojure": 6, "libbeta-clojure": 5, "libgamma-clojure": 4})


@pytest.fixture(scope="module")
def generated(corpus, split_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    stats = make_examples(corpus, out, seed=7, valid_share=0.2, split_path=split_path, passes=3,
                          chars_per_example=120)
    rows = {name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
            for name in ("train", "valid")}
    return out, stats, rows


def _source_of(corpus: Path, row: dict) -> str:
    return (corpus / "files" / row["package"] / row["path"]).read_text(encoding="utf-8")


def _fmt():
    return load_fim_table()["cljassist_smollm2"]


# ----------------------------------------------------------------------------------------------


def test_family_in_table():
    table = load_fim_table()
    psm, spm = table["cljassist_smollm2"], table["cljassist_smollm2_spm"]
    assert psm.is_fim and psm.order == "PSM" and spm.order == "SPM"
    assert psm.tokens["fim_prefix"] == spm.tokens["fim_prefix"] == "<issue_start>"
    assert psm.tokens["eot"] == "<|im_end|>" and "<|im_end|>" in psm.stop
    assert psm.render("P", "S") == "<issue_start>P<issue_comment>S<issue_closed>"
    assert spm.render("P", "S") == "<issue_start><issue_comment>S<issue_closed>P"
    assert table["cljassist_gemma3"].tokens["fim_middle"] == "<unused2>"


def test_base_vocab_stays_left_to_right_and_fim_ids_pick_our_family(tmp_path):
    test_fim_detection = pytest.importorskip("tests.test_fim_detection")
    from cljassist.model.fim import detect_fim_format
    from cljassist.model.gguf_info import read_gguf_metadata

    vocab = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>", "<filename>",
             "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>",
             "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>", "a", "(", ")"]
    base = test_fim_detection.write_gguf(tmp_path / "base.gguf", vocab)
    assert detect_fim_format(read_gguf_metadata(base)).family == "left_to_right"
    tuned = test_fim_detection.write_gguf(tmp_path / "tuned.gguf", vocab, ints={
        "tokenizer.ggml.fim_pre_token_id": 8, "tokenizer.ggml.fim_suf_token_id": 9,
        "tokenizer.ggml.fim_mid_token_id": 10, "tokenizer.ggml.eot_token_id": 2})
    assert detect_fim_format(read_gguf_metadata(tuned)).family == "cljassist_smollm2"


def test_deterministic(corpus, split_path, tmp_path, generated):
    out, _, _ = generated
    again = tmp_path / "again"
    make_examples(corpus, again, seed=7, valid_share=0.2, split_path=split_path, passes=3, chars_per_example=120)
    for name in ("train.jsonl", "valid.jsonl", "stats.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    other = tmp_path / "other"
    make_examples(corpus, other, seed=8, valid_share=0.2, split_path=split_path, passes=3)
    assert (other / "train.jsonl").read_bytes() != (out / "train.jsonl").read_bytes()


def test_valid_split_is_by_whole_file(corpus, generated):
    _, stats, rows = generated
    train_files = {(r["package"], r["path"]) for r in rows["train"]}
    valid_files = {(r["package"], r["path"]) for r in rows["valid"]}
    assert train_files and valid_files
    assert not train_files & valid_files
    for pkg, path in valid_files:
        assert is_valid_file(pkg, path, 0.2)
    for pkg, path in train_files:
        assert not is_valid_file(pkg, path, 0.2)
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert train_files | valid_files == {(f["package"], f["relative"]) for f in manifest["files"]}
    assert stats["files"] == {"train": len(train_files), "valid": len(valid_files)}
    # the split does not depend on the seed
    assert is_valid_file("libalpha-clojure", "alpha/mod0.clj", 0.5) == is_valid_file("libalpha-clojure", "alpha/mod0.clj", 0.5)


def _split_fim(row: dict):
    fmt = _fmt()
    t = fmt.tokens
    p = row["prompt"]
    if row["order"] == "psm":
        assert p.startswith(t["fim_prefix"]) and p.endswith(t["fim_middle"])
        pre, _, suf = p[len(t["fim_prefix"]):-len(t["fim_middle"])].partition(t["fim_suffix"])
    else:
        assert p.startswith(t["fim_prefix"] + t["fim_suffix"])
        suf, _, pre = p[len(t["fim_prefix"] + t["fim_suffix"]):].partition(t["fim_middle"])
    return pre, suf


def _strip_header(prompt_prefix: str, source: str, start: int) -> tuple[str, str]:
    """(header, kept prefix): the kept prefix is a tail of source[:start]; the header is comment lines."""
    cuts = [0] + [m.end() for m in re.finditer("\n", prompt_prefix)]
    for j in cuts:
        kept = prompt_prefix[j:]
        header = prompt_prefix[:j]
        if source[:start].endswith(kept) and all(line.startswith(";;") for line in header.splitlines()):
            return header, kept
    raise AssertionError("prompt prefix is not header + a tail of the source prefix")


CONTEXT_BLOCK = re.compile(r"^;; In namespace \S+, the running program knows:\n(?:;;   .*\n)*", re.M)


def _strip_context(prompt_prefix: str) -> tuple[str, int | None]:
    """(the prompt prefix without its context block, where the block was)."""
    m = CONTEXT_BLOCK.search(prompt_prefix)
    if m is None:
        return prompt_prefix, None
    return prompt_prefix[:m.start()] + prompt_prefix[m.end():], m.start()


def _assert_block_before_the_form(code: str, header: str, at: int | None) -> None:
    """The context block, as the engine places it: right before the top-level form at the cursor
    (after the file label when that form starts before the prefix's cut), or before the cursor's
    line when the cursor is in no form."""
    if at is None:
        return
    following = code[at:]
    assert at == len(header) or following.startswith("(") or "\n" not in following, following[:80]


def test_examples_reconstruct_the_source(corpus, generated):
    _, _, rows = generated
    fmt = _fmt()
    end, eof = fmt.tokens["eot"], fmt.tokens["eof"]
    n_fim = 0
    for row in rows["train"] + rows["valid"]:
        source = _source_of(corpus, row)
        start, stop = row["start"], row["end"]
        middle_src = source[start:stop]
        if row["order"] == "l2r":
            assert not any(tok in row["prompt"] for tok in fmt.tokens.values())
            assert row["completion"] in (middle_src, middle_src + eof)
            assert row["completion"].endswith(eof) == (stop == len(source))
            code, at = _strip_context(row["prompt"])
            header, kept = _strip_header(code, source, start)
            _assert_block_before_the_form(code, header, at)
            assert (kept + middle_src) == source[start - len(kept):stop]
            continue
        n_fim += 1
        assert row["completion"].endswith(end) and row["completion"].count(end) == 1
        middle = row["completion"][: -len(end)]
        assert middle == middle_src and middle.strip()
        pre, suf = _split_fim(row)
        code, at = _strip_context(pre)
        header, kept = _strip_header(code, source, start)
        _assert_block_before_the_form(code, header, at)
        assert source[stop:].startswith(suf)
        assert kept + middle + suf == source[start - len(kept): stop + len(suf)]
        # cuts fall on line boundaries (or the file's edges)
        assert start - len(kept) == 0 or source[start - len(kept) - 1] == "\n"
        if row["kind"] == "symbol":
            cur = analyze_cursor(source[:start] + source[stop:], start)
            assert cur.symbol_prefix and len(cur.symbol_prefix) >= 1
    assert n_fim > 100


def test_prompts_within_budget(corpus, split_path, tmp_path, generated):
    _, _, rows = generated
    budget = load_templates().budget.max_prompt_tokens
    for row in rows["train"] + rows["valid"]:
        assert fim_data.chars_estimate(row["prompt"]) <= budget
        assert row["prompt_tokens"] == fim_data.chars_estimate(row["prompt"])
    # a counter passed in is the one used, and a smaller budget is kept
    calls = []

    def count(s: str) -> int:
        calls.append(1)
        return len(s) // 2 + 1

    out = tmp_path / "small"
    make_examples(corpus, out, seed=1, split_path=split_path, count_tokens=count, max_prompt_tokens=300)
    assert calls
    for line in (out / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert count(row["prompt"]) <= 300


def test_kinds_and_lengths_spread(generated):
    _, stats, rows = generated
    train = rows["train"]
    kinds = Counter(r["kind"] for r in train)
    total = sum(kinds.values())
    assert total > 300
    for kind, share in DEFAULT_MIX.items():
        assert abs(kinds[kind] / total - share) < 0.07, (kind, kinds)
    assert stats["train"]["kinds"] == {k: kinds.get(k, 0) for k in fim_data.KINDS}
    orders = Counter(r["order"] for r in train if r["kind"] in ("symbol", "char"))
    assert orders["psm"] and orders["spm"]
    # form and char spans: every length bucket used, none dominating
    hist = Counter(bucket_label(r["end"] - r["start"]) for r in train if r["kind"] in ("psm", "spm", "char"))
    n = sum(hist.values())
    for lo, hi in LENGTH_BUCKETS:
        share = hist[bucket_label(lo)] / n
        assert 0.5 / len(LENGTH_BUCKETS) < share < 1.6 / len(LENGTH_BUCKETS), hist
    assert stats["train"]["span_chars_histogram"]["psm"][bucket_label(1)] > 0
    # symbol tails are short, and spread over the short buckets
    sym = Counter(bucket_label(r["end"] - r["start"]) for r in train if r["kind"] == "symbol")
    assert sym[bucket_label(1)] and sym[bucket_label(4)] and sym[bucket_label(12)]
    assert all(r["end"] - r["start"] <= fim_data.SYMBOL_MAX_TAIL for r in train if r["kind"] == "symbol")


def test_context_headers_from_the_same_package(corpus, generated):
    _, _, rows = generated
    header = re.compile(r"(?:^|>);; In namespace (\S+), the running program knows:$", re.M)
    var_line = re.compile(r"^;;   ([\w.\-]+)/(\S+) (.*)$", re.M)
    pkg_namespaces: dict[str, set[str]] = {}
    for path in (corpus / "files").rglob("*.clj*"):
        pkg = path.relative_to(corpus / "files").parts[0]
        ns = re.search(r"\(ns (\S+)", path.read_text()).group(1)
        pkg_namespaces.setdefault(pkg, set()).add(ns)
    with_ctx = [r for r in rows["train"] if r["context_lines"]]
    assert 0.5 < len(with_ctx) / len(rows["train"]) <= 0.9
    docs = 0
    for row in with_ctx:
        m = header.search(row["prompt"])
        assert m and m.group(1) in pkg_namespaces[row["package"]]
        for ns, name, rest in var_line.findall(row["prompt"]):
            if ns in ("clojure.string", "clojure.core"):
                continue  # clojure.core: from the corpus' clojure package, which every namespace refers
            assert ns in pkg_namespaces[row["package"]], (ns, row["package"])
            docs += " - Does " in rest
    assert docs > 20


def test_context_lines_like_the_engine():
    a = "(ns p.a)\n(defn helper\n  \"Helps. Really.\"\n  [x y] (+ x y))\n(defn- hidden [] 1)\n(defmacro mac [& body] `(do ~@body))\n"
    b = "(ns p.b (:require [p.a :as a :refer [helper]]))\n(defn user-fn [q]\n  (a/hel"
    pkg = index_package([a, b])
    lines = context_lines_for(b, analyze_cursor(b, len(b)), pkg)
    assert lines[0] == "p.a/helper ([x y]) - Helps."
    assert "aliases: a = p.a" in lines
    assert "referred: p.a/helper" in lines
    assert any(line.startswith("a/ (p.a): ") and "mac" in line and "hidden" not in line for line in lines)
    # a bare prefix matches the namespace's own vars and its refers
    c = "(ns p.a)\n(defn helper [x y] x)\n(defn hello [] 1)\n(defn f [] (hel"
    lines = context_lines_for(c, analyze_cursor(c, len(c)), index_package([c]))
    assert lines[:2] == ["p.a/hello ([])", "p.a/helper ([x y])"]
    # clojure.core's vars (from the corpus' clojure sources) come after the namespace's own
    core = index_package(["(ns clojure.core)\n(defn help-me \"Core help.\" [a] a)\n(defn- hel-private [] 1)\n"])
    lines = context_lines_for(c, analyze_cursor(c, len(c)), index_package([c]), core=core["clojure.core"])
    assert lines[:3] == ["p.a/hello ([])", "p.a/helper ([x y])", "clojure.core/help-me ([a]) - Core help."]
    # a namespace the package does not define: no context (the engine's "not loaded")
    d = "(ns elsewhere)\n(foo"
    assert context_lines_for(d, analyze_cursor(d, len(d)), pkg) == []


@pytest.mark.parametrize("bad", ["libbenchy-clojure", "libsecret-clojure"])
def test_refuses_bench_and_reserved_packages(tmp_path, split_path, bad):
    corpus = write_corpus(tmp_path / "c", {"libalpha-clojure": 1, bad: 1})
    with pytest.raises(ReservedPackage, match=bad):
        make_examples(corpus, tmp_path / "out", split_path=split_path)
    assert not (tmp_path / "out").exists()


def test_real_split_refuses_reserved(tmp_path):
    real = fim_data.Split.load  # the project's split.toml, when the checkout has it
    try:
        split = real()
    except FileNotFoundError:
        pytest.skip("no ../shared/corpus/split.toml here")
    bad = (split.reserved or split.bench)[0]
    corpus = write_corpus(tmp_path / "c", {split.train[0]: 1, bad: 1})
    with pytest.raises(ReservedPackage):
        make_examples(corpus, tmp_path / "out")


def test_main_data(corpus, split_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLJASSIST_SPLIT", str(split_path))
    parser = add_data_arguments(argparse.ArgumentParser())
    args = parser.parse_args([str(corpus), str(tmp_path / "o"), "--seed", "3", "--valid-share", "0.1"])
    assert main_data(args) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["seed"] == 3 and stats["valid_share"] == 0.1 and stats["train"]["examples"] > 0
    assert "train examples" in capsys.readouterr().out
    bad = write_corpus(tmp_path / "bad", {"libsecret-clojure": 1})
    assert main_data(parser.parse_args([str(bad), str(tmp_path / "o2")])) == 2
    assert "libsecret-clojure" in capsys.readouterr().err


def test_analysis_window_reads_like_the_whole_file():
    rng = random.Random(5)
    fns = [f"f{i}" for i in range(60)]
    text = _source(rng, "big.core", "big.util", fns, ["u1"])
    text += "\n(comment\n  (f1 1 2)\n  " + "(f2 3 4)\n  " * 200 + ")\n(defn tail [] (str/jo"
    util = "(ns big.util)\n(defn u1 \"U one.\" [x] x)\n(defn u2 [] 2)\n"
    pkg = index_package([text, util])
    spans = fim_data._FileSpans(text)
    reach = fim_data.load_context_settings().nearby_chars
    checked = 0
    for _ in range(60):
        start = rng.randrange(len(text) // 2, len(text))
        stop = min(len(text), start + rng.randint(0, 80))
        gap = text[:start] + text[stop:]
        view, at = spans.analysis_view(gap, start, reach)
        if len(view) == len(gap):
            continue
        checked += 1
        full, part = analyze_cursor(gap, start), analyze_cursor(view, at)
        assert (full.namespace, full.symbol_prefix, full.locals, full.in_string, full.in_comment) == \
               (part.namespace, part.symbol_prefix, part.locals, part.in_string, part.in_comment)
        assert context_lines_for(gap, full, pkg) == context_lines_for(view, part, pkg)
        # the top-level form at the cursor, where the prompt puts the context block
        if full.top_level is None:
            assert part.top_level is None
        else:
            assert full.top_level[0] == part.top_level[0] + start - at
    assert checked > 30


def test_core_vars_from_the_corpus_clojure_package(tmp_path):
    split = tmp_path / "split.toml"
    split.write_text(SPLIT.replace('train = [', 'train = ["libclojure-java", '), encoding="utf-8")
    corpus = write_corpus(tmp_path / "c", {"libalpha-clojure": 2})
    core = "(ns ^{:doc \"core\"} clojure.core)\n(def ^{:arglists '([x & more]) :doc \"Adds.\"} alpha-add (fn [x] x))\n" \
           "(defmacro alpha-when \"When.\" [test & body] test)\n(defn assoc-all \"Assocs all. More.\" [m kvs] m)\n"
    dest = corpus / "files" / "libclojure-java" / "clojure" / "core.clj"
    dest.parent.mkdir(parents=True)
    dest.write_text(core, encoding="utf-8")
    extra = corpus / "files" / "libalpha-clojure" / "alpha" / "extra.clj"
    extra.write_text("(ns alpha.extra)\n" + "(defn g [m] (assoc-all m 1))\n" * 40, encoding="utf-8")
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["files"].append({"package": "libalpha-clojure", "path": "alpha/extra.clj", "sha256": "", "lines": 41})
    manifest["files"].append({"package": "libclojure-java", "path": "clojure/core.clj", "sha256": "", "lines": 3})
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    index = fim_data._core_index(corpus, manifest["files"][-1:])
    assert index.vars["alpha-add"].arglists == "([x & more])" and index.vars["alpha-when"].macro
    make_examples(corpus, tmp_path / "out", split_path=split, chars_per_example=40, passes=2, valid_share=0)
    prompts = [json.loads(line)["prompt"] for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert any(";;   clojure.core/assoc-all ([m kvs]) - Assocs all." in p for p in prompts)
