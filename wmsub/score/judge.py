"""Judge stage: split the videos into shards, run the official judge on each, merge.

The judge is the UNMODIFIED `evaluation.py` of the WorldModelBench repo, run as a
subprocess in its own (VILA) environment; nothing here imports torch. Facts about it
that this module relies on (read from the official script):

- it must run with the repo root as working directory: it loads
  `./worldmodelbench.json` and walks it in order, judging `<video_dir>/<stem>.mp4`
  and silently skipping stems without a video;
- it writes `<save_name>_cot.json` (`<save_name>.json` without --cot) by plain string
  concatenation, so an absolute `--save_name` puts the file in our shard folder
  instead of the shared repo (where a stale file of another run would be loaded
  and its inference skipped);
- when that file exists it loads it and skips all inference.

Layout under `<run_dir>/judge/`:
  shards.json                 {"shards": [[stem, ...], ...], "video_dir", "model_name", "stems"}
  shard-<i>/videos/<stem>.mp4 symlinks to the videos that exist
  shard-<i>/missing.json      stems of the shard without a video
  shard-<i>/judge.log         the judge's stdout and stderr
  shard-<i>/official_cot.json what the judge wrote (kept as it is)
  shard-<i>/result.json       copy of it: the shard's result
  shard-<i>/status.json       coverage of the shard and the judge settings it was made with
  shard-<i>/failed.json       why the judge failed on the shard (removed by a later success)
  results.json                merged results, official layout
  coverage.json               judged / expected / missing of the merged results
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from wmsub.benchmark.manifest import stem_domains
from wmsub.config import Config
from wmsub.problems import Problem
from wmsub.state.jsonio import copy_atomic, read_json_object, write_json_atomic, write_text_atomic
from wmsub.state.runs import RunFolder
from wmsub.score.scoring import ResultsError, coverage, per_video, results_from_verdicts

LOG_TAIL_LINES = 40
# How the official script writes its results: mmengine's `dump(results, path, indent=4)`,
# i.e. json.dump with indent=4 and the default ensure_ascii, no newline at the end.
OFFICIAL_JSON = {"indent": 4}
LOG_TAIL_SHOWN = 15  # lines of a failed judge's log the report shows


class JudgeError(RuntimeError):
    """The judge could not run or produced no usable result."""


def judge_dir(run_dir) -> Path:
    return Path(run_dir) / "judge"


def shard_dir(run_dir, shard_index: int) -> Path:
    return judge_dir(run_dir) / f"shard-{shard_index}"


def shards_path(run_dir) -> Path:
    """`<run_dir>/judge/shards.json`: the shards as submitted (write_shards_file)."""
    return judge_dir(run_dir) / "shards.json"


def shard_stems(stems: list[str], n: int, domains: Mapping[str, str] | None = None) -> list[list[str]]:
    """Deal the stems into n shards, deterministically, each shard keeping input order.

    Dealing round-robin gives every shard about the same number of videos of every
    domain: domains are contiguous in worldmodelbench.json, and with `domains` given
    the stems are grouped by domain first, so any input order balances. The rotation
    continues across domains, so shard sizes differ by at most one.
    """
    stems = list(dict.fromkeys(stems))
    n = max(1, min(int(n), len(stems))) if stems else max(1, int(n))
    order = stems
    if domains is not None:
        by_domain: dict[str, list[str]] = {}
        for s in stems:
            by_domain.setdefault(domains.get(s, ""), []).append(s)
        order = [s for group in by_domain.values() for s in group]
    position = {s: i for i, s in enumerate(stems)}
    shards: list[list[str]] = [[] for _ in range(n)]
    for i, s in enumerate(order):
        shards[i % n].append(s)
    return [sorted(shard, key=position.__getitem__) for shard in shards]


def write_shards_file(run_dir, cfg: Config, stems: list[str],
                      domains: Mapping[str, str] | None = None) -> dict:
    """Write `<run_dir>/judge/shards.json` at submit time: cfg.judge.shards shards of
    `stems` (give them in benchmark order: the merged results keep this order); returns
    what it wrote (as read_shards_file would read it back)."""
    shards = shard_stems(stems, cfg.judge.shards, domains)
    data = {"shards": shards, "video_dir": str(Path(cfg.output.dir).resolve()),
            "model_name": cfg.model.name, "stems": list(dict.fromkeys(stems))}
    write_json_atomic(shards_path(run_dir), data)
    return data


def read_shards_file(run_dir) -> dict:
    path = shards_path(run_dir)
    if not path.is_file():
        raise JudgeError(f"{path} does not exist: the judge shards are written at submit time "
                         f"(wmsub.score.judge.write_shards_file); submit the run again with judge.enabled=true")
    data = json.loads(path.read_text())
    for key in ("shards", "video_dir", "model_name"):
        if key not in data:
            raise JudgeError(f"{path}: missing key '{key}'; rewrite it with wmsub.score.judge.write_shards_file")
    return data


def read_shards(run_dir) -> list[list[str]]:
    """The stems of each shard, as written by write_shards_file."""
    return read_shards_file(run_dir)["shards"]


def prepare_shard(run_dir, shard_index: int, stems: list[str], video_dir) -> Path:
    """(Re)build `shard-<i>/videos/` with a symlink per stem whose video exists and
    list the others in `shard-<i>/missing.json`; returns the shard folder."""
    folder = shard_dir(run_dir, shard_index)
    videos = folder / "videos"
    if videos.exists():
        shutil.rmtree(videos)
    videos.mkdir(parents=True)
    video_dir = Path(video_dir).resolve()
    missing = []
    for stem in stems:
        target = video_dir / f"{stem}.mp4"
        if target.is_file() and target.stat().st_size > 0:
            (videos / f"{stem}.mp4").symlink_to(target)
        else:
            missing.append(stem)
    write_json_atomic(folder / "missing.json", {"video_dir": str(video_dir), "missing": missing})
    return folder


def official_output(folder: Path, cot: bool) -> tuple[str, Path]:
    """The --save_name we pass and the file the official script makes of it."""
    save_name = str(folder.resolve() / "official")
    return save_name, Path(save_name + ("_cot.json" if cot else ".json"))


def path_from_here(path: str) -> str:
    """Absolute when it names something relative to our working directory: the judge
    runs in judge.repo, where a relative path would mean something else. Never resolved:
    a venv's python is a symlink to the base interpreter, which would lose the venv."""
    return os.path.abspath(path) if os.sep in path and Path(path).exists() else path


