"""Separate network hosts on one machine: Linux network namespaces on a bridge of their own.

    with NetLab(("redis", "w1", "w2", "producer")) as lab:
        proc = lab.popen("w1", ["worker"], env=..., stdout=...)
        lab.cut("w1")    # w1's link goes down: a partition
        lab.heal("w1")

Layout, all of it private to the lab (nothing is added to the machine's own namespace):

    namespace aqt<pid>-sw:      bridge br0, one port per host (named after the host)
    namespace aqt<pid>-<host>:  lo, and eth0 = the other end of its veth pair, 198.18.0.<n>/24

198.18.0.0/15 is the block set aside for network benchmarks (RFC 2544), so the lab's addresses
cannot be mistaken for anything real, and as the namespaces have no route out, no packet leaves
them. Cutting a host sets its bridge port down: its eth0 loses carrier and its packets go nowhere,
as when a cable is pulled; its processes and open sockets live on. Requires root (CAP_NET_ADMIN).

Names carry the creating process's pid (``aqt<pid>-``), so :func:`sweep` can remove what a
process that has died left behind without touching a lab that is still in use.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

PREFIX = "aqt"
SUBNET = "198.18.0"


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def namespaces() -> list[str]:
    """Every network namespace's name on this machine."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _kill_all_in(ns: str) -> None:
    """SIGKILL every process still running in namespace ``ns``."""
    for pid in _ip("netns", "pids", ns, check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _delete(ns: str) -> None:
    _kill_all_in(ns)
    _ip("netns", "del", ns, check=False)  # its interfaces go with it; a veth's peer too


def sweep() -> list[str]:
    """Delete the namespaces (and so the links) of labs whose creating process is gone."""
    removed = []
    for ns in namespaces():
        m = re.fullmatch(rf"{PREFIX}(\d+)-\w+", ns)
        if not m or int(m[1]) == os.getpid():
            continue
        try:
            os.kill(int(m[1]), 0)
            continue  # its owner runs: not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _delete(ns)
        removed.append(ns)
    return removed


class NetLab:
    """Hosts (network namespaces) joined by one bridge; see the module docstring."""

    def __init__(self, hosts: Sequence[str]) -> None:
        if len(hosts) > 250 or any(not re.fullmatch(r"[a-z][a-z0-9]{0,9}", h) for h in hosts):
            raise ValueError("hosts: up to 250 short lowercase names")
        self.hosts = list(hosts)
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self._made: list[str] = []

    def ns(self, host: str) -> str:
        """The namespace of ``host``."""
        return f"{self.tag}-{host}"

    def address(self, host: str) -> str:
        """``host``'s address on the lab's network."""
        return f"{SUBNET}.{self.hosts.index(host) + 1}"

    def create(self) -> NetLab:
        """Make the switch and every host; on any failure, remove what was made and re-raise."""
        try:
            self._add_ns(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for host in self.hosts:
                ns = self.ns(host)
                self._add_ns(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("link", "add", host, "netns", self.switch, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("-n", self.switch, "link", "set", host, "master", "br0", "up")
                _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run on ``host``."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` on ``host`` (``kwargs`` go to ``subprocess.Popen``)."""
        return subprocess.Popen(self.command(host, argv), **kwargs)

    def run(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``host`` to its end, its output captured as text."""
        return subprocess.run(self.command(host, argv), capture_output=True, text=True, **kwargs)

    def cut(self, host: str) -> float:
        """Take ``host``'s link down (a partition); the monotonic time it happened."""
        _ip("-n", self.switch, "link", "set", host, "down")
        return time.monotonic()

    def heal(self, host: str) -> float:
        """Bring ``host``'s link back up; the monotonic time it happened."""
        _ip("-n", self.switch, "link", "set", host, "up")
        return time.monotonic()

    def destroy(self) -> None:
        """Kill whatever still runs in the lab and delete every namespace it made (links go with them)."""
        for ns in reversed(self._made):
            _delete(ns)
        self._made.clear()

    def __enter__(self) -> NetLab:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


if __name__ == "__main__":  # python -m agentq_tools.netlab: remove the labs of dead processes (CI's exit trap)
    print("\n".join(sweep()) or "nothing to sweep")
