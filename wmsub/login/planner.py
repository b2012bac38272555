"""What to generate and how to split it into Slurm array tasks.

Cost model (the engine's, `EngineSpec.seconds`): one video's time is proportional to its
DiT tokens times its sampling steps, anchored at `plan.seconds_per_video` for the engine's
reference video (TI2V-5B: 1280x704, 81 frames, 50 steps, 18,480 tokens). Attention makes
the true cost slightly superlinear in tokens; the WorldModelBench output sizes stay within
3% of the anchor's token count, so linear is close enough and keeps estimates explainable.
"""
from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field

from wmsub.config import Config
from wmsub.benchmark.manifest import Instance, Manifest, ManifestError, load_manifest
from wmsub.benchmark.sizes import SizeError
from wmsub.state.runs import PlanRecord
from wmsub.state.store import FailureRecord, OutputStore

def output_size(inst: Instance, cfg: Config) -> tuple[int, int]:
    """(width, height) of the video model.engine makes for this instance."""
    spec, max_area = cfg.engine_spec, cfg.generate.max_area
    if inst.image is not None and inst.image_size:
        return spec.i2v_size(*inst.image_size, max_area)
    return spec.t2v_size(max_area)


def check_output_sizes(manifest: Manifest, cfg: Config) -> None:
    """Every selected instance must have an output size: refuse the ones that cannot,
    all at once, before anything is submitted."""
    problems = []
    for inst in manifest.instances:
        try:
            output_size(inst, cfg)
        except SizeError as e:
            problems.append(f"{manifest.json_path}: entry {inst.index} (stem {inst.stem!r}): {e}")
    if problems:
        raise ManifestError(problems)


def estimate_seconds(inst: Instance, cfg: Config) -> float:
    g = cfg.generate
    width, height = output_size(inst, cfg)
    return cfg.engine_spec.seconds(width, height, g.frame_num, g.sampling_steps,
                                   cfg.plan.seconds_per_video)


@dataclass
class Chunk:
    index: int
    instances: list[Instance]
    est_s: float

    @property
    def stems(self) -> list[str]:
        return [i.stem for i in self.instances]


@dataclass
class Plan:
    instances: list[Instance]  # every selected instance
    done: list[str]
    pending: list[str]
    failed: dict[str, FailureRecord]
    quarantined: list[tuple[str, str]]
    notes: list[str]
    chunks: list[Chunk]
    claimed: list[str] = field(default_factory=list)  # pending stems a live job holds now
    fingerprint: str = ""
    chunk_rule: str = ""  # how the chunk count was chosen
    output_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> pending videos
    preview: bool = False  # made without changing the folder (plan, check, --dry-run)

    @property
    def est_total_s(self) -> float:
        return sum(c.est_s for c in self.chunks)

    def record(self) -> PlanRecord:
        """What plan.json keeps, and `plan --json` prints."""
        return PlanRecord(
            stems=[i.stem for i in self.instances], domains={i.stem: i.domain for i in self.instances},
            chunks=[{"index": c.index, "stems": c.stems, "est_s": round(c.est_s, 1)} for c in self.chunks],
            failed_stems={s: f.reason for s, f in self.failed.items()},
            counts={"instances": len(self.instances), "done": len(self.done), "pending": len(self.pending),
                    "failed": len(self.failed), "quarantined": len(self.quarantined),
                    "claimed": len(self.claimed)},
            fingerprint=self.fingerprint, est_total_s=self.est_total_s, notes=list(self.notes))


def build_plan(cfg: Config, *, verify: str | None = None, retry_failed: bool = False,
               preview: bool = False) -> Plan:
    """Validate the benchmark, scan the output folder, split what is pending.

    Raises ManifestError (bad benchmark) or SettingsMismatch (folder made with other
    settings) before anything is submitted. preview (plan, check, --dry-run): the same
    plan with nothing written to the folder (no settings pinned, nothing quarantined).
    """
    manifest = load_manifest(cfg.bench)
    check_output_sizes(manifest, cfg)
    return make_plan(cfg, manifest, OutputStore.for_config(cfg, preview=preview), verify=verify,
                     retry_failed=retry_failed)