def judge_command(cfg: Config, videos: Path, model_name: str, save_name: str) -> list[str]:
    cmd = [path_from_here(cfg.judge.python), "evaluation.py", "--judge",
           path_from_here(cfg.judge.checkpoint), "--video_dir", str(videos.resolve()),
           "--model_name", model_name, "--save_name", save_name]
    return cmd + (["--cot"] if cfg.judge.cot else [])


MODEL_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def judge_setup_problems(cfg: Config) -> list[Problem]:
    """What is missing from the judge's setup, read from the files alone (no import runs:
    login/interpreters.py asks judge.python itself)."""
    j = cfg.judge
    problems = []
    guide = "see docs/JUDGE.md"
    if not j.python:
        problems.append(Problem("judge.python", "is empty", f"set it to the VILA environment's interpreter ({guide})"))
    elif not (Path(j.python).is_file() or shutil.which(j.python)):
        problems.append(Problem("judge.python", f"{j.python!r} is not an executable file or a command on PATH",
                                f"give the VILA env's interpreter by path, e.g. /path/to/envs/vila/bin/python ({guide})"))
    if not j.repo:
        problems.append(Problem("judge.repo", "is empty",
                                "set it to the WorldModelBench repo root (holds evaluation.py)"))
    else:
        for name in ("evaluation.py", "worldmodelbench.json"):
            if not (Path(j.repo) / name).is_file():
                problems.append(Problem("judge.repo", f"{j.repo!r} has no {name}",
                                        "point it at a WorldModelBench checkout (git clone "
                                        "https://github.com/WorldModelBench-Team/WorldModelBench)"))
    problems += _judge_checkpoint_problems(j.checkpoint)
    return problems


