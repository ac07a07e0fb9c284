"""`cljassist train ...`: a small dispatcher, one function per sub-command.

`cljassist.cli` hands over everything after "train": `main_train(argv[1:])`. To add a
sub-command: write `_add_<name>(sub)` that adds its parser and sets `func=<handler>`, and put it in
`_SUBCOMMANDS`. A handler takes the parsed args and returns the exit status.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_corpus(args: argparse.Namespace) -> int:
    from cljassist.corpus import ReservedPackage, Split
    from cljassist.train.corpus_build import CorpusError, build_corpus, summary

    packages = None
    if args.packages is not None:
        packages = [p.strip() for p in args.packages.split(",") if p.strip()]
    try:
        result = build_corpus(Path(args.out_dir), packages=packages,
                              cache_dir=Path(args.cache) if args.cache else None, split=Split.load())
    except (CorpusError, ReservedPackage) as exc:
        print(f"cljassist train corpus: {exc}", file=sys.stderr)
        return 2
    print(summary(result), file=sys.stderr)
    print(Path(args.out_dir) / "manifest.json")
    return 1 if result.failed else 0


def _add_corpus(sub) -> None:
    p = sub.add_parser("corpus", help="download the train packages of split.toml and build the training corpus",
                       description="Download the `train` packages of shared/corpus/split.toml (apt-get download), "
                                   "extract their Clojure sources, deduplicate, and write OUT_DIR/files/<package>/... "
                                   "and OUT_DIR/manifest.json. bench and reserved packages are refused.")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--packages", metavar="A,B", help="only these train packages (comma-separated)")
    p.add_argument("--cache", metavar="DIR",
                   help="package cache directory (default: $CLJASSIST_CACHE/debian-sources or "
                        "~/.cache/cljassist/debian-sources)")
    p.set_defaults(func=_cmd_corpus)


def _command(sub, name: str, add_arguments, handler, help: str, description: str | None = None) -> None:
    p = sub.add_parser(name, help=help, description=description)
    add_arguments(p)
    p.set_defaults(func=handler)


def _commands(sub, table) -> None:
    """`_command` for each (name, add_arguments, handler, help, description) of `table`."""
    for name, add_arguments, handler, help, description in table:
        _command(sub, name, add_arguments, handler, help, description)


def _add_data(sub) -> None:
    from cljassist.train.fim_data import add_data_arguments, main_data

    _command(sub, "data", add_data_arguments, main_data,
             help="make FIM training examples (train.jsonl, valid.jsonl) from a corpus",
             description="Training examples in the engine's own prompt format (prompts/), from a corpus made by "
                         "`cljassist train corpus`; deterministic with --seed; held-out files for validation.")


def _add_export(sub) -> None:
    from cljassist.train.export import add_parser

    add_parser(sub)


def _add_fit(sub) -> None:
    # imports only numpy until one runs
    from cljassist.train.fit import add_fit_arguments, add_pack_arguments, main_fit, main_pack

    _commands(sub, (
        ("pack", add_pack_arguments, main_pack,
         "tokenize FIM data once into a compact bundle (for a machine that only trains)",
         "Tokenize train.jsonl/valid.jsonl with the base's tokenizer into BUNDLE_DIR (bundle.npz, bundle.json, "
         "stats.json); `cljassist train fit BUNDLE_DIR ...` trains on it without tokenizing. Needs the 'train' extra."),
        ("fit", add_fit_arguments, main_fit, "LoRA fine-tune of the GGUF base on FIM data (needs the 'train' extra)",
         None),
    ))


def _add_gpu(sub) -> None:
    from cljassist.train.gpu import add_collect_arguments, add_prep_arguments, main_collect, main_prep

    _commands(sub, (
        ("gpu-prep", add_prep_arguments, main_prep,
         "prepare a GPU training run: base pieces, data and wheels in .gpu/, and the device calls",
         "Fill an ignored folder of this repository with what the GPU machine needs (the base GGUF in pieces "
         "that fit a call, the token bundle, wheels) and print the calls (docs/training/gpu_run.md)."),
        ("gpu-collect", add_collect_arguments, main_collect, "join and verify the adapter the GPU run left in $OUT",
         "Join the pieces the run's last call brought back, check them against SHA256SUMS, and print the LoRA "
         "GGUF's size and sha256 (what models.toml pins)."),
    ))


_SUBCOMMANDS = [_add_corpus, _add_data, _add_fit, _add_export, _add_gpu]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cljassist train", description="Build the training corpus and data, "
                                     "train and export our Clojure FIM model.")
    sub = parser.add_subparsers(dest="train_command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main_train(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main_train())
