"""`launch.py adopt`: take videos made without wmsub into the output store, after checking
each one (login node, no torch).

The original script (generate_videos.py) skips any existing `<stem>.mp4` and writes no
sidecar, so its folder looks to `plan` like files of unknown origin, which it quarantines.
Nothing is adopted without this explicit command. For every mp4 of a selected instance that
has no sidecar, found in `output.dir` or (with `--from DIR`) in DIR and copied in:

- it is decoded fully (ffmpeg, `state.video_io.probe_mp4`; a decoding error anywhere makes it
  invalid);
- its frame count must be `generate.frame_num`, its size the output size of its instance's
  first frame (`benchmark.sizes`, via the planner), its frame rate `generate.fps`;
- valid: the store gives it a sidecar marked `adopted`, with where it came from, the checks
  that passed, and the current settings recorded as assumed, not measured;
- invalid: it is quarantined with the reason (a file of DIR is left as it is; a copy goes
  to quarantine).

Afterwards `plan` counts the adopted videos as done; `status` and the report say how many.
"""
from __future__ import annotations

import getpass
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from wmsub.benchmark.manifest import load_manifest
from wmsub.config import Config
from wmsub.login.planner import check_output_sizes, output_size
from wmsub.state import video_io
from wmsub.state.claims import this_host
from wmsub.state.store import OutputStore

SUMMARY_LISTED = 20  # reasons printed per kind; the rest are counted


@dataclass
class Candidate:
    """One mp4 to look at."""
    stem: str
    path: Path  # the file as found
    origin: str  # "output.dir" (recorded in place) or "--from" (copied in when valid)


@dataclass
class Expected:
    """What a video of this instance measures when made with the current settings."""
    frames: int  # generate.frame_num
    width: int  # the output size of the instance's first frame (benchmark.sizes)
    height: int
    fps: int  # generate.fps


@dataclass
class AdoptReport:
    """What `adopt` did, for the summary and for tests."""
    adopted: list[str] = field(default_factory=list)  # stems that now count as done
    quarantined: dict[str, str] = field(default_factory=dict)  # stem -> why it is not valid
    skipped: dict[str, str] = field(default_factory=dict)  # file name -> why it was not looked at
    found_in_output: int = 0  # candidates in output.dir
    found_in_source: int = 0  # candidates copied from --from DIR

    def summary(self, out_dir: Path, source: Path | None) -> str:
        where = f"{out_dir}" + (f" and {source}" if source else "")
        lines = [f"adopt: {self.found_in_output + self.found_in_source} mp4(s) without a sidecar in "
                 f"{where}: {len(self.adopted)} adopted, {len(self.quarantined)} quarantined, "
                 f"{len(self.skipped)} skipped"]
        for title, items in (("quarantined", self.quarantined), ("skipped", self.skipped)):
            for name, why in list(items.items())[:SUMMARY_LISTED]:
                lines.append(f"  {title} {name}: {why}")
            if len(items) > SUMMARY_LISTED:
                lines.append(f"  ... {len(items) - SUMMARY_LISTED} more {title}")
        if self.adopted:
            lines.append("the adopted videos count as done; their sidecars record the current "
                         "settings as assumed (see .wmsub/records/<stem>.json, \"adopted\": true)")
        return "\n".join(lines)


def check_video(path: Path, expected: Expected) -> tuple[dict, list[str]]:
    """Decode `path` fully: (what it measures, the problems found; [] when valid)."""
    problem = video_io.mp4_structure_problem(path)
    if problem:
        return {}, [f"incomplete mp4: {problem}"]
    try:
        probe = video_io.probe_mp4(path)
    except video_io.VideoError as e:
        return {}, [f"does not decode: {e}"]
    problems = []
    if probe["frames"] != expected.frames:
        problems.append(f"{probe['frames']} frames, expected {expected.frames} (generate.frame_num)")
    if (probe["width"], probe["height"]) != (expected.width, expected.height):
        problems.append(f"{probe['width']}x{probe['height']}, expected {expected.width}x"
                        f"{expected.height} (its first frame's output size at generate.max_area)")
    if abs(probe["fps"] - expected.fps) > 0.01:
        problems.append(f"{probe['fps']:g} fps, expected {expected.fps} (generate.fps)")
    return probe, problems


