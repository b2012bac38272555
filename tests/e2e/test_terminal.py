"""launch.py in a real terminal (tmux: `send-keys`, `capture-pane`) and in a pipe:
the live watch, colour only on a terminal, `status | head`, cancel's question."""
from __future__ import annotations

import subprocess
import sys

from tests.helpers.e2e import REPO
from tests.helpers.monitor import (SLURM_WAIT_S, gen_entry, make_done, make_run, sbatch,
                                   scancel_quietly, write_record)
from tests.helpers.slurm import wait_for
from tests.helpers.terminal import Terminal, shell_command
from wmsub.login import slurm_query as sq

ESC = "\x1b["


def _status_cmd(tmp_path, *args) -> str:
    return shell_command(sys.executable, REPO / "launch.py", *args, "--logs", tmp_path / "logs")


def _local_run(tmp_path, chunks):
    run = make_run(tmp_path, chunks, [gen_entry("4242", list(chunks), executor="local")])
    (tmp_path / "logs" / "LATEST").write_text(run.name + "\n")
    return run


def test_watch_redraws_in_place_with_colour_and_ends_with_the_run(tmp_path):
    chunks = {i: [f"s{i}-{k}" for k in range(4)] for i in range(3)}
    run = _local_run(tmp_path, chunks)
    write_record(run, 0, chunks[0], state="running", current="s0-0", step=12, steps=50)
    write_record(run, 1, chunks[1], state="failed", error="RuntimeError: CUDA error: out of memory")
    write_record(run, 2, chunks[2], state="pending")
    command = "echo MARKER-BEFORE-WATCH; " + _status_cmd(tmp_path, "status", "--watch", "--interval", "0.3")
    with Terminal(command, width=120, height=30) as term:
        first = term.wait_for("step 12/50")
        assert first.splitlines()[0] == "MARKER-BEFORE-WATCH"
        assert "chunk 1: RuntimeError: CUDA error: out of memory" in first
        coloured = term.screen(escapes=True)
        row = next(line for line in coloured.splitlines() if "s0-0 step 12/50" in line)
        assert f"{ESC}1m{ESC}32mrunning" in row or f"{ESC}1;32mrunning" in row, row

        for stem in chunks[0][:2]:
            make_done(tmp_path / "outputs", stem)
        write_record(run, 0, chunks[0], state="running", current="s0-2", step=30, steps=50,
                     done=chunks[0][:2])
        second = term.wait_for("s0-2 step 30/50")
        assert "step 12/50" not in second and "2/4" in second
        assert second.splitlines()[0] == "MARKER-BEFORE-WATCH", "the screen was cleared"
        history = term.screen(history=True)
        assert history.count("current video") == 1, "each refresh must replace the table, not add one"

        for i in range(3):
            for stem in chunks[i]:
                make_done(tmp_path / "outputs", stem)
            write_record(run, i, chunks[i], state="finished", done=chunks[i])
        last = term.wait_for("[exit 0]")
        assert "every job of the run has ended" in last and "12/12 videos" in last


def test_plain_status_has_colour_on_a_terminal_only_and_keeps_long_lines(tmp_path):
    fix = ("CheckpointError: model.checkpoint_dir /tmp/x/no-such-ckpt does not exist — fix: point "
           "model.checkpoint_dir at the folder holding the official Wan2.2-TI2V-5B files")
    run = _local_run(tmp_path, {0: ["a"], 1: ["b"]})
    write_record(run, 0, ["a"], state="running", current="a")
    write_record(run, 1, ["b"], state="failed", error=fix)
    with Terminal(_status_cmd(tmp_path, "status"), width=80, height=40) as term:
        term.wait_for("[exit 0]")
        assert f"   error: {fix}" in term.screen(joined=True).splitlines()
        assert ESC in next(line for line in term.screen(escapes=True).splitlines() if "4242_0" in line)
    piped = subprocess.run(_status_cmd(tmp_path, "status") + " | cat", shell=True,
                           capture_output=True, text=True, check=True).stdout
    assert ESC not in piped and f"   error: {fix}" in piped.splitlines()


def test_status_into_head_ends_without_a_traceback(tmp_path):
    # megabytes of output: more than a pipe holds, so writing goes on after head has left
    stems = [f"stem-{k:05d}" for k in range(12000)]
    run = _local_run(tmp_path, {0: stems})
    write_record(run, 0, stems, state="failed", failed={s: "CUDA error: " + "x" * 150 for s in stems})
    proc = subprocess.run(["bash", "-c", _status_cmd(tmp_path, "status") + ' | head -n 2; '
                           'echo "launch exit ${PIPESTATUS[0]}" >&2'], capture_output=True, text=True)
    assert len(proc.stdout.splitlines()) == 2 and proc.stdout.startswith("run run-test")
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert "launch exit 141" in proc.stderr


def test_cancel_asks_on_a_terminal_when_no_run_is_named(slurm_cluster, tmp_path):
    master = sbatch("--hold", "--array=0-1", "-o", "/dev/null", "--wrap", "true")
    try:
        run = make_run(tmp_path, {0: ["a"], 1: ["b"]}, [gen_entry(master, [0, 1])])
        (tmp_path / "logs" / "LATEST").write_text(run.name + "\n")
        with Terminal(_status_cmd(tmp_path, "cancel"), width=120, height=20) as term:
            asked = term.wait_for("[y/N]")
            assert f"cancel run {run.name}" in asked and f"gen    {master}" in asked
            assert "2 task(s) in the queue" in asked
            term.keys("n", "Enter")
            term.wait_for("[exit 1]")
            assert "nothing cancelled" in term.screen()
        queue, _ = sq.query_squeue([master], all_states=False)
        assert len(queue) == 2, "answering no must cancel nothing"
        with Terminal(_status_cmd(tmp_path, "cancel"), width=120, height=20) as term:
            term.wait_for("[y/N]")
            term.keys("y", "Enter")
            done = term.wait_for("[exit 0]", timeout_s=SLURM_WAIT_S)
            assert f"run {run.name}: cancelled job(s) {master}" in done
            assert "{" not in done, "the summary is sentences; --json gives JSON"
        wait_for(lambda: not sq.query_squeue([master], all_states=False)[0], 60, "the jobs gone")
    finally:
        scancel_quietly(master)

