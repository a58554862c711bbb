"""Which process runs a job: a token (host, pid, process start time) written with a claimed
job, so that a crashed job can be told from one still running, here or on another machine."""

from __future__ import annotations

import os
import socket


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def runner_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or ''}"


def runner_alive(token: str | None) -> bool:
    """Whether the process that wrote `token` still runs. Unknown hosts count as alive: a job
    another machine runs is not ours to declare dead."""
    if not token:
        return False
    try:
        host, pid, started = token.rsplit(":", 2)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True
    try:
        pid_i = int(pid)
        os.kill(pid_i, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass
    return not started or _start_time(pid_i) == started
