"""The command line's in-process parts: the wall clock of an array, job names, paths with
spaces in the job script and the watch hint, the checkout's config and logs from any folder,
cancel's question and summary.
launch.py run as a user runs it is tested in tests/procs/test_cli.py; the dry run that
`sbatch --test-only` checks is in tests/e2e/test_cli_slurm.py."""
from __future__ import annotations

import io
from pathlib import Path


def test_the_wall_clock_follows_array_parallelism():
    from wmsub.login.planner import wall_clock_s
    assert wall_clock_s([10, 10, 10], 2) == 20
    assert wall_clock_s([30, 10, 10, 10], 2) == 30
    assert wall_clock_s([10, 10, 10], 64) == 10
    assert wall_clock_s([], 4) == 0


def test_job_names_tell_runs_and_stages_apart_in_eight_characters():
    from wmsub.login.submission import job_name
    runs = ["smoke-20261130-101010", "smoke-20261130-101011", "wan22_ti2v_5b-20261130-101010"]
    firsts = {job_name(r, s)[:8] for r in runs for s in ("gen", "judge", "report")}
    assert len(firsts) == 9
    assert job_name(runs[0], "gen").endswith(".smoke-20261130-101010")


# ---- quoting: paths with spaces (the whole run is tested so in tests/e2e/test_cli_slurm.py) --

def test_the_job_scripts_keep_paths_with_spaces_whole(tmp_path, monkeypatch):
    import shlex

    from wmsub.config import Config
    from wmsub.login import submission
    from wmsub.state.runs import RunFolder
    checkout = tmp_path / "my checkout" / "wmsub"
    monkeypatch.setattr(submission, "REPO_ROOT", checkout)
    export = submission.job_setup_lines(["module load cuda"])[-1]
    assert shlex.split(export) == ["export", f"PYTHONPATH={checkout}${{PYTHONPATH:+:$PYTHONPATH}}"]
    cfg = Config()
    cfg.slurm.python = str(tmp_path / "py env" / "bin" / "python")
    cfg.slurm.srun_args = ["--cpus-per-task=8"]
    script = submission.sbatch_preview(cfg, RunFolder(tmp_path / "logs" / "run-x"), 2)
    assert export in script.splitlines()
    srun = shlex.split(next(line for line in script.splitlines() if line.startswith("srun ")))
    at = srun.index(cfg.slurm.python)
    assert srun[at - 2:at] == ["--kill-on-bad-exit=1", "--cpus-per-task=8"]
    assert srun[at + 1:at + 4] == ["-u", "-m", "submitit.core._submit"]


def test_the_watch_hint_is_one_shell_command_from_anywhere(tmp_path, monkeypatch):
    import shlex

    from wmsub import cli
    from wmsub.state.runs import RunFolder
    checkout = tmp_path / "my checkout"
    monkeypatch.setattr(cli, "CHECKOUT", checkout)
    monkeypatch.chdir(tmp_path)
    run = RunFolder(tmp_path / "my logs" / "smoke-20261130-101010")
    assert shlex.split(cli.status_hint(run)) == [
        "python", str(checkout / "launch.py"), "status", "--run", run.name, "--logs", str(tmp_path / "my logs")]
    (checkout / "logs").mkdir(parents=True)  # the checkout's own logs folder: no --logs needed
    monkeypatch.chdir(checkout)
    assert cli.status_hint(RunFolder(checkout / "logs" / "r1")) == "python launch.py status --run r1"


