"""Start Debian's nREPL (packages ``clojure`` and ``libnrepl-clojure``) for a project.

Used by the test fixtures and by ``cljassist nrepl [DIR]`` for users without a
REPL of their own.  It runs ``nrepl.cmdline`` with the project's usual source
folders on the classpath; the port is taken from the line it prints on start
(it also writes ``.nrepl-port`` in the project, which editors pick up).
"""

from __future__ import annotations

import atexit
import collections
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

from cljassist.budgets import NREPL_START_TIMEOUT, NREPL_STOP
from cljassist.errors import InputError, ReplUnavailable
from cljassist.repl.discovery import PORT_FILE

__all__ = ["LocalNrepl", "start_local_nrepl", "main_serve", "base_classpath", "DEFAULT_JVM_OPTS"]

JAVA_DIR = Path("/usr/share/java")
APT_HINT = "install them with: apt-get install clojure libnrepl-clojure"
# clojure.jar's manifest names spec.alpha through /usr/share/maven-repo, but not
# core.specs.alpha; both are listed explicitly so the classpath does not depend on that.
_REQUIRED_JARS = ("clojure.jar", "nrepl.jar")
_OPTIONAL_JARS = ("spec.alpha.jar", "core.specs.alpha.jar")
_STARTED = re.compile(r"nREPL server started on port (\d+)")
_PROJECT_DIRS = ("src", "test", "resources")
# C1 only: the JVM starts in about half the time (9 s -> 4 s on 2 cores), which
# matters more for a dev REPL than peak speed; Leiningen does the same by default.
DEFAULT_JVM_OPTS: tuple[str, ...] = ("-XX:TieredStopAtLevel=1",)


def base_classpath(java_dir: Path = JAVA_DIR) -> list[str]:
    """The Debian jars nREPL needs; ReplUnavailable naming the apt packages if absent."""
    missing = [name for name in _REQUIRED_JARS if not (java_dir / name).is_file()]
    if missing:
        raise ReplUnavailable(f"{', '.join(missing)} not found in {java_dir}; {APT_HINT}")
    names = _REQUIRED_JARS + tuple(n for n in _OPTIONAL_JARS if (java_dir / n).is_file())
    return [str(java_dir / name) for name in names]


class LocalNrepl:
    """A running ``nrepl.cmdline`` process; :meth:`stop` ends it and cleans up."""

    def __init__(self, host: str, port: int, process: subprocess.Popen, project_dir: Path,
                 output: collections.deque) -> None:
        self.host = host
        self.port = port
        self.process = process
        self.project_dir = project_dir
        self._output = output  # last lines the server printed, for error messages

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def port_file(self) -> Path:
        return self.project_dir / PORT_FILE

    def output_tail(self) -> str:
        return "\n".join(self._output)

    def stop(self, timeout: float = NREPL_STOP.seconds) -> None:
        """Terminate the JVM (kill it if it lingers) and remove the port file it wrote."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        try:  # the JVM deletes it on a clean exit; not after SIGKILL
            if self.port_file.read_text().strip() == str(self.port):
                self.port_file.unlink()
        except OSError:
            pass
        atexit.unregister(self.stop)

    def __enter__(self) -> LocalNrepl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalNrepl({self.endpoint}, pid={self.process.pid}, dir={self.project_dir})"


def start_local_nrepl(
    project_dir: Path,
    extra_classpath: Iterable[str] = (),
    timeout: float = NREPL_START_TIMEOUT.seconds,
    port: int = 0,
    jvm_opts: Iterable[str] = DEFAULT_JVM_OPTS,
) -> LocalNrepl:
    """Start nREPL for ``project_dir`` and wait until it accepts connections.

    ``port=0`` lets the OS pick; a fixed port is used to restart a server where
    a client expects it.  Raises ReplUnavailable if java or the jars are missing,
    or the server exits or stays silent for ``timeout`` seconds.
    """
    project_dir = Path(project_dir).absolute()
    java = shutil.which("java")
    if java is None:
        raise ReplUnavailable(f"java not found on PATH; {APT_HINT}")
    classpath = base_classpath()
    classpath += [str(project_dir / d) for d in _PROJECT_DIRS if (project_dir / d).is_dir()]
    classpath += [str(project_dir), *extra_classpath]
    command = [
        java, *jvm_opts, "-cp", os.pathsep.join(classpath), "clojure.main", "-m", "nrepl.cmdline",
        "--port", str(port), "--bind", "127.0.0.1",
    ]
    try:
        process = subprocess.Popen(
            command, cwd=project_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
            # its own session: a Ctrl-C meant for our prompt's running eval must not kill the JVM;
            # we stop it ourselves (LocalNrepl.stop)
            start_new_session=True,
        )
    except OSError as e:
        raise ReplUnavailable(f"cannot start {java}: {e.strerror or e}") from None

    output: collections.deque[str] = collections.deque(maxlen=40)
    found: list[int] = []
    started = threading.Event()

    def drain() -> None:
        # Keep reading for the server's whole life so a chatty JVM never blocks on a full pipe.
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            if not found and (m := _STARTED.search(line)):
                found.append(int(m.group(1)))
                started.set()
        started.set()  # EOF: the process is gone

    threading.Thread(target=drain, name=f"nrepl-output-{process.pid}", daemon=True).start()
    server = LocalNrepl("127.0.0.1", 0, process, project_dir, output)
    atexit.register(server.stop)
    deadline = time.monotonic() + timeout
    if not started.wait(timeout):
        server.stop()
        raise ReplUnavailable(f"nREPL in {project_dir} did not start within {timeout:g}s")
    if not found:
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        server.stop()
        said = " ".join([line.strip() for line in output if line.strip()][:2]) or "no output"
        raise ReplUnavailable(f"nREPL in {project_dir} exited with status {code}: {said}")
    server.port = found[0]
    return server


def main_serve(project_dir: Path | str | None = None, extra_classpath: Sequence[str] = ()) -> int:
    """``cljassist nrepl [DIR]``: serve nREPL for DIR in the foreground until Ctrl-C."""
    project_dir = Path(project_dir or ".").absolute()
    if not project_dir.is_dir():
        # the JVM runs in DIR: without this, a missing DIR reads as a missing java
        raise InputError(f"{project_dir}: no such directory")
    server = start_local_nrepl(project_dir, extra_classpath=extra_classpath)
    print(f"nREPL on {server.endpoint} (.nrepl-port written in {project_dir})", flush=True)
    # Ctrl-C, `kill` and a closed terminal all stop the JVM and remove .nrepl-port. SIGINT too:
    # a shell starting us in the background leaves it ignored, and Python then never handles it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_keyboard_interrupt)
    try:
        code = server.process.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        server.stop()
    return code


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt
