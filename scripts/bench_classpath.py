#!/usr/bin/env python3
"""Print a classpath holding the sources of the `bench` packages (for a REPL the public benchmark
can load its namespaces into), plus the train packages they require at load time.

    cljassist nrepl /tmp/bench-repl --classpath "$(python3 scripts/bench_classpath.py)"
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cljassist.corpus import Split, package_sources  # noqa: E402

# Libraries the bench packages require that Debian ships as separate (train) packages.
LOAD_TIME_DEPENDENCIES = ["libring-core-clojure", "libring-codec-clojure", "libprismatic-schema-clojure",
                          "libriddley-clojure", "libcore-cache-clojure"]


def source_root(package: str) -> str | None:
    files = package_sources(package)
    if not files:
        return None
    first = files[0]
    return str(first.path)[: -len(first.relative)].rstrip("/")


def classpath_roots() -> list[str]:
    """The source roots of the bench packages and of what they require at load time."""
    split = Split.load()
    packages = list(split.bench) + [p for p in LOAD_TIME_DEPENDENCIES if p in split.train or p in split.bench]
    return [r for r in dict.fromkeys(source_root(p) for p in packages) if r]


def main() -> int:
    print(":".join(classpath_roots()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
