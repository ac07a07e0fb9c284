"""Clojure sources from Debian packages, as `../shared/corpus/split.toml` assigns them.

Packages are fetched with `apt-get download` (no root needed), unpacked with `dpkg -x`, and the
.clj/.cljc/.cljs files inside their jars are extracted into a cache (`<cache>/<package>/src/`), with the package's version and license in
`<cache>/<package>/meta.json` and its Debian copyright file beside it. The `reserved` packages are
refused here, so no caller can read them by accident.
"""

from __future__ import annotations

import fcntl
import json
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


@dataclass(frozen=True)
class PackageMeta:
    """What the cache records about a fetched package (`<cache>/<pkg>/meta.json`)."""

    package: str
    version: str
    license: str  # short names joined by " AND ", or "unknown"
    licenses: tuple[str, ...]
    deb: str  # file name of the .deb the sources came from

    def to_json(self) -> dict:
        return {"package": self.package, "version": self.version, "license": self.license,
                "licenses": list(self.licenses), "deb": self.deb}

    @classmethod
    def from_json(cls, data: dict) -> "PackageMeta":
        return cls(data["package"], data.get("version", "unknown"), data.get("license", "unknown"),
                   tuple(data.get("licenses", ())), data.get("deb", ""))


def package_sources(package: str, cache_dir: Path | None = None, split: Split | None = None) -> list[SourceFile]:
    """The Clojure sources of one Debian package, fetched and extracted once, then cached."""
    root, _ = ensure_package(package, cache_dir, split, require_meta=False)
    return _sources_in(package, root)


# Build and data files of a library, not its code.
BUILD_FILES = frozenset({"project.clj", "data_readers.clj", "data_readers.cljc", "deps.edn"})
LOOSE_DIR = "_loose"  # where sources found outside the package's jars are extracted


def library_sources(package: str, cache_dir: Path | None = None, split: Split | None = None) -> list[SourceFile]:
    """The library's own code among the package's sources: those from its jars, without build files
    (what the public benchmark is made of)."""
    return [src for src in package_sources(package, cache_dir, split)
            if not src.relative.startswith(LOOSE_DIR + "/") and src.relative.rsplit("/", 1)[-1] not in BUILD_FILES]


def package_meta(package: str, cache_dir: Path | None = None, split: Split | None = None) -> PackageMeta:
    """Version and license of a package; a cache entry made before meta.json existed is re-fetched."""
    root, _ = ensure_package(package, cache_dir, split, require_meta=True)
    return read_meta(root)


def read_meta(root: Path) -> PackageMeta:
    return PackageMeta.from_json(json.loads((root / "meta.json").read_text()))


def ensure_package(package: str, cache_dir: Path | None = None, split: Split | None = None,
                   require_meta: bool = True) -> tuple[Path, bool]:
    """Make sure `<cache>/<package>` holds the extracted sources (and meta.json if `require_meta`).

    Returns the package's cache root and whether it had to be fetched now. Fetching happens in a
    temporary directory that replaces the old entry only when complete, under a per-package lock,
    so concurrent readers never see a half-extracted package.
    """
    split = split or Split.load()
    if package in split.reserved:
        raise ReservedPackage(f"{package} is reserved for independent evaluation and is never read here")
    cache = cache_dir or default_cache_dir()
    root = cache / package
    if _is_cached(root, require_meta):
        return root, False
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{package}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_cached(root, require_meta):
            return root, False
        tmp = cache / f".{package}.tmp-{os.getpid()}"
        try:
            _fetch_and_extract(package, tmp)
            (tmp / ".complete").write_text("ok\n")
            old = cache / f".{package}.old-{os.getpid()}"
            if root.exists():
                root.rename(old)
            tmp.rename(root)
            if old.exists():
                shutil.rmtree(old)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return root, True


def _is_cached(root: Path, require_meta: bool) -> bool:
    return (root / ".complete").exists() and (not require_meta or (root / "meta.json").exists())


