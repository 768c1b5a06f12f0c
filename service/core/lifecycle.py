"""What the workers of one server share through a folder: who is alive, whether the server is
draining, and reload requests.

BentoML's workers share a listening socket and nothing else, so a worker cannot know from
inside that a sibling died, that the server got SIGTERM, or that an admin asked another worker
to reload. `python -m service` creates the folder (DIGITSERVE_RUNTIME_DIR) before it starts
BentoML; every worker writes its PID there when it is ready. Without the folder (a bare
`bentoml serve`), every check here reports all is well.
"""

from __future__ import annotations

import os
from pathlib import Path

DRAINING = "draining"
RELOAD = "reload-generation"


def pid_alive(pid: int) -> bool:
    """True for a running process; False for a dead or zombie one (a dead worker stays a
    zombie until BentoML's arbiter reaps it, seconds later)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # Reaped between the signal and the read (seen once in CI: /readyz said ready for a
        # moment with a worker dead), unless there is no /proc at all (not Linux).
        return not Path("/proc/self/stat").exists()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class Roster:
    """The shared folder, or nothing when `folder` is None."""

    def __init__(self, folder: Path | None, workers: int) -> None:
        self.folder = folder
        self.workers = workers

    def register(self, index: int, pid: int) -> None:
        """Say worker `index` (1-based, BentoML's numbering) is `pid` and ready."""
        if self.folder is None:
            return
        path = self.folder / f"worker-{index}.pid"
        staging = path.with_suffix(f".{pid}.tmp")
        staging.write_text(str(pid))
        staging.replace(path)  # atomic: a reader sees the old PID or the new one

    def missing_workers(self) -> list[int]:
        """Indexes of the workers that are not running and ready now."""
        if self.folder is None:
            return []
        missing = []
        for index in range(1, self.workers + 1):
            try:
                pid = int((self.folder / f"worker-{index}.pid").read_text())
            except (OSError, ValueError):
                missing.append(index)
                continue
            if not pid_alive(pid):
                missing.append(index)
        return missing

    def start_draining(self) -> None:
        if self.folder is not None:
            (self.folder / DRAINING).touch()

    def draining(self) -> bool:
        return self.folder is not None and (self.folder / DRAINING).exists()

    def request_reload(self) -> int:
        """Ask every worker to reload; returns the new reload generation."""
        generation = self.reload_generation() + 1
        if self.folder is not None:
            path = self.folder / RELOAD
            staging = path.with_suffix(f".{os.getpid()}.tmp")
            staging.write_text(str(generation))
            staging.replace(path)
        return generation

    def reload_generation(self) -> int:
        if self.folder is None:
            return 0
        try:
            return int((self.folder / RELOAD).read_text())
        except (OSError, ValueError):
            return 0
