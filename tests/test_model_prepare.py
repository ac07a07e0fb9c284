"""The default model's Q8_0 copy: built once, checked by checksum, rebuilt when damaged, and the
shipped file used as it is when the build cannot run."""

from __future__ import annotations

import json

from cljassist.model.gguf_info import read_gguf_metadata
from cljassist.model.prepare import runtime_model_path


def test_the_q8_0_copy_is_built_once_and_reused(default_model_file, tmp_path):
    out = runtime_model_path(default_model_file, tmp_path)
    assert out != default_model_file and out.parent == tmp_path and out.suffix == ".gguf"
    meta = read_gguf_metadata(out)
    assert meta.get("general.file_type") == 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    assert meta.tokens == read_gguf_metadata(default_model_file).tokens  # same vocabulary
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["source"] == str(default_model_file) and len(sidecar["sha256"]) == 64
    built_at = out.stat().st_mtime_ns
    assert runtime_model_path(default_model_file, tmp_path) == out
    assert out.stat().st_mtime_ns == built_at  # not rebuilt


def test_a_damaged_copy_is_rebuilt(default_model_file, tmp_path):
    out = runtime_model_path(default_model_file, tmp_path)
    good = out.read_bytes()
    with open(out, "r+b") as f:
        f.seek(len(good) // 2)
        f.write(b"\x00" * 64)
    assert runtime_model_path(default_model_file, tmp_path) == out
    assert out.read_bytes() == good


def test_when_the_build_fails_the_shipped_file_is_used_and_said_so(default_model_file, tmp_path, monkeypatch, capsys):
    import cljassist.model.prepare as prepare

    def broken(source, out):
        raise RuntimeError("llama_model_quantize returned 1")

    monkeypatch.setattr(prepare, "quantize", broken)
    assert runtime_model_path(default_model_file, tmp_path) == default_model_file
    assert "could not re-encode it as q8_0: llama_model_quantize returned 1" in capsys.readouterr().err


def test_the_copy_loads_and_completes(default_model):
    assert default_model.path.name.endswith(".gguf") and ".q8_0-" in default_model.path.name
    out = default_model.generate_candidates("(defn add [a b]\n  (+ a", n=1, max_tokens=4, stop=lambda t: None)
    assert out and out[0].n_tokens >= 1

