"""Helpers for tests that drive the local dev Slurm cluster (slurm/devcluster.sh).

The cluster writes its slurm.conf to /etc/slurm/slurm.conf, so the plain Slurm client
commands used here need no SLURM_CONF.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVCLUSTER_SCRIPT = REPO_ROOT / "slurm" / "devcluster.sh"
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
# Generous: a cold start installs packages and initialises MariaDB.
CLUSTER_UP_TIMEOUT_S = 300

T = TypeVar("T")


class CommandError(RuntimeError):
    """A command exited non-zero; the message carries its output."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command failed (exit {returncode}): {shlex.join(self.argv)}\n"
            f"--- stdout ---\n{stdout.strip()}\n--- stderr ---\n{stderr.strip()}"
        )


def run(cmd: str | Sequence[str], *, check: bool = True, timeout_s: float = 120,
        input_text: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command (a string is split like a shell would, without a shell); return stdout.

    Raises CommandError with stdout and stderr when it exits non-zero and `check` is set.
    """
    argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    full_env = None if env is None else {**os.environ, **env}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                          input=input_text, env=full_env)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str | Callable[[], str],
             interval_s: float = 0.5) -> T:
    """Poll `predicate` until it returns something truthy; return that value.

    Raises TimeoutError naming `what` (a callable is asked only then, e.g. for the queue's
    state at the timeout) and the last value (or exception) seen.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # a transient sacct/squeue hiccup must not end the wait
            last = exc
        if time.monotonic() >= deadline:
            description = what() if callable(what) else what
            raise TimeoutError(
                f"timed out after {timeout_s:g}s waiting for {description}; last: {last!r}")
        time.sleep(interval_s)


def sacct_states(job_id: str | int) -> dict[str, str]:
    """{job id: state} of the job (or of every task of an array) as accounting records it.

    States are the first word only ("CANCELLED by 0" -> "CANCELLED"). Empty until
    slurmdbd has the record.
    """
    out = run(["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "JobID,State"])
    states: dict[str, str] = {}
    for line in out.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            states[jid.strip()] = state.split()[0] if state.strip() else ""
    return states


def job_state_sacct(job_id: str | int) -> str:
    """The accounting state of one job or array task ("" while sacct has no record yet).

    For a whole array (a bare id whose tasks differ) it raises ValueError: pass "A_i".
    """
    states = sacct_states(job_id)
    if not states:
        return ""
    if str(job_id) in states:
        return states[str(job_id)]
    distinct = set(states.values())
    if len(distinct) == 1:
        return distinct.pop()
    raise ValueError(f"job {job_id} has tasks in different states {states}; ask for one task (A_i)")


@dataclass(frozen=True)
class QueueRow:
    job_id: str      # "123" or, for array tasks, "123_4"
    state: str       # PENDING, RUNNING, COMPLETING, ...
    reason: str      # None, BeginTime, Resources, ...
    restarts: int


def squeue_rows(job_id: str | int | None = None) -> list[QueueRow]:
    """The queue's rows (array tasks one per row); one job's rows when `job_id` is given.

    A job slurmctld has already forgotten gives an empty list, not an error.
    """
    argv = ["squeue", "-h", "-r", "-O", "JobArrayID:|,State:|,Reason:|,RestartCnt:|"]
    if job_id is not None:
        argv += ["-j", str(job_id)]
    try:
        out = run(argv)
    except CommandError as exc:
        if "Invalid job id" in exc.stderr:
            return []
        raise
    rows = []
    for line in out.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) >= 4:
            rows.append(QueueRow(fields[0], fields[1], fields[2], int(fields[3] or 0)))
    return rows


def squeue_states(job_id: str | int) -> dict[str, str]:
    """{job id or "A_i": state} for the job's rows still in the queue."""
    return {row.job_id: row.state for row in squeue_rows(job_id)}


def scontrol_job(job_id: str | int) -> dict[str, str]:
    """`scontrol show job` as a dict of its Key=Value fields (first task of an array)."""
    fields: dict[str, str] = {}
    for token in run(["scontrol", "show", "job", "-o", str(job_id)]).split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def release_begin_time(job_id: str | int | None = None) -> list[str]:
    """Let requeued jobs that wait for their BeginTime start now; return the ids released.

    Slurm holds a requeued job until requeue time + AuthInfo cred_expire + 1
    (slurm/README.md). Only rows that are PENDING with Reason=BeginTime and were
    restarted at least once are touched, so a job submitted with --begin keeps its time.
    With no `job_id`, every such job in the queue is released.
    """
    released = []
    for row in squeue_rows(job_id):
        if row.state == "PENDING" and row.reason == "BeginTime" and row.restarts >= 1:
            run(["scontrol", "update", f"JobId={row.job_id}", "StartTime=now"], check=False)
            released.append(row.job_id)
    return released


class BeginTimeReleaser:
    """A background thread calling `release_begin_time` every `interval_s`.

    Use as a context manager; `job_ids` limits it to those jobs (None: the whole queue).
    `released` lists every id it released, for tests to check it acted.
    """

    def __init__(self, job_ids: Sequence[str | int] | None = None, interval_s: float = 1.0):
        self.job_ids = None if job_ids is None else [str(j) for j in job_ids]
        self.interval_s = interval_s
        self.released: list[str] = []
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="slurm-begin-time-releaser",
                                        daemon=True)

    def watch(self, job_id: str | int) -> None:
        if self.job_ids is not None:
            self.job_ids.append(str(job_id))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            targets = [None] if self.job_ids is None else list(self.job_ids)
            for target in targets:
                try:
                    self.released += release_begin_time(target)
                except Exception as exc:  # keep releasing; the test sees the errors
                    self.errors.append(exc)

    def start(self) -> "BeginTimeReleaser":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10 * self.interval_s + 30)

    def __enter__(self) -> "BeginTimeReleaser":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


