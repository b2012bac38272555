"""The benchmark manifest: worldmodelbench.json validated into `Instance`s.

Validation runs on the login node before anything is submitted and reports every
problem at once (`ManifestError`), each naming the file, the entry, the stem and the fix.
"""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from wmsub.benchmark.images import inspect_image
from wmsub.config import BenchConfig

REQUIRED_KEYS = ("domain", "subdomain", "text_first_frame", "text_instruction", "first_frame")


class ManifestError(ValueError):
    """Every problem found in a benchmark manifest, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the benchmark manifest:"
        super().__init__("\n  - ".join([head] + self.problems))


@dataclass(frozen=True)
class Instance:
    index: int  # position in worldmodelbench.json
    stem: str  # Path(first_frame).stem, dots kept
    prompt: str  # i2v: text_instruction; t2v: text_first_frame + " " + text_instruction
    image: str | None  # absolute path of the first frame (None in t2v mode)
    domain: str
    subdomain: str
    image_size: tuple[int, int] | None  # (width, height), for cost estimates


@dataclass
class Manifest:
    instances: list[Instance]
    root: Path  # resolved benchmark folder
    json_path: Path
    notes: list[str] = field(default_factory=list)  # conversions and filters applied
    all_domains: list[str] = field(default_factory=list)  # every domain in the file

    @property
    def by_stem(self) -> dict[str, Instance]:
        return {inst.stem: inst for inst in self.instances}

    @property
    def domains(self) -> list[str]:
        """Domains of the selected instances, in first-appearance order."""
        return list(dict.fromkeys(inst.domain for inst in self.instances))

    @property
    def stems(self) -> list[str]:
        return [inst.stem for inst in self.instances]

    def __len__(self) -> int:
        return len(self.instances)


def load_manifest(bench: BenchConfig, check_images: bool | str = True) -> Manifest:
    """Read, validate and filter the benchmark.

    check_images: True checks each selected first frame's header and that the file is
    complete (a JPEG without its end marker is fully decoded to decide); "full" decodes
    every image; False checks only that each image exists inside the benchmark folder.
    Entry structure is checked for every entry, images only for the selected ones; every
    problem found is raised together in one ManifestError.
    """
    if check_images not in (True, False, "full"):
        raise ValueError(f"check_images must be True, False or 'full', got {check_images!r}")
    root = Path(os.path.expanduser(bench.root)).resolve()
    json_path = root / bench.json_file
    entries = read_entries(json_path)
    problems: list[str] = []
    parsed, all_stems = _check_entries(entries, json_path, problems)
    selected, filter_notes = _apply_filters(parsed, all_stems, bench, json_path, problems)

    notes = list(filter_notes)
    instances = []
    for index, entry, stem in selected:
        image_size = None
        where = f"{json_path}: entry {index} (stem {stem!r})"
        image_path = _safe_image_path(root, entry["first_frame"], where, problems)
        if image_path is None:
            continue
        if bench.prompt_mode == "i2v":
            if not image_path.is_file():
                problems.append(f"{where}: image {entry['first_frame']} does not exist under "
                                f"{root} — fix: add the file or correct 'first_frame'")
                continue
            if check_images:
                info = inspect_image(image_path, full=check_images == "full")
                if info.problem:
                    problems.append(f"{where}: image {entry['first_frame']} {info.problem} — "
                                    "fix: replace the file with a complete JPEG/PNG")
                    continue
                image_size = info.size
                if info.conversion:
                    notes.append(f"{stem}: {info.conversion}")
        if bench.prompt_mode == "t2v":
            prompt = f"{entry['text_first_frame']} {entry['text_instruction']}"
            image = None
        else:
            prompt = entry["text_instruction"]
            image = str(image_path)
        instances.append(Instance(index=index, stem=stem, prompt=prompt, image=image,
                                  domain=entry["domain"], subdomain=entry["subdomain"],
                                  image_size=image_size))
    if problems:
        raise ManifestError(problems)
    all_domains = list(dict.fromkeys(e["domain"] for _, e, _ in parsed))
    return Manifest(instances=instances, root=root, json_path=json_path, notes=notes,
                    all_domains=all_domains)


def stem_domains(json_path: str | Path) -> dict[str, str]:
    """{stem: domain} of every entry of a worldmodelbench.json (no image checks)."""
    return {Path(e["first_frame"]).stem: e["domain"] for e in read_entries(Path(json_path))
            if isinstance(e, dict) and isinstance(e.get("first_frame"), str)}


def read_entries(json_path: Path) -> list:
    """The entries of a worldmodelbench.json, or ManifestError naming what is wrong."""
    if not json_path.is_file():
        raise ManifestError([f"{json_path}: file does not exist — fix: set bench.root to the "
                             "folder holding worldmodelbench.json and images/ "
                             "(bench.json_file names the file)"])
    try:
        text = json_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError([f"{json_path}: cannot be read as UTF-8 text ({e}) — "
                             "fix: restore the official worldmodelbench.json"]) from None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError([f"{json_path}: not valid JSON at line {e.lineno} column {e.colno}: "
                             f"{e.msg} — fix: repair the file or restore the official one"]) from None
    if not isinstance(entries, list):
        raise ManifestError([f"{json_path}: top level is a {type(entries).__name__}, expected a "
                             "list of entries — fix: use the official worldmodelbench.json format "
                             "([{\"domain\", \"subdomain\", \"text_first_frame\", "
                             "\"text_instruction\", \"first_frame\"}, ...])"])
    return entries


def _check_entries(entries: list, json_path: Path, problems: list[str]):
    """Structure of every entry: (index, entry, stem) of the good ones, and every stem seen."""
    parsed = []
    first_index_of: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"{json_path}: entry {index} is a {type(entry).__name__}, expected an "
                            "object — fix: make it {\"domain\": ..., \"first_frame\": ...}")
            continue
        frame = entry.get("first_frame")
        stem = Path(frame).stem if isinstance(frame, str) and frame.strip() else "?"
        where = f"{json_path}: entry {index} (stem {stem!r})"
        bad = False
        for key in REQUIRED_KEYS:
            value = entry.get(key)
            if key not in entry:
                problems.append(f"{where}: missing key '{key}' — fix: add a non-empty '{key}' string")
                bad = True
            elif not isinstance(value, str) or not value.strip():
                problems.append(f"{where}: '{key}' is {value!r}, expected a non-empty string — "
                                f"fix: fill in '{key}'")
                bad = True
        if stem != "?":
            if stem in first_index_of:
                problems.append(f"{where}: duplicate stem {stem!r}, also entry "
                                f"{first_index_of[stem]} — fix: give one of them another image "
                                "name (videos are saved as <stem>.mp4, so stems must be unique)")
                bad = True
            else:
                first_index_of[stem] = index
        if not bad:
            parsed.append((index, entry, stem))
    return parsed, set(first_index_of)


def _apply_filters(parsed, all_stems: set, bench: BenchConfig, json_path: Path, problems: list[str]):
    """Filtered good entries. A stem whose entry is broken is not "unknown": its entry's
    own problem is already reported."""
    notes = []
    selected = parsed
    if bench.domains:
        known = list(dict.fromkeys(e["domain"] for _, e, _ in parsed))
        unknown = [d for d in bench.domains if d not in known]
        for d in unknown:
            problems.append(f"{json_path}: bench.domains has unknown domain {d!r} — fix: use one of "
                            + ", ".join(repr(k) for k in known))
        wanted = set(bench.domains)
        selected = [p for p in selected if p[1]["domain"] in wanted]
        notes.append(f"domains filter {bench.domains}: {len(selected)} instances")
    if bench.stems:
        for s in bench.stems:
            if s not in all_stems:
                close = difflib.get_close_matches(s, sorted(all_stems), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{json_path}: bench.stems has unknown stem {s!r}{hint} — fix: use "
                                "the image name without .jpg, dots kept (e.g. 000000007259.2)")
        wanted = set(bench.stems)
        selected = [p for p in selected if p[2] in wanted]
        notes.append(f"stems filter: {len(selected)} instances")
    if bench.limit and bench.limit > 0:
        selected = selected[:bench.limit]
        notes.append(f"limit {bench.limit}: {len(selected)} instances")
    elif bench.limit < 0:
        problems.append(f"bench.limit={bench.limit}: must be 0 (all) or positive")
    return selected, notes


def _safe_image_path(root: Path, first_frame: str, where: str, problems: list[str]) -> Path | None:
    """The image path if it stays inside the benchmark folder, after following symlinks."""
    rel = Path(first_frame)
    if rel.is_absolute():
        problems.append(f"{where}: first_frame {first_frame!r} is an absolute path — fix: make it "
                        "relative to the benchmark folder (images/<name>.jpg)")
        return None
    if ".." in rel.parts:
        problems.append(f"{where}: first_frame {first_frame!r} contains '..' and leaves the "
                        "benchmark folder — fix: keep images under images/")
        return None
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        problems.append(f"{where}: first_frame {first_frame!r} resolves to {path}, outside {root} "
                        "(a symlink out of the benchmark folder) — fix: copy the image into images/")
        return None
    return path
