"""Bad input gets a clear one-line error and a non-zero exit, before any model is loaded."""

import pytest

from cljassist.cli import EXIT_ERROR, EXIT_REPL_UNREACHABLE, main


@pytest.fixture
def clj(tmp_path):
    path = tmp_path / "a.clj"
    path.write_text("(ns a)\n(inc <CURSOR>)\n")
    return path


def run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_missing_file(capsys, tmp_path):
    code, err = run(capsys, "complete", str(tmp_path / "nope.clj"), "--no-repl")
    assert code == EXIT_ERROR and err == f"cljassist: {tmp_path / 'nope.clj'}: no such file"


def test_not_utf8(capsys, tmp_path):
    path = tmp_path / "bin.clj"
    path.write_bytes(b"(ns a)\n\xff\xfe")
    code, err = run(capsys, "complete", str(path), "--line", "1", "--column", "1", "--no-repl")
    assert code == EXIT_ERROR and "not UTF-8" in err and "\n" not in err


@pytest.mark.parametrize("line,column,what", [("9", "1", "line 9"), ("2", "40", "column 40"), ("0", "1", "line 0")])
def test_cursor_out_of_range(capsys, clj, line, column, what):
    code, err = run(capsys, "complete", str(clj), "--line", line, "--column", column, "--no-repl")
    assert code == EXIT_ERROR and "cursor out of range" in err and what in err


def test_no_marker_and_no_position(capsys, tmp_path):
    path = tmp_path / "b.clj"
    path.write_text("(ns b)\n")
    code, err = run(capsys, "complete", str(path), "--no-repl")
    assert code == EXIT_ERROR and "<CURSOR>" in err


def test_missing_model(capsys, clj, tmp_path):
    code, err = run(capsys, "complete", str(clj), "--no-repl", "--model", str(tmp_path / "missing.gguf"))
    assert code == EXIT_ERROR and "missing.gguf" in err


def test_explicit_repl_unreachable(capsys, clj):
    code, err = run(capsys, "complete", str(clj), "--nrepl", "127.0.0.1:1")
    assert code == EXIT_REPL_UNREACHABLE and "127.0.0.1:1" in err and "--no-repl" in err


def test_bad_case_file(capsys, tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("not json\n")
    code, err = run(capsys, "bench", str(path), "--no-repl")
    assert code == EXIT_ERROR and "line 1" in err


def test_nrepl_in_a_missing_directory_says_so(capsys, tmp_path):
    code, err = run(capsys, "nrepl", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere: no such directory" in err and "java" not in err


def test_bench_json_into_a_missing_directory_is_said_before_the_run(capsys, tmp_path):
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "a", "prefix": "(inc ", "suffix": ")", "middle": "1", "category": "arg"}\n')
    code, err = run(capsys, "bench", str(cases), "--no-repl", "--json", str(tmp_path / "no" / "out.json"))
    assert code == 2 and err.endswith("out.json: no such directory")