def _judge_checkpoint_problems(checkpoint: str) -> list[Problem]:
    fix = ("download the judge weights: huggingface-cli download Efficient-Large-Model/vila-ewm-qwen2-1.5b "
           "--local-dir DIR, and set judge.checkpoint=DIR")
    if not checkpoint:
        return [Problem("judge.checkpoint", "is empty", fix)]
    folder = Path(checkpoint)
    if not folder.is_dir():
        return [Problem("judge.checkpoint", f"{checkpoint} {'is not a folder' if folder.exists() else 'does not exist'}", fix)]
    has_config = (folder / "config.json").is_file()
    weights = [p for pattern in MODEL_FILES for p in (*folder.glob(pattern), *folder.glob(f"*/{pattern}"))]
    if not has_config or not weights:
        lacks = " and ".join(x for x, missing in (("config.json", not has_config),
                                                  ("weight files (*.safetensors, *.bin)", not weights)) if missing)
        return [Problem("judge.checkpoint", f"{checkpoint} does not look like a model folder: no {lacks}", fix)]
    return []


def check_judge_setup(cfg: Config, config_path: Path) -> None:
    problems = judge_setup_problems(cfg)
    if problems:
        raise JudgeError(f"{config_path}: the judge is not set up (see docs/JUDGE.md):\n  "
                         + "\n  ".join(str(p) for p in problems))


def judge_list_stems(repo) -> set[str]:
    """Stems the official script will look for: those of the repo's worldmodelbench.json."""
    return set(stem_domains(Path(repo) / "worldmodelbench.json"))


def judge_settings(cfg: Config) -> dict:
    """What a shard's result depends on besides its videos: the judge weights, the
    benchmark repo (evaluation.py and its worldmodelbench.json) and chain of thought."""
    def resolved(path: str) -> str:
        return str(Path(path).resolve()) if path else ""
    return {"checkpoint": resolved(cfg.judge.checkpoint), "repo": resolved(cfg.judge.repo),
            "cot": bool(cfg.judge.cot)}


def shard_state(run_dir, shard_index: int, cfg: Config, video_dir) -> tuple[bool, str]:
    """(current, why): a shard is current when its result exists, was made with these
    judge settings and no video missing then exists now."""
    folder = shard_dir(run_dir, shard_index)
    if not (folder / "result.json").is_file():
        failed = read_json_object(folder / "failed.json")
        return False, "judge failed" if failed else "no result"
    made_with = (read_json_object(folder / "status.json") or {}).get("judge")
    if made_with is not None and made_with != judge_settings(cfg):
        changed = sorted(k for k in set(made_with) | set(judge_settings(cfg))
                         if made_with.get(k) != judge_settings(cfg).get(k))
        return False, "judge settings changed: " + ", ".join(f"judge.{k}" for k in changed)
    new = _new_videos_since(folder, video_dir)
    if new:
        return False, f"{len(new)} video(s) missing when judged exist now"
    return True, "current"


def _forget_result(folder: Path) -> None:
    """Remove a shard's stale result, and the official output the judge would reload
    instead of judging."""
    for path in [folder / "result.json", *folder.glob("official*.json")]:
        path.unlink(missing_ok=True)


