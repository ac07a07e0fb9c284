"""The llama.vim peer: its request, the server's prompt, its cut and what llama.vim shows."""

from __future__ import annotations

import pytest

from cljassist.bench.peer import (LINES_AFTER, LINES_BEFORE, MAX_TOKENS, indent_stop, infill_prompt, peer_request,
                                  run_peer_case, shown_suggestion)
from cljassist.bench.run import _score
from cljassist.errors import InputError
from cljassist.model.fim import load_fim_table
from tests.fakes import ScriptedModel

QWEN = load_fim_table()["qwen25_coder"]


def test_request_takes_256_lines_before_and_64_after_with_the_cursor_line_split():
    before = "".join(f"(def a{i} {i})\n" for i in range(300))
    after = "".join(f"(def b{i} {i})\n" for i in range(100))
    request = peer_request(before + "(defn f [x]\n  (inc x", ") y)\n" + after)
    lines = request.input_prefix.splitlines()
    assert len(lines) == LINES_BEFORE and request.input_prefix.endswith("\n")
    assert lines[0] == "(def a45 45)" and lines[-2:] == ["(def a299 299)", "(defn f [x]"]
    assert request.prompt == "  (inc x" and request.n_indent == 2
    assert request.input_suffix.startswith(") y)\n(def b0 0)\n")
    assert request.input_suffix.endswith(f"(def b{LINES_AFTER - 1} {LINES_AFTER - 1})\n")


def test_a_whitespace_only_cursor_line_is_sent_empty():
    request = peer_request("(defn f [x]\n    ", "\n  x)\n")
    assert request.prompt == "" and request.n_indent == 0 and request.line_prefix == "    "
    assert request.input_suffix == "\n  x)\n\n"


def test_the_prompt_is_the_servers_repo_level_infill_and_is_not_healed():
    request = peer_request("(ns a)\n(inc ", "1)\n")
    prompt = infill_prompt(QWEN, request)
    assert prompt.text == ("<|repo_name|>myproject\n<|file_sep|>filename\n<|fim_prefix|>(ns a)\n"
                           "<|fim_suffix|>1)\n\n<|fim_middle|>(inc ")
    assert prompt.healed == ""
    with pytest.raises(InputError):
        infill_prompt(load_fim_table()["left_to_right"], request)


def test_n_indent_cuts_a_line_indented_less_than_the_cursor_line_after_its_indentation():
    stop = indent_stop(4)
    assert stop("(foo)\n    (bar)") is None
    assert stop("(foo)\n      (bar)\n  (baz)") == len("(foo)\n      (bar)\n  ")
    assert stop("(foo)\n  ") is None  # no content on the new line yet
    assert indent_stop(0)("x\ny") is None


def test_what_llama_vim_shows():
    request = peer_request("(let [a 1]\n  (+ a", ")\n  (next-line))\n")
    assert shown_suggestion(request, " 2\n\n") == " 2"
    assert shown_suggestion(request, ")") is None  # repeats the rest of the cursor line
    assert shown_suggestion(request, "   \n") is None
    blank = peer_request("(defn f [x]\n  ", "\n  (g x))\n")
    assert shown_suggestion(blank, "    (h x)") == "  (h x)"  # its indentation replaces the line's
    assert shown_suggestion(blank, "  (g x))") is None  # re-types the next non-blank line


def test_a_case_is_one_greedy_candidate_of_at_most_n_predict_tokens_scored_by_the_bench():
    model = ScriptedModel(["2)\n  (next-line))\n(def z 1)"], family="qwen25_coder")
    calls = []
    original = model.generate_candidates

    def recording(prompt, n, max_tokens, stop, **kw):
        calls.append((n, max_tokens))
        return original(prompt, n, max_tokens, stop, **kw)

    model.generate_candidates = recording
    case = {"id": "c1", "category": "arg", "prefix": "(let [a 1]\n  (+ a ", "suffix": ")\n  (next-line))\n",
            "middle": "2"}
    result = run_peer_case(model, case, _score)
    assert calls == [(1, MAX_TOKENS)]
    # no stop rule of ours: the whole reply up to n_indent's cut is shown, so it is not an exact match
    assert result.offered and result.suggestion == "2)\n  (next-line))" and not result.em
    assert model.prompts[0].startswith("<|repo_name|>myproject\n")
