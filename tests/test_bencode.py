"""The bencode wrapper: encoding, streaming decode, and the inputs that rule out
``nrepl-python-client`` 0.0.3's codec."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cljassist.repl.bencode import BencodeError, MessageStream, decode, encode


def decode_all(data: bytes) -> list[dict]:
    stream = MessageStream()
    messages = stream.feed(data)
    assert stream.buffered == 0
    return messages


# -- encoding -------------------------------------------------------------


def test_encode_sorts_keys_and_encodes_text_as_utf8():
    assert encode({"op": "eval", "code": "(+ 1 2)", "id": "1"}) == (
        b"d4:code7:(+ 1 2)2:id1:12:op4:evale"
    )


def test_encode_counts_string_length_in_utf8_bytes():
    assert encode({"s": "λ"}) == b"d1:s2:\xce\xbbe"
    assert encode({"s": "λ→ü"}) == b"d1:s7:\xce\xbb\xe2\x86\x92\xc3\xbce"
    assert encode({"s": "😀"}) == b"d1:s4:\xf0\x9f\x98\x80e"


def test_encode_empty_values_and_nesting():
    assert encode({"s": "", "l": [], "d": {}}) == b"d1:dde1:lle1:s0:e"
    assert encode({"a": [{"b": {}}, [], ""]}) == b"d1:ald1:bdeele0:ee"


def test_encode_ints_bools_bytes():
    assert encode({"line": 10, "neg": -3, "flag": True, "raw": b"\x00\xff"}) == (
        b"d4:flagi1e4:linei10e3:negi-3e3:raw2:\x00\xffe"
    )


# -- decoding -------------------------------------------------------------


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"d4:infodee", {"info": {}}),
        (b"d1:lle1:s0:e", {"l": [], "s": ""}),
        (b"d1:ald1:bdeele0:ee", {"a": [{"b": {}}, [], ""]}),
        (b"d5:valuei-42ee", {"value": -42}),
        (b"d5:value2:\xce\xbbe", {"value": "λ"}),
        (b"d3:out8:\xce\xbb\xe2\x86\x92\xc3\xbc\ne", {"out": "λ→ü\n"}),
        (b"d6:statusl4:done5:erroree", {"status": ["done", "error"]}),
    ],
)
def test_decode(data, expected):
    assert decode_all(data) == [expected]


def test_decode_invalid_utf8_is_replaced_not_fatal():
    assert decode_all(b"d3:out1:\xcee") == [{"out": "\ufffd"}]


def test_decode_accepts_keys_in_nrepl_java_order():
    # nREPL sorts map keys comparing *signed* Java bytes, so a non-ASCII key
    # (first byte >= 0x80, negative in Java) comes before "a".  fastbencode
    # rejects that as "dict keys disordered"; the wrapper still decodes it.
    data = b"d2:\xce\xbbi1e1:ai2ee"
    assert decode_all(data) == [{"λ": 1, "a": 2}]
    assert decode_all(b"d1:bi1e1:ai2ee") == [{"a": 2, "b": 1}]


@pytest.mark.parametrize("data", [b"x", b"e", b"dxe", b"d99999999999999999999999"])
def test_garbage_raises(data):
    with pytest.raises(BencodeError):
        MessageStream().feed(data)


def test_decode_single_value_function():
    assert decode(b"li1e0:de2:\xce\xbbe") == [1, "", {}, "λ"]
    with pytest.raises(BencodeError):
        decode(b"d1:ai1ee1:x")


# -- streaming ------------------------------------------------------------

MESSAGES = [
    {"id": "1", "info": {}, "status": ["done"]},
    {"id": "2", "value": "\"λ→ü\"", "ns": "user"},
    {"id": "2", "completions": [], "status": ["done"]},
    {"id": "3", "out": "", "nested": {"a": [[], {}, ""], "n": 123456789}},
]
WIRE = b"".join(encode(m) for m in MESSAGES)


def test_several_messages_in_one_read():
    assert decode_all(WIRE) == MESSAGES


def test_every_split_point():
    for cut in range(len(WIRE) + 1):
        stream = MessageStream()
        got = stream.feed(WIRE[:cut]) + stream.feed(WIRE[cut:])
        assert got == MESSAGES, cut
        assert stream.buffered == 0


def test_byte_at_a_time():
    stream = MessageStream()
    got = []
    for i in range(len(WIRE)):
        got += stream.feed(WIRE[i : i + 1])
    assert got == MESSAGES


def test_partial_input_stays_buffered():
    stream = MessageStream()
    first = encode(MESSAGES[0])
    assert stream.feed(first + b"d2:id") == [MESSAGES[0]]
    assert stream.buffered == len(b"d2:id")
    assert stream.feed(b"1:9e") == [{"id": "9"}]
    assert stream.buffered == 0


def test_large_message_in_chunks():
    big = {"completions": [{"candidate": f"sym-{i}-λ", "type": "var"} for i in range(3000)]}
    data = encode(big) * 2
    stream = MessageStream()
    got = []
    for i in range(0, len(data), 4096):
        got += stream.feed(data[i : i + 4096])
    assert got == [big, big]


text = st.text(max_size=12)
values = st.recursive(
    st.integers(min_value=-(2**63), max_value=2**63 - 1) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(text, values, max_size=5), min_size=1, max_size=4), st.data())
def test_roundtrip_with_random_splits(messages, data):
    wire = b"".join(encode(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=5)))
    stream = MessageStream()
    got, last = [], 0
    for cut in [*cuts, len(wire)]:
        got += stream.feed(wire[last:cut])
        last = cut
    assert got == messages


# -- why not nrepl-python-client 0.0.3 ---------------------------------------


def test_inputs_that_rule_out_nrepl_python_client():
    """``nrepl-python-client`` 0.0.3 (PyPI ``nrepl``) is not used; these are the
    concrete cases its codec gets wrong and ours must get right.

    * Its decoder treats an empty container/string as end-of-input, so an nREPL
      ``lookup`` reply for an unknown symbol, ``b'd4:infodee'`` (``{"info": {}}``),
      an empty list ``b'le'`` and the empty string ``b'0:'`` break it.
    * Its encoder writes ``len(str)`` - characters, not bytes - so ``"λ"``
      becomes ``b'1:\\xce\\xbb'`` and the server reads a truncated string
      followed by junk.  Our encoder writes ``b'2:\\xce\\xbb'``.
    """
    assert decode_all(b"d4:infodee") == [{"info": {}}]
    assert decode(b"le") == []
    assert decode(b"0:") == ""
    assert decode(b"de") == {}
    assert decode_all(b"d2:id1:16:statusl4:donee5:valuelee") == [
        {"id": "1", "status": ["done"], "value": []}
    ]
    assert decode(b"d2:id1:14:infodee") == {"id": "1", "info": {}}

    assert encode({"code": "λ"}) == b"d4:code2:\xce\xbbe"
    assert len("λ") == 1 and len("λ".encode()) == 2
    # The character-counted framing really is wrong: read as bencode it is not one value.
    with pytest.raises(BencodeError):
        decode(b"d4:code1:\xce\xbbe")
