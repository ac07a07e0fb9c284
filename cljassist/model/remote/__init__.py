"""The remote engine: candidates from a completion server over HTTP instead of the in-process model.

``RemoteModel`` is a :class:`cljassist.types.CompletionModel` like the local GGUF model, so a laptop
can send its completions to a bigger model on another machine (or a GPU box) and keep the REPL-aware
pipeline (context, stop rule, checks, ranking) local.

By role: ``url`` (the URL forms and their options), ``http`` (the HTTP exchange and its watchdog),
``events`` (reading whole and streamed replies), ``cutter`` (where a streamed candidate ends),
``models`` (``RemoteModel`` and ``FallbackModel``).

Two APIs, chosen by the URL's path:

``http://HOST:PORT/infill``
    llama.cpp's ``llama-server`` fill-in-the-middle endpoint.  The server wraps the parts in its
    model's own FIM tokens, so we send the parts, not a rendered prompt: ``input_prefix`` = all the
    model reads before the gap (file header, REPL context block, the code before the cursor: the
    prompt's ``before``), ``input_suffix`` = the code after it.
``http://HOST:PORT/v1/completions`` (also ``http://HOST:PORT`` and ``http://HOST:PORT/v1``)
    Any OpenAI-compatible completions endpoint (llama.cpp, llama-cpp-python, vLLM, Ollama...).  It
    takes one prompt text, so the FIM template is ours to apply, and only the server's model knows
    which one fits: name a family of prompts/fim.toml in the URL's fragment,
    ``http://HOST:PORT/v1/completions#fim=qwen25_coder`` (default: ``left_to_right``, a plain
    continuation of the prefix).  ``#model=NAME`` sets the request's ``model`` field for servers
    that host several.  ``#logprobs=0`` stops asking for token log-probabilities (they rank the
    candidates; llama-server and vLLM give them cheaply, llama-cpp-python's server computes them in
    Python: 16 tokens took 5 s instead of 0.7-1.8 s on a busy 2-core box).  Options combine: ``#fim=qwen25_coder&model=qwen&logprobs=0``.

Decoding mirrors the local model: the first candidate is greedy (temperature 0, no repeat
penalty); more candidates come from further requests sampled at a low temperature with fixed seeds
(so the same request gives the same candidates), deduplicated.  Replies are streamed
(``"stream": true``; a server that answers in one piece is read that way too) and the engine's
stop rule is applied the way the local model applies it while generating: called on the growing
text, one character at a time; the candidate ends where it first fires, and we hang up on the
server then, which stops its generation (a completion usually ends long before max_tokens: with
llama-cpp-python here, 0.1-0.2 s instead of 1.7 s for a 64-token request).

Only the standard library talks HTTP: one kept-alive ``http.client`` connection (re-opened when the
server dropped it), a watchdog thread that enforces the time limit on the whole exchange and aborts
it as soon as the request is cancelled.  Failures are :class:`BackendError`\\ s with one-line
messages.  :class:`FallbackModel` completes with the local model when the server fails.
"""

from cljassist.model.remote.http import BackendError, server_message
from cljassist.model.remote.models import FallbackModel, RemoteModel, text_before_gap
from cljassist.model.remote.url import INFILL_FORMAT, BackendUrl, parse_backend_url

__all__ = ["RemoteModel", "FallbackModel", "BackendError", "BackendUrl", "parse_backend_url", "INFILL_FORMAT",
           "text_before_gap", "server_message"]