def find_candidates(store: OutputStore, stems: set[str], source: Path | None
                    ) -> tuple[list[Candidate], dict[str, str]]:
    """The mp4s without a sidecar: those of output.dir, then those of `source` whose stem has
    no mp4 in output.dir. Files of other stems are skipped, with the reason."""
    candidates, skipped = [], {}
    for stem in store.unrecorded_videos():
        if stem in stems:
            candidates.append(Candidate(stem, store.video_path(stem), "output.dir"))
        else:
            skipped[f"{stem}.mp4"] = "not an instance of this benchmark selection (left as it is)"
    if source is not None:
        for path in sorted(source.glob("*.mp4")):
            stem = path.name[: -len(".mp4")]
            if stem not in stems:
                skipped[str(path)] = "not an instance of this benchmark selection"
            elif store.video_path(stem).exists():
                skipped[str(path)] = f"{stem}.mp4 is already in {store.dir}"
            else:
                candidates.append(Candidate(stem, path, "--from"))
    return candidates, skipped


def adopt(cfg: Config, source: str | Path | None = None) -> AdoptReport:
    """Check every candidate and adopt or quarantine it (module doc). Raises ManifestError
    or SettingsMismatch before touching anything, as `plan` does."""
    manifest = load_manifest(cfg.bench)
    check_output_sizes(manifest, cfg)
    store = OutputStore.for_config(cfg)
    store.check_settings()
    source_dir = Path(source).resolve() if source else None
    if source_dir is not None and not source_dir.is_dir():
        raise FileNotFoundError(f"adopt --from {source}: no such folder")
    candidates, skipped = find_candidates(store, set(manifest.stems), source_dir)
    report = AdoptReport(skipped=skipped,
                         found_in_output=sum(c.origin == "output.dir" for c in candidates),
                         found_in_source=sum(c.origin == "--from" for c in candidates))
    by_stem = manifest.by_stem
    expected = {c.stem: _expected(by_stem[c.stem], cfg) for c in candidates}
    # each decode is one ffmpeg process: run them side by side
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        checks = list(pool.map(lambda c: check_video(c.path, expected[c.stem]), candidates))
    for candidate, (probe, problems) in zip(candidates, checks):
        _settle(store, candidate, expected[candidate.stem], probe, problems, report)
    return report


def _expected(inst, cfg: Config) -> Expected:
    width, height = output_size(inst, cfg)
    return Expected(cfg.generate.frame_num, width, height, cfg.generate.fps)


def _settle(store: OutputStore, candidate: Candidate, expected: Expected, probe: dict,
            problems: list[str], report: AdoptReport) -> None:
    """Adopt or quarantine one candidate, under a claim so no job writes the stem meanwhile."""
    stem = candidate.stem
    claim = store.claim(stem, {"job_id": "adopt", "host": this_host(), "pid": os.getpid()})
    if claim is None:
        report.skipped[candidate.path.name] = "a running job holds its claim (it is being generated)"
        return
    try:
        if problems:
            why = "; ".join(problems)
            if candidate.origin == "output.dir":
                store.quarantine(stem, f"adopt: {why}")
            else:
                store.quarantine_copy(stem, candidate.path, f"adopt: {why}")
            report.quarantined[stem] = why
            return
        stat = candidate.path.stat()
        provenance = {"from": str(candidate.path.resolve()), "origin": candidate.origin,
                      "file_mtime": stat.st_mtime, "adopted_at": time.time(),
                      "host": this_host(), "user": _user(), "by": "launch.py adopt"}
        checks = {"decoded": True, "frames": probe["frames"], "width": probe["width"],
                  "height": probe["height"], "fps": probe["fps"],
                  "expected": {"frames": expected.frames, "width": expected.width,
                               "height": expected.height, "fps": expected.fps},
                  "passed": ["full decode", "generate.frame_num", "output size", "generate.fps"]}
        store.adopt_video(stem, candidate.path, checks, provenance)
        report.adopted.append(stem)
    finally:
        store.release(claim)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
