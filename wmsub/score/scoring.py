"""Official WorldModelBench scoring of a judge results file, plus coverage and per-domain scores.

A results file is what the official judge (`evaluation.py` of the WorldModelBench repo)
writes: `{"model_name", "preds": {stem: {...}}, "accs": {"instruction": [...],
"physical_laws": [...], "common_sense": [...]}}`.

How accs line up with videos (checked in the official evaluation.py): it walks
worldmodelbench.json in order, skips stems without a video, and for each judged video
appends, in this order, 1 instruction score (0-3, 0 when the answer cannot be parsed),
5 physical-law answers (newton, mass, fluid, penetration, gravity) and 2 common-sense
answers (framewise = "poor aesthetics", temporal = "temporal inconsistency"); an
answer counts as passed (True) when "no" occurs in its lowered text. `preds` gets
its key for that video in the same loop iteration, so the k-th key of `preds` owns
instruction[k], physical_laws[5k:5k+5] and common_sense[2k:2k+2]. JSON keeps key
order, so this mapping survives a save and load.

The official scores (its `process_results`): instruction = mean; each physics
sub-score = mean of physical_laws[i::5], physics = their sum; each common-sense
sub-score = mean of common_sense[i::2], common sense = their sum; total = the sum.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PHYSICS = ("newton", "mass", "fluid", "penetration", "gravity")
COMMON_SENSE = ("framewise", "temporal")
SCORE_KEYS = ("instruction", *PHYSICS, "physical_laws", *COMMON_SENSE, "common_sense", "total")
UNKNOWN_DOMAIN = "(unknown domain)"
INSTRUCTION_MAX = 3.0
# WorldModelBench's size: the leaderboard's scores are over all of it (7 domains x 50)
OFFICIAL_INSTANCES = 350


class ResultsError(ValueError):
    """A judge results file that does not have the official layout."""


@dataclass(frozen=True)
class VideoVerdict:
    """The judge's entries for one video, cut out of the flat accs lists.

    Values are kept exactly as the judge wrote them (instruction a float, or the int 0
    for an unparsable answer; questions bools), so a merged file keeps the official types.
    """
    stem: str
    instruction: float  # 0-3
    physical_laws: tuple  # 5 entries, PHYSICS order; True = passed (no violation seen)
    common_sense: tuple  # 2 entries, COMMON_SENSE order; True = passed
    preds: dict  # the judge's answers: {"instruction": [text], "physical_laws": [5 texts], ...}

    @property
    def total(self) -> float:
        """This video's score on the official 0-10 scale (its share of the total)."""
        return float(self.instruction) + sum(map(float, self.physical_laws)) + \
            sum(map(float, self.common_sense))

    def failed(self) -> list[str]:
        """Questions this video failed, by sub-dimension name; `instruction` when the
        instruction score is below the maximum of 3."""
        out = ["instruction"] if float(self.instruction) < INSTRUCTION_MAX else []
        out += [name for name, ok in zip(PHYSICS, self.physical_laws) if not ok]
        out += [name for name, ok in zip(COMMON_SENSE, self.common_sense) if not ok]
        return out


def per_video(results: dict, source: str = "results") -> list[VideoVerdict]:
    """Split a results dict into one VideoVerdict per judged video, in preds order.

    `source` names the file in error messages.
    """
    if not isinstance(results, Mapping) or "preds" not in results or "accs" not in results:
        raise ResultsError(f"{source}: not a WorldModelBench judge results file (expected the keys "
                           f"'model_name', 'preds' and 'accs' that evaluation.py writes)")
    preds = results["preds"]
    accs = results["accs"] or {}
    stems = list(preds)
    n = len(stems)
    expected = {"instruction": 1, "physical_laws": len(PHYSICS), "common_sense": len(COMMON_SENSE)}
    lists = {}
    for key, per in expected.items():
        values = list(accs.get(key, []))
        if len(values) != per * n:
            raise ResultsError(
                f"{source}: accs['{key}'] has {len(values)} entries but preds has {n} videos "
                f"(expected {per} per video = {per * n}); the file is truncated or was merged "
                f"out of order: re-run the judge for it or re-merge the shards")
        lists[key] = values
    return [VideoVerdict(stem=stem,
                         instruction=lists["instruction"][k],
                         physical_laws=tuple(lists["physical_laws"][5 * k:5 * k + 5]),
                         common_sense=tuple(lists["common_sense"][2 * k:2 * k + 2]),
                         preds=preds[stem])
            for k, stem in enumerate(stems)]


