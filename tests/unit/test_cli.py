"""The command line's in-process parts: the wall clock of an array and job names.
launch.py run as a user runs it is tested in tests/procs/test_cli.py; the dry run that
`sbatch --test-only` checks is in tests/e2e/test_cli_slurm.py."""
from __future__ import annotations


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