def run_shard(run_dir: str, shard_index: int) -> dict:
    """Judge one shard: the entry point of a Slurm judge task (plain Python, no torch).

    A shard whose result is current (`shard_state`) is not run again; one whose
    videos changed (a video missing then exists now) or whose judge settings changed
    is judged afresh. A failure is kept in `shard-<i>/failed.json` for the report.
    Returns the shard's status (also in `shard-<i>/status.json`).
    """
    run_dir = Path(run_dir).resolve()
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise JudgeError(f"{config_path} does not exist: run_shard needs a run folder made by submit")
    cfg = RunFolder(run_dir).load_config()
    shards = read_shards_file(run_dir)
    if not 0 <= shard_index < len(shards["shards"]):
        raise JudgeError(f"{shards_path(run_dir)} has {len(shards['shards'])} shards; "
                         f"there is no shard {shard_index}")
    stems = shards["shards"][shard_index]
    folder = shard_dir(run_dir, shard_index)
    result_path = folder / "result.json"

    current, why = shard_state(run_dir, shard_index, cfg, shards["video_dir"])
    if current:
        return {**_status(folder, shard_index, stems, result_path, ran=False), "reused_result": True}
    if why.startswith("judge settings changed"):
        _forget_result(folder)
    try:
        status = _judge_shard(run_dir, cfg, config_path, shards, shard_index, stems)
    except Exception as e:
        write_json_atomic(folder / "failed.json", {"error": f"{type(e).__name__}: {e}",
                                                   "log": str(folder / "judge.log"), "at": time.time()})
        raise
    (folder / "failed.json").unlink(missing_ok=True)
    return status