def results_from_verdicts(verdicts: Iterable[VideoVerdict], model_name: str) -> dict:
    """The official results layout for these videos, in the given order."""
    preds, instruction, physics, common = {}, [], [], []
    for v in verdicts:
        if v.stem in preds:
            raise ResultsError(f"video {v.stem} was judged twice (two shards list it); "
                               f"check judge/shards.json of the run")
        preds[v.stem] = v.preds
        instruction.append(v.instruction)
        physics.extend(v.physical_laws)
        common.extend(v.common_sense)
    return {"model_name": model_name, "preds": preds,
            "accs": {"instruction": instruction, "physical_laws": physics, "common_sense": common}}


def _mean(values: list) -> float:
    return sum(values) / len(values)


def score_verdicts(verdicts: list[VideoVerdict]) -> dict:
    """Official scores of these videos; every score is None when there are none."""
    out = {"judged": len(verdicts)}
    if not verdicts:
        out.update({k: None for k in SCORE_KEYS})
        return out
    out["instruction"] = _mean([float(v.instruction) for v in verdicts])
    for i, name in enumerate(PHYSICS):
        out[name] = _mean([float(v.physical_laws[i]) for v in verdicts])
    out["physical_laws"] = sum(out[name] for name in PHYSICS)
    for i, name in enumerate(COMMON_SENSE):
        out[name] = _mean([float(v.common_sense[i]) for v in verdicts])
    out["common_sense"] = sum(out[name] for name in COMMON_SENSE)
    out["total"] = out["instruction"] + out["physical_laws"] + out["common_sense"]
    return out


def score(results: dict, source: str = "results") -> dict:
    """Official scores: instruction (0-3), the five physics sub-scores and their sum
    `physical_laws` (0-5), framewise + temporal and their sum `common_sense` (0-2),
    `total` (0-10), and `judged` (number of videos)."""
    return score_verdicts(per_video(results, source))


def coverage(results: dict, expected_stems: Iterable[str]) -> dict:
    """How many of the expected videos the judge scored.

    The official script silently drops videos it cannot find, so a short file still
    scores; `short` flags it. `extra` lists judged stems that were not expected.
    """
    expected = list(dict.fromkeys(expected_stems))
    judged = set(results.get("preds", {}))
    missing = [s for s in expected if s not in judged]
    expected_set = set(expected)
    extra = [s for s in results.get("preds", {}) if s not in expected_set]
    n_judged = len(expected) - len(missing)
    return {"judged": n_judged, "expected": len(expected), "missing": missing,
            "extra": extra, "short": bool(missing),
            # against the whole benchmark, which is what the leaderboard scores
            "of": OFFICIAL_INSTANCES, "subset": n_judged < OFFICIAL_INSTANCES}


def stem_domains(source) -> dict[str, str]:
    """stem -> domain from a mapping, a Manifest (`.instances`) or Instances."""
    if isinstance(source, Mapping):
        return {str(k): str(v) for k, v in source.items()}
    items = getattr(source, "instances", source)
    return {inst.stem: inst.domain for inst in items}


def score_by_domain(results: dict, manifest_or_stem_to_domain, source: str = "results") -> dict:
    """{domain: scores} in the domains' first-appearance order of the mapping.

    Domains without judged videos are kept with judged 0 and None scores; judged
    stems the mapping does not know are grouped under UNKNOWN_DOMAIN.
    """
    domains = stem_domains(manifest_or_stem_to_domain)
    groups: dict[str, list] = {d: [] for d in dict.fromkeys(domains.values())}
    for verdict in per_video(results, source):
        groups.setdefault(domains.get(verdict.stem, UNKNOWN_DOMAIN), []).append(verdict)
    return {domain: score_verdicts(verdicts) for domain, verdicts in groups.items()}
