from cljassist.model.fim import load_fim_table
from cljassist.prompt import build_prompt, load_templates


def count(text):
    return len(text) // 3 + 1


def test_fim_prompt_keeps_both_sides_within_budget():
    fim = load_fim_table()["qwen2.5-coder"] if "qwen2.5-coder" in load_fim_table() else next(
        f for f in load_fim_table().values() if f.is_fim)
    prefix = "".join(f"(def a{i} {i})\n" for i in range(2000)) + "(inc "
    suffix = ")\n" + "".join(f"(def b{i} {i})\n" for i in range(2000))
    p = build_prompt(prefix, suffix, fim, count, max_prompt_tokens=600)
    assert p.tokens <= 600
    assert prefix.endswith(p.prefix) and suffix.startswith(p.suffix)
    assert p.prefix.startswith("(def a") and p.suffix.endswith("\n")  # cut on line boundaries
    assert p.text.index(p.prefix[-10:]) >= 0 and p.suffix[:5] in p.text


def test_left_to_right_prompt_has_no_suffix_and_context_as_comments():
    fim = load_fim_table()["left_to_right"]
    p = build_prompt("(ns a.b)\n(foo ", ")", fim, count, context_lines=["aliases: str = clojure.string"],
                     namespace="a.b", file_label="a/b.clj")
    assert p.suffix == "" and p.text.endswith("(foo ")
    assert ";; a/b.clj" in p.text and ";;   aliases: str = clojure.string" in p.text
    assert p.context_lines == ("aliases: str = clojure.string",)


def test_context_is_cut_to_its_budget_most_relevant_first():
    fim = load_fim_table()["left_to_right"]
    budget = load_templates().budget.max_context_tokens
    lines = [f"line {i} " + "x" * 60 for i in range(200)]
    p = build_prompt("(", ")", fim, count, context_lines=lines, namespace="n")
    assert 0 < len(p.context_lines) < 200 and p.context_lines[0] == lines[0]
    assert count("".join(p.context_lines)) <= budget
