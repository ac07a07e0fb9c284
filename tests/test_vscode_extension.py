"""The VS Code extension (editors/vscode): its node tests against a real `cljassist serve` and the
session's shared nREPL, and its packaging as a .vsix."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = ROOT / "editors" / "vscode"
NODE_TESTS = sorted(str(p.relative_to(EXTENSION)) for p in (EXTENSION / "test").glob("*.test.js"))
SECURITY_TESTS = ["test/security.test.js"]  # hostile port files and peers; no daemon needed


def node_missing_reason() -> str | None:
    node = shutil.which("node")
    if node is None:
        return "node is not on PATH (apt-get install nodejs)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < 18:
        return f"node {version or '?'} has no test runner (`node --test` needs 18 or later)"
    return None


def run_node_tests(files: list[str], env: dict[str, str] | None = None) -> None:
    reason = node_missing_reason()
    if reason:
        pytest.skip(reason)
    assert files and all((EXTENSION / f).is_file() for f in files), files
    result = subprocess.run(["node", "--test", *files], cwd=EXTENSION, env={**os.environ, **(env or {})},
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node --test failed:\n{output[-8000:]}"
    assert re.search(r"^# fail 0$", output, re.M) and re.search(r"^# pass [1-9]", output, re.M), output[-3000:]


@pytest.mark.integration
def test_the_extension_passes_its_node_tests_against_a_real_daemon_and_nrepl(nrepl_server, default_model_file):
    run_node_tests([f for f in NODE_TESTS if f not in SECURITY_TESTS],
                   {"CLJASSIST_TEST_NREPL": f"{nrepl_server.host}:{nrepl_server.port}", "CLJASSIST_PYTHON": sys.executable})


@pytest.mark.security
def test_the_extension_follows_no_port_file_it_should_not_and_drops_a_peer_that_floods_it():
    run_node_tests(SECURITY_TESTS)


def test_package_sh_writes_a_vsix_of_the_extension_alone(tmp_path):
    out = tmp_path / "cljassist.vsix"
    result = subprocess.run(["bash", str(EXTENSION / "package.sh"), str(out)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "CLJASSIST_VSIX_BUILDER": "zip"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    manifest = json.loads((EXTENSION / "package.json").read_text(encoding="utf-8"))
    with zipfile.ZipFile(out) as vsix:
        names = set(vsix.namelist())
        vsixmanifest = vsix.read("extension.vsixmanifest").decode()
        packaged = json.loads(vsix.read("extension/package.json"))
    assert {"[Content_Types].xml", "extension.vsixmanifest", "extension/package.json", "extension/readme.md",
            "extension/" + manifest["main"].removeprefix("./")} <= names
    assert not any("/test/" in name or name.endswith(".sh") for name in names), names
    assert packaged == manifest
    assert (f'Id="{manifest["name"]}" Version="{manifest["version"]}" Publisher="{manifest["publisher"]}"'
            in vsixmanifest)
    assert f'Value="{manifest["engines"]["vscode"]}"' in vsixmanifest
    assert not list(EXTENSION.glob("*.vsix")), "the .vsix belongs where it was asked for"
