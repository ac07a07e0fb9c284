"""`cljassist train fit` (issue 5, item 3): LoRA fine-tune of the GGUF base, on the CPU, a few steps.

The base model (SmolLM2-135M dequantized by transformers) is loaded once for the module; every
training run deep-copies it. Skipped, with the reason, when the `train` extra (torch, transformers,
peft) or the default model is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from cljassist.train.fit import (
    IGNORE,
    FitConfig,
    FitError,
    add_fit_arguments,
    build_example,
    config_from_args,
    epoch_batches,
    main_fit,
)

_MISSING = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]
needs_train_extra = pytest.mark.skipif(bool(_MISSING), reason=f"training extra not installed (pip install -e '.[train]'): "
                                       f"missing {', '.join(_MISSING)}")

SNIPPETS = [
    "(defn add [a b]\n  (+ a b))\n",
    "(ns app.core\n  (:require [clojure.string :as str]\n            [clojure.set :refer [union]]))",
    "(let [xs (range 10)]\n\t(reduce + (map inc xs)))  ; sum   of 1..10\n",
    "(defn greet [name]\n  (str \"Hello, \" name \"! λ é ü 日本 🎉\"))",
    "(->> coll (filter even?) (map #(* % %)) (into [])) #\"\\d+[a-z]*\" \\newline \\space ::kw/x 12345678 3.14e-10 1/3",
    "(defmacro unless [c & body]\n  `(if ~c nil (do ~@body)))\n\n\n    ^:private ^{:doc \"x\"} #?(:clj 1 :cljs 2)",
]


def _fim_example(i: int, rng: np.random.Generator) -> dict:
    s = SNIPPETS[i % len(SNIPPETS)]
    k = int(rng.integers(1, len(s) - 2))
    j = int(rng.integers(k + 1, min(len(s), k + 30) + 1))
    return {"prompt": f"<issue_start>;; app/core.clj\n{s[:k]}<issue_comment>{s[j:]}<issue_closed>",
            "completion": s[k:j] + "<|im_end|>", "kind": "char", "package": "p", "path": "a.clj"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fitdata")
    rng = np.random.default_rng(3)
    for name, n in (("train.jsonl", 24), ("valid.jsonl", 4)):
        with open(d / name, "w", encoding="utf-8") as f:
            for i in range(n):
                f.write(json.dumps(_fim_example(i, rng), ensure_ascii=False) + "\n")
    (d / "stats.json").write_text(json.dumps({"fim_family": "cljassist_smollm2"}))
    return d


@pytest.fixture(scope="module")
def base():
    if _MISSING:
        pytest.skip(f"training extra not installed (pip install -e '.[train]'): missing {', '.join(_MISSING)}")
    from cljassist.errors import ModelNotFound
    from cljassist.model.locate import default_model_path

    try:
        path = default_model_path()
    except ModelNotFound as e:
        pytest.skip(f"default model not installed: {e}")
    from cljassist.train.fit import load_base

    return load_base(path)


def _cfg(data_dir: Path, out: Path, **kw) -> FitConfig:
    opts = dict(max_len=128, batch_size=2, max_steps=3, save_every=2, eval_every=2, log_every=1, threads=1,
                device="cpu", seed=5, lr=1e-3)
    opts.update(kw)
    return FitConfig(data_dir=str(data_dir), out_dir=str(out), **opts)


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "steps.jsonl").read_text().splitlines())}


# ------------------------------------------------------------------------------------- pure parts

def test_build_example_masks_prompt_and_truncates_its_left():
    ex = build_example([1, 2, 3], [7, 8, 9], max_len=16)
    assert ex.input_ids == [1, 2, 3, 7, 8, 9]
    assert ex.labels == [IGNORE, IGNORE, IGNORE, 7, 8, 9]
    # too long: prompt tokens go from the left (after keep_first), the completion stays whole
    ex = build_example(list(range(100, 120)), [7, 8, 9], max_len=10, keep_first=1, min_prompt=4)
    assert ex.input_ids == [100] + list(range(114, 120)) + [7, 8, 9]
    assert ex.labels == [IGNORE] * 7 + [7, 8, 9]
    # a completion that leaves too little prompt is skipped, not cut
    assert build_example(list(range(50)), list(range(10)), max_len=12, min_prompt=4) is None
    assert build_example([1, 2], [], max_len=12) is None


def test_token_set_round_trip():
    from cljassist.train.fit import TokenSet

    exs = [build_example([1, 2, 3], [4, 5], 16), build_example([6], [7, 8, 9], 16), build_example([10, 11], [12], 16)]
    ts = TokenSet.concat([TokenSet.of(exs[:2]), TokenSet.of([]), TokenSet.of(exs[2:])])
    assert len(ts) == 3 and ts.lengths() == [5, 4, 3]
    assert [ts.example(i) for i in range(3)] == exs


def test_epoch_batches_deterministic_and_complete():
    lengths = [int(x) for x in np.random.default_rng(0).integers(5, 120, 203)]
    for bs, bt in ((8, 0), (8, 512)):
        a = epoch_batches(lengths, 0, 11, bs, bt)
        assert a == epoch_batches(lengths, 0, 11, bs, bt)
        assert a != epoch_batches(lengths, 1, 11, bs, bt)
        assert sorted(i for b in a for i in b) == list(range(len(lengths)))
        if bt:
            assert all(max(lengths[i] for i in b) * len(b) <= bt for b in a if len(b) > 1)
        else:
            assert all(len(b) == bs for b in a[:-1])


def test_cli_arguments_and_missing_data(tmp_path, capsys):
    p = add_fit_arguments(argparse.ArgumentParser())
    args = p.parse_args([str(tmp_path / "nodata"), str(tmp_path / "out"), "--max-len", "512", "--rank", "8",
                         "--targets", "q_proj,v_proj", "--max-minutes", "9", "--resume"])
    cfg = config_from_args(args)
    assert (cfg.max_len, cfg.rank, cfg.alpha, cfg.targets, cfg.max_minutes, cfg.resume, cfg.device) == \
        (512, 8, 32.0, ("q_proj", "v_proj"), 9.0, True, "auto")
    if not _MISSING:
        assert main_fit(args) == 2
        assert "train.jsonl" in capsys.readouterr().err


# ------------------------------------------------------------------------------ with the real base

@needs_train_extra
@pytest.mark.integration
def test_tokenizer_matches_llama_cpp(base, default_model):
    """Training prompts must tokenize exactly as the engine's prompts do at inference (llama.cpp)."""
    tok = base[1]
    texts = SNIPPETS + [
        "<issue_start>(defn f [x]\n  <issue_comment>)\n<issue_closed>",
        "(inc x))<|im_end|>",
        "rest of file\n<|endoftext|>",
        "<issue_start><issue_comment><issue_closed><|im_end|>",
        _fim_example(1, np.random.default_rng(0))["prompt"],
    ]
    for text in texts:
        assert tok.encode(text, bos=True) == default_model.tokenize(text, special=True, add_bos=True), text
        assert tok.encode(text) == default_model.tokenize(text, special=True, add_bos=False), text
    for marker, tid in (("<issue_start>", 8), ("<issue_comment>", 9), ("<issue_closed>", 10), ("<|im_end|>", 2),
                        ("<|endoftext|>", 0)):
        assert tok.encode(marker) == [tid] == default_model.tokenize(marker, special=True)


