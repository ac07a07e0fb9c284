"""Clojure sources from Debian packages, as `../shared/corpus/split.toml` assigns them.

Packages are fetched with `apt-get download` (no root needed), unpacked with `dpkg -x`, and the
.clj/.cljc/.cljs files inside their jars are extracted into a cache. The `reserved` packages are
refused here, so no caller can read them by accident.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

CLOJURE_SOURCE_SUFFIXES = (".clj", ".cljc", ".cljs")


def default_split_path() -> Path:
    """`shared/corpus/split.toml` beside the project checkout (or $CLJASSIST_SPLIT)."""
    env = os.environ.get("CLJASSIST_SPLIT")
    if env:
        return Path(env)
    project_root = Path(__file__).resolve().parent.parent
    for candidate in (project_root.parent / "shared", project_root / "shared"):
        path = candidate / "corpus" / "split.toml"
        if path.exists():
            return path
    return project_root.parent / "shared" / "corpus" / "split.toml"


def default_cache_dir() -> Path:
    env = os.environ.get("CLJASSIST_CACHE")
    if env:
        return Path(env) / "debian-sources"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cljassist" / "debian-sources"


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    bench: tuple[str, ...]
    reserved: tuple[str, ...]

    @classmethod
    def load(cls, path: Path | None = None) -> "Split":
        data = tomllib.loads((path or default_split_path()).read_text())
        return cls(tuple(data["train"]), tuple(data["bench"]), tuple(data["reserved"]))


@dataclass(frozen=True)
class SourceFile:
    package: str
    path: Path  # absolute path of the extracted file
    relative: str  # path inside its jar, e.g. "honey/sql.cljc"


class ReservedPackage(ValueError):
    pass


def package_sources(package: str, cache_dir: Path | None = None, split: Split | None = None) -> list[SourceFile]:
    """The Clojure sources of one Debian package, fetched and extracted once, then cached."""
    split = split or Split.load()
    if package in split.reserved:
        raise ReservedPackage(f"{package} is reserved for independent evaluation and is never read here")
    root = (cache_dir or default_cache_dir()) / package
    done_marker = root / ".complete"
    if not done_marker.exists():
        _fetch_and_extract(package, root)
        done_marker.write_text("ok\n")
    src_root = root / "src"
    return [
        SourceFile(package, p, p.relative_to(src_root).as_posix())
        for p in sorted(src_root.rglob("*"))
        if p.is_file() and p.suffix in CLOJURE_SOURCE_SUFFIXES
    ]


def _fetch_and_extract(package: str, root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    debs, unpacked, src = root / "deb", root / "unpacked", root / "src"
    for d in (debs, unpacked, src):
        d.mkdir(parents=True)
    result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
    deb_files = list(debs.glob("*.deb"))
    if result.returncode != 0 or not deb_files:
        raise RuntimeError(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
    for deb in deb_files:
        subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
    for jar in sorted(unpacked.rglob("*.jar")):
        if jar.is_symlink():
            continue  # Debian ships versioned jars plus unversioned symlinks to them
        with zipfile.ZipFile(jar) as zf:
            for name in zf.namelist():
                if name.endswith(CLOJURE_SOURCE_SUFFIXES) and not name.startswith("META-INF/"):
                    target = src / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(name))
    # Some packages ship sources outside jars (e.g. /usr/share/<pkg>/...clj).
    for loose in unpacked.rglob("*"):
        if loose.is_file() and loose.suffix in CLOJURE_SOURCE_SUFFIXES and "/usr/share/doc/" not in loose.as_posix():
            target = src / "_loose" / loose.relative_to(unpacked)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(loose, target)
    shutil.rmtree(debs)
    shutil.rmtree(unpacked)
