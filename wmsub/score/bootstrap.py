"""95% bootstrap confidence intervals for the official scores, resampling instances.

The official scores are means over videos, so a run of 350 videos carries sampling noise:
how different would the score be on another 350 instances like these? The bootstrap
answers by drawing the videos again with replacement, `resamples` times, and reading
the 2.5th and 97.5th percentiles of the recomputed scores (the percentile method).

`paired_bootstrap` does the same for the difference of two runs on the same instances:
it resamples instances, keeping each instance's two verdicts together, which cancels the
instance-to-instance variation both runs share.

A fixed seed makes every interval reproducible: the same results give the same report.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wmsub.score.scoring import COMMON_SENSE, PHYSICS, SCORE_KEYS, VideoVerdict

RESAMPLES = 2000
SEED = 20250302
LEVEL = 0.95


def verdict_matrix(verdicts: Sequence[VideoVerdict]) -> np.ndarray:
    """(videos, 8) float array: instruction, the 5 physics answers, the 2 common-sense
    answers of each video (the columns every official score is a mean or sum of)."""
    rows = [[float(v.instruction), *map(float, v.physical_laws), *map(float, v.common_sense)]
            for v in verdicts]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), 1 + len(PHYSICS) + len(COMMON_SENSE))


def scores_of_means(means: np.ndarray) -> dict[str, np.ndarray]:
    """Every SCORE_KEYS score (except `judged`) from column means, shape (..., 8)."""
    out = {"instruction": means[..., 0]}
    for i, name in enumerate(PHYSICS):
        out[name] = means[..., 1 + i]
    out["physical_laws"] = means[..., 1:1 + len(PHYSICS)].sum(axis=-1)
    for i, name in enumerate(COMMON_SENSE):
        out[name] = means[..., 1 + len(PHYSICS) + i]
    out["common_sense"] = means[..., 1 + len(PHYSICS):].sum(axis=-1)
    out["total"] = means.sum(axis=-1)
    return out


def _resampled_means(matrix: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, 8): column means of `resamples` draws of the rows with replacement.

    A draw of n rows with replacement is a multinomial count per row, so each
    resample's means are one weighted sum (counts @ matrix / n): no (resamples, n, 8)
    array of copies."""
    rng = np.random.default_rng(seed)
    n = matrix.shape[0]
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
    return counts @ matrix / n


def _intervals(samples: dict[str, np.ndarray], level: float) -> dict[str, list[float]]:
    tail = (1 - level) / 2 * 100
    return {key: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]
            for key, v in samples.items()}


def _empty() -> dict:
    return {key: None for key in SCORE_KEYS if key != "judged"}


def bootstrap_ci(verdicts: Sequence[VideoVerdict], resamples: int = RESAMPLES, seed: int = SEED,
                 level: float = LEVEL) -> dict:
    """{score: [low, high]} for every dimension and `total`; None each without videos."""
    if not verdicts:
        return _empty()
    means = _resampled_means(verdict_matrix(verdicts), resamples, seed)
    return _intervals(scores_of_means(means), level)


def paired_bootstrap(a: Sequence[VideoVerdict], b: Sequence[VideoVerdict], resamples: int = RESAMPLES,
                     seed: int = SEED, level: float = LEVEL) -> tuple[dict, dict]:
    """(delta, ci95) of B minus A over paired videos (a[k] and b[k] are one instance).

    delta: {score: mean difference}; ci95: {score: [low, high]}; None each without pairs.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap needs the same instances on both sides ({len(a)} vs {len(b)})")
    if not a:
        return _empty(), _empty()
    diff = verdict_matrix(b) - verdict_matrix(a)
    delta = {k: float(v) for k, v in scores_of_means(diff.mean(axis=0)).items()}
    means = _resampled_means(diff, resamples, seed)
    return delta, _intervals(scores_of_means(means), level)
