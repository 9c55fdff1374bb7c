"""A TCP proxy that delays every byte by a fixed time each way: round-trip time without ``netem``.

    agentq-delayproxy --listen 198.18.0.1:6380 --to 127.0.0.1:6379 --delay-ms 0.5

This kernel has no ``netem``, so ``tc`` cannot add latency to a link; the packages that ship a
delaying proxy (toxiproxy) are Go binaries outside the registries reachable here, and the Python
ones found add delay to HTTP responses only. Hence this one, written for sub-millisecond delays:

- each chunk read is stamped with ``arrival + delay`` and queued; a second thread per direction
  sends it when that time comes. Chunks are never held back by the ones before them, so the
  proxy adds latency, not a bandwidth limit, and a pipeline of commands stays a pipeline;
- threads and ``time.sleep`` (nanosleep, with the timer slack cut to 1 us), not asyncio: an
  asyncio loop rounds every timer up to a whole millisecond (``epoll_wait``), which would turn a
  0.1 ms delay into 1 ms;
- SIGHUP re-reads the delay from ``--delay-file``, so one proxy serves every round-trip time of a
  run and the clients' connections survive the change.

The delay applies in both directions: a round trip through the proxy takes ``2 x delay`` plus the
proxy's own overhead (~0.1 ms here), which is why the tests measure the round trip they get.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import queue
import signal
import socket
import threading
import time
from pathlib import Path

_PR_SET_TIMERSLACK = 29
_CHUNK = 65536


def _fine_timer_slack() -> None:
    """Ask Linux to wake sleeping threads within 1 us of their deadline (the default slack is 50 us)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class DelayProxy:
    """Accepts on ``listen``, connects each client to ``target``, delays both directions by ``delay_s``."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], delay_s: float = 0.0) -> None:
        self.listen, self.target, self.delay_s = listen, target, delay_s
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> DelayProxy:
        _fine_timer_slack()  # inherited by every thread started from here on
        self._server = socket.create_server(self.listen, reuse_port=False)
        self.listen = self._server.getsockname()[:2]
        threading.Thread(target=self._accept, name="accept", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._open |= {client, upstream}
            ends = threading.Semaphore(0)
            for src, dst in ((client, upstream), (upstream, client)):
                chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
                threading.Thread(target=self._read, args=(src, chunks), daemon=True).start()
                threading.Thread(target=self._send, args=(chunks, dst, src, ends), daemon=True).start()
            threading.Thread(target=self._close_when_done, args=(client, upstream, ends), daemon=True).start()

    def _read(self, src: socket.socket, chunks: queue.SimpleQueue[tuple[float, bytes]]) -> None:
        """Stamp each chunk with the time it may leave; an empty chunk marks the end of the stream."""
        while True:
            try:
                chunk = src.recv(_CHUNK)
            except OSError:
                chunk = b""
            chunks.put((time.monotonic() + self.delay_s, chunk))
            if not chunk:
                return

    def _send(
        self,
        chunks: queue.SimpleQueue[tuple[float, bytes]],
        dst: socket.socket,
        src: socket.socket,
        ends: threading.Semaphore,
    ) -> None:
        try:
            while True:
                due, chunk = chunks.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not chunk:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                try:
                    dst.sendall(chunk)
                except OSError:  # the other side is gone: stop reading from this one too
                    with contextlib.suppress(OSError):
                        src.shutdown(socket.SHUT_RDWR)
                    return
        finally:
            ends.release()

    def _close_when_done(self, a: socket.socket, b: socket.socket, ends: threading.Semaphore) -> None:
        ends.acquire()
        ends.acquire()
        with self._lock:
            self._open -= {a, b}
        a.close()
        b.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="agentq-delayproxy", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True, help="host:port to accept on")
    p.add_argument("--to", required=True, help="host:port to forward to")
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay in ms (default 0)")
    p.add_argument("--delay-file", type=Path, help="a file holding the one-way delay in ms, re-read on SIGHUP")
    args = p.parse_args(argv)
    proxy = DelayProxy(_address(args.listen), _address(args.to), args.delay_ms / 1000)

    def reload(signum: int, frame: object) -> None:
        if args.delay_file is not None:
            proxy.delay_s = float(args.delay_file.read_text()) / 1000

    signal.signal(signal.SIGHUP, reload)
    if args.delay_file is not None and args.delay_file.exists():
        reload(0, None)
    proxy.start()
    print(f"delaying {args.listen} -> {args.to} by {proxy.delay_s * 1000:g} ms each way", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    proxy.stop()


if __name__ == "__main__":
    main()
