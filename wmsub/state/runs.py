"""The run folder `logs/<run-name>/`: resolved config, plan, job ids, chunk progress.

Layout (docs/DESIGN.md):
    config.yaml        the resolved config the jobs read
    launch.json        the config file it was launched with, and when
    plan.json          what the run set out to make (PlanRecord)
    jobs.json          every submission: stage, job id, array tasks (appended under a lock)
    chunks/<i>.json    each chunk's progress record (state/progress.py)
    submitit/          submitit's pickles and logs (names: submitit's JobPaths)
    judge/, report/    the judge shards and the report (score/)

Every writer here replaces files atomically, so `status` never reads half a file.
"""
from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from wmsub.config import Config, ConfigError, config_from_dict
from wmsub.state.jsonio import read_json, write_json_atomic, write_text_atomic

LATEST = "LATEST"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class PlanRecord:
    """plan.json: the plan as submitted (written by `login.planner.Plan.record`)."""
    stems: list[str] = field(default_factory=list)  # every selected stem, benchmark order
    domains: dict[str, str] = field(default_factory=dict)  # stem -> domain
    chunks: list[dict] = field(default_factory=list)  # [{"index", "stems", "est_s"}]
    failed_stems: dict[str, str] = field(default_factory=dict)  # left out: failed too often
    counts: dict[str, int] = field(default_factory=dict)  # done, pending, failed, ... at plan time
    fingerprint: str = ""
    est_total_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    _COUNTS = ("instances", "done", "pending", "failed", "quarantined", "claimed")

    def to_json(self) -> dict:
        return {**{k: self.counts.get(k, 0) for k in self._COUNTS},
                "fingerprint": self.fingerprint, "est_total_s": round(self.est_total_s, 1),
                "chunks": self.chunks, "failed_stems": self.failed_stems, "notes": self.notes,
                "stems": self.stems, "domains": self.domains}

    @classmethod
    def from_json(cls, data: dict | None) -> "PlanRecord":
        data = data if isinstance(data, dict) else {}
        return cls(stems=list(data.get("stems") or []), domains=dict(data.get("domains") or {}),
                   chunks=list(data.get("chunks") or []),
                   failed_stems=dict(data.get("failed_stems") or {}),
                   counts={k: int(data.get(k) or 0) for k in cls._COUNTS},
                   fingerprint=str(data.get("fingerprint") or ""),
                   est_total_s=float(data.get("est_total_s") or 0.0),
                   notes=list(data.get("notes") or []))

    def chunk_stems(self, index: int) -> list[str]:
        for chunk in self.chunks:
            if int(chunk.get("index", -1)) == index:
                return list(chunk.get("stems") or [])
        return []


@dataclass
class RunFolder:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def submitit_dir(self) -> Path:
        return self.path / "submitit"

    @property
    def chunks_dir(self) -> Path:
        return self.path / "chunks"

    def chunk_record(self, index: int) -> Path:
        return self.chunks_dir / f"{index}.json"

    @property
    def report_dir(self) -> Path:
        """Where the report job writes report.md, report.json, the charts and index.html."""
        return self.path / "report"

    def save_config(self, cfg: Config) -> None:
        write_text_atomic(self.path / "config.yaml",
                          yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))

    def load_config(self) -> Config:
        path = self.path / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} is not a wmsub run folder: it has no config.yaml "
                                    f"(run folders are logs/<run-name>/; see logs/LATEST)")
        return config_from_dict(yaml.safe_load(path.read_text()) or {})

    def output_dir(self, cfg: Config) -> Path:
        """The run's output folder. A relative `output.dir` is relative to where the run was
        launched; with a relative `run.logs_dir` that place is known from the run folder's own
        path (<launch dir>/<logs_dir>/<run name>), otherwise it is taken to be here."""
        configured = Path(cfg.output.dir)
        if configured.is_absolute():
            return configured
        candidates = [Path.cwd() / configured]
        logs = Path(cfg.run.logs_dir)
        if not logs.is_absolute() and ".." not in logs.parts:
            launch_dir = self.path.resolve().parents[len(logs.parts)]
            candidates.insert(0, launch_dir / configured)
        return next((c for c in candidates if c.is_dir()), candidates[0])

    def save_launch_info(self, config_path: str | None) -> None:
        """launch.json: the config file the run was launched with, and when."""
        write_json_atomic(self.path / "launch.json", {"config": str(config_path or ""),
                                                      "created_at": time.time()})

    def launch_info(self) -> dict:
        """launch.json ({} for runs made before it existed)."""
        return read_json(self.path / "launch.json", {}) or {}

    def save_plan(self, plan: PlanRecord) -> None:
        write_json_atomic(self.path / "plan.json", plan.to_json())

    def load_plan(self) -> PlanRecord:
        return PlanRecord.from_json(read_json(self.path / "plan.json"))

    def jobs(self) -> list[dict]:
        return read_json(self.path / "jobs.json", []) or []

    def add_job(self, entry: dict) -> None:
        """Append one submission; concurrent launchers into one folder serialise here."""
        with self._locked("jobs.json"):
            jobs = self.jobs()
            jobs.append(entry)
            write_json_atomic(self.path / "jobs.json", jobs)

    @contextmanager
    def _locked(self, name: str):
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / f".{name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def check_run_name(name: str) -> str | None:
    """Why `name` cannot name a run folder, or None when it can."""
    if not _SAFE_NAME.match(name) or len(name) > 100:
        return (f"run.name={name!r} is not a safe folder name — fix: use letters, digits and "
                "'.', '_', '+', '-' (no '/', spaces or newlines), at most 100 characters, "
                "starting with a letter or digit")
    return None


def default_run_name(config_path: str | None) -> str:
    stem = Path(config_path).stem if config_path else "default"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def planned_run_path(cfg: Config, config_path: str | None) -> Path:
    """The folder `create_run` would make now; nothing is created (`--dry-run`).

    Raises as `create_run` does for a bad or already used `run.name`."""
    logs = Path(cfg.run.logs_dir)
    if cfg.run.name:
        problem = check_run_name(cfg.run.name)
        if problem:
            raise ConfigError(problem)
        path = logs / cfg.run.name
        if (path / "jobs.json").exists():
            raise FileExistsError(
                f"run folder {path} already holds submitted jobs; pick another run.name or use "
                f"`python launch.py resubmit --run {cfg.run.name}`")
        return path
    base = default_run_name(config_path)
    for n in range(1, 1000):
        path = logs / (base if n == 1 else f"{base}-{n}")
        if not path.exists():
            return path
    raise FileExistsError(f"{logs}: no free run name like {base}; set run.name")


# Run folders this process is launching into: {folder: fd holding its launch lock}. The lock
# is held until the process ends (the kernel releases it even after a crash).
_LAUNCHING: dict[str, int] = {}


def _hold_launch_lock(path: Path) -> None:
    """Take `path`'s launch lock for the rest of this process, or raise FileExistsError
    naming the launch that holds it: two launches with the same `run.name` at once would
    otherwise both pass the jobs.json check and submit into one folder."""
    if str(path) in _LAUNCHING:
        return
    fd = os.open(path / ".launch.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise FileExistsError(
            f"run folder {path} is being launched right now by {holder}; pick another run.name, "
            f"or let that launch finish and use `python launch.py resubmit --run {path.name}`") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    _LAUNCHING[str(path)] = fd


def create_run(cfg: Config, config_path: str | None) -> RunFolder:
    """Make the run's folder, never sharing one with another launch.

    A default name taken by a launch in the same second gets a suffix (-2, -3, ...). A
    `run.name` that already holds submitted jobs is refused, and so is one that another
    launch is creating or submitting into right now (its launch lock, held until that
    process ends). Both refusals are FileExistsError with the fix.
    """
    logs = Path(cfg.run.logs_dir)
    logs.mkdir(parents=True, exist_ok=True)
    if cfg.run.name:
        path = planned_run_path(cfg, config_path)
        path.mkdir(exist_ok=True)
        _hold_launch_lock(path.resolve())
        planned_run_path(cfg, config_path)  # again under the lock: jobs.json of a launch just done
    else:
        base = default_run_name(config_path)
        for n in range(1, 1000):
            path = logs / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"{logs}: no free run name like {base}; set run.name")
    run = RunFolder(path.resolve())
    run.save_config(cfg)
    run.save_launch_info(config_path)
    write_text_atomic(logs / LATEST, run.name + "\n")
    return run


def read_latest(logs_dir: str | Path) -> str | None:
    """What logs/LATEST holds now (None when there is no such file)."""
    try:
        return (Path(logs_dir) / LATEST).read_text()
    except OSError:
        return None


def discard_run(run: RunFolder, latest_before: str | None, remove_folder: bool = True) -> None:
    """Undo `create_run` when nothing could be submitted: the folder goes (when this launch
    made it and no job was recorded in it) and logs/LATEST says again what it said before."""
    import shutil
    if (run.path / "jobs.json").exists():
        return
    if remove_folder:
        shutil.rmtree(run.path, ignore_errors=True)
    latest = run.path.parent / LATEST
    if latest_before is None:
        latest.unlink(missing_ok=True)
    else:
        write_text_atomic(latest, latest_before)


def find_run(logs_dir: str | Path = "logs", name: str | None = None) -> RunFolder:
    logs = Path(logs_dir)
    if name is None:
        latest = logs / LATEST
        if not latest.exists():
            raise FileNotFoundError(f"no runs under {logs}/ yet (start one with `python launch.py`)")
        name = latest.read_text().strip()
    path = Path(name) if Path(name).is_dir() else logs / name
    if not (path / "config.yaml").exists():
        raise FileNotFoundError(f"{path} is not a wmsub run folder (no config.yaml)")
    return RunFolder(path.resolve())
