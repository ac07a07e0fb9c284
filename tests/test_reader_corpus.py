"""Compare cljassist.clojure_text with the real Clojure reader on every train-package source.

One JVM (tests/clojure/read_forms.clj) reads all files and reports each top-level form's
offsets; Python must agree on whether each file is readable and on every form boundary.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cljassist.clojure_text import is_balanced, parse, scan, syntax_errors, top_level_forms

pytestmark = pytest.mark.corpus

HERE = Path(__file__).resolve().parent
READ_FORMS = HERE / "clojure" / "read_forms.clj"
CLASSPATH = ":".join(
    p
    for p in ("/usr/share/java/clojure.jar", "/usr/share/java/spec.alpha.jar", "/usr/share/java/core.specs.alpha.jar")
    if Path(p).exists()
)

# Genuine disagreements with Clojure's reader that are deliberately not emulated:
# (package, relative path) -> reason.
KNOWN_QUIRKS: dict[tuple[str, str], str] = {}


def _train_sources():
    from cljassist.corpus import Split, package_sources

    split = Split.load()
    files = []
    for pkg in split.train:
        assert pkg not in split.reserved
        files.extend(package_sources(pkg, split=split))
    return files


def _utf16_to_cp(text: str):
    """A function mapping UTF-16 offsets (as Java counts) to code point offsets."""
    if all(ord(c) <= 0xFFFF for c in text):
        return lambda i: i
    table = {}
    u = 0
    for i, c in enumerate(text):
        table[u] = i
        u += 2 if ord(c) > 0xFFFF else 1
    table[u] = len(text)
    return lambda i: table[i]


def _run_jvm(paths: list[Path]) -> list[tuple[bool, list[tuple[int, int]], str]]:
    proc = subprocess.run(
        ["java", "-Xss16m", "-cp", CLASSPATH, "clojure.main", str(READ_FORMS)],
        input="".join(f"{p}\n" for p in paths),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: list[tuple[bool, list[tuple[int, int]], str]] = [None] * len(paths)  # type: ignore[list-item]
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        idx, status, spans = int(parts[0]), parts[1], parts[2].split()
        pairs = [(int(spans[i]), int(spans[i + 1])) for i in range(0, len(spans), 2)]
        results[idx] = (status == "ok", pairs, parts[3] if len(parts) > 3 else "")
    assert all(r is not None for r in results), "JVM output is missing files"
    return results


@pytest.mark.skipif(shutil.which("java") is None or not Path("/usr/share/java/clojure.jar").exists(),
                    reason="needs java and clojure.jar")
def test_reader_matches_clojure_on_train_corpus():
    sources = _train_sources()
    assert sources, "no train sources found"
    jvm = _run_jvm([s.path for s in sources])

    n_forms = 0
    n_unreadable = 0
    mismatches: list[str] = []
    quirks_seen: list[str] = []
    for src, (jvm_ok, jvm_spans, message) in zip(sources, jvm):
        text = src.path.read_bytes().decode("utf-8", errors="replace")  # keep \r\n as Java sees it
        key = (src.package, src.relative)
        to_cp = _utf16_to_cp(text)
        spans = [(to_cp(a), to_cp(b)) for a, b in jvm_spans]
        # Python must never crash, whatever the file holds.
        py_spans = top_level_forms(text)
        errors = syntax_errors(text)
        parse(text, include_trivia=True)
        scan(text)
        py_ok = not errors
        problem = None
        if py_ok != jvm_ok:
            problem = f"verdict: python {'ok' if py_ok else errors[:2]} vs clojure {'ok' if jvm_ok else message}"
        elif jvm_ok and py_spans != spans:
            first = next((i for i, (a, b) in enumerate(zip(py_spans, spans)) if a != b), min(len(py_spans), len(spans)))
            problem = (f"forms differ at #{first}: python {py_spans[first:first + 2]} vs clojure {spans[first:first + 2]}"
                       f" ({len(py_spans)} vs {len(spans)} forms)")
        elif not jvm_ok:
            # both reject it: the forms Clojure read before failing must be forms for us too
            if py_spans[: len(spans)] != spans:
                problem = f"forms before the error differ: python {py_spans[:3]} vs clojure {spans[:3]}"
        if jvm_ok:
            n_forms += len(spans)
            assert is_balanced(text) or not jvm_ok
        else:
            n_unreadable += 1
        if problem:
            if key in KNOWN_QUIRKS:
                quirks_seen.append(f"{key}: {KNOWN_QUIRKS[key]}")
            else:
                mismatches.append(f"{src.package} {src.relative}: {problem}")
    print(
        f"\nreader corpus: {len(sources)} files, {n_forms} top-level forms, {n_unreadable} unreadable by Clojure, "
        f"{len(mismatches)} mismatches, {len(quirks_seen)} known quirks"
    )
    for q in quirks_seen:
        print("  quirk:", q)
    assert not mismatches, "\n".join(mismatches[:50])
