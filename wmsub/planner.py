"""What to generate and how to split it into Slurm array tasks.

Cost model: one video's time is proportional to its DiT tokens times its sampling
steps, anchored at `plan.seconds_per_video` for a 704x1280, 81-frame, 50-step video
(18,480 tokens). Attention makes the true cost slightly superlinear in tokens; the
WorldModelBench output sizes stay within 3% of the anchor's token count, so linear is
close enough and keeps estimates explainable.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from wmsub.config import Config, settings_fingerprint
from wmsub.manifest import Instance, Manifest, load_manifest
from wmsub.store import FailureRecord, OutputStore

# TI2V-5B: VAE stride 16 x patch 2 = 32 pixels per token side; 4 frames per latent frame.
PIXELS_PER_TOKEN_SIDE = 32
ANCHOR_SIZE = (1280, 704)  # (width, height) of the seed's timing anchor and of t2v outputs
ANCHOR_FRAMES = 81
ANCHOR_STEPS = 50


def best_output_size(w: int, h: int, dw: int, dh: int, expected_area: int) -> tuple[int, int]:
    """The official i2v output size (wan/utils/utils.py), re-implemented without torch."""
    ratio = w / h
    ow = (expected_area * ratio) ** 0.5
    oh = expected_area / ow
    ow1 = int(ow // dw * dw)  # width first
    oh1 = int(expected_area / ow1 // dh * dh)
    ratio1 = ow1 / oh1
    oh2 = int(oh // dh * dh)  # height first
    ow2 = int(expected_area / oh2 // dw * dw)
    ratio2 = ow2 / oh2
    if max(ratio / ratio1, ratio1 / ratio) < max(ratio / ratio2, ratio2 / ratio):
        return ow1, oh1
    return ow2, oh2


def output_size(inst: Instance, max_area: int) -> tuple[int, int]:
    """(width, height) of the generated video for this instance."""
    w, h = inst.image_size if (inst.image is not None and inst.image_size) else ANCHOR_SIZE
    return best_output_size(w, h, PIXELS_PER_TOKEN_SIDE, PIXELS_PER_TOKEN_SIDE, max_area)


def video_tokens(width: int, height: int, frame_num: int) -> int:
    latent_frames = (frame_num - 1) // 4 + 1
    return latent_frames * (height // PIXELS_PER_TOKEN_SIDE) * (width // PIXELS_PER_TOKEN_SIDE)


ANCHOR_TOKENS = video_tokens(*ANCHOR_SIZE, ANCHOR_FRAMES)  # 18,480


def estimate_seconds(inst: Instance, cfg: Config) -> float:
    g = cfg.generate
    tokens = video_tokens(*output_size(inst, g.max_area), g.frame_num)
    return cfg.plan.seconds_per_video * (tokens / ANCHOR_TOKENS) * (g.sampling_steps / ANCHOR_STEPS)


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

    @property
    def est_total_s(self) -> float:
        return sum(c.est_s for c in self.chunks)

    def to_json(self) -> dict:
        return {
            "instances": len(self.instances),
            "done": len(self.done),
            "pending": len(self.pending),
            "failed": len(self.failed),
            "quarantined": len(self.quarantined),
            "claimed": len(self.claimed),
            "fingerprint": self.fingerprint,
            "est_total_s": round(self.est_total_s, 1),
            "chunks": [{"index": c.index, "stems": c.stems, "est_s": round(c.est_s, 1)}
                       for c in self.chunks],
            "failed_stems": {s: f.reason for s, f in self.failed.items()},
            "notes": list(self.notes),
        }


def make_store(cfg: Config) -> OutputStore:
    fingerprint, settings = settings_fingerprint(cfg)
    o = cfg.output
    return OutputStore(o.dir, fingerprint, settings, cfg.generate.frame_num,
                       allow_mismatch=o.allow_settings_mismatch, claim_ttl_s=o.claim_ttl_s,
                       max_attempts=o.max_attempts)


def build_plan(cfg: Config, *, verify: str | None = None, retry_failed: bool = False) -> Plan:
    """Validate the benchmark, scan the output folder, split what is pending.

    Raises ManifestError (bad benchmark) or SettingsMismatch (folder made with other
    settings) before anything is submitted.
    """
    manifest = load_manifest(cfg.bench)
    return make_plan(cfg, manifest, make_store(cfg), verify=verify, retry_failed=retry_failed)


def make_plan(cfg: Config, manifest: Manifest, store: OutputStore, *, verify: str | None = None,
              retry_failed: bool = False) -> Plan:
    notes = list(manifest.notes)
    notes.extend(store.check_settings())
    scan = store.scan(manifest.stems, verify or cfg.output.verify, retry_failed=retry_failed)
    notes.extend(f"quarantined {s}.mp4: {why}" for s, why in scan.quarantined)
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
    sizes = Counter("%dx%d" % output_size(i, cfg.generate.max_area) for i in pending)
    return Plan(instances=list(manifest.instances), done=scan.done, pending=scan.pending,
                failed=scan.failed, quarantined=scan.quarantined, notes=notes, chunks=chunks,
                claimed=scan.claimed, fingerprint=store.fingerprint, chunk_rule=rule,
                output_sizes=dict(sizes.most_common()))


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


def format_plan(plan: Plan, cfg: Config) -> str:
    s = cfg.slurm
    lines = [
        f"benchmark: {cfg.bench.root} ({cfg.bench.prompt_mode}), {len(plan.instances)} instances",
        f"output:    {cfg.output.dir} (settings fingerprint {plan.fingerprint})",
        f"status:    {len(plan.done)} done, {len(plan.pending)} pending, {len(plan.failed)} failed"
        f" (>= {cfg.output.max_attempts} attempts), {len(plan.quarantined)} quarantined now",
    ]
    if plan.output_sizes:
        lines.append("sizes:     " + ", ".join(f"{k} x{v}" for k, v in plan.output_sizes.items()))
    if plan.chunks:
        per_video = cfg.plan.seconds_per_video
        lines.append(f"estimate:  {_hms(plan.est_total_s)} of job time in total "
                     f"({per_video:g} s per 1280x704x81 video at 50 steps, scaled by tokens x steps)")
        lines.append(f"chunks:    {len(plan.chunks)} array tasks, {plan.chunk_rule}")
        shown = plan.chunks if len(plan.chunks) <= 24 else plan.chunks[:20]
        for c in shown:
            lines.append(f"  chunk {c.index:>3}: {len(c.instances):>4} videos, ~{_hms(c.est_s)}")
        if len(shown) < len(plan.chunks):
            rest = plan.chunks[len(shown):]
            lines.append(f"  ... {len(rest)} more chunks of {min(len(c.instances) for c in rest)}-"
                         f"{max(len(c.instances) for c in rest)} videos")
        longest = max(c.est_s for c in plan.chunks)
        if longest > s.time_min * 60:
            lines.append(f"  note: the longest chunk (~{_hms(longest)}) exceeds slurm.time_min="
                         f"{s.time_min}; it will be requeued on timeout (up to "
                         f"slurm.max_timeout_requeues={s.max_timeout_requeues}) — or raise plan.chunks")
    else:
        lines.append("chunks:    none (nothing pending)")
    lines.append(f"each job:  {s.gpus_per_job} GPU(s), {s.cpus_per_task} CPUs per task, {s.mem_gb} GB, "
                 f"{s.time_min} min, partition {s.partition or '(cluster default)'}"
                 + (f", account {s.account}" if s.account else "")
                 + (f", qos {s.qos}" if s.qos else "")
                 + (f", constraint {s.constraint}" if s.constraint else "")
                 + f"; at most {s.array_parallelism} at once")
    if plan.failed:
        lines.append("failed:    " + ", ".join(f"{k} ({v.reason[:60]})" for k, v in
                                               list(plan.failed.items())[:10])
                     + (" ..." if len(plan.failed) > 10 else ""))
    for note in plan.notes[:20]:
        lines.append(f"note:      {note}")
    if len(plan.notes) > 20:
        lines.append(f"note:      ... {len(plan.notes) - 20} more")
    return "\n".join(lines)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")
