"""The processes a fault hits, found from /proc: a worker's pool, a function instance's tree,
the process at the other end of a loopback connection.

Everything killed here is first checked to belong to one of the stack's own process groups
(each service leads one, local_profile/processes.py): nothing this suite did not start is
ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from local_profile.recipes import Stack

PROC = Path("/proc")


def _parent_of(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: the fields after it are plain.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (its children, theirs, ...)."""
    parents = {child: _parent_of(child) for child in _pids()}
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent:
                found.append(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not reaped yet


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    left = [pid for pid in pids if alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in left if alive(pid)]
    return left


def kill(stack: Stack, pids: list[int], sig: int = signal.SIGKILL) -> list[int]:
    """Signal each of `pids` that belongs to one of the stack's process groups, all at once."""
    groups = {service.pid for service in stack.services.values()}
    hit = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) in groups:
                os.kill(pid, sig)
                hit.append(pid)
    return hit


def signal_group(stack: Stack, name: str, sig: int) -> None:
    """Signal the whole process group of the stack's service `name` (SIGSTOP, SIGCONT)."""
    os.killpg(stack.services[name].pid, sig)


def _socket_inodes(local_port: int, remote_port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if (
                    int(local.rsplit(":", 1)[1], 16) == local_port
                    and int(remote.rsplit(":", 1)[1], 16) == remote_port
                ):
                    inodes.add(inode)
    return inodes


def connection_owners(local_port: int, remote_port: int) -> list[int]:
    """The processes holding the loopback socket whose own port is `local_port` and whose peer
    listens on `remote_port`: who is sending what a server of ours is receiving."""
    wanted = {f"socket:[{inode}]" for inode in _socket_inodes(local_port, remote_port)}
    owners = []
    for pid in _pids():
        with contextlib.suppress(OSError):
            for fd in (PROC / str(pid) / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        owners.append(pid)
                        break
    return owners
