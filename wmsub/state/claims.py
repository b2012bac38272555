"""Per-instance claims on a shared filesystem: one generator per stem across jobs and hosts.

A claim is `<dir>/<stem>.claim`, created with O_CREAT|O_EXCL (atomic on local
filesystems and NFSv3+, Lustre, GPFS). Its JSON names the owner; its mtime is the
heartbeat (`refresh` touches it, so a refresh never rewrites a file another process may
now own). A claim is stale when its heartbeat is older than the TTL, or when it was
made on this host (and pid namespace) by a process that is gone (pid dead, or the pid
now belongs to a process started later).

Breaking a stale claim takes a short-lived `<stem>.break` lock (also O_EXCL), re-reads
the claim under it and removes it only if it is still the same stale claim (same
token). Without that lock, two breakers that both judged the old claim stale could
each remove the other's fresh claim and both win.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from wmsub.config import OutputConfig
from wmsub.state.jsonio import read_json_object

# A breaker holds its lock for milliseconds; one older than this belongs to a dead breaker.
BREAK_LOCK_STALE_S = 60.0
# A claim not refreshed for this long belongs to a dead job (output.claim_ttl_s).
DEFAULT_CLAIM_TTL_S = OutputConfig.claim_ttl_s


@dataclass
class Claim:
    stem: str
    path: Path
    token: str  # unique per claim: tells our claim from a later one at the same path
    info: dict = field(default_factory=dict)


def this_host() -> str:
    return socket.gethostname()


def this_pid_namespace() -> str:
    """Containers on one node (e.g. Slurm + pyxis) share a hostname but not pid numbers."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def same_process_space(info: dict) -> bool:
    """Whether the pid recorded in `info` can be checked from here."""
    return info.get("host") == this_host() and info.get("pidns", "") == this_pid_namespace()


