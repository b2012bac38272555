"""The local dev Slurm cluster really schedules, accounts for, preempts and requeues jobs."""
import socket
import tempfile
from pathlib import Path

import pytest

from tests.helpers.slurm import (
    BeginTimeReleaser, CommandError, daemon_pids, devcluster, job_state_sacct, process_alive,
    run, scontrol_job, squeue_states, wait_for,
)

JOB_TIMEOUT_S = 120


def _write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def _sbatch(*args: str) -> str:
    return run(["sbatch", "--parsable", *args]).strip().split(";")[0]


def _wait_state(job_id: str, state: str) -> None:
    wait_for(lambda: job_state_sacct(job_id) == state, JOB_TIMEOUT_S,
             lambda: f"sacct to show job {job_id} {state} (squeue: {squeue_states(job_id)})")


def test_two_task_gpu_job_sees_its_gpus_and_completes(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    script = _write_script(tmp_path / "job.sh",
                           "srun bash -c 'echo \"task=$SLURM_PROCID cvd=$CUDA_VISIBLE_DEVICES\"'\n")
    job_id = run(["sbatch", "--parsable", "--wait", "--ntasks=2", "--gres=gpu:2",
                  f"--output={out}", str(script)], timeout_s=JOB_TIMEOUT_S).strip()

    seen = dict(line.split(" ", 1) for line in out.read_text().splitlines()
                if line.startswith("task="))
    assert set(seen) == {"task=0", "task=1"}, out.read_text()
    for cvd in seen.values():
        devices = cvd.removeprefix("cvd=").split(",")
        assert len(devices) == 2 and all(d.isdigit() for d in devices), seen
    _wait_state(job_id, "COMPLETED")


LOW_JOB = """\
events={events}
echo "start restart=${{SLURM_RESTART_COUNT:-0}}" >> "$events"
if [[ ${{SLURM_RESTART_COUNT:-0}} -ge 1 ]]; then echo finish >> "$events"; exit 0; fi
# Like submitit: on the preemption signal, note it and requeue ourselves.
trap 'echo usr2 >> "$events"; scontrol requeue "$SLURM_JOB_ID"' USR2
echo waiting >> "$events"
for _ in $(seq 1500); do sleep 0.2; done
echo never-preempted >> "$events"
exit 1
"""


def test_high_partition_preempts_low_job_which_is_signalled_requeued_and_finishes(
        slurm_cluster, tmp_path):
    events = tmp_path / "events"
    low_script = _write_script(tmp_path / "low.sh", LOW_JOB.format(events=events))
    low = _sbatch("--partition=low", "--requeue", "--gres=gpu:2", "--signal=B:USR2@10",
                  f"--output={tmp_path / 'low.out'}", "--open-mode=append", str(low_script))
    wait_for(lambda: events.exists() and "waiting" in events.read_text(), JOB_TIMEOUT_S,
             lambda: f"low job {low} to start (squeue: {squeue_states(low)})")

    with BeginTimeReleaser([low], interval_s=1.0) as releaser:
        high = _sbatch("--partition=high", "--gres=gpu:4", f"--output={tmp_path / 'high.out'}",
                       f"--wrap=echo high >> {events}; sleep 2")
        _wait_state(high, "COMPLETED")
        _wait_state(low, "COMPLETED")

    lines = events.read_text().split()
    assert lines == ["start", "restart=0", "waiting", "usr2", "high",
                     "start", "restart=1", "finish"], lines
    history = run(["sacct", "-n", "-X", "-P", "-D", "-j", low, "-o", "State"]).split()
    assert {"PREEMPTED", "REQUEUED"} & set(history), history
    assert low in releaser.released and not releaser.errors, (releaser.released, releaser.errors)
    assert int(scontrol_job(low).get("Restarts", "1")) >= 1


def test_second_up_keeps_the_running_daemons(slurm_cluster):
    before = devcluster("status")
    assert before.returncode == 0, before.stdout + before.stderr
    pids = daemon_pids(before.stdout)
    assert sorted(pids) == sorted(("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"))
    assert all(pids.values()), pids

    again = devcluster("up")
    assert again.returncode == 0, again.stdout + again.stderr
    after = devcluster("status")
    assert after.returncode == 0 and daemon_pids(after.stdout) == pids, after.stdout
    assert "idle" in after.stdout or "mix" in after.stdout, after.stdout


def test_query_helpers_report_unknown_jobs_and_failures_clearly(slurm_cluster):
    assert squeue_states(987654321) == {}
    assert job_state_sacct(987654321) == ""
    with pytest.raises(CommandError, match="exit 3"):
        run(["bash", "-c", "echo oops >&2; exit 3"])
    with pytest.raises(TimeoutError, match="the impossible"):
        wait_for(lambda: False, 0.3, "the impossible", interval_s=0.1)
    with pytest.raises(TimeoutError, match="asked late"):
        wait_for(lambda: None, 0.2, lambda: "asked late", interval_s=0.1)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_down_stops_daemons_and_jobs_and_up_brings_the_cluster_back(slurm_cluster):
    # A throwaway second cluster (own folder, ports, no /etc copy): the shared one stays up.
    folder = Path(tempfile.mkdtemp(prefix="wmsub-devcluster-test-", dir="/var/tmp"))
    folder.chmod(0o755)  # munged and mariadbd run as their own users
    ctld, slurmd, dbd, db = _free_ports(4)
    env = {"WMSUB_CLUSTER_DIR": str(folder), "WMSUB_CLUSTER_CLIENT_CONF": "",
           "WMSUB_CLUSTER_SLURMCTLD_PORT": str(ctld), "WMSUB_CLUSTER_SLURMD_PORT": str(slurmd),
           "WMSUB_CLUSTER_SLURMDBD_PORT": str(dbd), "WMSUB_CLUSTER_DB_PORT": str(db)}
    client_env = {"SLURM_CONF": str(folder / "etc" / "slurm.conf")}
    shared_conf = Path("/etc/slurm/slurm.conf").read_text()
    try:
        up = devcluster("up", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        daemons = daemon_pids(devcluster("status", env=env).stdout)
        assert all(daemons.values()), daemons

        task_pids = folder / "task_pids"
        job = run(["sbatch", "--parsable", "--ntasks=2", "--output=/dev/null",
                   f"--wrap=srun bash -c 'echo $$ >> {task_pids}; exec sleep 300'"],
                  env=client_env).strip()
        wait_for(lambda: task_pids.exists() and len(task_pids.read_text().split()) == 2,
                 JOB_TIMEOUT_S, f"both tasks of job {job} on the second cluster")
        tasks = [int(pid) for pid in task_pids.read_text().split()]

        down = devcluster("down", env=env)
        assert down.returncode == 0, down.stdout + down.stderr
        status = devcluster("status", env=env)
        assert status.returncode == 3 and set(daemon_pids(status.stdout).values()) == {None}, \
            status.stdout
        alive = [pid for pid in [*daemons.values(), *tasks] if process_alive(pid)]
        assert not alive, f"still running after down: {alive}"

        again = devcluster("up", env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"],
                   env=client_env).split()[0] == "CANCELLED"
    finally:
        purge = devcluster("down", "--purge", env=env)
    assert purge.returncode == 0 and not folder.exists(), purge.stdout + purge.stderr
    assert Path("/etc/slurm/slurm.conf").read_text() == shared_conf


def test_up_on_ports_another_cluster_holds_says_so_at_once(slurm_cluster):
    # a second checkout's cluster on the ports of the running one: a clear error, no waiting
    folder = Path(tempfile.mkdtemp(prefix="wmsub-devcluster-clash-", dir="/var/tmp"))
    folder.chmod(0o755)
    env = {"WMSUB_CLUSTER_DIR": str(folder), "WMSUB_CLUSTER_CLIENT_CONF": ""}
    try:
        up = devcluster("up", env=env, timeout_s=50)  # the old wait for mariadbd was 60 s
        assert up.returncode != 0
        assert "port 3306 (mariadbd) is already taken" in up.stderr, up.stdout + up.stderr
        started = daemon_pids(devcluster("status", env=env).stdout)
        assert not any(started.get(d) for d in ("mariadbd", "slurmdbd", "slurmctld", "slurmd")), started
    finally:
        purge = devcluster("down", "--purge", env=env)
    assert purge.returncode == 0 and not folder.exists(), purge.stdout + purge.stderr
    assert "UP" in run(["scontrol", "ping"])  # the running cluster is untouched


def _munged_pids() -> set[int]:
    return {int(p) for p in run(["pgrep", "-x", "munged"], check=False).split()}


def test_up_beside_a_foreign_cluster_changes_no_file_and_starts_nothing(slurm_cluster):
    # Cluster A: a running throwaway cluster of ours with its own ports and client conf.
    # Folder B: a second checkout whose `up` asks for the same ports and client conf path.
    base = Path(tempfile.mkdtemp(prefix="wmsub-devcluster-two-", dir="/var/tmp"))
    base.chmod(0o755)  # munged and mariadbd run as their own users
    folder_a, folder_b, client_conf = base / "a", base / "b", base / "client-slurm.conf"
    ports = dict(zip(("SLURMCTLD", "SLURMD", "SLURMDBD", "DB"), _free_ports(4)))
    env_a = {"WMSUB_CLUSTER_DIR": str(folder_a), "WMSUB_CLUSTER_CLIENT_CONF": str(client_conf),
             **{f"WMSUB_CLUSTER_{k}_PORT": str(v) for k, v in ports.items()}}
    env_b = {**env_a, "WMSUB_CLUSTER_DIR": str(folder_b)}
    a_conf = {"SLURM_CONF": str(folder_a / "etc" / "slurm.conf")}
    try:
        up = devcluster("up", env=env_a)
        assert up.returncode == 0, up.stdout + up.stderr
        pids_a = daemon_pids(devcluster("status", env=env_a).stdout)
        conf_before = (client_conf.read_bytes(), client_conf.stat().st_mtime_ns)
        munged_before = _munged_pids()

        clash = devcluster("up", env=env_b, timeout_s=60)
        assert clash.returncode != 0
        for port, daemon in ((ports["DB"], "mariadbd"), (ports["SLURMDBD"], "slurmdbd"),
                             (ports["SLURMCTLD"], "slurmctld"), (ports["SLURMD"], "slurmd")):
            # every clash at once, naming the port, the process holding it and the fix
            assert f"port {port} ({daemon}) is already taken by pid {pids_a[daemon]}" in clash.stderr, clash.stderr
        assert f"{client_conf} belongs to the running dev cluster in {folder_a}" in clash.stderr
        assert "nothing was changed or started" in clash.stderr
        assert not folder_b.exists()  # not even its folder or lock
        assert (client_conf.read_bytes(), client_conf.stat().st_mtime_ns) == conf_before
        assert _munged_pids() == munged_before  # no second munged
        assert daemon_pids(devcluster("status", env=env_a).stdout) == pids_a
        assert "idle" in run(["sinfo", "-h", "-o", "%T"], env=a_conf)  # A still schedules

        # free ports, but the client conf is A's while A runs: refused as well
        free = dict(zip(("SLURMCTLD", "SLURMD", "SLURMDBD", "DB"), _free_ports(4)))
        env_c = {**env_b, **{f"WMSUB_CLUSTER_{k}_PORT": str(v) for k, v in free.items()}}
        conf_only = devcluster("up", env=env_c, timeout_s=60)
        assert conf_only.returncode != 0 and "is already taken" not in conf_only.stderr
        assert "belongs to the running dev cluster" in conf_only.stderr, conf_only.stderr
        assert not folder_b.exists() and client_conf.read_bytes() == conf_before[0]
    finally:
        purge = devcluster("down", "--purge", env=env_a)
        import shutil
        shutil.rmtree(base, ignore_errors=True)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert "UP" in run(["scontrol", "ping"])  # the shared cluster is untouched
    assert run(["sinfo", "-h", "-o", "%T"]).strip()
