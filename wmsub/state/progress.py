"""The per-chunk progress record `logs/<run>/chunks/<i>.json` (format in docs/DESIGN.md).

Writers of one chunk (several in `dp` mode) serialise through an flock; the file itself is
replaced atomically so readers never see half a record.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from wmsub.state.jsonio import read_json, write_json_atomic


class ChunkProgress:
    def __init__(self, path: Path, chunk: int, stems: list[str]):
        self.path = Path(path)
        self.chunk = chunk
        self.stems = stems

    def _fresh(self) -> dict:
        now = time.time()
        return {"chunk": self.chunk, "job_id": None, "total": len(self.stems), "stems": self.stems,
                "state": "pending", "current": None, "done": [], "failed": {}, "skipped": [],
                "restarts": 0, "timeouts": 0, "preemptions": 0, "signals": 0,
                "started_at": now, "updated_at": now, "videos": [], "error": None}

    def read(self) -> dict:
        return read_json(self.path) or self._fresh()

    @contextmanager
    def _lock(self, wait_s: float):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path) + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        deadline = time.time() + wait_s
        locked = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    locked = True
                    break
                except BlockingIOError:
                    # A signal handler may interrupt the lock holder in this very process:
                    # never wait forever, a slightly racy write beats a deadlock.
                    if time.time() > deadline:
                        break
                    time.sleep(0.02)
            yield
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def update(self, fn, wait_s: float = 10.0) -> dict:
        with self._lock(wait_s):
            rec = self.read()
            fn(rec)
            rec["updated_at"] = time.time()
            write_json_atomic(self.path, rec)
            return rec
