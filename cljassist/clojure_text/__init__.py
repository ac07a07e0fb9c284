"""Reader-level Clojure text analysis: scanning, parsing and cursor context (pure Python)."""

from .cursor import CursorContext, EnclosingForm, analyze_cursor
from .reader import (
    COLLECTION_KINDS,
    PREFIX_KINDS,
    Node,
    ScanState,
    file_namespace,
    imbalance,
    is_balanced,
    namespace_of_form,
    parse,
    scan,
    syntax_errors,
    top_level_forms,
)

__all__ = [
    "CursorContext",
    "EnclosingForm",
    "analyze_cursor",
    "COLLECTION_KINDS",
    "PREFIX_KINDS",
    "Node",
    "ScanState",
    "file_namespace",
    "imbalance",
    "is_balanced",
    "namespace_of_form",
    "parse",
    "scan",
    "syntax_errors",
    "top_level_forms",
]
