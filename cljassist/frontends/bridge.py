"""Putting the cljassist nREPL middleware into the user's running nREPL server.

The middleware (`cljassist/resources/nrepl_middleware.clj`, namespace `cljassist.nrepl.middleware`)
handles the op `cljassist/complete` by forwarding it to the daemon (`cljassist serve`).

How it gets in: nREPL 0.8 to 1.5 have the dynamic loader (op `add-middleware`). Its handler
resolves each middleware symbol with `requiring-resolve`, which tries `resolve` first, so a
namespace that already exists in the server resolves without being on the classpath. We therefore
`load-file` the middleware's source (its last form also records the namespace as loaded, so a later
`require` does not go looking for it), then `add-middleware` with the var's name, then `configure!`
it with the daemon's address and token. When `describe` already lists `cljassist/complete` (a
server configured at start-up, or injected before), the source is loaded again, which updates the
code the stack calls, and only `configure!` follows. A server without the dynamic loader (nREPL 1.6
and later, and others) keeps running without the op; docs/nrepl-middleware.md says how to add the
middleware at start-up.

On shutdown serve calls `release!` (the middleware forgets the daemon if it is still the one it was
pointed at); the middleware stays in the stack and answers "no daemon running" until another
`cljassist serve` configures it or a `.cljassist-port` is found. Taking it out with
`swap-middleware` is not done: that rebuilds the stack of a server someone else is using.

`python3 -m cljassist.frontends.bridge export DIR` writes the source as
DIR/cljassist/nrepl/middleware.clj, so DIR can go on a classpath for start-up configuration.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cljassist.budgets import MIDDLEWARE_INJECT, MIDDLEWARE_RELEASE
from cljassist.errors import CljassistError, ReplTimeout, ReplUnavailable
from cljassist.frontends.complete_op import COMPLETE_OP

__all__ = ["COMPLETE_OP", "MIDDLEWARE_NAMESPACE", "MIDDLEWARE_VAR", "MIDDLEWARE_RESOURCE", "InjectionFailed",
           "middleware_source", "export_middleware", "inject_middleware", "release_middleware"]

MIDDLEWARE_NAMESPACE = "cljassist.nrepl.middleware"
MIDDLEWARE_VAR = f"{MIDDLEWARE_NAMESPACE}/wrap-cljassist"
MIDDLEWARE_RESOURCE = Path(__file__).resolve().parents[1] / "resources" / "nrepl_middleware.clj"
CLASSPATH_PATH = "cljassist/nrepl/middleware.clj"  # where the namespace lives on a classpath
DOCS_HINT = "see docs/nrepl-middleware.md to add it at start-up, or use `cljassist proxy`"


class InjectionFailed(CljassistError):
    """The server has the dynamic loader, but putting the middleware in failed."""


def middleware_source() -> str:
    return MIDDLEWARE_RESOURCE.read_text(encoding="utf-8")


def export_middleware(classpath_root: Path) -> Path:
    """Write the middleware under `classpath_root` where `require` finds its namespace."""
    target = Path(classpath_root) / CLASSPATH_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(middleware_source(), encoding="utf-8")
    return target


def _nrepl_version(described: dict) -> str:
    versions = described.get("versions") or {}
    nrepl = versions.get("nrepl") if isinstance(versions, dict) else None
    if isinstance(nrepl, dict):
        return str(nrepl.get("version-string") or "?")
    return "?"


def inject_middleware(client, daemon_host: str, daemon_port: int, token: str,
                      timeout: float = MIDDLEWARE_INJECT.seconds) -> str:
    """Make the server behind `client` (a NreplClient) answer `cljassist/complete` through the
    daemon at daemon_host:daemon_port. Returns a status line: starting with "middleware " when the
    op now works, else saying why not and where the docs are (serve keeps running either way).
    Raises InjectionFailed (or ReplUnavailable/ReplTimeout) when the server refused it."""
    described = client.describe(timeout=timeout)
    ops = described.get("ops") or {}
    version = _nrepl_version(described)
    present = COMPLETE_OP in ops
    if not present and "add-middleware" not in ops:
        return (f"nREPL {version} has no dynamic middleware loader (op add-middleware): "
                f"cljassist/complete is not available there; {DOCS_HINT}")
    session = client.clone(timeout=timeout)
    try:
        _load_source(client, session, timeout)
        if not present:
            _add_middleware(client, session, timeout)
        _eval_ok(client, session, timeout, "configure the middleware",
                 f'({MIDDLEWARE_NAMESPACE}/configure! {{:host "{daemon_host}" :port {int(daemon_port)} '
                 f':token "{token}"}})')
    finally:
        try:
            client.close_session(session, timeout=timeout)
        except (ReplUnavailable, ReplTimeout):
            pass
    how = "already present, reloaded" if present else "added with add-middleware"
    return f"middleware {MIDDLEWARE_VAR} {how} in nREPL {version}; cljassist/complete is served"


def release_middleware(client, token: str, timeout: float = MIDDLEWARE_RELEASE.seconds) -> None:
    """Make the middleware forget this daemon (if it is still the one configured)."""
    code = (f"(when-let [release (resolve '{MIDDLEWARE_NAMESPACE}/release!)] "
            f'(release "{token}"))')
    client.eval(code, timeout=timeout)


def _load_source(client, session: str, timeout: float) -> None:
    loaded = client.load_file(middleware_source(), file_path=CLASSPATH_PATH, file_name="middleware.clj",
                              session=session, timeout=timeout)
    if not loaded.ok:
        raise InjectionFailed(f"loading {MIDDLEWARE_NAMESPACE} failed: {_first_line(loaded.err) or loaded.ex}")


def _add_middleware(client, session: str, timeout: float) -> None:
    replies = client.request("add-middleware", timeout=timeout, middleware=[MIDDLEWARE_VAR], session=session)
    status = {s for reply in replies for s in reply.get("status", ())}
    if "error" in status:
        unresolved = [m for reply in replies for m in reply.get("unresolved-middleware", ())]
        detail = f"unresolved {', '.join(unresolved)}" if unresolved else f"status {sorted(status)}"
        raise InjectionFailed(f"add-middleware failed: {detail}")


def _eval_ok(client, session: str, timeout: float, what: str, code: str) -> None:
    result = client.eval(code, session=session, timeout=timeout)
    if not result.ok:
        raise InjectionFailed(f"could not {what}: {_first_line(result.err) or result.ex}")


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def main(argv: list[str] | None = None) -> int:
    """`python3 -m cljassist.frontends.bridge path` prints the resource's path;
    `... export DIR` writes DIR/cljassist/nrepl/middleware.clj and prints DIR (a classpath root)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["path"]:
        print(MIDDLEWARE_RESOURCE)
        return 0
    if argv[:1] == ["export"] and len(argv) == 2:
        export_middleware(Path(argv[1]))
        print(Path(argv[1]).absolute())
        return 0
    print("usage: python3 -m cljassist.frontends.bridge path | export CLASSPATH_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
