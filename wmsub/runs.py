"""The run folder `logs/<run-name>/`: resolved config, plan, job ids, chunk progress.

Every writer here replaces files atomically, so `status` never reads half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import Config, config_from_dict

LATEST = "LATEST"


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


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

    def save_config(self, cfg: Config) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
        tmp = self.path / ".config.yaml.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.path / "config.yaml")

    def load_config(self) -> Config:
        data = yaml.safe_load((self.path / "config.yaml").read_text()) or {}
        return config_from_dict(data)

    def save_plan(self, plan_json: dict) -> None:
        write_json_atomic(self.path / "plan.json", plan_json)

    def load_plan(self) -> dict:
        return read_json(self.path / "plan.json", {}) or {}

    def jobs(self) -> list[dict]:
        return read_json(self.path / "jobs.json", []) or []

    def add_job(self, entry: dict) -> None:
        jobs = self.jobs()
        jobs.append(entry)
        write_json_atomic(self.path / "jobs.json", jobs)

    def job_ids(self) -> list[str]:
        return [j["job_id"] for j in self.jobs() if j.get("job_id")]


def new_run_name(cfg: Config, config_path: str | None) -> str:
    if cfg.run.name:
        return cfg.run.name
    stem = Path(config_path).stem if config_path else "default"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def create_run(cfg: Config, config_path: str | None) -> RunFolder:
    logs = Path(cfg.run.logs_dir)
    name = new_run_name(cfg, config_path)
    path = logs / name
    if (path / "jobs.json").exists():
        raise FileExistsError(
            f"run folder {path} already holds submitted jobs; pick another run.name or use "
            f"`python launch.py resubmit --run {name}`")
    run = RunFolder(path.resolve())
    run.save_config(cfg)
    (logs / LATEST).write_text(name + "\n")
    return run


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
