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

# The denoising step goes into the record at most this often: one small atomic write per
# few seconds per chunk, whatever the step time.
STEP_WRITE_INTERVAL_S = 5.0


class ChunkProgress:
    def __init__(self, path: Path, chunk: int, stems: list[str]):
        self.path = Path(path)
        self.chunk = chunk
        self.stems = stems

    def _fresh(self) -> dict:
        now = time.time()
        return {"chunk": self.chunk, "job_id": None, "total": len(self.stems), "stems": self.stems,
                "state": "pending", "current": None, "step": None, "steps": None, "done": [],
                "failed": {}, "skipped": [],
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
            yield locked
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

    def step_reporter(self, stem: str, interval_s: float = STEP_WRITE_INTERVAL_S):
        """A `step_callback(step, steps)` for the engine: records the current video's
        denoising step, at most every `interval_s` seconds, and never blocks the sampling
        loop on a busy lock (that step is simply not written)."""
        last = [time.monotonic()]  # the video's start was just written (current=stem)

        def report(step: int, steps: int) -> None:
            now = time.monotonic()
            if now - last[0] < interval_s:
                return
            last[0] = now

            def set_step(rec):
                if rec.get("current") == stem:
                    rec["step"], rec["steps"] = step, steps
            self.try_update(set_step)
        return report

    def try_update(self, fn) -> bool:
        """`update` when the lock is free at once; False (nothing written) when it is not."""
        with self._lock(0.0) as locked:
            if not locked:
                return False
            rec = self.read()
            fn(rec)
            rec["updated_at"] = time.time()
            write_json_atomic(self.path, rec)
            return True
