"""`cljassist train corpus OUT_DIR`: the training corpus from the `train` packages of split.toml.

Every package is fetched through `cljassist.corpus` (apt-get download, cached with its version
and license), its Clojure sources are deduplicated across all packages by exact content hash
(the copy in the package with the fewest sources is kept, so a library owns its files rather than
a bundle that also ships them), near-empty files are dropped, and the rest are
copied to `OUT_DIR/files/<package>/<path inside the jar>`. `OUT_DIR/manifest.json` lists the
packages (version, license, counts), the kept files, the dropped files with the reason, and
totals. The same inputs give byte-identical output.

Only `train` packages are accepted: `bench` and `reserved` ones (and names split.toml does not
know) are refused before anything is fetched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from cljassist import corpus as corpus_mod
from cljassist.corpus import PackageMeta, SourceFile, Split
from cljassist.fileio import write_atomic
from cljassist.progress import Progress

MANIFEST_FORMAT = 1
# A file with fewer lines of code than this (not blank, not only a `;` comment) is near-empty.
MIN_CODE_LINES = 3


class CorpusError(Exception):
    """A refused request (bench/reserved/unknown package, or an OUT_DIR that is not ours)."""


@dataclass
class FetchedPackage:
    meta: PackageMeta
    sources: list[SourceFile]
    fetched: bool = False  # False when it came from the cache
    copyright: Path | None = None  # the package's Debian copyright file, when it has one


# (package, cache_dir, split) -> FetchedPackage; tests replace it with a fake.
Fetcher = Callable[[str, "Path | None", Split], FetchedPackage]


def fetch_package(package: str, cache_dir: Path | None, split: Split) -> FetchedPackage:
    root, fetched = corpus_mod.ensure_package(package, cache_dir, split, require_meta=True)
    cr = root / "copyright"
    return FetchedPackage(corpus_mod.read_meta(root), corpus_mod._sources_in(package, root), fetched,
                          cr if cr.is_file() else None)


def check_packages(requested: Iterable[str], split: Split) -> list[str]:
    """The requested packages, sorted and unique, if all are `train` packages; else CorpusError."""
    requested = sorted(set(requested))
    problems = []
    for pkg in requested:
        if pkg in split.reserved:
            problems.append(f"{pkg} is reserved for independent evaluation: never fetched or read")
        elif pkg in split.bench:
            problems.append(f"{pkg} is a bench package: never used for training")
        elif pkg not in split.train:
            problems.append(f"{pkg} is not a train package of split.toml")
    if problems:
        raise CorpusError("refused: " + "; ".join(problems))
    if not requested:
        raise CorpusError("no packages given")
    return requested


def code_lines(data: bytes) -> int:
    n = 0
    for line in data.splitlines():
        s = line.strip()
        if s and not s.startswith(b";"):
            n += 1
    return n


def count_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@dataclass
class BuildResult:
    manifest: dict
    failed: dict[str, str] = field(default_factory=dict)  # package -> error
    seconds: float = 0.0


def build_corpus(out_dir: Path, packages: Iterable[str] | None = None, cache_dir: Path | None = None,
                 split: Split | None = None, fetcher: Fetcher | None = None,
                 progress: Progress | None = None, min_code_lines: int = MIN_CODE_LINES) -> BuildResult:
    """Fetch, deduplicate and write the corpus; see the module docstring. Raises CorpusError."""
    t0 = time.monotonic()
    split = split or Split.load()
    names = check_packages(split.train if packages is None else packages, split)
    fetcher = fetcher or fetch_package
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    if progress is None:
        progress = Progress(len(names))

    fetched: dict[str, FetchedPackage] = {}
    failed: dict[str, str] = {}
    for i, pkg in enumerate(names, 1):
        if progress.tty:
            progress.update(f"{pkg} ...", done=i - 1)
        try:
            fp = fetcher(pkg, cache_dir, split)
        except Exception as exc:  # noqa: BLE001 - one failing package is reported, the rest go on
            failed[pkg] = str(exc)
            progress.update(pkg, done=i, note=f"FAILED: {exc}")
            continue
        fetched[pkg] = fp
        progress.update(pkg, done=i, note=f"{'fetched' if fp.fetched else 'cached'} {fp.meta.version}, "
                                          f"{len(fp.sources)} source files")
    progress.close()

    # Ownership of a file found in several packages goes to the package with the fewest sources
    # (ties by name): the library itself rather than a bundle that ships it (leiningen's uberjar
    # carries clojure, nREPL, data.xml, ...). Output order is by package name all the same.
    claim_order = sorted(fetched, key=lambda p: (len(fetched[p].sources), p))
    seen: dict[str, str] = {}  # sha256 -> "package/relative" of the kept copy
    verdicts: dict[str, dict[str, tuple[bytes, str, str | None, str | None]]] = {}
    for pkg in claim_order:
        verdicts[pkg] = {}
        for src in sorted(fetched[pkg].sources, key=lambda s: s.relative):
            data = src.path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            reason, dup_of = None, None
            if digest in seen:
                reason, dup_of = "duplicate", seen[digest]
            else:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    reason = "not-utf8"
                if reason is None and code_lines(data) < min_code_lines:
                    reason = "near-empty"
                if reason is None:
                    seen[digest] = f"{pkg}/{src.relative}"
            verdicts[pkg][src.relative] = (data, digest, reason, dup_of)

    pkg_rows, file_rows, dropped = [], [], []
    for pkg in names:
        if pkg not in fetched:
            continue
        fp = fetched[pkg]
        row = {"package": pkg, "version": fp.meta.version, "license": fp.meta.license,
               "licenses": list(fp.meta.licenses), "source_files": len(fp.sources),
               "files": 0, "lines": 0, "bytes": 0,
               "dropped_duplicate": 0, "dropped_near_empty": 0, "dropped_not_utf8": 0}
        for relative in sorted(verdicts[pkg]):
            data, digest, reason, dup_of = verdicts[pkg][relative]
            if reason:
                entry = {"package": pkg, "relative": relative, "sha256": digest, "reason": reason}
                if dup_of:
                    entry["duplicate_of"] = dup_of
                dropped.append(entry)
                row["dropped_" + reason.replace("-", "_")] += 1
                continue
            rel = f"files/{pkg}/{relative}"
            target = out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            lines = count_lines(data)
            file_rows.append({"package": pkg, "path": rel, "relative": relative, "sha256": digest,
                              "lines": lines, "bytes": len(data)})
            row["files"] += 1
            row["lines"] += lines
            row["bytes"] += len(data)
        pkg_rows.append(row)
        if fp.copyright is not None:
            (out_dir / "copyright").mkdir(exist_ok=True)
            shutil.copyfile(fp.copyright, out_dir / "copyright" / pkg)

    totals = {"packages": len(pkg_rows),
              "source_files": sum(r["source_files"] for r in pkg_rows),
              "files": len(file_rows),
              "lines": sum(r["lines"] for r in file_rows),
              "bytes": sum(r["bytes"] for r in file_rows),
              "dropped_duplicate": sum(r["dropped_duplicate"] for r in pkg_rows),
              "dropped_near_empty": sum(r["dropped_near_empty"] for r in pkg_rows),
              "dropped_not_utf8": sum(r["dropped_not_utf8"] for r in pkg_rows),
              "failed_packages": len(failed)}
    manifest = {"format": MANIFEST_FORMAT,
                "split_sha256": _split_sha(split),
                "min_code_lines": min_code_lines,
                "totals": totals,
                "packages": pkg_rows,
                "failed": [{"package": p, "error": failed[p]} for p in sorted(failed)],
                "files": file_rows,
                "dropped": dropped}
    write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return BuildResult(manifest, failed, time.monotonic() - t0)


def _split_sha(split: Split) -> str:
    """A fingerprint of the split the corpus was built under."""
    lists = {"train": list(split.train), "bench": list(split.bench), "reserved": list(split.reserved)}
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


def _prepare_out_dir(out_dir: Path) -> None:
    """OUT_DIR must be new, empty, or a corpus we wrote before (then its files/ is replaced)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise CorpusError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / "manifest.json").exists():
            raise CorpusError(f"{out_dir} is not empty and holds no manifest.json: refusing to write there")
        for name in ("files", "copyright"):
            if (out_dir / name).exists():
                shutil.rmtree(out_dir / name)
    out_dir.mkdir(parents=True, exist_ok=True)


def summary(result: BuildResult) -> str:
    t = result.manifest["totals"]
    text = (f"corpus: {t['packages']} packages, {t['files']} files, {t['lines']} lines, {t['bytes']} bytes "
            f"(of {t['source_files']} source files: dropped {t['dropped_duplicate']} duplicates, "
            f"{t['dropped_near_empty']} near-empty, {t['dropped_not_utf8']} not UTF-8) in {result.seconds:.1f}s")
    if result.failed:
        text += "\nFAILED packages: " + ", ".join(f"{p} ({e})" for p, e in sorted(result.failed.items()))
    return text