def process_start_ticks(pid: int) -> int | None:
    """Start time of a process (Linux /proc), to tell a live pid from a reused one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may contain spaces
    try:
        if fields[0] == "Z":  # zombie: exited, not yet reaped
            return -1
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether `pid` on this host is running (and, if known, is the same process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    ticks = process_start_ticks(pid)
    if ticks == -1:
        return False
    if start_ticks is not None and ticks is not None and ticks != start_ticks:
        return False
    return True


def current_job_id() -> str:
    """This process's job as submitit names it ("A_i" for an array task, the job id
    otherwise, the local executor's id under --local); "pid<N>" outside any job, unique
    per process so that attempt names never merge across processes."""
    try:
        import submitit
        return str(submitit.JobEnvironment().job_id)
    except Exception:  # noqa: BLE001 - not inside a submitit job (tests, a shell)
        pass
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID") or f"pid{os.getpid()}"


class ClaimBook:
    """The claims folder of one output store."""

    def __init__(self, directory: str | Path, ttl_s: float = DEFAULT_CLAIM_TTL_S):
        self.dir = Path(directory)
        self.ttl_s = float(ttl_s)

    def path(self, stem: str) -> Path:
        return self.dir / f"{stem}.claim"

    # ---- taking and giving back --------------------------------------------------------

    def claim(self, stem: str, owner: dict | None = None) -> Claim | None:
        """Claim `stem`; None if a live claim holds it. Breaks a stale claim first."""
        self.dir.mkdir(parents=True, exist_ok=True)
        claim = self._create(stem, owner or {})
        if claim is not None:
            return claim
        current = self.read(stem)
        if current is None:  # released between our attempt and the read
            return self._create(stem, owner or {})
        stale, _ = self.is_stale(current)
        if not stale:
            return None
        if not self._break(stem, current.get("token")):
            return None
        return self._create(stem, owner or {})

    def refresh(self, claim: Claim) -> bool:
        """Renew the heartbeat. False when the claim is no longer ours (it was broken)."""
        current = self.read(claim.stem)
        if current is None or current.get("token") != claim.token:
            return False
        try:
            os.utime(claim.path)
        except FileNotFoundError:
            return False
        return True

    def release(self, claim: Claim) -> bool:
        """Remove the claim if it is still ours; True when it was."""
        current = self.read(claim.stem)
        if current is None or current.get("token") != claim.token:
            return False
        # Moved aside before the unlink so we never unlink a claim made after our read.
        aside = self.dir / f".{claim.stem}.released.{claim.token}"
        try:
            os.rename(claim.path, aside)
        except FileNotFoundError:
            return False
        moved = read_json_object(aside)
        if moved is not None and moved.get("token") != claim.token:
            _put_back(aside, claim.path)  # someone else's: restore it
            return False
        aside.unlink(missing_ok=True)
        return True

    # ---- looking -----------------------------------------------------------------------

    def read(self, stem: str) -> dict | None:
        """The claim's JSON plus `heartbeat` (its mtime); None if there is no claim.

        A claim file caught between its O_EXCL creation and its write reads as
        `{"partial": True}` with its mtime, so it counts as live until the TTL.
        """
        path = self.path(stem)
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        data = read_json_object(path)
        if data is None:
            if not path.exists():
                return None
            data = {"partial": True}
        data["heartbeat"] = mtime
        return data

    def is_stale(self, info: dict, now: float | None = None) -> tuple[bool, str]:
        now = time.time() if now is None else now
        age = now - float(info.get("heartbeat", 0))
        if age > self.ttl_s:
            return True, f"heartbeat {age:.0f}s old (ttl {self.ttl_s:.0f}s)"
        if "pid" in info and same_process_space(info):
            if not pid_alive(int(info["pid"]), info.get("pid_start")):
                return True, f"process {info['pid']} on {info['host']} is gone"
        return False, ""

    def holder(self, stem: str) -> dict | None:
        """The live claim on `stem`, or None (no claim, or only a stale one)."""
        info = self.read(stem)
        if info is None or self.is_stale(info)[0]:
            return None
        return info

    def live_claims(self) -> dict[str, dict]:
        out = {}
        if not self.dir.is_dir():
            return out
        for path in self.dir.glob("*.claim"):
            stem = path.name[: -len(".claim")]
            info = self.holder(stem)
            if info is not None:
                out[stem] = info
        return out

    def release_owned_by(self, job_ids: set[str], masters: set[str] = frozenset()) -> list[str]:
        """Release the claims whose owner job is in `job_ids` or is a task "A_i" of an array
        master "A" in `masters` (a cancelled run's); returns the released stems."""
        released = []
        for path in sorted(self.dir.glob("*.claim")) if self.dir.is_dir() else []:
            stem = path.name[: -len(".claim")]
            info = self.read(stem)
            if not info or not info.get("token"):
                continue
            owner = str(info.get("job_id") or (info.get("owner") or {}).get("job_id") or "")
            if not owner or (owner not in job_ids and owner.split("_")[0] not in masters):
                continue
            if self.release(Claim(stem=stem, path=path, token=info["token"], info=info)):
                released.append(stem)
        return released

    # ---- internals ---------------------------------------------------------------------

    def _create(self, stem: str, owner: dict) -> Claim | None:
        token = uuid.uuid4().hex
        pid = os.getpid()
        info = {
            "stem": stem, "token": token, "owner": owner, "host": this_host(), "pid": pid,
            "pidns": this_pid_namespace(), "pid_start": process_start_ticks(pid),
            "job_id": str(owner.get("job_id") or current_job_id()),
            "created_at": time.time(),
        }
        path = self.path(stem)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        try:
            os.write(fd, json.dumps(info).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return Claim(stem=stem, path=path, token=token, info=info)

    def _break(self, stem: str, stale_token: str | None) -> bool:
        """Remove the stale claim with `stale_token`; True if it is gone (by us or its owner)."""
        lock = self.dir / f"{stem}.break"
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > BREAK_LOCK_STALE_S:
                    lock.unlink(missing_ok=True)  # its breaker died mid-break
            except FileNotFoundError:
                pass
            return False
        try:
            current = self.read(stem)
            if current is None:
                return True
            if current.get("token") != stale_token or not self.is_stale(current)[0]:
                return False  # replaced or revived since we judged it
            graveyard = self.dir / f".{stem}.broken.{uuid.uuid4().hex}"
            try:
                os.rename(self.path(stem), graveyard)
            except FileNotFoundError:
                return True
            graveyard.unlink(missing_ok=True)
            return True
        finally:
            lock.unlink(missing_ok=True)


def _put_back(aside: Path, original: Path) -> None:
    try:
        os.link(aside, original)
    except FileExistsError:
        pass  # a newer claim already took the place; the old one is lost either way
    aside.unlink(missing_ok=True)
