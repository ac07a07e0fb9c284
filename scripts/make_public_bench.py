"""Regenerate `fixtures/bench/public.jsonl`, the project's public benchmark.

Cases come only from the `bench` packages of `shared/corpus/split.toml` (fetched and cached by
`cljassist.corpus.package_sources`). About 300 cases, ~50 per category, spread round-robin
across the packages and, inside a package, across its files; a share of each package's picks
are cross-file (`xref`) cases where it has any. Deterministic: fixed seed, sorted inputs.

    python scripts/make_public_bench.py [--out fixtures/bench/public.jsonl] [--per-category 50]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cljassist.bench.make_cases import CATEGORIES, assign_ids, interleave, make_cases, write_jsonl  # noqa: E402
from cljassist.corpus import Split, library_sources  # noqa: E402

SEED = 20240601
PER_FILE_LIMIT = 12  # candidates per file and category before the balanced pick
XREF_EVERY = 3  # where a package has cross-file cases, every 3rd pick is one


def _library_tree(package: str, dest: Path) -> Path:
    """Copy the package's jar sources (not loose copies, not build files) into `dest`."""
    for src in library_sources(package):
        target = dest / src.relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.path, target)
    return dest


def _package_order(cases: list[dict], rng: random.Random) -> list[dict]:
    """One package's cases of one category: across files round-robin, xref mixed in."""
    by_file: dict[str, list[dict]] = {}
    for c in cases:
        by_file.setdefault(c["file"], []).append(c)
    files = [by_file[f] for f in sorted(by_file)]
    for group in files:
        rng.shuffle(group)
    rng.shuffle(files)
    ordered = list(interleave(files))
    xref = [c for c in ordered if c["xref"]]
    plain = [c for c in ordered if not c["xref"]]
    out: list[dict] = []
    while xref or plain:
        for _ in range(XREF_EVERY - 1):
            if plain:
                out.append(plain.pop(0))
        if xref:
            out.append(xref.pop(0))
        elif not plain:
            break
    return out


def build(per_category: int, seed: int = SEED) -> list[dict]:
    split = Split.load()
    pool: dict[str, dict[str, list[dict]]] = {cat: {} for cat in CATEGORIES}
    with tempfile.TemporaryDirectory(prefix="cljassist-bench-") as tmp:
        for package in split.bench:
            tree = _library_tree(package, Path(tmp) / package)
            if not any(tree.rglob("*.clj*")):
                print(f"warning: {package}: no Clojure sources", file=sys.stderr)
                continue
            for case in make_cases(tree, package=package, per_file_limit=PER_FILE_LIMIT, seed=seed):
                pool[case["category"]].setdefault(package, []).append(case)
    chosen: list[dict] = []
    for cat in CATEGORIES:
        packages = sorted(pool[cat])
        rng = random.Random(f"{seed}|{cat}")
        rng.shuffle(packages)  # which packages get the extra round when quotas don't divide
        streams = [_package_order(pool[cat][p], random.Random(f"{seed}|{cat}|{p}")) for p in packages]
        picked = []
        for case in interleave(streams):
            if len(picked) >= per_category:
                break
            picked.append(case)
        picked.sort(key=lambda c: (c["package"], c["file"], c["prefix"].__len__()))
        chosen.extend(picked)
    chosen.sort(key=lambda c: (c["package"], CATEGORIES.index(c["category"]), c["file"]))
    return assign_ids(chosen)


def summary(cases: list[dict]) -> str:
    lines = [f"{len(cases)} cases, xref={sum(c['xref'] for c in cases)}"]
    by_cat = Counter(c["category"] for c in cases)
    lines.append("by category: " + ", ".join(f"{k}={by_cat[k]}" for k in CATEGORIES))
    by_pkg = Counter(c["package"] for c in cases)
    xref_pkg = Counter(c["package"] for c in cases if c["xref"])
    lines.append("by package:")
    for pkg in sorted(by_pkg):
        cats = Counter(c["category"] for c in cases if c["package"] == pkg)
        detail = " ".join(f"{k}={cats[k]}" for k in CATEGORIES if cats[k])
        lines.append(f"  {pkg:32s} {by_pkg[pkg]:3d}  xref={xref_pkg[pkg]:2d}  {detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "fixtures" / "bench" / "public.jsonl"))
    ap.add_argument("--per-category", type=int, default=50)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    cases = build(args.per_category, args.seed)
    write_jsonl(cases, Path(args.out))
    print(f"wrote {args.out}")
    print(summary(cases))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
