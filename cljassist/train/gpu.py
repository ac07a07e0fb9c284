"""One LoRA run on a GPU machine lent for minutes: what goes there, in which calls, and what comes back.

The machine (docs/training/gpu_run.md) has no network; each call of the device tool sends the
working tree, at most 64 MiB with the folders it carries, and brings back at most 8 files of at most
16 MiB from ``$OUT``. The base GGUF (491 MB for Qwen2.5-Coder-0.5B) is larger than any one call, so
`prepare` (``cljassist train gpu-prep``) cuts it into pieces that each fit one call beside the
repository, puts the pre-tokenized data and the one wheel the machine lacks (``gguf``, which
transformers reads GGUF files with) into the first, writes the SHA256SUMS that the machine checks
every piece and the whole file against, and writes the calls themselves (PLAN.md, plan.json: the
tool's command, carry list and timeout for each). scripts/gpu_train.sh is what runs there: it
receives pieces; its last call puts the base together, trains (`cljassist train fit` on the
bundle, checkpoints, loss and validation loss printed) and leaves the adapter in ``$OUT`` as a
llama.cpp LoRA GGUF cut into pieces under the file limit, with its SHA256SUMS. `collect`
(``cljassist train gpu-collect``) joins and verifies them here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from cljassist.model.model_cache import sha256_file

MiB = 1 << 20
CALL_LIMIT = 64 * MiB  # what one call may send: the working tree and its carried folders
OUT_FILE_LIMIT = 16 * MiB  # one file brought back from $OUT
OUT_PIECE = 15 * MiB  # pieces of a file larger than that
MARGIN = 2 * MiB  # room for the repository to grow between prep and run
SUMS = "SHA256SUMS"
BASE_NAME = "base.gguf"
SCRIPT = "scripts/gpu_train.sh"
FIRST_CALL_TIMEOUT_S = 300  # a first call also waits for the machine to start
CALL_TIMEOUT_S = 120
TRAIN_TIMEOUT_S = 600


class GpuPrepError(Exception):
    """A one-line problem with what the run needs."""


def tracked_bytes(repo: Path) -> int:
    """The bytes of the repository's tracked and untracked-not-ignored files: what every call sends."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout
    total = 0
    for name in listed.split(b"\0"):
        path = repo / name.decode("utf-8", "surrogateescape")
        if name and path.is_file():
            total += path.stat().st_size
    return total


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def split_file(path: Path, sizes: list[int], out_dir: Path, stem: str) -> list[Path]:
    """`path` cut into consecutive pieces of `sizes` bytes (the last takes the rest), named
    ``<stem>.partNN`` in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pieces: list[Path] = []
    with open(path, "rb") as f:
        for i, size in enumerate(sizes):
            piece = out_dir / f"{stem}.part{i:02d}"
            with open(piece, "wb") as w:
                left = size
                while left > 0:
                    chunk = f.read(min(left, 8 * MiB))
                    if not chunk:
                        break
                    w.write(chunk)
                    left -= len(chunk)
            pieces.append(piece)
        if f.read(1):
            raise GpuPrepError(f"{path}: the pieces' sizes do not cover the file")
    return pieces


def write_sums(directory: Path, files: list[Path], whole: tuple[str, str] | None = None) -> Path:
    """``sha256sum -c``-style SHA256SUMS in `directory` for `files` (names relative to it), and for
    `whole` = (sha256, name): the file the pieces make."""
    lines = [f"{sha256_file(f)}  {f.relative_to(directory).as_posix()}" for f in files]
    if whole is not None:
        lines.append(f"{whole[0]}  {whole[1]}")
    path = directory / SUMS
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_sums(path: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise GpuPrepError(f"{path}: not a SHA256SUMS line: {line[:80]!r}")
        sums[name] = digest
    return sums


def join_pieces(pieces: list[Path], out: Path, sha256: str) -> Path:
    """Concatenate `pieces` into `out` and check the whole against `sha256`."""
    digest = hashlib.sha256()
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as w:
        for piece in pieces:
            with open(piece, "rb") as f:
                while chunk := f.read(8 * MiB):
                    digest.update(chunk)
                    w.write(chunk)
    if digest.hexdigest() != sha256:
        tmp.unlink()
        raise GpuPrepError(f"{out.name}: the joined pieces do not match their sha256 ({len(pieces)} pieces)")
    tmp.replace(out)
    return out


# ------------------------------------------------------------------------------------------ here


def prepare(out_dir: Path, bundle: Path, base: Path, wheels: list[Path], repo: Path,
            train_minutes: float = 6.5, max_steps: int = 0, call_limit: int = CALL_LIMIT) -> dict:
    """Fill `out_dir` (a folder of `repo` that git ignores) with what the run needs and write the
    calls (plan.json, PLAN.md). Returns the plan."""
    from cljassist.train.fit import BUNDLE_ARRAYS, BUNDLE_META

    out_dir = out_dir.resolve()
    repo = repo.resolve()
    if not out_dir.is_relative_to(repo):
        raise GpuPrepError(f"{out_dir} must be inside the repository {repo} (only the repository travels)")
    rel = out_dir.relative_to(repo).as_posix()
    out_dir.mkdir(parents=True, exist_ok=True)  # a pattern like /.gpu/ matches only a directory
    ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", rel], check=False).returncode == 0
    if not ignored:
        raise GpuPrepError(f"{rel} is not ignored by git: add it to .gitignore or .git/info/exclude "
                           "(carried folders must be ignored ones)")
    for name in (BUNDLE_META, BUNDLE_ARRAYS, "stats.json"):
        if not (bundle / name).is_file():
            raise GpuPrepError(f"{bundle} has no {name}: make it with `cljassist train pack`")
    meta = json.loads((bundle / BUNDLE_META).read_text(encoding="utf-8"))
    base_sha = sha256_file(base)
    if meta.get("base_gguf_sha256") != base_sha:
        raise GpuPrepError(f"{bundle} was tokenized for another base than {base} (sha256 {base_sha})")

    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "data").mkdir(parents=True)
    for name in (BUNDLE_META, BUNDLE_ARRAYS, "stats.json"):
        shutil.copyfile(bundle / name, out_dir / "data" / name)
    (out_dir / "whl").mkdir()
    for wheel in wheels:
        shutil.copyfile(wheel, out_dir / "whl" / wheel.name)

    room = call_limit - tracked_bytes(repo) - MARGIN
    first_room = room - _tree_bytes(out_dir / "data") - _tree_bytes(out_dir / "whl") - 4096
    if room < 8 * MiB or first_room < 0:
        raise GpuPrepError(f"the repository and the data leave {first_room / MiB:.1f} MiB of the "
                           f"{call_limit / MiB:.0f} MiB a call sends: make the bundle smaller (--max-train-tokens)")
    size = base.stat().st_size
    data_alone = first_room < MiB  # the data leave no room for a piece: they go in a call of their own
    sizes = [] if data_alone else [min(size, first_room)]
    while sum(sizes) < size:
        sizes.append(min(room, size - sum(sizes)))
    pieces = split_file(base, sizes, out_dir / "base", BASE_NAME)
    sums = write_sums(out_dir / "base", pieces, (base_sha, BASE_NAME))

    calls = []
    for i, piece in enumerate(pieces):
        carry = [f"{rel}/base/{piece.name}"]
        if i == 0:
            carry = [f"{rel}/data", f"{rel}/whl", f"{rel}/base/{SUMS}"] + carry
        calls.append({"carry": carry, "command": f"GPU_DIR={rel} bash {SCRIPT} receive",
                      "timeout_s": FIRST_CALL_TIMEOUT_S if i == 0 else CALL_TIMEOUT_S})
    if data_alone:
        calls.insert(0, {"carry": [f"{rel}/data", f"{rel}/whl", f"{rel}/base/{SUMS}"],
                         "command": f"GPU_DIR={rel} bash {SCRIPT} receive", "timeout_s": FIRST_CALL_TIMEOUT_S})
    calls[-1]["command"] = (f"GPU_DIR={rel} TRAIN_MINUTES={train_minutes:g} MAX_STEPS={max_steps} "
                            f"bash {SCRIPT} train")
    calls[-1]["timeout_s"] = TRAIN_TIMEOUT_S
    plan = {"dir": rel, "base": base.name, "base_sha256": base_sha, "base_pieces": len(pieces),
            "bundle": {k: meta.get(k) for k in ("train_examples", "train_tokens", "valid_examples", "max_len",
                                                 "fim_family")},
            "train_minutes": train_minutes, "max_steps": max_steps, "calls": calls}
    (out_dir / "plan.json").write_text(json.dumps(plan, indent=1) + "\n", encoding="utf-8")
    (out_dir / "PLAN.md").write_text(plan_text(plan), encoding="utf-8")
    return plan


def plan_text(plan: dict) -> str:
    lines = [f"# GPU run: {len(plan['calls'])} calls of the device tool's `run`, back to back",
             "",
             f"Base {plan['base']} ({plan['base_pieces']} pieces, sha256 {plan['base_sha256']}); data "
             f"{plan['bundle']['train_examples']} train examples ({plan['bundle']['train_tokens']:,} tokens), "
             f"max-len {plan['bundle']['max_len']}, family {plan['bundle']['fim_family']}; "
             f"training stops after {plan['train_minutes']:g} minutes at most.",
             "Make the calls one after the other without pausing (the machine is given back after 30 s idle,",
             "and with it every piece received). Each receive prints what the machine holds; the last call",
             "trains. Then: `cljassist train gpu-collect FILES_AT`.", ""]
    for i, call in enumerate(plan["calls"], 1):
        lines.append(f"{i}. run(command={json.dumps(call['command'])}, carry={json.dumps(call['carry'])}, "
                     f"timeout_s={call['timeout_s']})")
    return "\n".join(lines) + "\n"


def collect(files_at: Path, out_dir: Path) -> Path:
    """Join and verify what the run left in $OUT (`files_at` here): the LoRA GGUF, its adapter.json,
    the curve and the log, into `out_dir`. Returns the LoRA GGUF's path."""
    sums_path = files_at / SUMS
    if not sums_path.is_file():
        raise GpuPrepError(f"{files_at} has no {SUMS}: did the run's last call finish?")
    sums = read_sums(sums_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    lora = None
    for name, digest in sums.items():
        pieces = sorted(files_at.glob(f"{name}.part*"))
        if pieces:
            join_pieces(pieces, out_dir / name, digest)
        else:
            if sha256_file(files_at / name) != digest:
                raise GpuPrepError(f"{files_at / name} does not match its sha256")
            shutil.copyfile(files_at / name, out_dir / name)
        if name.endswith(".lora.gguf"):
            lora = out_dir / name
    if lora is None:
        raise GpuPrepError(f"{sums_path} lists no .lora.gguf")
    return lora


# ------------------------------------------------------------------------------------- there


def receive(gpu_dir: Path) -> list[str]:
    """Check the pieces the machine holds against SHA256SUMS; the names of those still missing.
    A damaged piece is removed (send it again) and is an error."""
    sums = read_sums(gpu_dir / "base" / SUMS)
    missing = []
    for name, digest in sums.items():
        if name == BASE_NAME:
            continue
        piece = gpu_dir / "base" / name
        if not piece.is_file():
            missing.append(name)
        elif sha256_file(piece) != digest:
            piece.unlink()
            raise GpuPrepError(f"{piece} was damaged in transit (removed): send it again")
    return missing


def assemble(gpu_dir: Path, out: Path) -> Path:
    missing = receive(gpu_dir)
    if missing:
        raise GpuPrepError(f"the machine lacks {len(missing)} base pieces ({', '.join(missing)}): make their "
                           "calls first (the machine was given back in between, or a call was skipped)")
    sums = read_sums(gpu_dir / "base" / SUMS)
    pieces = sorted(p for p in (gpu_dir / "base").glob(f"{BASE_NAME}.part*"))
    return join_pieces(pieces, out, sums[BASE_NAME])


def leave(files: list[Path], out: Path) -> list[Path]:
    """Copy `files` into $OUT (`out`), cutting those over the file limit into pieces, with a
    SHA256SUMS of the whole files. At most 8 files come back: the caller keeps the list short."""
    out.mkdir(parents=True, exist_ok=True)
    left: list[Path] = []
    lines = []
    for f in files:
        lines.append(f"{sha256_file(f)}  {f.name}")
        size = f.stat().st_size
        if size > OUT_FILE_LIMIT:
            left += split_file(f, [OUT_PIECE] * (-(-size // OUT_PIECE)), out, f.name)
        else:
            shutil.copyfile(f, out / f.name)
            left.append(out / f.name)
    (out / SUMS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    left.append(out / SUMS)
    if len(left) > 8:
        raise GpuPrepError(f"{len(left)} files for $OUT, of which only 8 come back")
    return left


# --------------------------------------------------------------------------------------- cli


def add_prep_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("bundle", metavar="BUNDLE_DIR", help="from `cljassist train pack`")
    p.add_argument("--base", default="qwen2.5-coder-0.5b", metavar="GGUF|NAME",
                   help="the base the bundle was tokenized for (default qwen2.5-coder-0.5b)")
    p.add_argument("--wheel", action="append", default=[], metavar="WHL",
                   help="a wheel the machine lacks (gguf: `pip download --no-deps gguf==0.19.0 -d DIR`)")
    p.add_argument("--out", default=".gpu", metavar="DIR", help="an ignored folder of this repository (.gpu)")
    p.add_argument("--train-minutes", type=float, default=6.5,
                   help="the training's time budget on the machine, model load included (6.5)")
    p.add_argument("--max-steps", type=int, default=400,
                   help="the length of the learning-rate schedule, in optimizer steps of 32768 tokens (400; "
                        "0: one epoch of the bundle)")
    return p


def main_prep(args: argparse.Namespace) -> int:
    from cljassist.errors import ModelNotFound
    from cljassist.train.fit import resolve_base

    try:
        base = resolve_base(args.base)
        wheels = [Path(w) for w in args.wheel]
        if not any(w.name.startswith("gguf-") for w in wheels):
            raise GpuPrepError("pass --wheel gguf-*.whl (the machine has no gguf; transformers reads GGUF with it)")
        repo = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                                   check=True).stdout.strip())
        plan = prepare(Path(args.out), Path(args.bundle), base, wheels, repo, args.train_minutes, args.max_steps)
    except (GpuPrepError, ModelNotFound, OSError, subprocess.CalledProcessError) as exc:
        print(f"cljassist train gpu-prep: {exc}", file=sys.stderr)
        return 2
    print(plan_text(plan), end="")
    return 0


def add_collect_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("files_at", metavar="FILES_AT", help="where the last call's $OUT files were copied")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", default="gpu-run",
                   help="where the joined adapter, curve and log go (gpu-run)")
    return p


def main_collect(args: argparse.Namespace) -> int:
    try:
        lora = collect(Path(args.files_at), Path(args.out_dir))
    except (GpuPrepError, OSError) as exc:
        print(f"cljassist train gpu-collect: {exc}", file=sys.stderr)
        return 2
    print(f"{lora}  size {lora.stat().st_size}  sha256 {sha256_file(lora)}")
    return 0


def main_device(argv: list[str]) -> int:
    """What scripts/gpu_train.sh calls on the machine: ``receive GPU_DIR``, ``assemble GPU_DIR OUT``,
    ``leave OUT FILE...``."""
    try:
        if argv[0] == "receive":
            missing = receive(Path(argv[1]))
            print(f"base pieces missing: {len(missing)}" + (f" ({', '.join(missing)})" if missing else ""))
        elif argv[0] == "assemble":
            print(assemble(Path(argv[1]), Path(argv[2])))
        elif argv[0] == "leave":
            for f in leave([Path(a) for a in argv[2:]], Path(argv[1])):
                print(f"{f.name} {f.stat().st_size}")
        else:
            raise GpuPrepError(f"unknown step {argv[0]!r}")
    except (GpuPrepError, OSError) as exc:
        print(f"gpu: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main_device(sys.argv[1:]))
