"""``comp app`` in a child process on loopback, bounded in time and always stopped: for tests, benchmarks and
the README screenshot script.

    >>> with AppServer(["base"], cwd="demo") as url:      # http://127.0.0.1:<free port>/
    ...     Client(url).predict(handle_file("x.png"), api_name="/predict")
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class AppServer:
    """Start ``comp app --exp ... *args`` in ``cwd`` on ``host``:<free port> (``env`` added to the environment,
    e.g. GRADIO_TEMP_DIR or COMP_APP_AUTH); ``__enter__`` returns its URL once it answers (within
    ``start_timeout`` seconds), ``__exit__`` stops it (Ctrl-C, so Gradio deletes its files; then terminate, then
    kill)."""

    def __init__(self, exps: list[str], cwd: str | Path = ".", config: str = "comp.yaml", host: str = "127.0.0.1",
                 port: int | None = None, start_timeout: float = 120.0, log: str | Path | None = None,
                 args: list[str] = (), env: dict | None = None):
        self.exps, self.cwd, self.config, self.host = list(exps), Path(cwd), config, host
        self.args, self.env = list(args), dict(env or {})
        self.port = port or free_port(host)
        self.start_timeout = start_timeout
        self.log_path = Path(log) if log else self.cwd / "app.log"
        self.url = f"http://{host}:{self.port}/"
        self.proc: subprocess.Popen | None = None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> str:
        cmd = [sys.executable, "-m", "comp", "app", "-c", self.config, "--host", self.host, "--port", str(self.port)]
        for e in self.exps:
            cmd += ["--exp", e]
        cmd += self.args
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_ALBUMENTATIONS_UPDATE": "1", **self.env}
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.start_timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"comp app exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    with urllib.request.urlopen(self.url, timeout=2) as r:
                        if r.status == 200:
                            return self.url
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"comp app did not answer on {self.url} in {self.start_timeout:.0f} s:\n"
                                       f"{self.log_tail()}")
                time.sleep(0.5)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for stop, wait in ((lambda p: p.send_signal(signal.SIGINT), 15), (subprocess.Popen.terminate, 10),
                               (subprocess.Popen.kill, 10)):
                stop(self.proc)
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
