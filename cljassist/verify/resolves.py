"""The `resolves` check: where the user is typing a symbol, the name a candidate completes it to
is one that resolves at the cursor.

The names known for the typed prefix (`cljassist.steer.KnownNames`: locals, the file's own
definitions, special forms, and the vars the REPL maps for it) judge it. ``True``: the name is
among them. ``False``: it is not, and they are every name it could be (the REPL has the namespace
loaded and sent all its vars for the prefix, and the symbol stands where it is looked up), so the
candidate is withheld like one that does not compile. ``None``: not known (no REPL, the namespace
not loaded, more names than the REPL sends, a class or interop name), or no symbol is being typed.
It needs no REPL round trip, so it runs with REPL verification off too.
"""

from __future__ import annotations

from cljassist.steer import KnownNames, completed_symbol
from cljassist.types import Candidate

__all__ = ["resolves_check"]


def resolves_check(candidates: list[Candidate], known: KnownNames) -> None:
    """Record ``resolves`` on each balanced candidate; say why where the answer is no."""
    for c in candidates:
        if not c.text or c.checks.get("balanced") is not True:
            continue
        symbol = completed_symbol(known.prefix, c.text)
        c.checks["resolves"] = known.resolves(symbol)
        if c.checks["resolves"] is False:
            c.error = c.error or f"{symbol} does not resolve here"