@needs_train_extra
@pytest.mark.integration
def test_labels_mask_the_real_prompt(base):
    from cljassist.train.fit import tokenize_rows

    tok = base[1]
    row = {"prompt": "<issue_start>(defn add [a b]\n  (<issue_comment> a b))<issue_closed>", "completion": "+<|im_end|>"}
    ts, skipped = tokenize_rows([row, row], tok, max_len=128)
    assert skipped == 0 and len(ts) == 2
    ex = ts.example(1)
    p = tok.encode(row["prompt"], bos=True)
    c = tok.encode(row["completion"])
    assert c[-1] == 2  # <|im_end|> ends the middle
    assert ex.input_ids == p + c
    assert ex.labels == [IGNORE] * len(p) + c
    assert tok.hf.decode([t for t in ex.labels if t != IGNORE]) == row["completion"]


@needs_train_extra
@pytest.mark.integration
def test_three_steps_checkpoint_and_exact_resume(base, data_dir, tmp_path):
    from cljassist.train.fit import run_fit

    full = tmp_path / "full"
    assert run_fit(_cfg(data_dir, full), base=base) == 0
    losses = _losses(full)
    assert sorted(losses) == [1, 2, 3] and all(np.isfinite(v) for v in losses.values())
    for step in (2, 3):
        ck = full / "checkpoints" / f"step-{step:06d}"
        for name in ("adapter.npz", "adapter.json", "trainer_state.pt", "state.json"):
            assert (ck / name).is_file(), (ck, name)
        state = json.loads((ck / "state.json").read_text())
        assert state["step"] == step and state["tokens_seen"] > 0 and state["wall_s"] > 0
        assert state["config"]["max_len"] == 128 and len(state["base_gguf_sha256"]) == 64
        assert {"epoch", "batch_pos"} <= set(state)
    meta = json.loads((full / "adapter.json").read_text())
    assert meta["format"] == 1 and meta["rank"] == 16 and meta["alpha"] == 32.0 and meta["step"] == 3
    assert meta["fim_family"] == "cljassist_smollm2" and meta["base_file_name"].endswith(".gguf")
    assert len(meta["targets"]) == 7
    assert len(list(full.glob("tokens-*.npz"))) == 1  # the tokenized data, cached for resumed chunks
    npz = np.load(full / "adapter.npz")
    assert len(npz.files) == 30 * 7 * 2
    a, b = npz["model.layers.3.self_attn.q_proj.lora_A"], npz["model.layers.3.self_attn.q_proj.lora_B"]
    assert a.dtype == np.float16 and a.shape == (16, 576) and b.shape == (576, 16)
    assert npz["model.layers.0.self_attn.k_proj.lora_B"].shape == (192, 16)
    assert npz["model.layers.0.mlp.down_proj.lora_A"].shape == (16, 1536)
    curve = [json.loads(x) for x in (full / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [2, 3]
    assert set(curve[0]) == {"step", "train_loss", "valid_loss", "valid_token_acc", "tokens_seen", "wall_s"}
    assert np.isfinite(curve[-1]["valid_loss"]) and 0 <= curve[-1]["valid_token_acc"] <= 1

    # the same run in two chunks: 2 steps, then --resume
    parts = tmp_path / "parts"
    assert run_fit(_cfg(data_dir, parts, chunk_steps=2), base=base) == 0
    assert sorted(_losses(parts)) == [1, 2]
    assert not (parts / "checkpoints" / "step-000003").exists()
    with pytest.raises(FitError, match="--resume"):
        run_fit(_cfg(data_dir, parts), base=base)
    with pytest.raises(FitError, match="lr was"):
        run_fit(_cfg(data_dir, parts, resume=True, lr=2e-3), base=base)
    assert run_fit(_cfg(data_dir, parts, resume=True), base=base) == 0
    resumed = _losses(parts)
    assert sorted(resumed) == [1, 2, 3]
    assert resumed[3] == pytest.approx(losses[3], abs=1e-6, rel=0)
    st_full = json.loads((full / "checkpoints/step-000003/state.json").read_text())
    st_parts = json.loads((parts / "checkpoints/step-000003/state.json").read_text())
    assert (st_full["tokens_seen"], st_full["epoch"], st_full["batch_pos"]) == \
        (st_parts["tokens_seen"], st_parts["epoch"], st_parts["batch_pos"])
    x, y = np.load(full / "adapter.npz"), np.load(parts / "adapter.npz")
    for k in x.files:
        np.testing.assert_allclose(x[k].astype(np.float32), y[k].astype(np.float32), atol=2e-3, rtol=0)


@needs_train_extra
@pytest.mark.integration
def test_time_budget_stops_cleanly(base, data_dir, tmp_path):
    from cljassist.train.fit import run_fit

    import gzip
    import shutil

    gz = tmp_path / "gzdata"  # .jsonl.gz data is read as well
    gz.mkdir()
    for name in ("train.jsonl", "valid.jsonl"):
        (gz / (name + ".gz")).write_bytes(gzip.compress((data_dir / name).read_bytes()))
    shutil.copy(data_dir / "stats.json", gz)
    out = tmp_path / "budget"
    # a budget already spent by the set-up: no step fits, no checkpoint is written, exit 0
    assert run_fit(_cfg(gz, out, max_steps=50, max_minutes=0.001), base=base) == 0
    assert not (out / "checkpoints").exists()
    (cache,) = out.glob("tokens-*.npz")
    z = np.load(cache)
    assert len(z["train_plen"]) == 24 and len(z["valid_plen"]) == 4


# ---------------------------------------------------------------------------------------- export

@needs_train_extra
def test_export_adapter_matches_merged_delta(tmp_path):
    """B @ A from adapter.npz, times alpha/r, is what peft adds to each HF weight (merge_and_unload)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from cljassist.train.fit import DEFAULT_TARGETS, export_adapter

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(DEFAULT_TARGETS),
                                          task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)  # peft starts B at zero: make the delta visible
    export_adapter(pm, tmp_path, {"base_gguf_sha256": "x" * 64, "base_file_name": "b.gguf", "fim_family": "f",
                                  "step": 7, "tokens_seen": 99})
    meta = json.loads((tmp_path / "adapter.json").read_text())
    assert meta == {"format": 1, "base_gguf_sha256": "x" * 64, "base_file_name": "b.gguf", "fim_family": "f",
                    "step": 7, "tokens_seen": 99, "rank": 4, "alpha": 8.0, "targets": list(DEFAULT_TARGETS)}
    npz = np.load(tmp_path / "adapter.npz")
    merged = pm.merge_and_unload().state_dict()
    names = sorted({k.rsplit(".", 1)[0] for k in npz.files})
    assert len(names) == 2 * 7
    for name in names:
        a = npz[f"{name}.lora_A"].astype(np.float32)
        b = npz[f"{name}.lora_B"].astype(np.float32)
        assert npz[f"{name}.lora_A"].dtype == np.float16
        delta = (merged[f"{name}.weight"] - base[f"{name}.weight"]).numpy()
        assert a.shape[0] == 4 and delta.shape == (b.shape[0], a.shape[1])
        np.testing.assert_allclose((8 / 4) * b @ a, delta, atol=5e-3, rtol=1e-2)