@dataclass(frozen=True)
class DevCluster:
    """What the `slurm_cluster` fixture hands to tests."""
    folder: Path        # $WMSUB_CLUSTER_DIR: state, logs, sockets, fake GPUs
    slurm_conf: Path    # the rendered slurm.conf (also copied to /etc/slurm/slurm.conf)
    up_output: str      # what `devcluster.sh up` printed


def devcluster(*args: str, env: dict[str, str] | None = None,
               timeout_s: float = CLUSTER_UP_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run slurm/devcluster.sh with `args` (and extra `env`); never raises on its exit code."""
    full_env = None if env is None else {**os.environ, **env}
    return subprocess.run(["bash", str(DEVCLUSTER_SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout_s, env=full_env)


def process_alive(pid: int) -> bool:
    """True for a running process; False for a gone one or a zombie awaiting its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cluster_folder() -> Path:
    return Path(os.environ.get("WMSUB_CLUSTER_DIR") or REPO_ROOT / ".devcluster").resolve()


def start_devcluster() -> DevCluster:
    """`devcluster.sh up`; raises RuntimeError with the script's output if it fails."""
    proc = devcluster("up")
    if proc.returncode != 0:
        raise RuntimeError(
            f"`bash slurm/devcluster.sh up` failed (exit {proc.returncode}); it must run as root "
            f"on Debian/Ubuntu with apt.\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    folder = cluster_folder()
    return DevCluster(folder, folder / "etc" / "slurm.conf", proc.stdout + proc.stderr)


def daemon_pids(status_output: str) -> dict[str, int | None]:
    """Parse `devcluster.sh status`: {daemon: pid or None when down}."""
    pids: dict[str, int | None] = {}
    for line in status_output.splitlines():
        words = line.split()
        if words and words[0] in DAEMONS:
            pids[words[0]] = int(words[3]) if len(words) >= 4 and words[1] == "up" else None
    return pids
