"""Finding the user's nREPL: an explicit ``HOST:PORT``, or the ``.nrepl-port`` file
that Leiningen, the Clojure CLI and ``nrepl.cmdline`` write in the project root."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from cljassist.errors import InputError

__all__ = ["PORT_FILE", "DEFAULT_HOST", "find_port_file", "parse_endpoint", "resolve_endpoint", "port_file_locator"]

PORT_FILE = ".nrepl-port"
# nREPL binds 127.0.0.1 by default; "localhost" may resolve to ::1 first and stall.
DEFAULT_HOST = "127.0.0.1"


def find_port_file(start: Path) -> Path | None:
    """The nearest ``.nrepl-port`` in ``start`` (a file or directory) or its ancestors."""
    start = Path(start).expanduser().absolute()
    directory = start if start.is_dir() else start.parent
    for candidate_dir in (directory, *directory.parents):
        candidate = candidate_dir / PORT_FILE
        if candidate.is_file():
            return candidate
    return None


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"7888"``, ``"host:7888"``, ``"[::1]:7888"`` or ``"nrepl://host:7888"`` → (host, port)."""
    raw = text
    text = text.strip()
    if text.startswith("nrepl://"):
        text = text[len("nrepl://") :].rstrip("/")
    host = DEFAULT_HOST
    if text.startswith("["):  # bracketed IPv6 literal
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ValueError(f"invalid nREPL endpoint {raw!r}: expected [IPV6]:PORT")
        host, port_text = text[1:close], text[close + 2 :]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if not host or ":" in host:
            raise ValueError(f"invalid nREPL endpoint {raw!r}: expected HOST:PORT or PORT")
    else:
        port_text = text
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(
            f"invalid nREPL endpoint {raw!r}: expected HOST:PORT or PORT, port 1-65535"
        )
    return host, int(port_text)


def resolve_endpoint(nrepl: str | None, near: Path | None) -> tuple[str, int] | None:
    """Where to connect: ``nrepl`` if given, else the port file nearest ``near``, else None.

    Raises InputError (a one-line message naming the source) if the explicit
    value or the port file's content is malformed.
    """
    if nrepl:
        try:
            return parse_endpoint(nrepl)
        except ValueError as e:
            raise InputError(str(e)) from None
    if near is None:
        return None
    port_file = find_port_file(near)
    if port_file is None:
        return None
    try:
        return parse_endpoint(port_file.read_text(encoding="utf-8", errors="replace"))
    except OSError as e:
        raise InputError(f"cannot read {port_file}: {e.strerror or e}") from None
    except ValueError as e:
        raise InputError(f"{port_file}: {e}") from None


def port_file_locator(near: Path) -> Callable[[], tuple[str, int] | None]:
    """Where the ``.nrepl-port`` nearest `near` points now, read afresh at each call (a restarted
    REPL writes its new port there); None when there is none, or it cannot be read or parsed."""

    def locate() -> tuple[str, int] | None:
        try:
            return resolve_endpoint(None, near)
        except InputError:
            return None

    return locate
