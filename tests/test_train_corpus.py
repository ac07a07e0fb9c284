"""`cljassist train corpus`: dedupe, manifest, refusals, progress, cache metadata.

Unit tests use a fake package tree (the fetch is monkeypatched); the one `corpus`-marked test
builds the corpus of two small real train packages through apt-get (cached).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from cljassist import corpus as corpus_mod
from cljassist.corpus import PackageMeta, SourceFile, Split, parse_copyright_licenses
from cljassist.train import corpus_build
from cljassist.train.cli import main_train
from cljassist.train.corpus_build import CorpusError, FetchedPackage, Progress, build_corpus

SPLIT = Split(train=("liba-clojure", "libb-clojure", "libc-clojure"),
              bench=("libbench-clojure",), reserved=("libsecret-clojure",))

CODE = b"(ns a.core)\n\n(defn f [x]\n  (inc x))\n"
SHARED = b"(ns shared.util)\n\n(defn g [y]\n  (dec y))\n"


def _fake_tree(tmp_path: Path) -> dict[str, dict[str, bytes]]:
    return {
        "liba-clojure": {"a/core.clj": CODE, "shared/util.clj": SHARED, "a/empty.clj": b";; nothing\n(ns a.empty)\n\n"},
        "libb-clojure": {"shared/util.clj": SHARED, "b/core.cljs": b"(ns b.core)\n(def x 1)\n(def y 2)\n(def z 3)",
                         "b/latin1.clj": b"(ns b.latin1)\n;; caf\xe9\n(def a 1)\n(def b 2)\n"},
        "libc-clojure": {"_loose/usr/share/c/c.cljc": b"(ns c)\n(def a 1)\n(def b 2)\n"},
    }


class FakeFetcher:
    def __init__(self, tmp_path: Path, fail: set[str] = frozenset()):
        self.tree = _fake_tree(tmp_path)
        self.root = tmp_path / "cache"
        self.calls: list[str] = []
        self.fail = fail

    def __call__(self, package: str, cache_dir, split) -> FetchedPackage:
        self.calls.append(package)
        if package in self.fail:
            raise RuntimeError(f"apt-get download {package} failed")
        sources = []
        for rel, data in self.tree[package].items():
            p = self.root / package / "src" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            sources.append(SourceFile(package, p, rel))
        cr = self.root / package / "copyright"
        cr.write_text("Files: *\nLicense: EPL-1.0\n")
        meta = PackageMeta(package, "1.0-1", "EPL-1.0", ("EPL-1.0",), f"{package}_1.0-1_all.deb")
        return FetchedPackage(meta, sources, fetched=True, copyright=cr)


def _quiet() -> Progress:
    return Progress(0, stream=io.StringIO(), tty=False)


def test_dedupe_near_empty_and_manifest(tmp_path):
    fetcher = FakeFetcher(tmp_path)
    out = tmp_path / "out"
    result = build_corpus(out, split=SPLIT, fetcher=fetcher, progress=_quiet())
    m = json.loads((out / "manifest.json").read_text())
    assert m == result.manifest
    assert fetcher.calls == ["liba-clojure", "libb-clojure", "libc-clojure"]

    kept = [(f["package"], f["relative"]) for f in m["files"]]
    assert kept == [("liba-clojure", "a/core.clj"), ("liba-clojure", "shared/util.clj"),
                    ("libb-clojure", "b/core.cljs"), ("libc-clojure", "_loose/usr/share/c/c.cljc")]
    by_reason = {(d["package"], d["relative"]): d for d in m["dropped"]}
    assert by_reason[("libb-clojure", "shared/util.clj")]["reason"] == "duplicate"
    assert by_reason[("libb-clojure", "shared/util.clj")]["duplicate_of"] == "liba-clojure/shared/util.clj"
    assert by_reason[("liba-clojure", "a/empty.clj")]["reason"] == "near-empty"
    assert by_reason[("libb-clojure", "b/latin1.clj")]["reason"] == "not-utf8"

    for f in m["files"]:
        data = (out / f["path"]).read_bytes()
        assert f["path"] == f"files/{f['package']}/{f['relative']}"
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        assert f["bytes"] == len(data)
    assert next(f for f in m["files"] if f["relative"] == "b/core.cljs")["lines"] == 4  # no final newline
    assert not (out / "files" / "libb-clojure" / "shared").exists()
    assert not (out / "files" / "liba-clojure" / "a" / "empty.clj").exists()

    pkgs = {p["package"]: p for p in m["packages"]}
    assert pkgs["liba-clojure"]["version"] == "1.0-1" and pkgs["liba-clojure"]["license"] == "EPL-1.0"
    assert (pkgs["liba-clojure"]["files"], pkgs["liba-clojure"]["dropped_near_empty"]) == (2, 1)
    assert (pkgs["libb-clojure"]["files"], pkgs["libb-clojure"]["dropped_duplicate"],
            pkgs["libb-clojure"]["dropped_not_utf8"]) == (1, 1, 1)
    assert pkgs["liba-clojure"]["lines"] == CODE.count(b"\n") + SHARED.count(b"\n")
    t = m["totals"]
    assert t == {"packages": 3, "source_files": 7, "files": 4, "lines": sum(f["lines"] for f in m["files"]),
                 "bytes": sum(f["bytes"] for f in m["files"]), "dropped_duplicate": 1, "dropped_near_empty": 1,
                 "dropped_not_utf8": 1, "failed_packages": 0}
    assert (out / "copyright" / "liba-clojure").read_text().startswith("Files: *")


def test_duplicate_belongs_to_the_smaller_package(tmp_path):
    fetcher = FakeFetcher(tmp_path)
    fetcher.tree["libc-clojure"]["shared/util.clj"] = SHARED  # libc: 2 sources, liba and libb: 3
    m = build_corpus(tmp_path / "out", split=SPLIT, fetcher=fetcher, progress=_quiet()).manifest
    owners = [(f["package"], f["relative"]) for f in m["files"] if f["sha256"] == hashlib.sha256(SHARED).hexdigest()]
    assert owners == [("libc-clojure", "shared/util.clj")]
    dups = [(d["package"], d["duplicate_of"]) for d in m["dropped"] if d["reason"] == "duplicate"]
    assert dups == [("liba-clojure", "libc-clojure/shared/util.clj"), ("libb-clojure", "libc-clojure/shared/util.clj")]
    assert [f["package"] for f in m["files"]] == sorted(f["package"] for f in m["files"])


def test_output_is_deterministic(tmp_path):
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    build_corpus(out1, split=SPLIT, fetcher=FakeFetcher(tmp_path), progress=_quiet())
    build_corpus(out2, packages=["libc-clojure", "liba-clojure", "libb-clojure", "liba-clojure"], split=SPLIT,
                 fetcher=FakeFetcher(tmp_path), progress=_quiet())
    assert (out1 / "manifest.json").read_bytes() == (out2 / "manifest.json").read_bytes()
    # rebuilding into the same directory replaces it
    build_corpus(out1, packages=["liba-clojure"], split=SPLIT, fetcher=FakeFetcher(tmp_path), progress=_quiet())
    assert not (out1 / "files" / "libb-clojure").exists()
    assert json.loads((out1 / "manifest.json").read_text())["totals"]["packages"] == 1


def test_refuses_bench_reserved_and_unknown_before_fetching(tmp_path):
    fetcher = FakeFetcher(tmp_path)
    for bad, word in (("libbench-clojure", "bench"), ("libsecret-clojure", "reserved"), ("nope", "not a train")):
        with pytest.raises(CorpusError, match=word):
            build_corpus(tmp_path / "out", packages=["liba-clojure", bad], split=SPLIT, fetcher=fetcher,
                         progress=_quiet())
    assert fetcher.calls == []
    assert not (tmp_path / "out").exists()


def test_refuses_foreign_out_dir(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(CorpusError, match="no manifest.json"):
        build_corpus(tmp_path, split=SPLIT, fetcher=FakeFetcher(tmp_path), progress=_quiet())
    assert (tmp_path / "mine.txt").exists()


def _write_split(tmp_path: Path, monkeypatch) -> None:
    split_file = tmp_path / "split.toml"
    split_file.write_text('train = ["liba-clojure", "libb-clojure", "libc-clojure"]\n'
                          'bench = ["libbench-clojure"]\nreserved = ["libsecret-clojure"]\n')
    monkeypatch.setenv("CLJASSIST_SPLIT", str(split_file))


def test_cli_exit_codes(tmp_path, monkeypatch, capsys):
    _write_split(tmp_path, monkeypatch)
    fetcher = FakeFetcher(tmp_path)
    monkeypatch.setattr(corpus_build, "fetch_package", fetcher)

    def never(*a, **k):
        raise AssertionError("must not fetch")

    monkeypatch.setattr(corpus_mod, "_fetch_and_extract", never)
    assert main_train(["corpus", str(tmp_path / "o"), "--packages", "liba-clojure,libsecret-clojure"]) == 2
    err = capsys.readouterr().err
    assert "libsecret-clojure is reserved" in err
    assert main_train(["corpus", str(tmp_path / "o"), "--packages", "libbench-clojure"]) == 2
    assert "bench package" in capsys.readouterr().err
    assert fetcher.calls == []

    assert main_train(["corpus", str(tmp_path / "o"), "--packages", "liba-clojure,libb-clojure"]) == 0
    captured = capsys.readouterr()
    assert "2/2 packages  libb-clojure" in captured.err  # not a TTY: one line per package
    assert "dropped 1 duplicates, 1 near-empty, 1 not UTF-8" in captured.err
    assert captured.out.strip() == str(tmp_path / "o" / "manifest.json")

    assert main_train(["nope"]) == 2
    assert main_train([]) == 2


def test_failed_package_is_reported_and_exit_1(tmp_path, monkeypatch, capsys):
    _write_split(tmp_path, monkeypatch)
    monkeypatch.setattr(corpus_build, "fetch_package", FakeFetcher(tmp_path, fail={"libb-clojure"}))
    assert main_train(["corpus", str(tmp_path / "o")]) == 1
    assert "FAILED packages: libb-clojure" in capsys.readouterr().err
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert [p["package"] for p in m["packages"]] == ["liba-clojure", "libc-clojure"]
    assert m["failed"][0]["package"] == "libb-clojure"


def test_progress_bar_tty_and_lines():
    s = io.StringIO()
    p = Progress(4, stream=s, tty=True, width=8)
    p.update("honeysql", done=1)
    p.update("x", done=4)
    p.close()
    out = s.getvalue()
    assert "\r[##      ] 1/4 packages  honeysql" in out
    assert "\r[########] 4/4 packages  x" in out and out.endswith("\n")
    s = io.StringIO()
    p = Progress(2, stream=s, tty=False)
    p.update("a", note="cached")
    p.update("b")
    assert s.getvalue() == "1/2 packages  a  cached\n2/2 packages  b\n"


def test_parse_copyright_licenses():
    dep5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: foo

Files: *
Copyright: 2010 Someone
License: EPL-1.0

Files: src/vendored/*
Copyright: 2011 Other
License: Apache-2.0
 Licensed under the Apache License...

Files: debian/*
Copyright: 2020 Debian
License: GPL-2+

License: EPL-1.0
 Eclipse Public License - v 1.0
"""
    assert parse_copyright_licenses(dep5) == ("EPL-1.0", "Apache-2.0")
    assert parse_copyright_licenses("This package is under the Eclipse Public License.") == ("EPL-1.0",)
    assert parse_copyright_licenses("") == ()


