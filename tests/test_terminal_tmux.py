"""`cljassist repl` in a real terminal: tmux runs it with the real default model on the real nREPL;
keys go in with `send-keys`, the screen comes back with `capture-pane`."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
TMUX = shutil.which("tmux")
STARTUP_S = 120  # generous: loading the model on a busy 2-core machine takes a while
STEP_S = 60

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)")


class Tmux:
    """One tmux server on a private socket, so nothing touches the user's own tmux."""

    def __init__(self) -> None:
        self.socket = f"cljassist-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "repl", "-l", text)  # -l: literal text, not key names

    def press(self, *keys: str) -> None:
        self.run("send-keys", "-t", "repl", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "repl", check=False)

    def wait_for(self, predicate, what: str, timeout: float = STEP_S) -> str:
        def matching_screen() -> str | None:
            screen = self.screen()
            return screen if predicate(screen) else None

        try:
            return wait_until(matching_screen, what, timeout, interval=0.2)
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}; the screen:\n{self.screen()}") from None

    def kill(self) -> None:
        self.run("kill-server", check=False)


def lines(screen: str) -> list[str]:
    return [line.rstrip() for line in screen.splitlines()]


def test_repl_in_tmux(nrepl_server, default_model_file, tmp_path):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install llama-cpp-python)")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    repl = [sys.executable, "-m", "cljassist", "repl", "--nrepl", f"{nrepl_server.host}:{nrepl_server.port}",
            "--threads", "1", "-n", "1", "--max-new-tokens", "16"]
    # After the prompt exits the pane stays (briefly) to show its exit status.
    command = f"env {shlex.join(f'{k}={v}' for k, v in env.items())} {shlex.join(repl)}; echo REPL-EXIT:$?; sleep 60"
    tmux = Tmux()
    try:
        tmux.run("new-session", "-d", "-s", "repl", "-x", "120", "-y", "30", "-c", str(tmp_path), command)
        tmux.wait_for(lambda s: any(l.startswith("user=>") for l in lines(s)), "the user=> prompt", STARTUP_S)

        tmux.type("(+ 1 2)")
        tmux.press("Enter")
        tmux.wait_for(lambda s: "3" in lines(s), "the value 3")

        tmux.type("(Thread/sleep 60000)")
        tmux.press("Enter")
        time.sleep(1.0)  # let the eval start before Ctrl-C
        tmux.press("C-c")
        tmux.wait_for(lambda s: ";; interrupted" in s, "the interrupted eval")

        tmux.type('(str "a"')
        tmux.press("Enter")  # the form is not complete: the input goes on to a second line
        screen = tmux.wait_for(lambda s: any(l.startswith('user=> (str "a"') for l in lines(s)), "the open form")
        assert '"a"' not in lines(screen), "an incomplete form was evaluated"
        tmux.type(")")
        tmux.press("Enter")
        tmux.wait_for(lambda s: '"a"' in lines(s), 'the value "a"')

        tmux.press("C-d")
        tmux.wait_for(lambda s: "REPL-EXIT:" in s, "the prompt to exit")
        assert "REPL-EXIT:0" in tmux.screen()
        history = (home / ".cache" / "cljassist" / "repl-history").read_text()
        assert "(+ 1 2)" in history and '+(str "a"' in history
    finally:
        tmux.kill()
