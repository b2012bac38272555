"""Run names are unique (issue 14, finding 4): launches in the same second each get a run
folder of their own, and a `run.name` another launch is using is refused with the fix, never
shared. The dev-cluster version (two real launches, their arrays and chunk records) is
tests/e2e/test_e2e_faults.py."""
from __future__ import annotations

import fcntl
import os
import threading
import time

import pytest

from wmsub.config import load_config
from wmsub.state import runs
from wmsub.state.runs import create_run, read_latest


def _cfg(tmp_path, *extra):
    return load_config("configs/smoke.yaml", [f"run.logs_dir={tmp_path / 'logs'}", *extra])


def test_launches_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    frozen = time.gmtime()  # every launch names its run in this very second
    monkeypatch.setattr(runs.time, "gmtime", lambda *a: frozen)
    base = runs.default_run_name("configs/smoke.yaml")
    made, errors, start = [], [], threading.Barrier(6)

    def launch():
        try:
            start.wait()
            made.append(create_run(_cfg(tmp_path), "configs/smoke.yaml").name)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=launch) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(made) == sorted([base] + [f"{base}-{n}" for n in range(2, 7)]), made
    for name in made:  # each folder has its own config, written by its own launch
        assert (tmp_path / "logs" / name / "config.yaml").is_file()
    assert read_latest(tmp_path / "logs").strip() in made


def test_a_run_name_another_launch_is_using_is_refused_not_shared(tmp_path):
    folder = tmp_path / "logs" / "shared"
    folder.mkdir(parents=True)
    # another launch.py holds the folder's launch lock (its own open file: flock does not
    # care that it is this process), between its checks and its jobs.json
    other = os.open(folder / ".launch.lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(other, b"pid 4242 on node-a\n")
        with pytest.raises(FileExistsError, match="is being launched right now by pid 4242 on node-a") as refused:
            create_run(_cfg(tmp_path, "run.name=shared"), None)
        assert "pick another run.name" in str(refused.value)
        assert "resubmit --run shared" in str(refused.value)
        assert sorted(p.name for p in folder.iterdir()) == [".launch.lock"]  # nothing written
        assert read_latest(tmp_path / "logs") is None
    finally:
        os.close(other)  # that launch ends: the name is free again (it submitted nothing)
    run = create_run(_cfg(tmp_path, "run.name=shared"), None)
    assert run.path == folder.resolve() and (folder / "config.yaml").is_file()
    assert "pid" in (folder / ".launch.lock").read_text()  # held by this launch now
    # a second launch with the same name while this one holds it: refused as well
    again = os.open(folder / ".launch.lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(again)


def test_a_run_name_with_submitted_jobs_is_refused_even_after_the_first_check(tmp_path):
    first = create_run(_cfg(tmp_path, "run.name=done"), None)
    first.add_job({"stage": "gen", "job_id": "1", "tasks": {"0": "1_0"}})
    with pytest.raises(FileExistsError, match="already holds submitted jobs"):
        create_run(_cfg(tmp_path, "run.name=done"), None)
    assert len(first.jobs()) == 1
