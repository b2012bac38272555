"""Output store under real concurrent processes (spawn) on the real filesystem: a writer
SIGKILLed mid-write, claimants racing for the same stems, the claim of a process that
exited. The store in one process: tests/unit/test_store.py."""
import multiprocessing as mp
import os
import signal
import time

import pytest

from tests.helpers.store import frames, make_store
from wmsub.state.claims import ClaimBook


def _write_and_hang(out, stem, hook, ready):
    """Child: write a video, stopping forever at `hook` so the parent can SIGKILL it."""
    import wmsub.state.store as store_mod

    def hang(*_a, **_k):
        ready.set()
        time.sleep(600)

    if hook == "after_encode":  # temp mp4 complete, no record, no final name
        store_mod.video_io.probe_mp4 = hang
    else:  # "before_rename": record written, temp not yet renamed
        real_replace = os.replace
        store_mod.os.replace = lambda src, dst: (hang() if str(dst).endswith(".mp4")
                                                 else real_replace(src, dst))
    make_store(out).write_video(stem, frames(), 24, {})


@pytest.mark.parametrize("hook", ["after_encode", "before_rename"])
def test_sigkill_mid_write_leaves_no_final_and_scan_cleans_temp(tmp_path, hook):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_write_and_hang, args=(tmp_path, "a", hook, ready))
    child.start()
    try:
        assert ready.wait(60), "the child never reached the write"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join(30)
    assert child.exitcode == -signal.SIGKILL
    temps = list(tmp_path.glob(".a.mp4.*.tmp"))
    assert [t.name for t in temps] == [f".a.mp4.{child.pid}.tmp"]
    assert not (tmp_path / "a.mp4").exists()
    store = make_store(tmp_path)
    assert not store.is_done("a")
    result = store.scan(["a"])
    assert result.pending == ["a"] and result.removed_temps == [temps[0].name]
    assert not temps[0].exists() and result.quarantined == []
    store.write_video("a", frames(), 24, {})  # and the instance is simply made again
    assert store.is_done("a", verify="decode")


def _claim_all(claims_dir, stems, ttl, start, queue):
    """All claimants go for the same stem at the same moment, stem after stem."""
    book = ClaimBook(claims_dir, ttl)
    won = []
    for stem in stems:
        start.wait()
        if book.claim(stem, {"worker": os.getpid()}) is not None:
            won.append(stem)
    queue.put((os.getpid(), won))


def _race(claims_dir, stems, ttl, n_procs=3):
    ctx = mp.get_context("spawn")
    start, queue = ctx.Barrier(n_procs), ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(claims_dir, stems, ttl, start, queue))
             for _ in range(n_procs)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    return results


def _assert_one_winner_each(results, stems):
    winners = {}
    for pid, won in results:
        for stem in won:
            assert stem not in winners, f"{stem} won by both {winners[stem]} and {pid}"
            winners[stem] = pid
    assert sorted(winners) == sorted(stems)


def test_concurrent_claimants_exactly_one_wins_each_stem(tmp_path):
    stems = [f"s{i:03d}" for i in range(150)]
    _assert_one_winner_each(_race(tmp_path / "claims", stems, ttl=1800), stems)


def test_concurrent_breakers_of_stale_claims_one_wins_each(tmp_path):
    claims = tmp_path / "claims"
    stems = [f"s{i:03d}" for i in range(150)]
    book = ClaimBook(claims, ttl_s=60)
    old = time.time() - 3600
    for s in stems:  # heartbeats an hour old
        assert book.claim(s, {"gone": True}) is not None
        os.utime(book.path(s), (old, old))
    _assert_one_winner_each(_race(claims, stems, ttl=60), stems)
    assert not list(claims.glob("*.break"))


def _claim_and_exit(claims_dir, stem):
    assert ClaimBook(claims_dir, 1800).claim(stem, {"job_id": "77_3"}) is not None


def test_claim_of_dead_process_is_broken_live_one_is_not(tmp_path):
    claims = tmp_path / "claims"
    ctx = mp.get_context("spawn")
    child = ctx.Process(target=_claim_and_exit, args=(claims, "a"))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    book = ClaimBook(claims, ttl_s=1800)
    info = book.read("a")
    assert info["pid"] == child.pid and info["job_id"] == "77_3"
    assert book.is_stale(info)[0] and "gone" in book.is_stale(info)[1]
    mine = book.claim("a", {"job_id": "78_0"})
    assert mine is not None and book.read("a")["job_id"] == "78_0"
    # a fresh claim of a live process is respected
    assert ClaimBook(claims, 1800).claim("a") is None
    assert book.refresh(mine) and book.release(mine)
    assert book.read("a") is None
