"""Request fields -> CompletionRequest, reply maps, bencode-safe replies, JSON/EDN line framing."""

from __future__ import annotations

import pytest

from cljassist.errors import InputError
from cljassist.frontends.protocol import decode_line, encode_line, nrepl_safe, request_from_fields, result_reply
from cljassist.types import CompletionResult, Suggestion


def test_code_with_line_and_column():
    request, buffer, n = request_from_fields(
        {"code": "(ns a)\n(inc x)\n", "line": 2, "column": 5, "file": "/p/a.clj", "n": 2})
    assert (request.prefix, request.suffix) == ("(ns a)\n(inc", " x)\n")
    assert (buffer, n, request.file) == ("/p/a.clj", 2, "/p/a.clj")


def test_code_with_marker_prefix_suffix_and_namespace():
    request, buffer, n = request_from_fields({"code": "(map <CURSOR> xs)", "buffer": "b1", "ns": "user"})
    assert (request.prefix, request.suffix, request.namespace, buffer, n) == ("(map ", " xs)", "user", "b1", None)
    request, _, _ = request_from_fields({"prefix": "(let [a 1] (", "suffix": "))"})
    assert (request.prefix, request.suffix) == ("(let [a 1] (", "))")


def test_cider_context_shape():
    request, _, _ = request_from_fields({"context": "(defn f [coll] (__prefix__ coll))", "prefix": "map", "ns": "demo"})
    assert request.prefix == "(defn f [coll] (map"
    assert request.suffix == " coll))"
    assert request.namespace == "demo"


@pytest.mark.parametrize("fields, message", [
    ({}, "needs 'code'"),
    ({"code": "(a)", "line": 9, "column": 1}, "out of range"),
    ({"code": "(a)"}, "<CURSOR>"),
    ({"prefix": "(a", "n": 0}, "'n' must be an integer 1..10"),
    ({"prefix": 3}, "'prefix' must be a string"),
])
def test_bad_fields_say_what_is_wrong(fields, message):
    with pytest.raises(InputError, match=message):
        request_from_fields(fields)


def test_numbers_sent_as_strings_are_accepted():
    request, _, n = request_from_fields({"code": "(a)\n", "line": "1", "column": "3", "n": "2"})
    assert (request.prefix, n) == ("(a", 2)


def test_reply_and_its_bencode_safe_form():
    result = CompletionResult(
        [Suggestion("(inc x)", 0.71234, {"balanced": True, "reads": True, "compiles": None}, value="2")],
        ms=12.345, namespace="demo.core", repl="used")
    reply = result_reply(result)
    assert reply["suggestions"] == [{"text": "(inc x)", "score": 0.712, "value": "2",
                                     "checks": {"balanced": True, "reads": True, "compiles": None}}]
    safe = nrepl_safe(reply)
    assert safe["suggestions"][0]["checks"] == {"balanced": "true", "reads": "true", "compiles": "unknown"}
    not_checked = {"checks": {"balanced": True, "compiles": "not checked (macro my.app/m)"}}
    assert nrepl_safe(not_checked)["checks"] == {"balanced": "true", "compiles": "not checked (macro my.app/m)"}
    assert safe["suggestions"][0]["score"] == "0.712"
    assert safe["namespace"] == "demo.core"

    def only_bencode_types(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and only_bencode_types(x) for k, x in v.items())
        if isinstance(v, list):
            return all(only_bencode_types(x) for x in v)
        return isinstance(v, (str, bytes)) or (isinstance(v, int) and not isinstance(v, bool))

    assert only_bencode_types(safe)


@pytest.mark.parametrize("fmt", ["json", "edn"])
def test_line_framing_round_trips(fmt):
    message = {"id": 7, "text": "(str \"é\"\n  x)", "checks": {"reads": True, "compiles": None}, "list": [1, "a"]}
    line = encode_line(message, fmt)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decoded, got_fmt = decode_line(line)
    assert got_fmt == fmt
    assert decoded == message


def test_edn_keywords_become_string_keys_and_garbage_is_an_input_error():
    decoded, fmt = decode_line(b'{:op "complete" :token "t" :n 2 :nrepl-safe true}')
    assert fmt == "edn" and decoded == {"op": "complete", "token": "t", "n": 2, "nrepl-safe": True}
    with pytest.raises(InputError):
        decode_line(b"{:op")
    with pytest.raises(InputError, match="map"):
        decode_line(b"[1 2]")
