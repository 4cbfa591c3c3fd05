"""CPU time and memory of the processes a bench starts, read from /proc (Linux)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_roles(groups: dict[int, str]) -> dict[int, str]:
    """pid -> role for every process in the given process groups (by group leader pid); a Triton
    python stub is named by its model, other processes by their group's role and executable."""
    roles = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            pid = int(cmdline.parent.name)
            group = os.getpgid(pid)
            args = cmdline.read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if group not in groups:
            continue
        if args[0].endswith(b"triton_python_backend_stub"):
            roles[pid] = f"python stub: {Path(args[1].decode()).parent.parent.name}"
        else:
            roles[pid] = groups[group] if pid == group else f"{groups[group]}: {Path(args[0].decode()).name}"
    return roles


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def status_mib(pid: int, key: str) -> float:
    """A memory line of /proc/PID/status (VmRSS, RssAnon, RssShmem...) in MiB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith(f"{key}:")) / 1024


def rss_mib(pid: int) -> float:
    return status_mib(pid, "VmRSS")


def by_role(roles: dict[int, str], measure) -> Counter:
    """The sum of measure(pid) per role, skipping processes that are gone."""
    totals: Counter = Counter()
    for pid, role in roles.items():
        try:
            totals[role] += measure(pid)
        except (OSError, IndexError, ValueError, StopIteration):
            continue
    return totals
