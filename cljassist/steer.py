"""Steering: where the user is typing a symbol, the names that can complete it become candidates.

The names come from what the cursor can see: its locals, the names the file defines, Clojure's
special forms, and, with a REPL that has the namespace loaded, the vars the namespace maps for the
typed prefix (``alias/name`` after an alias). Each name's rest (``en`` of ``when`` after ``wh``) is
scored by the model as a continuation of the prompt (`CompletionModel.score_continuations`, the
symbol ending there included), so it competes with the model's own candidates on the same
confidence; the ranking merges the two. A model that cannot score (a server) steers nothing.

The same names judge the model's candidates (`verify.resolves`): where they are every name the
symbol can be, a candidate completing it to another name does not resolve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from cljassist.budgets import REPL_MATCHES, STEER_SCORED
from cljassist.clojure_text.analysis import Analysis
from cljassist.clojure_text.cursor import DEFN_LIKE, FN_LIKE, FOR_LIKE, LET_LIKE, METHOD_HOSTS, CursorContext
from cljassist.clojure_text.gap import ends_token
from cljassist.clojure_text.references import SPECIAL_FORMS, SYMBOL
from cljassist.context import split_typed_symbol, unique
from cljassist.types import CompletionModel, Generation, Prompt

if TYPE_CHECKING:
    from cljassist.context import LiveContext

__all__ = ["KnownNames", "known_names", "steered_generations", "completed_symbol"]

# Heads of forms whose arguments are not all symbols to resolve: names being bound or defined,
# constants (`case`), quoted data, namespace clauses.
_NOT_REFERENCES = LET_LIKE | FOR_LIKE | FN_LIKE | DEFN_LIKE | METHOD_HOSTS | frozenset(
    ["letfn", "case", "condp", "quote", "ns", "catch", "defmethod", "defmulti", "defprotocol", "definterface",
     "declare", "comment", "import", "require", "use", "refer", "refer-clojure", "as->", "set!"])


@dataclass(frozen=True)
class KnownNames:
    """The names that complete the symbol being typed, as the user would go on typing them."""

    prefix: str  # the symbol typed so far
    names: tuple[str, ...]  # most likely first: locals, the file's definitions, the REPL's vars, special forms
    # every name the symbol can be here is among `names`: the REPL sent all its vars for the prefix,
    # and the symbol stands where a name is looked up (not one being bound, quoted or a constant)
    complete: bool

    def resolves(self, symbol: str) -> bool | None:
        """Whether ``symbol`` names something here; None where that is not known: the names are
        not all known (a name that is known then says nothing against the others, so it earns
        no rank over them), or it is a class, an interop form or another namespace's name."""
        if not self.complete:
            return None
        if symbol in self.names:
            return True
        name = symbol.rpartition("/")[2] if "/" in symbol[1:] else symbol
        judged = symbol.count("/") == self.prefix.count("/") and "." not in name and not name[:1].isupper()
        return False if judged else None


def known_names(analysis: Analysis, live: "LiveContext | None") -> KnownNames | None:
    """The names for the symbol being typed at ``analysis``'s cursor; None where no symbol is."""
    cursor = analysis.cursor
    prefix = cursor.symbol_prefix
    qualifier, _, bare = split_typed_symbol(prefix)
    if qualifier is None and bare is None and not (len(prefix) == 1 and SYMBOL.match(prefix)):
        return None  # nothing typed, a keyword, a number, a reader macro
    bare_names = () if qualifier is not None else (*cursor.locals, *analysis.file_defs)
    special = () if qualifier is not None else sorted(SPECIAL_FORMS)
    repl = live.names if live is not None and live.ns_loaded else ()
    names = unique(n for n in (*bare_names, *repl, *special) if n.startswith(prefix))
    complete = live is not None and live.ns_loaded and live.all_names and _looked_up(cursor, analysis.prefix)
    return KnownNames(prefix, tuple(names), complete)


def _looked_up(cursor: CursorContext, prefix_text: str) -> bool:
    """Whether the symbol at the cursor stands where Clojure resolves it: a call's head, or an
    argument of a form that evaluates its arguments."""
    inner = cursor.enclosing[0] if cursor.enclosing else None
    if inner is None or inner.opener not in ("(", "#(") or prefix_text[inner.start - 1: inner.start] in ("'", "`"):
        return False
    if cursor.symbol_start == inner.start + len(inner.opener):
        return True
    return inner.head is not None and inner.head not in _NOT_REFERENCES and not inner.head.startswith("def")


def completed_symbol(prefix: str, text: str) -> str:
    """The symbol that ``text`` typed after ``prefix`` makes: the prefix and the text up to the
    first character that ends a symbol."""
    end = next((i for i, ch in enumerate(text) if ends_token(ch)), len(text))
    return prefix + text[:end]


def steered_generations(model: CompletionModel, prompt: Prompt, known: KnownNames,
                        cancelled: Callable[[], bool] | None = None,
                        deadline_s: float | None = None) -> list[Generation]:
    """The rests of the known names, scored by the model as continuations of ``prompt`` that end
    the symbol there (the best STEER_SCORED of them, or fewer where ``deadline_s`` passes: the
    best one is always scored; none for a model that cannot score)."""
    texts = [n[len(known.prefix):] for n in known.names if len(n) > len(known.prefix)][: REPL_MATCHES.value]
    if not texts:
        return []
    scored = model.score_continuations(prompt, texts, STEER_SCORED.value, ends=ends_token, cancelled=cancelled,
                                       deadline_s=deadline_s)
    return [g for g in scored if g is not None]