def make_plan(cfg: Config, manifest: Manifest, store: OutputStore, *, verify: str | None = None,
              retry_failed: bool = False) -> Plan:
    notes = list(manifest.notes)
    notes.extend(store.check_settings())
    notes.extend(kernel_notes(cfg, store.kernel))
    scan = store.scan(manifest.stems, verify or cfg.output.verify, retry_failed=retry_failed)
    moved = "will be quarantined at the run" if store.preview else "quarantined"
    notes.extend(f"{s}.mp4 {moved}: {why}" for s, why in scan.quarantined)
    if scan.other_settings:
        notes.append(f"{len(scan.other_settings)} video(s) made with other settings will be "
                     "regenerated (the old ones are quarantined on overwrite)")
    if scan.removed_temps:
        notes.append(f"removed {len(scan.removed_temps)} temp file(s) of dead writers")
    if scan.claimed:
        notes.append(f"{len(scan.claimed)} pending instance(s) are being generated by a live job "
                     "now; a new job skips them while that claim lives")
    by_stem = manifest.by_stem
    pending = [by_stem[s] for s in scan.pending]
    costs = {inst.stem: estimate_seconds(inst, cfg) for inst in pending}
    n_chunks, rule = chunk_count(cfg, sum(costs.values()), len(pending))
    chunks = split_balanced(pending, costs, n_chunks)
    sizes = Counter("%dx%d" % output_size(i, cfg) for i in pending)
    return Plan(instances=list(manifest.instances), done=scan.done, pending=scan.pending,
                failed=scan.failed, quarantined=scan.quarantined, notes=notes, chunks=chunks,
                claimed=scan.claimed, fingerprint=store.fingerprint, chunk_rule=rule,
                output_sizes=dict(sizes.most_common()), preview=store.preview)


def kernel_notes(cfg: Config, pinned: str | None) -> list[str]:
    """What the plan says about the attention kernel (resolved on the node, docs/ENGINE.md)."""
    notes = []
    attention = cfg.generate.attention
    if cfg.generate.exact and attention not in ("auto", "official"):
        notes.append(f"generate.attention={attention} under generate.exact=true: not the seed's "
                     "kernel (the official flash_attention: FlashAttention 3 when installed, else 2); "
                     "your explicit choice, ~2e-3 per forward from it, recorded in the fingerprint")
    if pinned:
        notes.append(f"this output folder's videos use the {pinned} attention kernel (pinned by its "
                     "first chunk); a chunk that resolves another is refused before it generates")
    return notes


def chunk_count(cfg: Config, total_s: float, n_pending: int) -> tuple[int, str]:
    if n_pending == 0:
        return 0, "nothing pending"
    if cfg.plan.chunks > 0:
        n = min(cfg.plan.chunks, n_pending)
        return n, f"plan.chunks={cfg.plan.chunks}" + (" (capped at the pending count)"
                                                      if n < cfg.plan.chunks else "")
    target_s = cfg.plan.target_chunk_minutes * 60
    n = max(1, min(n_pending, math.ceil(total_s / target_s))) if target_s > 0 else n_pending
    return n, f"~{cfg.plan.target_chunk_minutes:g} min per chunk (plan.target_chunk_minutes)"


def split_balanced(instances: list[Instance], costs: dict[str, float], n_chunks: int) -> list[Chunk]:
    """Longest-processing-time first: dearest instance to the least-loaded chunk.

    Deterministic: instances sorted by (cost descending, stem), ties between chunks go to
    the lowest index; each chunk then lists its stems in manifest order.
    """
    if n_chunks <= 0 or not instances:
        return []
    bins: list[list[Instance]] = [[] for _ in range(n_chunks)]
    loads = [0.0] * n_chunks
    for inst in sorted(instances, key=lambda i: (-costs[i.stem], i.stem)):
        k = min(range(n_chunks), key=lambda j: (loads[j], j))
        bins[k].append(inst)
        loads[k] += costs[inst.stem]
    return [Chunk(index=k, instances=sorted(b, key=lambda i: i.index), est_s=loads[k])
            for k, b in enumerate(bins)]


def wall_clock_s(durations: list[float], parallelism: int) -> float:
    """How long an array of tasks with these durations takes when at most `parallelism`
    run at once and Slurm starts them in index order as slots free up (no queue wait)."""
    if not durations:
        return 0.0
    slots = [0.0] * max(1, min(parallelism, len(durations)))
    for d in durations:
        heapq.heappush(slots, heapq.heappop(slots) + d)
    return max(slots)