def test_cache_refetches_entries_without_meta(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(package, root):
        calls.append(package)
        (root / "src" / "x").mkdir(parents=True)
        (root / "src" / "x" / "y.clj").write_text("(ns x.y)\n")
        (root / "meta.json").write_text(json.dumps(
            PackageMeta(package, "2.0-1", "MIT", ("MIT",), "d.deb").to_json()))

    monkeypatch.setattr(corpus_mod, "_fetch_and_extract", fake_fetch)
    old = tmp_path / "liba-clojure"
    (old / "src" / "x").mkdir(parents=True)
    (old / "src" / "x" / "y.clj").write_text("(ns x.y)\n")
    (old / ".complete").write_text("ok\n")
    # the sources API keeps using an old cache entry as it is
    assert [s.relative for s in corpus_mod.package_sources("liba-clojure", tmp_path, SPLIT)] == ["x/y.clj"]
    assert calls == []
    # metadata needs meta.json: re-fetched once, then cached
    assert corpus_mod.package_meta("liba-clojure", tmp_path, SPLIT).version == "2.0-1"
    assert corpus_mod.package_meta("liba-clojure", tmp_path, SPLIT).license == "MIT"
    assert calls == ["liba-clojure"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["liba-clojure"]
    with pytest.raises(corpus_mod.ReservedPackage):
        corpus_mod.package_meta("libsecret-clojure", tmp_path, SPLIT)


@pytest.mark.corpus
def test_real_corpus_two_small_train_packages(tmp_path):
    split = Split.load()
    pkgs = ["libat-at-clojure", "libclj-digest-clojure"]
    assert all(p in split.train for p in pkgs)
    result = build_corpus(tmp_path / "corpus", packages=pkgs, split=split, progress=_quiet())
    assert not result.failed
    m = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    assert [p["package"] for p in m["packages"]] == pkgs
    for p in m["packages"]:
        assert p["version"] not in ("", "unknown")
        assert p["license"] != "unknown"
        assert p["files"] >= 1 and p["lines"] > 50
    assert m["totals"]["files"] == len(m["files"]) >= 2
    for f in m["files"]:
        data = (tmp_path / "corpus" / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        assert f["path"].endswith((".clj", ".cljc", ".cljs"))
    assert {f["relative"] for f in m["files"]} >= {"overtone/at_at.clj", "digest.clj"}
