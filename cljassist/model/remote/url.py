"""Backend URLs: which API a ``--backend`` URL names, where it is, and its ``#`` options.

``http://HOST:PORT/infill`` is llama.cpp's fill-in-the-middle endpoint; ``http://HOST:PORT/v1/completions``
(also ``http://HOST:PORT`` and ``http://HOST:PORT/v1``) any OpenAI-compatible completions endpoint, with
the options ``#fim=FAMILY``, ``#model=NAME`` and ``#logprobs=0`` (see the package docstring).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from cljassist.errors import InputError
from cljassist.model.fim import FimFormat

INFILL = "infill"
COMPLETIONS = "completions"

# The prompt format the engine sees for /infill: FIM-capable (so the prompt stage keeps and budgets
# the suffix) with empty markers, because the server adds its model's real FIM tokens itself.
INFILL_FORMAT = FimFormat(
    family="llama_server_infill",
    template="{fim_prefix}{prefix}{fim_suffix}{suffix}{fim_middle}",
    tokens={"fim_prefix": "", "fim_suffix": "", "fim_middle": ""},
    stop=(),
    is_fim=True,
    order="PSM",
    description="llama.cpp /infill: the server applies its model's FIM template to the parts we send",
)


@dataclass(frozen=True)
class BackendUrl:
    """A parsed ``--backend`` URL."""

    api: str  # INFILL | COMPLETIONS
    https: bool
    host: str
    port: int
    path: str  # request path, query included
    display: str  # the URL without its fragment, for messages and stats
    fim_family: str | None = None  # completions API only
    model: str | None = None  # the request's "model" field (completions API only)
    logprobs: bool = True  # ask for token log-probabilities (completions API only)


def parse_backend_url(url: str) -> BackendUrl:
    """Read a backend URL (see the module docstring); :class:`InputError` when it cannot be used."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"backend URL {url!r} is not an http:// or https:// URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InputError(f"backend URL {url!r} has an invalid port") from None
    path = parts.path.rstrip("/")
    if path.endswith("/infill"):
        api = INFILL
    elif path.endswith("/completions"):
        api = COMPLETIONS
    elif path in ("", "/v1") or path.endswith("/v1"):
        api, path = COMPLETIONS, path + ("/completions" if path.endswith("/v1") else "/v1/completions")
    else:
        raise InputError(
            f"backend URL {url!r}: the path must end in /infill (llama.cpp server) or /v1/completions "
            "(OpenAI-compatible)"
        )
    options = _fragment_options(url, parts.fragment)
    fim_family = options.pop("fim", None)
    model = options.pop("model", None)
    logprobs = options.pop("logprobs", "1")
    if options:
        raise InputError(f"backend URL {url!r}: unknown option(s) {', '.join(sorted(options))} "
                         "(known: fim, model, logprobs)")
    if logprobs.lower() not in _BOOLEANS:
        raise InputError(f"backend URL {url!r}: logprobs={logprobs!r} is not one of {', '.join(_BOOLEANS)}")
    if api == INFILL and (fim_family or model or "logprobs" in parts.fragment):
        raise InputError(f"backend URL {url!r}: #fim=, #model= and #logprobs= apply to /v1/completions only "
                         "(/infill uses the server model's own FIM template)")
    request_path = path + (f"?{parts.query}" if parts.query else "")
    display = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    return BackendUrl(api, parts.scheme == "https", parts.hostname, port, request_path, display, fim_family, model,
                      _BOOLEANS[logprobs.lower()])


_BOOLEANS = {"1": True, "true": True, "on": True, "yes": True, "0": False, "false": False, "off": False, "no": False}


def _fragment_options(url: str, fragment: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for key, values in urllib.parse.parse_qs(fragment, keep_blank_values=True).items():
        if len(values) != 1 or not values[0]:
            raise InputError(f"backend URL {url!r}: option {key!r} needs exactly one value, as in #{key}=VALUE")
        options[key] = values[0]
    return options
