"""The nREPL op `cljassist/complete` as `describe` lists it.

Its parameters and replies are described once, in `cljassist/resources/complete_op.json`; the proxy
lists that description, and the Clojure middleware (`resources/nrepl_middleware.clj`, which must also
load on its own at a server's start-up) carries the same maps, checked equal by the tests. Each
answerer adds its own `doc` line: how it answers differs, the op's fields do not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["COMPLETE_OP", "DESCRIPTOR_RESOURCE", "op_fields", "op_descriptor"]

DESCRIPTOR_RESOURCE = Path(__file__).resolve().parents[1] / "resources" / "complete_op.json"

_FIELDS: dict[str, Any] = json.loads(DESCRIPTOR_RESOURCE.read_text(encoding="utf-8"))

COMPLETE_OP: str = _FIELDS["op"]


def op_fields() -> dict[str, Any]:
    """`requires`, `optional` and `returns`, shaped like nREPL's own `describe` entries (a copy)."""
    return json.loads(json.dumps({key: _FIELDS[key] for key in ("requires", "optional", "returns")}))


def op_descriptor(doc: str) -> dict[str, Any]:
    """The `describe` entry for an answerer that describes itself with `doc`."""
    return {"doc": doc, **op_fields()}
