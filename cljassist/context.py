"""Live REPL context stage: what the running program knows about the cursor's namespace.

Runs on a tooling session of our own (cloned once), never on the user's session, and only reads:
`find-ns`, `ns-aliases` and the `completions` op. A namespace that is not loaded yields no context
(we never load it silently); `ensure_loaded` loads one when a caller asks for it explicitly.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import edn_format

from cljassist.errors import ReplTimeout, ReplUnavailable
from cljassist.repl.client import NreplClient

# Namespace names we are willing to splice into code we send; anything else is not a namespace.
_NS_NAME = re.compile(r"^[A-Za-z_*+!?<>=.\-][\w*+!?<>=.\-']*$")
MAX_COMPLETIONS = 12


@dataclass(frozen=True)
class LiveContext:
    namespace: str | None
    ns_loaded: bool
    lines: tuple[str, ...]  # most relevant first; the prompt stage decides how many fit
    ms: float


class ReplContextProvider:
    def __init__(self, client: NreplClient, timeout_s: float = 2.0):
        self.client = client
        self.timeout_s = timeout_s
        self._session: str | None = None
        self._generation = None

    @property
    def session(self) -> str:
        """Our tooling session; cloned again after the client reconnected to a restarted server."""
        generation = getattr(self.client, "connection_generation", None)
        if self._session is None or generation != self._generation:
            self._session = self.client.clone()
            self._generation = getattr(self.client, "connection_generation", None)
        return self._session

    def gather(self, namespace: str | None, symbol_prefix: str) -> LiveContext:
        started = time.perf_counter()
        if namespace is None or not _NS_NAME.match(namespace):
            return LiveContext(namespace, False, (), _ms(started))
        aliases = self._aliases(namespace)
        if aliases is None:
            return LiveContext(namespace, False, (), _ms(started))
        lines: list[str] = []
        if len(symbol_prefix) >= 2:
            names = [c.get("candidate", "") for c in self.client.completions(symbol_prefix, ns=namespace, session=self.session)]
            names = [n for n in names if n and n != symbol_prefix][:MAX_COMPLETIONS]
            if names:
                lines.append(f"names starting with {symbol_prefix}: " + " ".join(names))
        if aliases:
            lines.append("aliases: " + ", ".join(f"{a} = {n}" for a, n in sorted(aliases.items())))
        return LiveContext(namespace, True, tuple(lines), _ms(started))

    def _aliases(self, namespace: str) -> dict[str, str] | None:
        code = (
            f"(when-let [n (find-ns '{namespace})]"
            " (into {} (map (fn [[a t]] [(str a) (str (ns-name t))])) (ns-aliases n)))"
        )
        result = self.client.eval(code, session=self.session, timeout=self.timeout_s)
        if result.ex or not result.values:
            return None
        value = edn_format.loads(result.values[-1])
        return None if value is None else {str(k): str(v) for k, v in value.items()}

    def ensure_loaded(self, namespace: str) -> bool:
        """Explicit, opt-in: `require` a namespace so its context becomes available."""
        if not _NS_NAME.match(namespace):
            return False
        code = f"(try (require '{namespace}) true (catch Throwable _ false))"
        try:
            result = self.client.eval(code, session=self.session, timeout=max(self.timeout_s, 30.0))
        except (ReplTimeout, ReplUnavailable):
            return False
        return result.values[-1:] == ["true"]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
