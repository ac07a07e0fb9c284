"""What every front-end needs to stand an engine up: the model, the REPL connection, the verifier."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cljassist.config import Settings
from cljassist.errors import InputError, ReplTimeout, ReplUnavailable


def load_model(settings: Settings):
    """The model the engine completes with: the completion server named by `settings.backend`
    (backed by the local model when `settings.backend_fallback`), else the local GGUF model that
    `settings.model` names (a model name or a path; the default named model when unset)."""

    def local_model():
        from cljassist.model.llama import LocalModel
        from cljassist.model.locate import chosen_named_model, model_path_to_load

        origin = settings.model_origin or "--model"
        named = chosen_named_model(settings.model, origin)  # a named model brings its score table; a path none
        draft = None
        speculate = settings.speculate if settings.speculate is not None else bool(settings.draft_model)
        if speculate and settings.draft_model:
            draft = LocalModel(model_path_to_load(settings.draft_model, origin="draft model"), n_ctx=settings.n_ctx,
                               n_threads=settings.threads, token_healing=False)
        return LocalModel(model_path_to_load(settings.model, origin=origin), n_ctx=settings.n_ctx, n_threads=settings.threads,
                          token_healing=settings.token_healing, calibration=named.calibration if named else None,
                          speculate=speculate, draft=draft)

    if not settings.backend:
        return local_model()
    from cljassist.model.remote import FallbackModel, RemoteModel

    remote = RemoteModel(settings.backend, timeout_ms=settings.backend_timeout_ms, reuse_prompt=settings.reuse_prompt)
    # the fallback loads the local model only when the server first fails (see FallbackModel)
    return FallbackModel(remote, local_model) if settings.backend_fallback else remote


@dataclass(frozen=True)
class ReplRuntime:
    jvm: bool  # JVM Clojure: the engine's REPL context and checks (JVM Clojure code) can run there
    runtime: str  # what describe's "versions" says, e.g. "clojure 1.11.1, java 17.0.15, nrepl 1.0.0"


def runtime_from_versions(versions) -> ReplRuntime:
    """Read describe's "versions": nREPL on the JVM reports java and clojure; nbb reports node."""
    versions = versions if isinstance(versions, dict) else {}
    parts = []
    for name, info in versions.items():
        version = info.get("version-string") if isinstance(info, dict) else info
        parts.append(f"{name} {version}" if version else str(name))
    return ReplRuntime(jvm="java" in versions and "clojure" in versions,
                       runtime=", ".join(parts) or "no versions reported")


def connect_repl(settings: Settings, near: Path | None, no_repl: bool, explicit: bool):
    """(context provider or None, label). An explicitly named REPL that is unreachable is an error;
    a discovered one (perhaps a stale .nrepl-port) only earns a warning. A REPL named by --nrepl or
    :nrepl stays where it is named; one found through .nrepl-port is looked for there again at each
    reconnect, so a REPL restarted on another port is followed."""
    from cljassist.context import ReplContextProvider
    from cljassist.repl.client import NreplClient
    from cljassist.repl.discovery import port_file_locator, resolve_endpoint

    if no_repl:
        return None, "off (--no-repl)"
    try:
        endpoint = resolve_endpoint(settings.nrepl, near)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if endpoint is None:
        return None, "off (no .nrepl-port found; start one with 'cljassist nrepl DIR' or pass --nrepl HOST:PORT)"
    locate = port_file_locator(near) if not settings.nrepl and near is not None else None
    try:
        client = NreplClient.connect(*endpoint, timeout=settings.repl_timeout_ms / 1000, locate=locate)
    except ReplUnavailable as exc:
        if explicit:
            raise ReplUnavailable(f"{exc}; completing without it needs --no-repl") from None
        print(f"cljassist: warning: {exc}; completing without the REPL", file=sys.stderr)
        return None, f"off (unreachable: {endpoint[0]}:{endpoint[1]})"
    try:
        runtime = runtime_from_versions(client.describe(timeout=settings.repl_timeout_ms / 1000).get("versions"))
    except ReplTimeout:
        runtime = ReplRuntime(jvm=True, runtime="describe timed out")  # judge it by its first request
    if not runtime.jvm:
        client.close()
        print(f"cljassist: warning: the nREPL at {endpoint[0]}:{endpoint[1]} is not JVM Clojure ({runtime.runtime}); "
              "completing without its context and checks", file=sys.stderr)
        return None, f"off (not JVM Clojure: {runtime.runtime})"
    return ReplContextProvider(client, timeout_s=settings.repl_timeout_ms / 1000), f"{endpoint[0]}:{endpoint[1]}"


def make_verifier(provider, settings: Settings):
    """REPL checks share the context provider's connection (each uses its own tooling session)."""
    if provider is None or not settings.verify:
        return None
    from cljassist.verify.repl_compile import ReplVerifier

    return ReplVerifier(provider.client, timeout_s=settings.repl_timeout_ms / 1000, eval_mode=settings.eval_mode,
                        health=provider.health)


def load_namespace(provider, text: str) -> None:
    """Load the text's namespace in the REPL (its ns form only) when it is not loaded yet."""
    from cljassist.clojure_text.reader import file_namespace, parse

    namespace = file_namespace(text)
    if namespace is None:
        return
    ns_form = next((text[n.start:n.end] for n in parse(text)
                    if n.kind == "list" and n.children and text[n.children[0].start:n.children[0].end] == "ns"), None)
    if not provider.ensure_loaded(namespace, ns_form):
        print(f"cljassist: warning: could not load {namespace} in the REPL; completing without its context",
              file=sys.stderr)


@dataclass
class OpenEngine:
    """An engine with the connections it owns; `close` releases them."""

    engine: "object"  # cljassist.engine.Engine
    provider: "object | None"  # ReplContextProvider
    repl_label: str
    owns_model: bool = True  # a model handed in by the caller stays the caller's to close
    model_load_ms: float = 0.0  # how long loading the model took (0 when it was handed in)

    def close(self) -> None:
        if self.provider is not None:
            self.provider.close()
            self.provider.client.close()
        if self.owns_model:
            self.engine.model.close()


def open_engine(settings: Settings, near: Path | None = None, no_repl: bool = False,
                explicit: bool = False, model=None) -> OpenEngine:
    """The engine for `settings`: model (loaded unless given), REPL context and verifier."""
    from cljassist.engine import Engine

    provider, label = connect_repl(settings, near, no_repl, explicit)
    model_load_ms = 0.0
    if model is None:
        started = time.perf_counter()
        try:
            model = load_model(settings)
        except BaseException:
            if provider is not None:  # the connection would outlive the failed start otherwise
                provider.close()
                provider.client.close()
            raise
        model_load_ms = (time.perf_counter() - started) * 1000
        owns_model = True
    else:
        owns_model = False
    engine = Engine(model, settings, provider, make_verifier(provider, settings))
    return OpenEngine(engine, provider, label, owns_model=owns_model, model_load_ms=model_load_ms)
