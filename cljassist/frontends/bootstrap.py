"""How every front-end starts and stops: settings -> engine -> service -> signal handling -> close.

    settings = settings_from_args(args, near=directory, keystrokes=True)
    with open_frontend(settings, near=directory, no_repl=..., explicit=..., service=True) as front:
        ...                                   # front.engine, front.service, front.repl_label
        with front.stop_signals() as stop:    # SIGINT/SIGTERM/SIGHUP now set `stop`
            front.wait(stop)
    # the service, the REPL connection and the model (unless handed in) are closed here

`serve`, `proxy`, `repl`, `watch`, `complete` and `bench` all start this way, so an engine is
always closed the same way, in the same order, whatever ends the command.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cljassist.config import Settings, check_window, checked_flags, load_settings
from cljassist.frontends import common
from cljassist.model.registry import AS_YOU_TYPE, ONE_SHOT

__all__ = ["FrontEnd", "open_frontend", "settings_from_args", "stop_on_signals", "wait_until_set", "STOP_SIGNALS"]


def settings_from_args(args, near: Path | None, keystrokes: bool = False) -> Settings:
    """The config file found near `near`, overridden by the command-line model options that were
    given. `keystrokes`: a front-end asked on every keystroke (config.KEYSTROKE_DEFAULTS), whose
    default model is the as-you-type one; the others take the one-shot default (registry.USES)."""
    use = None if args.model else (AS_YOU_TYPE if keystrokes else ONE_SHOT)
    flags = checked_flags(dict(
        candidates=args.candidates, max_new_tokens=args.max_new_tokens,
        threads=args.threads, max_prompt_tokens=getattr(args, "max_prompt_tokens", None),
        deadline_ms=getattr(args, "deadline_ms", None), nrepl=getattr(args, "nrepl", None),
        eval_mode=args.eval_mode, show_failing=args.show_failing, verify=args.verify,
        backend=getattr(args, "backend", None), backend_fallback=getattr(args, "backend_fallback", None),
        backend_timeout_ms=getattr(args, "backend_timeout_ms", None),
        token_healing=getattr(args, "token_healing", None), min_score=getattr(args, "min_score", None),
        repo_prompt=getattr(args, "repo_prompt", None), steer=getattr(args, "steer", None),
        speculate=getattr(args, "speculate", None), draft_model=getattr(args, "draft_model", None),
        stats=getattr(args, "stats", None),
    ))
    settings = load_settings(near, use=use, keystrokes=keystrokes).with_overrides(
        model=args.model, model_origin="--model" if args.model else None, **flags)
    check_window(settings)
    return settings


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """While inside, SIGINT, SIGTERM and SIGHUP set `stop` so a long-running front-end can shut down
    cleanly; the previous handlers come back afterwards. SIGINT is set explicitly because a shell that
    starts us in the background leaves it ignored. Only the main thread can take signals."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_until_set(stop: threading.Event) -> None:
    """Block until `stop` is set; short waits so the main thread runs signal handlers promptly."""
    while not stop.wait(0.5):
        pass


@dataclass
class FrontEnd:
    """What `open_frontend` stood up. `service` is None unless it was asked for."""

    settings: Settings
    opened: common.OpenEngine
    service: object | None  # cljassist.frontends.service.CompletionService

    @property
    def engine(self):
        return self.opened.engine

    @property
    def provider(self):
        return self.opened.provider

    @property
    def repl_label(self) -> str:
        return self.opened.repl_label

    @staticmethod
    @contextlib.contextmanager
    def stop_signals() -> Iterator[threading.Event]:
        """A fresh stop event that the stop signals set while inside. Signals are taken over only
        here, not while the model loads, so Ctrl-C during start-up still interrupts at once."""
        with stop_on_signals(threading.Event()) as stop:
            yield stop

    @staticmethod
    def wait(stop: threading.Event) -> None:
        wait_until_set(stop)

    def serve_until_stopped(self) -> None:
        """Block until a stop signal arrives."""
        with self.stop_signals() as stop:
            wait_until_set(stop)


@contextlib.contextmanager
def open_frontend(settings: Settings, near: Path | None = None, no_repl: bool = False, explicit: bool = False,
                  model=None, service: bool = False, repl_label: str | None = None) -> Iterator[FrontEnd]:
    """The engine for `settings` (model loaded unless handed in, REPL context and checks unless
    `no_repl`; `explicit`: the REPL was named by the user, so an unreachable one is an error), with a
    CompletionService in front of it when `service`. On leaving, the service stops first (no request
    runs on a closing engine), then the REPL connection and the model it loaded are closed.
    `repl_label` replaces the label saying how the REPL is used (a caller that decided it itself)."""
    opened = common.open_engine(settings, near=near, no_repl=no_repl, explicit=explicit, model=model)
    if repl_label is not None:
        opened.repl_label = repl_label
    completion_service = None
    try:
        if service:
            from cljassist.frontends.service import CompletionService

            completion_service = CompletionService(opened.engine)
        yield FrontEnd(settings, opened, completion_service)
    finally:
        try:
            if completion_service is not None:
                completion_service.close()
        finally:
            opened.close()
