"""Processes as /proc shows them: to check that what a test killed or stopped is gone."""

from __future__ import annotations

from pathlib import Path


def stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) from /proc/PID/stat; None once the pid is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every process below ``root`` (children, their children, ...): pid -> start time."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := stat(int(entry.name))) is not None:
            parent[int(entry.name)] = st
    found, todo = {}, [root]
    while todo:
        p = todo.pop()
        for pid, (ppid, _, start) in parent.items():
            if ppid == p and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def gone(pid: int, start: int) -> bool:
    """Exited: no such pid, a new process under that pid, or a zombie (dead, only its status left)."""
    st = stat(pid)
    return st is None or st[2] != start or st[1] == "Z"
