"""Helpers the benchmark scripts share: free ports, waiting for servers and files, and the
provenance line printed with every table (commit, machine, tool versions)."""

import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    socket.create_connection(("127.0.0.1", port)).close()
    return True


def wait_for(predicate, what, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def _first_line(cmd):
    """The first non-empty line a command prints on stdout or stderr, or why there is none."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e.__class__.__name__})"
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        if line.strip():
            return line.strip()
    return "unknown"


def commit():
    """The commit measured, marked dirty when the work tree differs from it."""
    head = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    changed = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True).stdout.strip()
    return head + ("-dirty" if changed else "")


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def tool_versions(tools):
    """`name version` for each of `tools` (a mapping of name to the command printing it)."""
    versions = [f"python {platform.python_version()}"]
    for name, cmd in tools.items():
        line = _first_line(cmd)
        found = re.search(r"\d+(\.\d+)+", line)
        versions.append(f"{name} {found.group(0) if found else line}")
    return ", ".join(versions)


def provenance(tools):
    """One line saying what was measured where, printed above each table."""
    # The CPUs this process may use, as nproc counts them.
    cpus = len(os.sched_getaffinity(0))
    return (f"_commit {commit()}; {cpus} CPUs ({cpu_model()}), "
            f"{platform.system()} {platform.release()}; {tool_versions(tools)}_")