def test_config_and_logs_not_found_here_are_the_checkouts(tmp_path, monkeypatch, capsys):
    import json

    from tests.helpers.monitor import local_run, write_record
    from wmsub import cli
    checkout = tmp_path / "checkout"
    (checkout / "configs").mkdir(parents=True)
    (checkout / "configs" / "x.yaml").write_text("{}\n")
    run = local_run(checkout, {0: ["a"]})
    write_record(run, 0, ["a"], state="running", current="a")
    monkeypatch.setattr(cli, "CHECKOUT", checkout)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.checkout_path("logs") == checkout / "logs"
    assert cli.checkout_path("configs/x.yaml") == checkout / "configs" / "x.yaml"
    assert cli.checkout_path("configs/nope.yaml") == Path("configs/nope.yaml")  # named as given
    assert cli.main(["runs", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["run-test"]
    (elsewhere / "logs").mkdir()  # one here wins
    assert cli.checkout_path("logs") == Path("logs")
    assert cli.main(["runs", "--json"]) == 0 and json.loads(capsys.readouterr().out) == []


# ---- cancel: a summary in sentences, a question first for the latest run on a terminal ------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cancel_asks_first_for_the_latest_run_on_a_terminal_and_says_what_it_did(
        tmp_path, monkeypatch, capsys):
    import json
    import sys

    from tests.helpers.monitor import gen_entry, make_run
    from wmsub import cli
    from wmsub.login import slurm_query as sq
    from wmsub.login import submission
    run = make_run(tmp_path, {0: ["a"], 1: ["b"]}, [gen_entry("777", [0, 1])])
    (tmp_path / "logs" / "LATEST").write_text(run.name + "\n")
    queued = {f"777_{i}": sq.JobInfo(f"777_{i}", str(780 + i), "pending", "PENDING", source="squeue")
              for i in (0, 1)}
    monkeypatch.setattr(sq, "query_squeue", lambda ids, all_states=True: (queued, None))
    result = {"run": run.name, "job_ids": ["777"], "scancel_rc": 0, "scancel_error": None,
              "not_cancelled_local_jobs": [], "waited_s": 0.5, "still_queued": [],
              "released_claims": ["a"], "removed_temps": []}
    cancelled = []
    monkeypatch.setattr(submission, "cancel_run", lambda path: cancelled.append(path) or result)
    logs = ["--logs", str(tmp_path / "logs")]

    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    assert cli.main(["cancel", *logs]) == 1
    out = capsys.readouterr().out
    assert f"cancel run {run.name} (the latest" in out and "gen    777" in out
    assert "2 task(s) in the queue" in out and "[y/N]" in out and "nothing cancelled" in out
    assert cancelled == []

    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    assert cli.main(["cancel", *logs]) == 0
    out = capsys.readouterr().out
    assert f"run {run.name}: cancelled job(s) 777 (every stage and task)" in out
    assert "released 1 claim(s): a" in out and f"resubmit --run {run.name}" in out
    assert "{" not in out, "sentences; --json gives JSON"
    assert cancelled == [run.path]

    # a named run, --yes, or a stdin that is not a terminal: no question
    for argv, stdin in ((["--run", run.name], _Terminal("")), (["--yes"], _Terminal("")),
                        (["--json"], io.StringIO(""))):
        monkeypatch.setattr(sys, "stdin", stdin)
        assert cli.main(["cancel", *logs, *argv]) == 0
        out = capsys.readouterr().out
        assert "[y/N]" not in out, argv
    assert json.loads(out) == result
    assert len(cancelled) == 4


def test_the_readme_command_table_names_every_command_and_only_real_options():
    import re

    from tests.helpers.e2e import REPO
    from wmsub import cli
    table = (REPO / "README.md").read_text().split("## Commands", 1)[1].strip().split("\n\n", 1)[0]
    rows: dict[str, set[str]] = {}
    command = None
    for line in table.splitlines():  # a cell's \| is text, not a column
        cell = re.split(r"(?<!\\)\|", line)[1].strip() if line.startswith("| `") else ""
        usage = re.match(r"`python launch\.py (\[run\]|[a-z]+)", cell)
        if usage:
            command = "run" if usage.group(1) == "[run]" else usage.group(1)
        elif not cell.startswith("`  --"):  # a row of its own that is not launch.py's
            command = None
            continue
        if command in cli.COMMANDS:
            rows.setdefault(command, set()).update(re.findall(r"(?<![\w-])--?[a-z][\w-]*", cell.split("`")[1]))
    assert set(rows) == set(cli.COMMANDS), set(cli.COMMANDS) ^ set(rows)
    for name, flags in rows.items():
        known = {o for a in cli.command_parser(name)._actions for o in a.option_strings}
        assert flags <= known, (name, flags - known)


def test_the_squeue_and_sacct_formats_show_whole_job_names_of_every_shipped_config():
    import re

    from tests.helpers.e2e import REPO
    from wmsub.login.submission import SQUEUE_FORMAT, job_name
    from wmsub.state.runs import default_run_name
    width = int(re.search(r"%\.(\d+)j", SQUEUE_FORMAT).group(1))
    longest = max(len(job_name(default_run_name(str(path)), stage))
                  for path in (REPO / "configs").glob("*.yaml") for stage in ("gen", "judge", "report"))
    assert longest <= width, f"a {longest}-character job name is cut at {width}"
    readme = (REPO / "README.md").read_text()
    assert f'squeue --me -o "{SQUEUE_FORMAT}"' in readme and f"JobName%{width}," in readme
