"""A server process under the load: started on a free loopback port in its own
process group (and killed by the kernel if the worker dies first), health-checked
before any request, its memory sampled while it serves, and killed with its
group at the end, on a timeout or on an error: a hung server never outlives its cell."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class ServeError(RuntimeError):
    """The server failed to start, died, or answered with errors."""


class ServeTimeout(ServeError):
    """The server did not become healthy, or the load did not end, in its time."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:  # in the child, before exec
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ServerProcess:
    """`argv` must listen on 127.0.0.1:`port` and answer `health_path` with 200 once ready."""

    def __init__(self, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None,
                 health_path: str = "/health", start_timeout_s: float = 300.0):
        self.argv, self.port, self.log, self.env = argv, port, log, env
        self.health_path, self.start_timeout_s = health_path, start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.peak_rss_bytes = 0
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, preexec_fn=_die_with_parent)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                taken = f" (port {self.port} is in use by another process)" if port_in_use(self.port) else ""
                raise ServeError(f"the server exited with status {code} before it was ready{taken}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + self.health_path, timeout=2) as resp:
                    # another process listening on the port answers too: only our own server's answer counts
                    if resp.status == 200 and self._listens():
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        taken = f" (port {self.port} is answered by another process)" if port_in_use(self.port) and not self._listens() else ""
        raise ServeTimeout(f"the server was not healthy within {self.start_timeout_s:g} s{taken}: {self.log_tail()}")

    def _listens(self) -> bool:
        """Does the server (or a process of its own) listen on its port?"""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return False
        for process in processes:
            try:
                if any(c.laddr and c.laddr.port == self.port and c.status == psutil.CONN_LISTEN
                       for c in process.net_connections(kind="tcp")):
                    return True
            except psutil.Error:
                continue
        return False

    def check_alive(self) -> None:
        code = self.proc.poll() if self.proc else None
        if code is not None:
            raise ServeError(f"the server exited with status {code} during the load: {self.log_tail()}")

    def _sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
        except psutil.Error:
            return
        while not self._sampling.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
            except psutil.Error:
                return
            self._sampling.wait(0.1)

    def stop(self) -> None:
        self._sampling.set()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # whatever the server started in its group (a fork that outlived it)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._sampler is not None:
            self._sampler.join(1)

    def log_tail(self, chars: int = 600) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        return " | ".join(lines[-6:])[-chars:] or "(empty log)"