def _sources_in(package: str, root: Path) -> list[SourceFile]:
    src_root = root / "src"
    return [
        SourceFile(package, p, p.relative_to(src_root).as_posix())
        for p in sorted(src_root.rglob("*"))
        if p.is_file() and p.suffix in CLOJURE_SOURCE_SUFFIXES
    ]


_apt_updated = False


def _apt_download(package: str, debs: Path) -> list[Path]:
    """`apt-get download`; on failure, one `apt-get update` per process (when root) and a retry."""
    global _apt_updated
    result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
    deb_files = sorted(debs.glob("*.deb"))
    if (result.returncode != 0 or not deb_files) and not _apt_updated and os.geteuid() == 0:
        _apt_updated = True
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
        result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        deb_files = sorted(debs.glob("*.deb"))
    if result.returncode != 0 or not deb_files:
        raise RuntimeError(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
    return deb_files


def _fetch_and_extract(package: str, root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    debs, unpacked, src = root / "deb", root / "unpacked", root / "src"
    for d in (debs, unpacked, src):
        d.mkdir(parents=True)
    deb_files = _apt_download(package, debs)
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
    for loose in sorted(unpacked.rglob("*")):
        if (loose.is_file() and not loose.is_symlink() and loose.suffix in CLOJURE_SOURCE_SUFFIXES
                and "/usr/share/doc/" not in loose.as_posix()):
            target = src / LOOSE_DIR / loose.relative_to(unpacked)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(loose, target)
    copyright_file = unpacked / "usr" / "share" / "doc" / package / "copyright"
    copyright_text = ""
    if copyright_file.is_file():
        copyright_text = copyright_file.read_text(encoding="utf-8", errors="replace")
        (root / "copyright").write_text(copyright_text, encoding="utf-8")
    deb = next((d for d in deb_files if d.name.startswith(f"{package}_")), deb_files[0])
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                             check=True).stdout.strip() or "unknown"
    licenses = parse_copyright_licenses(copyright_text)
    meta = PackageMeta(package, version, " AND ".join(licenses) if licenses else "unknown", licenses, deb.name)
    (root / "meta.json").write_text(json.dumps(meta.to_json(), indent=1) + "\n")
    shutil.rmtree(debs)
    shutil.rmtree(unpacked)


# Phrases that name a license in a copyright file that is not machine-readable (DEP-5).
_LICENSE_PHRASES = (
    ("Eclipse Public License - v 2.0", "EPL-2.0"),
    ("Eclipse Public License 2.0", "EPL-2.0"),
    ("Eclipse Public License", "EPL-1.0"),
    ("Apache License, Version 2.0", "Apache-2.0"),
    ("Apache License", "Apache-2.0"),
    ("MIT License", "MIT"),
    ("Permission is hereby granted, free of charge", "Expat"),
    ("BSD", "BSD"),
    ("GNU Lesser General Public License", "LGPL"),
    ("GNU General Public License", "GPL"),
)


def parse_copyright_licenses(text: str) -> tuple[str, ...]:
    """Short license names of the upstream sources, from a Debian copyright file (best effort).

    DEP-5 files: the `License:` short names of the `Files:` stanzas, except stanzas only about
    `debian/*` (the packaging), in order of first appearance. Other files: known phrases.
    """
    names: list[str] = []
    stanzas = [s for s in text.replace("\r\n", "\n").split("\n\n") if s.strip()]
    for stanza in stanzas:
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t"):
                if key is not None:
                    fields[key] += "\n" + line.strip()
                continue
            k, sep, v = line.partition(":")
            if sep and k and " " not in k:
                key = k.strip().lower()
                fields[key] = v.strip()
        if "files" not in fields or "license" not in fields:
            continue
        patterns = fields["files"].split()
        if patterns and all(p.startswith("debian/") for p in patterns):
            continue
        short = fields["license"].split("\n", 1)[0].strip()
        if short and short not in names:
            names.append(short)
    if names:
        return tuple(names)
    for phrase, name in _LICENSE_PHRASES:
        if phrase.lower() in text.lower() and name not in names:
            names.append(name)
            break
    return tuple(names)
