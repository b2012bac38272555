"""The chunk worker: one Slurm array task = one chunk = one engine load, many videos.

Every rank of the task runs `ChunkWorker.__call__`. Ranks that make one video together (a
"group", see engines/parallel.py) agree on each next stem through the gloo control group;
the group's writer claims the stem, writes the mp4 through the output store and updates the
chunk's progress record. On SIGUSR2 (preemption or time limit) submitit calls `checkpoint()`
on global rank 0, requeues the task and exits; writes are atomic and claims are released
here, so nothing partial survives.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

import submitit

from wmsub.benchmark.images import open_rgb
from wmsub.node.compile_cache import use_compile_cache
from wmsub.node.kernel import KernelRefused, node_kernel
from wmsub.node.ranks import (DESYNC_EXIT_S, EXCHANGE_SLACK_S, ExitDeadline, RankDesync,
                              abort_on_collective_timeout, barrier, broadcast_object,
                              end_peers_on_this_host, exit_before_teardown, exit_within,
                              export_rank_env, gather_errors, global_rank, is_peer_loss,
                              rank_addresses)
from wmsub.node.requeue import RequeueClassifier
from wmsub.state.claims import current_job_id
from wmsub.state.progress import ChunkProgress
from wmsub.state.runs import RunFolder
from wmsub.state.store import OutputStore, SettingsMismatch

log = logging.getLogger("wmsub.node.worker")


class ChunkWorker(submitit.helpers.Checkpointable):
    def __init__(self, run_dir: str, chunk_index: int, instances: list):
        self.run_dir = run_dir
        self.chunk_index = chunk_index
        self.instances = instances
        self._claims: dict = {}
        self._progress: ChunkProgress | None = None
        self._pending_write = None
        self._attempts_started = 0  # names each attempt; equal on the ranks of a group
        self._requeue: RequeueClassifier | None = None
        self._peers: list = []  # (host, pid) of every rank, for ending them after a desync
        self._deadline: ExitDeadline | None = None

    # Requeues pickle this object again: keep only what the constructor took.
    def __getstate__(self):
        return {"run_dir": self.run_dir, "chunk_index": self.chunk_index, "instances": self.instances}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._claims = {}
        self._progress = None
        self._pending_write = None
        self._attempts_started = 0
        self._requeue = None
        self._peers = []
        self._deadline = None

    # ---- submitit hooks -------------------------------------------------------------
    def checkpoint(self, *args, **kwargs):
        try:  # a write in flight finishes (atomically) before its claim goes
            self._drain_writes(timeout_s=60)
        except Exception:  # noqa: BLE001 - recorded by the write itself
            log.exception("pending write at checkpoint")
        self._release_claims()

        why = (self._requeue.last if self._requeue else None) or "preemption"
        counter = "timeouts" if why == "timeout" else "preemptions"

        def mark(rec):
            rec["state"] = "requeued"
            rec["signals"] = rec.get("signals", 0) + 1
            rec[counter] = rec.get(counter, 0) + 1
            rec["current"] = None
            rec["step"] = None
        if self._progress is not None:
            self._progress.update(mark, wait_s=2.0)
        log.warning("chunk %s: %s signal, claims released, requeueing", self.chunk_index, why)
        return submitit.helpers.DelayedSubmission(ChunkWorker(self.run_dir, self.chunk_index,
                                                              self.instances))

    # ---- the loop ---------------------------------------------------------------------
    def __call__(self) -> dict:
        try:
            return self._run()
        except submitit.core.utils.UncompletedJobError as e:
            # submitit refused the requeue (too many timeouts); the signal can land anywhere,
            # even before the engine is loaded, so the record is built here if need be
            if global_rank() == 0:
                run = RunFolder(Path(self.run_dir))
                progress = self._progress or ChunkProgress(
                    run.chunk_record(self.chunk_index), self.chunk_index,
                    [i.stem for i in self.instances])
                limit = run.load_config().slurm.max_timeout_requeues
                why = f"timed out more than slurm.max_timeout_requeues={limit} times: {e}"
                progress.update(lambda r: r.update(state="failed", current=None, error=why),
                                wait_s=2.0)
            raise

    def _run(self) -> dict:
        t_run = time.time()
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True,
                            format="%(asctime)s %(levelname)s [chunk %(chunk)s r%(rank)s] %(message)s")
        _install_log_context(self.chunk_index)
        run = RunFolder(Path(self.run_dir))
        cfg = run.load_config()
        export_rank_env(cfg.generate.device)
        compile_cache = use_compile_cache(cfg)  # before torch compiles anything
        abort_on_collective_timeout()
        _chain_signal_release(self)
        if global_rank() == 0:  # only rank 0 acts on the signal (submitit)
            self._requeue = RequeueClassifier(cfg.slurm.signal_delay_s).install()

        t_imports = time.time()
        from wmsub.node.engines.parallel import init_distributed, shutdown  # torch from here on
        from wmsub.node.engines.base import load_engine

        t_init = time.time()
        ctx = init_distributed(cfg.generate)
        start = {"rank": ctx.rank, "host": socket.gethostname(),
                 "process_age_at_run_s": _process_age_s(t_run),
                 "imports_s": t_init - t_imports, "init_distributed_s": time.time() - t_init,
                 "compile_cache": str(compile_cache)}
        _LogContext.rank = ctx.rank
        # one job id for the whole group (outside Slurm each rank's own differs): it names attempts
        job_id = current_job_id()
        self._group_job = broadcast_object(job_id, ctx) if ctx.group_size > 1 else job_id
        self._peers = rank_addresses(ctx)
        stems = run.load_plan().chunk_stems(self.chunk_index) or [i.stem for i in self.instances]
        self._progress = ChunkProgress(run.chunk_record(self.chunk_index), self.chunk_index, stems)
        try:
            # the kernel only this node can resolve; the folder takes one kernel (store pin)
            cfg.generate.attention = node_kernel(cfg.generate, ctx.device)
            store = OutputStore.for_config(cfg, kernel=cfg.generate.attention)
            store.check_settings()
        except (KernelRefused, SettingsMismatch) as e:
            if ctx.rank == 0:  # every rank refuses alike; one record
                why = f"refused before generating: {e}"
                self._progress.update(lambda r: r.update(state="failed", job_id=job_id,
                                                         current=None, error=why))
            raise
        if ctx.rank == 0:
            self._progress.update(lambda r: _on_start(r, job_id))
        heartbeat = _ClaimHeartbeat(self, cfg.output.claim_ttl_s / 4).start()
        try:
            t0 = time.time()
            engine = load_engine(cfg, ctx)
            start.update(engine_s=time.time() - t0, ready_after_s=time.time() - t_run,
                         **getattr(engine, "load_timings", {}))
            self._progress.update(lambda r: _record_start(r, start))
            log.info("engine loaded in %.1fs (%s; %s)", start["engine_s"], _seconds(start),
                     engine.fingerprint())
            queue = _my_queue(self.instances, ctx)
            while True:
                inst = self._next_instance(queue, store, ctx, cfg)
                if inst is None:
                    break
                self._generate_one(inst, engine, store, ctx, cfg, queue)
            self._drain_writes()
        except RankDesync as e:
            # every rank says so: after a desync the writer may be the rank that is gone
            if self._deadline is not None:
                self._deadline.disarm_timer()
            exit_within(DESYNC_EXIT_S)  # the backstop, should the record write block
            why = str(e)
            self._progress.update(lambda r: r.update(state="failed", error=why, current=None),
                                  wait_s=2.0)
            exit_before_teardown()  # submitit writes its result, then the process ends
            raise
        finally:
            heartbeat.stop()
            self._release_claims()
        barrier(ctx)
        if ctx.rank == 0:
            rec = self._progress.update(_on_finish)
            result = {"chunk": self.chunk_index, "done": len(rec["done"]), "failed": rec["failed"]}
        else:
            result = {"chunk": self.chunk_index, "rank": ctx.rank}
        # Seen on the dev cluster: a rank that had finished aborted at interpreter exit
        # ("terminate called without an active exception") with its gloo groups still alive,
        # and Slurm then failed the whole chunk. The groups end here, before the exit.
        shutdown(ctx)
        return result

    def _next_instance(self, queue: list, store, ctx, cfg):
        """The writer picks and claims the next stem; its group follows."""
        choice = None
        if ctx.is_writer:
            while queue:
                inst = queue.pop(0)
                if store.is_done(inst.stem):
                    # another job made it since planning: count it, never make it twice
                    self._progress.update(lambda r, s=inst.stem: _mark_done(r, s, skipped=True))
                    continue
                claim = store.claim(inst.stem, _owner())
                if claim is None:
                    log.info("%s is claimed by another job; leaving it to that job", inst.stem)
                    continue
                self._claims[inst.stem] = (store, claim)
                if store.is_done(inst.stem):  # finished by another job between check and claim
                    self._release(inst.stem)
                    self._progress.update(lambda r, s=inst.stem: _mark_done(r, s, skipped=True))
                    continue
                choice = inst
                break
        if ctx.group_size > 1:
            choice = broadcast_object(choice, ctx)
        return choice

    def _generate_one(self, inst, engine, store, ctx, cfg, queue):
        if ctx.is_writer:
            self._progress.update(lambda r: r.update(current=inst.stem, step=None, steps=None))
            engine.step_callback = self._progress.step_reporter(inst.stem)
        t0 = time.time()
        error, own = None, False
        self._attempts_started += 1
        attempt = f"{self._group_job}/{os.environ.get('SLURM_RESTART_COUNT', '0')}/{self._attempts_started}"
        try:
            video = sample_instance(engine, inst, cfg.generate.seed)
        except (submitit.core.utils.UncompletedJobError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - every failure is recorded, the chunk goes on
            error = (f"{type(e).__name__}: {e}", traceback.format_exc())
            video = None
            own = not is_peer_loss(e)
            if ctx.group_size > 1:
                # From here on anything may block (a peer stuck in a collective, the
                # exchange, the NCCL teardown): the end of this process is bounded first.
                self._deadline = self._arm_deadline(inst.stem, error[0], cfg)
                if own:
                    # A peer may still wait in a collective this rank left. Under NCCL its
                    # watchdog ends that process after generate.dist_timeout_s, perhaps the
                    # writer's: record the failure now, before the next collective.
                    store.record_failure(inst.stem, error[0], error[1], attempt=attempt)
        try:
            errors = gather_errors(error, ctx)
        except Exception as e:  # noqa: BLE001 - a peer that never answers
            if error is None or not own:
                # the peer left for its own reasons (preempted, timed out, crashed): it, or
                # submitit, accounts for that; this instance did nothing wrong. The alarm
                # stays armed: this process ends within the bound all the same.
                if self._deadline is not None:
                    self._deadline.disarm_timer()
                raise
            raise RankDesync(f"{inst.stem}: failed here ({error[0]}) and a peer rank did not "
                             f"answer ({type(e).__name__}); stopping this chunk, resubmit to continue") from e
        if errors and (not all(errors) or len({e[0] for e in errors}) > 1):
            # ranks failed differently (or one not at all): one of them left an engine
            # collective half done, so the group's next collective cannot be trusted. Each
            # failing rank recorded its failure above.
            each = "; ".join(f"rank {r}: {e[0] if e else 'no error'}" for r, e in enumerate(errors))
            raise RankDesync(f"{inst.stem}: the ranks failed differently ({each}); "
                             f"stopping this chunk, resubmit to continue")
        if self._deadline is not None:  # a symmetric failure: the group goes on together
            self._deadline.cancel()
            self._deadline = None
        if errors:
            reason, tb = errors[0]
            if ctx.is_writer:
                self._release(inst.stem)
                n = store.record_failure(inst.stem, reason, tb, attempt=attempt)
                log.error("%s failed (attempt %d/%d): %s", inst.stem, n, cfg.output.max_attempts, reason)
                if n < cfg.output.max_attempts:
                    queue.append(inst)
                else:
                    self._progress.update(lambda r: _mark_failed(r, inst.stem, reason))
            return
        if not ctx.is_writer:
            return
        gen_s = time.time() - t0
        timings = dict(getattr(engine, "last_timings", {}) or {})
        record = {"engine": engine.fingerprint(), "timings": timings, "job_id": current_job_id(),
                  "chunk": self.chunk_index, "rank": ctx.rank, "seed": cfg.generate.seed,
                  "instance_index": inst.index}
        # the uint8 conversion (seconds at 81 frames) happens in the writer too
        write = lambda: self._write(inst, video, record, store, cfg, gen_s)  # noqa: E731
        if cfg.generate.async_write:
            # encode this mp4 while the next video generates; at most one write in flight
            self._drain_writes()
            self._pending_write = _writer_pool().submit(write)
        else:
            write()

    def _arm_deadline(self, stem: str, reason: str, cfg) -> ExitDeadline:
        """The failure bound (ranks.failure_bound_s), armed before anything can block."""
        wait_s = cfg.generate.dist_timeout_s + EXCHANGE_SLACK_S
        why = (f"{stem}: failed on rank {global_rank()} ({reason}) and the group did not answer "
               f"within {wait_s} s (generate.dist_timeout_s + {EXCHANGE_SLACK_S}); this rank "
               "ended its peers on this host and the chunk; resubmit to continue")

        def last_words():
            log.error(why)
            if self._progress is not None:
                self._progress.update(lambda r: r.update(state="failed", error=why, current=None),
                                      wait_s=2.0)
            end_peers_on_this_host(self._peers)
        return ExitDeadline(wait_s, last_words).arm()

    def _write(self, inst, video, record, store, cfg, gen_s):
        from wmsub.state.video_io import frames_to_uint8
        t1 = time.time()
        try:
            frames = frames_to_uint8(video)
            store.write_video(inst.stem, frames, cfg.generate.fps, record)
        except Exception as e:  # noqa: BLE001 - a failed write is a recorded failure, never silent
            self._release(inst.stem)
            n = store.record_failure(inst.stem, f"writing the mp4: {type(e).__name__}: {e}",
                                     traceback.format_exc())
            log.error("%s: write failed (attempt %d): %s", inst.stem, n, e)
            if n >= cfg.output.max_attempts:
                why = str(e)
                self._progress.update(lambda r: _mark_failed(r, inst.stem, why))
            return
        write_s = time.time() - t1
        store.clear_failure(inst.stem)
        self._release(inst.stem)
        sps = record["timings"].get("s_per_step", 0.0)
        entry = {"stem": inst.stem, "seconds": round(gen_s + write_s, 3), "s_per_step": sps,
                 "finished_at": time.time(), "rank": record["rank"],
                 "size": f"{frames.shape[2]}x{frames.shape[1]}", "generate_s": round(gen_s, 3),
                 "write_s": round(write_s, 3),
                 **{k: round(v, 3) for k, v in record["timings"].items() if k != "s_per_step"}}
        rec = self._progress.update(lambda r: _mark_done(r, inst.stem, video=entry))
        log.info("video %s done: %d/%d in chunk, %.1fs (%.3f s/step, write %.1fs), %dx%d, %d frames",
                 inst.stem, len(rec["done"]), rec["total"], gen_s + write_s, sps, write_s,
                 frames.shape[2], frames.shape[1], frames.shape[0])

    def _drain_writes(self, timeout_s: float | None = None):
        pending, self._pending_write = getattr(self, "_pending_write", None), None
        if pending is not None:
            pending.result(timeout=timeout_s)

    # ---- claims -------------------------------------------------------------------------
    def _release(self, stem):
        store_claim = self._claims.pop(stem, None)
        if store_claim:
            store, claim = store_claim
            store.release(claim)

    def _release_claims(self):
        try:  # the stem being written keeps its claim until its mp4 is in place
            self._drain_writes(timeout_s=30)
        except Exception:  # noqa: BLE001 - recorded by the write itself
            log.exception("pending write before releasing claims")
        for stem in list(self._claims):
            try:
                self._release(stem)
            except Exception:  # noqa: BLE001 - best effort from a signal handler
                log.exception("could not release claim of %s", stem)


# ---- helpers ------------------------------------------------------------------------------
class _ClaimHeartbeat:
    """Refreshes the worker's claims while a (possibly long) video is generated, so that a
    live claim never looks stale to another job."""

    def __init__(self, worker: ChunkWorker, interval_s: float):
        import threading
        self.worker, self.interval_s = worker, max(interval_s, 1.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="claim-heartbeat")

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            for store, claim in list(self.worker._claims.values()):
                try:
                    store.refresh(claim)
                except Exception:  # noqa: BLE001 - the next beat tries again
                    log.exception("claim refresh failed")

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()

class _LogContext(logging.Filter):
    chunk = "?"
    rank = 0

    def filter(self, record):
        record.chunk, record.rank = _LogContext.chunk, _LogContext.rank
        return True


def _install_log_context(chunk):
    _LogContext.chunk = chunk
    for h in logging.getLogger().handlers:
        h.addFilter(_LogContext())


_POOL = None


def _writer_pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mp4-writer")
    return _POOL


def _owner() -> dict:
    return {"job_id": current_job_id(), "host": socket.gethostname(), "pid": os.getpid()}


def sample_instance(engine, inst, seed: int):
    """The worker's one call into an engine: the first frame is opened here (None in t2v
    mode), the engine gets a prompt, an image and a seed."""
    image = open_rgb(inst.image) if inst.image else None
    return engine.sample(inst.prompt, image, seed)


def _chain_signal_release(worker: ChunkWorker):
    """Ranks other than 0 get the requeue signal too; submitit ignores it there, but their
    claims (dp mode) must not outlive them, so release before passing the signal on."""
    previous = signal.getsignal(signal.SIGUSR2)

    def handler(signum, frame):
        worker._release_claims()
        if callable(previous):
            previous(signum, frame)
    signal.signal(signal.SIGUSR2, handler)


def _my_queue(instances, ctx) -> list:
    # dp: each rank is its own group and takes every num_groups-th instance first; the
    # claims make it safe for ranks to pick up each other's leftovers later.
    if ctx.num_groups > 1:
        mine = instances[ctx.group_index::ctx.num_groups]
        rest = [i for i in instances if i not in mine]
        return mine + rest
    return list(instances) if ctx.is_writer or ctx.group_size > 1 else []


def _on_start(rec, job_id):
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if rec.get("state") == "requeued" or restarts > rec.get("restarts", 0):
        rec["restarts"] = max(restarts, rec.get("restarts", 0) + 1)
    rec.update(state="running", job_id=job_id, current=None, error=None, host=socket.gethostname())


def _on_finish(rec):
    rec["current"] = None
    rec["step"] = None
    rec["state"] = "finished" if not rec["failed"] else "finished_with_failures"


def _record_start(rec, start):
    # one entry per rank and (re)start: where the chunk's start-up time goes
    rec.setdefault("starts", []).append({**start, "job_id": rec.get("job_id"), "at": time.time()})


def _seconds(timings: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in timings.items()
                     if k.endswith("_s") and isinstance(v, float))


def _process_age_s(now: float) -> float | None:
    """Seconds since this process started (Linux /proc), None elsewhere: what the
    interpreter start and submitit's unpickling cost before the worker ran."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return round(now - (boot + ticks / os.sysconf("SC_CLK_TCK")), 3)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _mark_done(rec, stem, video=None, skipped=False):
    if stem not in rec["done"]:
        rec["done"].append(stem)
    rec["failed"].pop(stem, None)
    if skipped and stem not in rec["skipped"]:
        rec["skipped"].append(stem)
    if video:
        rec["videos"].append(video)
    rec["current"] = None
    rec["step"] = None


def _mark_failed(rec, stem, reason):
    rec["failed"][stem] = reason
    rec["current"] = None
    rec["step"] = None
