"""The shapes front-ends exchange with the engine: request fields in, reply maps out, and the
one-line JSON/EDN framing the daemon speaks.

Request fields (from the daemon's clients, the nREPL op `cljassist/complete`, the proxy):
  file, ns, n, buffer, and the text and cursor in one of three ways:
    code + line + column      whole buffer, 1-based line and column (characters)
    code with one <CURSOR>    whole buffer with the marker at the cursor
    prefix + suffix           the text before and after the cursor
    context + prefix          CIDER's shape: the top-level form with `__prefix__` where the
                              symbol being typed (`prefix`) stands
Each field's one-line description, as nREPL's describe lists it: resources/complete_op.json.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from cljassist.budgets import REQUEST_SUGGESTIONS
from cljassist.types import CompletionRequest, CompletionResult, WarmResult, suggestion_dict
from cljassist.errors import InputError

CIDER_PREFIX_PLACEHOLDER = "__prefix__"
MAX_SUGGESTIONS = REQUEST_SUGGESTIONS.value


def request_from_fields(fields: Mapping[str, Any]) -> tuple[CompletionRequest, str, int | None]:
    """(request, buffer id, n) from a request's fields; InputError names what is wrong."""
    file = text_field(fields, "file")
    namespace = text_field(fields, "ns")
    code = text_field(fields, "code")
    context = text_field(fields, "context")
    if code is not None:
        line, column = fields.get("line"), fields.get("column")
        if line is None and column is None:
            request = CompletionRequest.at_marker(code, file)
        else:
            request = CompletionRequest.at_line_column(code, int_field(fields, "line", 1), int_field(fields, "column", 1), file)
    elif context is not None and CIDER_PREFIX_PLACEHOLDER in context:
        symbol = text_field(fields, "prefix") or ""
        at = context.index(CIDER_PREFIX_PLACEHOLDER)
        after = context[at + len(CIDER_PREFIX_PLACEHOLDER):]
        request = CompletionRequest(context[:at] + symbol, after, file)
    elif "prefix" in fields:
        request = CompletionRequest(text_field(fields, "prefix") or "", text_field(fields, "suffix") or "", file)
    else:
        raise InputError("a completion request needs 'code' (with 'line' and 'column' or a <CURSOR> marker), "
                         "'prefix' and 'suffix', or CIDER's 'context' with __prefix__")
    if namespace:
        request = CompletionRequest(request.prefix, request.suffix, request.file, namespace)
    n = int_field(fields, "n", 1, MAX_SUGGESTIONS) if fields.get("n") is not None else None
    buffer = text_field(fields, "buffer") or file or "default"
    return request, buffer, n


def result_reply(result: CompletionResult) -> dict[str, Any]:
    """The reply map: suggestions best first, each with its text, score, raw confidence, checks and
    value/error; how many were withheld (and of those, for their score, and what the deadline cut);
    whether scores are calibrated."""
    suggestions = [suggestion_dict(s, score_digits=3) for s in result.suggestions]
    return {"suggestions": suggestions, "namespace": result.namespace, "ms": round(result.ms, 1),
            "repl": result.repl_label, "withheld": result.withheld, "below_min_score": result.below_min_score,
            "cut_by_deadline": result.cut_by_deadline, "calibrated": result.calibrated, "source": result.source}


def warm_reply(result: WarmResult) -> dict[str, Any]:
    """The reply map of a warm: the prompt tokens evaluated, and why none were where none were."""
    return {"warmed": result.warmed, **({"skipped": result.skipped} if result.skipped else {})}


def nrepl_safe(value: Any) -> Any:
    """Bencode has only strings, integers, lists and maps: checks become "true"/"false"/"unknown"
    (a check not run on purpose keeps its reason, "not checked (macro my.app/m)"), other floats
    strings with three decimals, and absent (None) map values are dropped."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if k == "checks" and isinstance(v, Mapping):
                out[k] = {ck: ("unknown" if cv is None else cv if isinstance(cv, str) else "true" if cv else "false")
                          for ck, cv in v.items()}
            elif v is not None:
                out[k] = nrepl_safe(v)
        return out
    if isinstance(value, (list, tuple)):
        return [nrepl_safe(v) for v in value if v is not None]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}"
    return value


# ---------------------------------------------------------------------------- line framing

def decode_line(line: bytes, allow_edn: bool = True) -> tuple[dict[str, Any], str]:
    """A message and its format ("json" or "edn"); EDN keywords become plain string keys.
    InputError for anything else, however deep or odd. `allow_edn` False: JSON only (EDN's parser is
    far slower on deep or token-dense text; the daemon reads EDN only from a line holding its token)."""
    try:
        text = line.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text:
        raise InputError("empty message")
    try:
        data, fmt = json.loads(text), "json"
    except RecursionError:
        raise InputError("nested too deeply") from None
    except ValueError as exc:
        if not allow_edn:
            raise InputError(f"not a JSON message: {exc}") from None
        try:
            import edn_format

            data, fmt = _from_edn(edn_format.loads(text)), "edn"
        except RecursionError:
            raise InputError("nested too deeply") from None
        except Exception as exc:  # edn_format raises several types
            raise InputError(f"not a JSON or EDN message: {exc}") from None
    if not isinstance(data, dict):
        raise InputError("a message must be a JSON object or an EDN map")
    return data, fmt


def encode_line(message: Mapping[str, Any], fmt: str) -> bytes:
    """One line of `message` in `fmt`. A string the client sent that is not valid Unicode (a lone
    surrogate in JSON's \\uD800 form, say, echoed in "id") goes back escaped, never as an error."""
    if fmt == "edn":
        import edn_format

        text = edn_format.dumps(_to_edn(message))
    else:
        text = json.dumps(message, ensure_ascii=False).replace("\n", "\\n")
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        if fmt == "json":
            return json.dumps(message).encode("ascii") + b"\n"
        return text.encode("utf-8", "backslashreplace") + b"\n"


def _from_edn(value: Any) -> Any:
    import edn_format

    if isinstance(value, edn_format.Keyword):
        return value.name
    if isinstance(value, Mapping):
        return {(k.name if isinstance(k, edn_format.Keyword) else k): _from_edn(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_from_edn(v) for v in value]
    return value


def _to_edn(value: Any) -> Any:
    import edn_format

    if isinstance(value, Mapping):
        return edn_format.ImmutableDict({edn_format.Keyword(k) if isinstance(k, str) else k: _to_edn(v)
                                         for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return edn_format.ImmutableList([_to_edn(v) for v in value])
    return value


def text_field(fields: Mapping[str, Any], key: str) -> str | None:
    """The string field `key` (None when absent); InputError when it is not valid Unicode text."""
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"'{key}' must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON's \uD800 escape decodes to a lone surrogate: not text
        raise InputError(f"'{key}' is not valid Unicode text (a lone surrogate at character {exc.start})") from None
    return value


def int_field(fields: Mapping[str, Any], key: str, low: int, high: int | None = None) -> int:
    """The integer field `key`, from `low` to `high` (None: no upper limit); InputError otherwise."""
    value = fields.get(key)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # bencode clients sometimes send numbers as strings
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise InputError(f"'{key}' must be an integer {bound}, got {value!r}")
    return value


__all__ = ["request_from_fields", "result_reply", "nrepl_safe", "decode_line", "encode_line", "text_field", "int_field"]