def _judge_shard(run_dir: Path, cfg: Config, config_path: Path, shards: dict, shard_index: int,
                 stems: list[str]) -> dict:
    folder = shard_dir(run_dir, shard_index)
    result_path = folder / "result.json"
    save_name, official_path = official_output(folder, cfg.judge.cot)
    prepare_shard(run_dir, shard_index, stems, shards["video_dir"])
    present = [s for s in stems if s not in _missing(folder)]
    started = time.time()
    ran = False
    if not present:
        # nothing to judge: do not load the judge model for an empty folder
        write_json_atomic(official_path, {"model_name": shards["model_name"], "preds": {},
                                    "accs": {"instruction": [], "physical_laws": [], "common_sense": []}})
    else:
        check_judge_setup(cfg, config_path)
    listed = judge_list_stems(cfg.judge.repo) if present else set()
    if present and _judged_stems(official_path) != set(present) & listed:
        # (equal: an earlier attempt judged these videos and died before the copy)
        ran = True
        if official_path.exists():
            # from an earlier attempt on other videos: the official script would
            # load it and skip inference
            official_path.unlink()
        cmd = judge_command(cfg, folder / "videos", shards["model_name"], save_name)
        log_path = folder / "judge.log"
        with open(log_path, "ab") as log:
            log.write(f"\n$ cd {shlex.quote(cfg.judge.repo)} && {shlex.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.run(cmd, cwd=cfg.judge.repo, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0:
            raise JudgeError(f"judge of shard {shard_index} exited with {proc.returncode}; "
                             f"last lines of {log_path}:\n{_tail(log_path)}")
        if not official_path.is_file():
            raise JudgeError(f"judge of shard {shard_index} finished but wrote no {official_path}; "
                             f"last lines of {log_path}:\n{_tail(log_path)}")
    results = json.loads(official_path.read_text())
    per_video(results, str(official_path))  # refuse a malformed file now, not at report time
    copy_atomic(official_path, result_path)
    status = _status(folder, shard_index, stems, result_path, ran=ran)
    status["seconds"] = time.time() - started
    status["not_in_judge_list"] = sorted(set(present) - listed)
    status["judge"] = judge_settings(cfg)
    write_json_atomic(folder / "status.json", status)
    return status


def _judged_stems(path: Path) -> set[str] | None:
    preds = (read_json_object(path) or {}).get("preds")
    try:
        return set(preds)
    except TypeError:  # no "preds", or not a collection
        return None


def _missing(folder: Path) -> list[str]:
    path = folder / "missing.json"
    return json.loads(path.read_text())["missing"] if path.is_file() else []


def _new_videos_since(folder: Path, video_dir) -> list[str]:
    return [s for s in _missing(folder) if (Path(video_dir) / f"{s}.mp4").is_file()]


def _status(folder: Path, shard_index: int, stems: list[str], result_path: Path, ran: bool) -> dict:
    results = json.loads(result_path.read_text())
    cov = coverage(results, stems)
    return {"shard": shard_index, "stems": len(stems), "judged": cov["judged"],
            "missing": cov["missing"], "short": cov["short"], "ran_judge": ran,
            "reused_result": False, "result": str(result_path)}


def merge_shards(run_dir) -> Path:
    """Combine the shard results into `<run_dir>/judge/results.json` (official layout).

    Order: the `stems` order of shards.json (the order given at submit time, i.e.
    benchmark order), so the file is the one a single unsharded judge run would
    write, byte for byte (its values and types as the judge wrote them, its JSON
    formatting: OFFICIAL_JSON); each video's instruction, 5 physics and 2 common-sense
    entries move together. Shards without a result count as missing in `judge/coverage.json`.
    """
    shards = read_shards_file(run_dir)
    verdicts = {}
    absent_shards = []
    for i in range(len(shards["shards"])):
        path = shard_dir(run_dir, i) / "result.json"
        if not path.is_file():
            absent_shards.append(i)
            continue
        for v in per_video(json.loads(path.read_text()), str(path)):
            if v.stem in verdicts:
                raise ResultsError(f"{path}: video {v.stem} is also in an earlier shard's result")
            verdicts[v.stem] = v
    order = shards.get("stems") or [s for shard in shards["shards"] for s in shard]
    known = set(order)
    ordered = [verdicts[s] for s in order if s in verdicts] + \
              [v for s, v in verdicts.items() if s not in known]
    merged = results_from_verdicts(ordered, shards["model_name"])
    out = judge_dir(run_dir) / "results.json"
    write_text_atomic(out, json.dumps(merged, **OFFICIAL_JSON))  # byte for byte the official layout
    cov = coverage(merged, order)
    cov["shards_without_result"] = absent_shards
    cov.update(why_not_judged(run_dir, cov["missing"]))
    write_json_atomic(judge_dir(run_dir) / "coverage.json", cov)
    return out


def why_not_judged(run_dir, stems: list[str]) -> dict:
    """Sort the stems the merged results lack by cause, from the shard folders.

    {"video_missing": [...], "judge_failed": [...], "not_in_judge_list": [...],
     "not_judged": [...], "shard_failures": [{"shard", "stems", "why", "log", "log_tail"}]}.
    A video that exists was not judged because the judge failed (or did not finish) on
    its shard, because the judge's worldmodelbench.json does not list it, or because
    its shard has not run (e.g. made after the judge ran: `launch.py judge` judges it).
    """
    shards = read_shards_file(run_dir)
    video_dir = Path(shards["video_dir"])
    shard_of = {s: i for i, shard in enumerate(shards["shards"]) for s in shard}
    out = {"video_missing": [], "judge_failed": [], "not_in_judge_list": [], "not_judged": []}
    failures: dict[int, dict] = {}
    for stem in stems:
        if not (video_dir / f"{stem}.mp4").is_file():
            out["video_missing"].append(stem)
            continue
        i = shard_of.get(stem)
        folder = shard_dir(run_dir, i) if i is not None else None
        status = read_json_object(folder / "status.json") if folder else None
        attempted = folder is not None and any((folder / n).is_file() for n in ("judge.log", "failed.json"))
        if attempted and not (folder / "result.json").is_file():
            out["judge_failed"].append(stem)
            entry = failures.setdefault(i, _shard_failure(folder, i))
            entry["stems"].append(stem)
        elif status and stem in (status.get("not_in_judge_list") or []):
            out["not_in_judge_list"].append(stem)
        else:
            out["not_judged"].append(stem)
    out["shard_failures"] = [failures[i] for i in sorted(failures)]
    return out


def _shard_failure(folder: Path, shard_index: int) -> dict:
    failed = read_json_object(folder / "failed.json")
    why = failed["error"].splitlines()[0] if failed and failed.get("error") else \
        "the judge did not finish (killed, timed out, or still running)"
    log = folder / "judge.log"
    return {"shard": shard_index, "stems": [], "why": why, "log": str(log),
            "log_tail": _tail(log, LOG_TAIL_SHOWN)}


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return f"({path} does not exist)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])
