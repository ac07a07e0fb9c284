"""Settings: defaults, overridden by `.cljassist.edn` (project root, then home), then by CLI flags.

Example `.cljassist.edn`:
    {:model "/models/qwen2.5-coder-0.5b-q8_0.gguf"
     :candidates 3
     :max-new-tokens 64
     :nrepl "127.0.0.1:7888"}
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from cljassist.budgets import (
    BACKEND_TIMEOUT, CANDIDATES, CONTEXT_WINDOW, CONTEXT_WINDOW_MAX, DEADLINE, KEYSTROKE_CANDIDATES,
    KEYSTROKE_DEADLINE, KEYSTROKE_PROMPT_TOKENS, NEW_TOKENS, NEW_TOKENS_MAX, PROMPT_TOKENS_MIN, REPL_TIMEOUT, REQUEST_SUGGESTIONS,
    SETTING_TIMEOUT_MAX,
)
from cljassist.errors import InputError
from cljassist.fileio import read_source_file
from cljassist.model.registry import RegistryError, default_model, named_model, names_a_file

CONFIG_FILE_NAME = ".cljassist.edn"
# Files that mark the root of a Clojure project; the config is looked up there first.
PROJECT_MARKERS = (CONFIG_FILE_NAME, "deps.edn", "project.clj", "shadow-cljs.edn", "bb.edn", ".git")


@dataclass(frozen=True)
class Settings:
    model: str | None = None  # a model name (cljassist models) or a GGUF path; None: the default model
    candidates: int = CANDIDATES.value
    max_new_tokens: int = NEW_TOKENS.value
    n_ctx: int = CONTEXT_WINDOW.value
    max_prompt_tokens: int | None = None  # None: budgets.PROMPT_TOKENS (KEYSTROKE_DEFAULTS as you type)
    threads: int | None = None
    nrepl: str | None = None  # "HOST:PORT"; None means discover .nrepl-port
    repl_timeout_ms: int = REPL_TIMEOUT.value
    deadline_ms: int | None = DEADLINE.value  # for generating candidates, after the prompt is read; None = no limit
    verify: bool = True  # check candidates in the REPL when one is connected
    show_failing: bool = False  # show candidates that failed a REPL check, with their error
    eval_mode: str = "off"  # "off" | "safe": evaluate allowlisted pure forms (opt-in only)
    # Per-keystroke speed: type-through and recent-result caches, and keeping the model's
    # evaluated prompt between requests. Off only for the naive baseline of `bench --typing`.
    cache: bool = True
    reuse_prompt: bool = True
    prefetch: bool = False  # after an accepted suggestion, compute the next one while the user reads
    # REPL vars matching the symbol being typed, in the context block. They change with nearly every
    # keystroke inside a symbol, and a changed block means evaluating the prompt again from there.
    # None: on, except for the as-you-type front-ends (KEYSTROKE_DEFAULTS).
    context_matches: bool | None = None
    # Token healing (local models): back the prompt off to a clean token boundary and have the
    # generation re-type what was backed off (cljassist/model/healing.py). A server cannot be held
    # to tokens, so a remote backend completes the prompt as it is whatever this says.
    token_healing: bool = True
    # Speculative decoding (local models, cljassist/model/speculate.py): tokens guessed by prompt
    # lookup, or by `draft_model` (a smaller model of the same tokenizer, a name or a path; None: no
    # draft) where lookup finds none, checked several to a pass. The suggestions are greedy
    # decoding's either way. None: on when a draft model is named. Off by default because here (two
    # cores, the 0.5B on one thread) a pass costs nearly as much per token as one token alone, and
    # the bench was slower with it (README, Speculative decoding).
    speculate: bool | None = None
    draft_model: str | None = None
    # For a model whose family has a repository layout (fim.toml [<family>.repo]): the prompt names
    # the project and carries the definitions the code at the cursor uses from other files
    # (cljassist/crossfile.py). Off: the template alone, as before the layout was used.
    repo_prompt: bool = True
    # Where a symbol is being typed, the names that complete it (locals, the file's, the REPL's) are
    # scored by the model as candidates, and a candidate naming nothing known is withheld where all
    # names are known (cljassist/steer.py, verify/resolves.py).
    steer: bool = True
    # Remote engine: a llama.cpp-compatible /infill or an OpenAI-compatible /v1/completions URL.
    backend: str | None = None
    backend_timeout_ms: int = BACKEND_TIMEOUT.value
    backend_fallback: bool = False  # when the server fails, complete with the local model instead
    # Suggestions scoring below this are held back (0: show everything). None: the threshold the
    # model's calibration chose (resources/models.toml), 0 for a model without one.
    min_score: float | None = None
    # The daemon records which suggestions were shown, accepted and kept, on this machine only
    # (cljassist/stats); `cljassist stats` sums them up. False: nothing is recorded.
    stats: bool = True
    config_file: str | None = field(default=None, compare=False)
    # Where `model` was named, for its errors: "--model", ":model in PATH"; None: the registry's default.
    model_origin: str | None = field(default=None, compare=False)

    def with_overrides(self, **overrides) -> "Settings":
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


# Front-ends that complete as you type (the daemon for editors, the nREPL proxy, the terminal prompt,
# `bench --typing`) use these where neither the config nor a flag says otherwise: the budgets' as-you-type
# prompt and deadline, and no REPL matches for the symbol being typed (measured here with bench --typing,
# default model: without them warm p95 went from 786 ms to 247 ms, suggestions matching the typed text
# from 10% to 5%), and one candidate (ghost text shows one; an editor asks for more with a request's `n`).
# Explicit requests (complete, watch, bench cases) keep the full budget, matches, candidates, no time limit.
KEYSTROKE_DEFAULTS = {"max_prompt_tokens": KEYSTROKE_PROMPT_TOKENS.value, "deadline_ms": KEYSTROKE_DEADLINE.value,
                      "context_matches": False, "candidates": KEYSTROKE_CANDIDATES.value}


def for_keystrokes(settings: Settings) -> Settings:
    """``settings`` with KEYSTROKE_DEFAULTS filled in where they are unset (None; a setting that always
    has a value, as `candidates`, gets its as-you-type default from `load_settings(keystrokes=True)`)."""
    return dataclasses.replace(settings, **{k: v for k, v in KEYSTROKE_DEFAULTS.items() if getattr(settings, k) is None})


@dataclass(frozen=True)
class Key:
    """One setting as the config file and the flags give it: its Settings field, the Python types
    accepted, and for a number the range accepted (`high` None: no upper limit)."""

    field: str
    types: tuple[type, ...]
    low: int | float | None = None
    high: int | float | None = None
    short_flag: str = ""  # e.g. "-n", when the command line also takes one
    high_is: str = ""  # what the upper limit is, when it is not a plain number of the budgets table

    @property
    def flag(self) -> str:
        long = "--" + self.field.replace("_", "-")
        return f"{self.short_flag}/{long}" if self.short_flag else long

    def range_text(self) -> str:
        if float in self.types:  # a fraction
            return f"between {self.low:g} and {self.high:g}"
        high = f" and at most {self.high}" + (f" ({self.high_is})" if self.high_is else "")
        return f"at least {self.low}" + (high if self.high is not None else "")

    def checked(self, value, origin: str):
        """`value` when it is in range; InputError naming `origin` (":key" in a file, "--flag") otherwise.
        None (unset) always passes."""
        if value is None or self.low is None:
            return value
        if not (self.low <= value and (self.high is None or value <= self.high)):
            raise InputError(f"{origin} must be {self.range_text()}, got {value}")
        return float(value) if float in self.types else value


_CORES = os.cpu_count() or 1
_MAX_MS = SETTING_TIMEOUT_MAX.value

# EDN keyword -> Key: the one table of what each setting accepts, for the config file and the flags alike.
_EDN_KEYS = {
    "model": Key("model", (str,)),
    "candidates": Key("candidates", (int,), 1, REQUEST_SUGGESTIONS.value, "-n"),
    "max-new-tokens": Key("max_new_tokens", (int,), 1, NEW_TOKENS_MAX.value),
    "n-ctx": Key("n_ctx", (int,), PROMPT_TOKENS_MIN.value + 1, CONTEXT_WINDOW_MAX.value),
    "max-prompt-tokens": Key("max_prompt_tokens", (int,), PROMPT_TOKENS_MIN.value, CONTEXT_WINDOW_MAX.value),
    # more threads than cores only spin on llama.cpp's barriers (see threads.default_threads)
    "threads": Key("threads", (int,), 1, _CORES, high_is="the cores here"),
    "nrepl": Key("nrepl", (str,)),
    "repl-timeout-ms": Key("repl_timeout_ms", (int,), 1, _MAX_MS),
    "deadline-ms": Key("deadline_ms", (int,), 0, _MAX_MS),  # 0: no limit, also as you type
    "verify": Key("verify", (bool,)),
    "show-failing": Key("show_failing", (bool,)),
    "eval": Key("eval_mode", (str,)),
    "cache": Key("cache", (bool,)),
    "prefetch": Key("prefetch", (bool,)),
    "context-matches": Key("context_matches", (bool,)),
    "token-healing": Key("token_healing", (bool,)),
    "speculate": Key("speculate", (bool,)),
    "draft-model": Key("draft_model", (str,)),
    "repo-prompt": Key("repo_prompt", (bool,)),
    "steer": Key("steer", (bool,)),
    "backend": Key("backend", (str,)),
    "backend-timeout-ms": Key("backend_timeout_ms", (int,), 1, _MAX_MS),
    "backend-fallback": Key("backend_fallback", (bool,)),
    "min-score": Key("min_score", (float, int), 0.0, 1.0),
    "stats": Key("stats", (bool,)),
}
_KEY_OF_FIELD = {key.field: key for key in _EDN_KEYS.values()}
EVAL_MODES = ("off", "safe")


def checked_flags(values: dict) -> dict:
    """Command-line values (Settings fields; None: not given), each range-checked as its flag."""
    for name, value in values.items():
        key = _KEY_OF_FIELD.get(name)
        if key is not None:
            key.checked(value, key.flag)
    return values


def check_window(settings: "Settings") -> None:
    """The context window must leave a prompt room beside the suggestion (the prompt is cut to what is
    left, see prompt.PromptLimits): InputError otherwise."""
    if settings.n_ctx - settings.max_new_tokens < PROMPT_TOKENS_MIN.value:
        raise InputError(f"the context window (n-ctx {settings.n_ctx}) must leave at least {PROMPT_TOKENS_MIN.value} "
                         f"tokens of prompt beside the suggestion (max-new-tokens {settings.max_new_tokens})")


def find_project_root(start: Path) -> Path | None:
    here = start if start.is_dir() else start.parent
    for directory in (here, *here.parents):
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return directory
    return None


def find_config_file(start: Path | None, home: Path | None = None) -> Path | None:
    if start is not None:
        root = find_project_root(start.resolve())
        if root is not None and (root / CONFIG_FILE_NAME).is_file():
            return root / CONFIG_FILE_NAME
    home = home if home is not None else Path.home()
    candidate = home / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


def parse_config_text(text: str, source: str = CONFIG_FILE_NAME) -> dict:
    import edn_format

    try:
        data = edn_format.loads(text)
    except Exception as exc:  # edn_format raises several types; all mean "not valid EDN"
        raise InputError(f"{source}: not valid EDN ({exc})") from None
    if data is None:
        return {}
    if not hasattr(data, "items"):
        raise InputError(f"{source}: expected a map like {{:model \"path.gguf\"}}, got {type(data).__name__}")
    values = {}
    for key, value in data.items():
        name = getattr(key, "name", None) if not isinstance(key, str) else key
        if name not in _EDN_KEYS:
            known = ", ".join(":" + k for k in _EDN_KEYS)
            shown = str(key) if isinstance(key, edn_format.Keyword) else repr(key)
            raise InputError(f"{source}: unknown key {shown} (known: {known})")
        key_spec = _EDN_KEYS[name]
        types = key_spec.types
        if isinstance(value, edn_format.Keyword):
            value = value.name  # :eval :safe and :eval "safe" mean the same
        if value is not None and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            raise InputError(f"{source}: :{name} must be a {types[0].__name__}, got {value!r}")
        values[key_spec.field] = key_spec.checked(value, f"{source}: :{name}")
    if values.get("eval_mode") is not None and values["eval_mode"] not in EVAL_MODES:
        raise InputError(f"{source}: :eval must be one of {', '.join(EVAL_MODES)}")
    return values


def checked_min_score(value: float, origin: str) -> float:
    """A score threshold: a number from 0 (show everything) to 1."""
    return _KEY_OF_FIELD["min_score"].checked(value, origin)


def registry_defaults(use: str) -> dict:
    """The default model of `use` (registry.USES), by name, with the settings that go with it
    (models.toml `default_settings`), as Settings fields."""
    model = default_model(use)
    settings = model.default_settings.get(use, {})
    fields = {f.name for f in dataclasses.fields(Settings)} - {"model", "config_file", "model_origin"}
    unknown = sorted(k for k in settings if k not in fields)
    if unknown:
        raise RegistryError(f"models.toml: {model.name} default_settings.{use}: unknown settings {', '.join(unknown)}")
    return {"model": model.name, **settings}


def load_settings(near: Path | None, home: Path | None = None, use: str | None = None,
                  keystrokes: bool = False) -> Settings:
    """The config file found near `near` (project root, then home). `use` (registry.USES): where the
    config names no model, the registry's default for that use and its settings, beneath the config's
    own values; None leaves the model unset (loading it then takes the one-shot default).
    `keystrokes`: for a front-end asked on every keystroke, KEYSTROKE_DEFAULTS beneath all of those."""
    beneath = dict(KEYSTROKE_DEFAULTS) if keystrokes else {}
    path = find_config_file(near, home)
    if path is None:
        return Settings(**{**beneath, **(registry_defaults(use) if use else {})})
    values = parse_config_text(read_source_file(path), str(path))
    model = values.get("model")
    if model and named_model(model) is None and not Path(model).is_absolute():
        beside = path.parent / model  # a path is relative to the config file; a name stays a name
        if names_a_file(model) or beside.exists():
            values["model"] = str(beside.resolve())
    if values.get("model"):
        values["model_origin"] = f":model in {path}"
    if use and not values.get("model"):
        values = {**registry_defaults(use), **{k: v for k, v in values.items() if v is not None}}
    values = {**beneath, **{k: v for k, v in values.items() if v is not None}}
    return Settings(config_file=str(path), **values)
