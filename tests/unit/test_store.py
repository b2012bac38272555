"""Output store: atomic writes, done checks, quarantine, settings lock, failures, claims.

Concurrency tests use real processes (spawn) on the real filesystem.
"""
import json
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from wmsub.state import video_io
from wmsub.state.claims import ClaimBook
from wmsub.state.store import OutputStore, SettingsMismatch

FRAMES = 5
SETTINGS = {"generate.seed": 42, "generate.frame_num": FRAMES, "model.name": "Wan2.2-TI2V-5B"}


def make_store(out, fingerprint="fp-one", settings=None, **kw) -> OutputStore:
    return OutputStore(out, fingerprint, settings or SETTINGS, FRAMES, **kw)


def frames(n=FRAMES, w=64, h=48, shade=0) -> np.ndarray:
    f = np.zeros((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        f[i] = ((30 * i + shade) % 256, 120, 200 - 20 * i)
    return f


# ---- writing and the done check -----------------------------------------------------------

def test_write_video_then_done_with_sidecar(tmp_path):
    store = make_store(tmp_path / "out")
    class Dtype:  # like torch.bfloat16 in an engine fingerprint: not JSON by itself
        def __str__(self):
            return "torch.bfloat16"

    record = {"seed": 42, "engine": {"name": "wan_ti2v", "dtype": Dtype()},
              "timings": {"steps_s": 1.5}, "bytes": -1}  # a caller cannot forge the store's fields
    path = store.write_video("000000007259.2", frames(), 24, record)
    assert path == tmp_path / "out" / "000000007259.2.mp4"
    sidecar = json.loads((tmp_path / "out/.wmsub/records/000000007259.2.json").read_text())
    assert sidecar["bytes"] == path.stat().st_size
    assert (sidecar["fingerprint"], sidecar["frames"], sidecar["width"], sidecar["height"],
            sidecar["fps"]) == ("fp-one", FRAMES, 64, 48, 24)
    assert sidecar["seed"] == 42
    assert sidecar["engine"] == {"name": "wan_ti2v", "dtype": "torch.bfloat16"}
    assert len(sidecar["sha256"]) == 64 and sidecar["written_at"] > 0
    assert store.is_done("000000007259.2") and store.is_done("000000007259.2", verify="decode")
    assert not store.is_done("other")
    assert video_io.probe_mp4(path)["frames"] == FRAMES
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")] == []
    settings = json.loads((tmp_path / "out/.wmsub/settings.json").read_text())
    assert settings["fingerprint"] == "fp-one"


def test_wrong_frame_count_is_refused_and_nothing_is_written(tmp_path):
    store = make_store(tmp_path)
    with pytest.raises(ValueError, match="3 frames.*frame_num=5"):
        store.write_video("a", frames(n=3), 24, {})
    assert not (tmp_path / "a.mp4").exists()
    assert not list(tmp_path.glob(".a.mp4.*"))


def test_rewrite_quarantines_the_old_video_first(tmp_path):
    store = make_store(tmp_path)
    store.write_video("a", frames(shade=0), 24, {})
    old = (tmp_path / "a.mp4").read_bytes()
    store.write_video("a", frames(shade=90), 24, {})
    kept = list((tmp_path / ".wmsub/quarantine").glob("a.*.mp4"))
    assert len(kept) == 1 and kept[0].read_bytes() == old
    assert (tmp_path / "a.mp4").read_bytes() != old and store.is_done("a")


def test_truncated_mp4_is_quarantined_and_pending(tmp_path):
    store = make_store(tmp_path)
    path = store.write_video("a", frames(), 24, {})
    store.write_video("b", frames(), 24, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    assert not store.is_done("a")
    result = store.scan(["a", "b", "c"])
    assert result.done == ["b"] and result.pending == ["a", "c"]
    assert [s for s, _ in result.quarantined] == ["a"]
    assert "bytes" in result.quarantined[0][1]
    moved = list((tmp_path / ".wmsub/quarantine").glob("a.*.mp4"))
    assert len(moved) == 1 and moved[0].read_bytes() == data[: len(data) - 100]
    assert not path.exists()
    assert store.scan(["a"]).quarantined == []  # nothing left to move


def test_same_size_corruption_needs_decode_verify(tmp_path):
    store = make_store(tmp_path)
    path = store.write_video("a", frames(), 24, {})
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    assert store.is_done("a", verify="cheap")  # size and boxes are intact
    assert not store.is_done("a", verify="decode")
    result = store.scan(["a"], verify="decode")
    assert result.pending == ["a"] and "sha256" in result.quarantined[0][1]


def test_mp4_without_sidecar_is_quarantined(tmp_path):
    """An older script's output: a playable mp4 with no record of how it was made."""
    store = make_store(tmp_path)
    video_io.write_mp4(tmp_path / "legacy.mp4", frames(), 24)
    assert not store.is_done("legacy")
    result = store.scan(["legacy"])
    assert result.pending == ["legacy"]
    assert "no sidecar" in result.quarantined[0][1]
    assert len(list((tmp_path / ".wmsub/quarantine").glob("legacy.*.mp4"))) == 1


# ---- settings lock --------------------------------------------------------------------------

def test_settings_mismatch_names_keys_and_fix(tmp_path):
    make_store(tmp_path).write_video("a", frames(), 24, {})
    changed = {**SETTINGS, "generate.seed": 7}
    other = make_store(tmp_path, fingerprint="fp-two", settings=changed)
    with pytest.raises(SettingsMismatch) as err:
        other.scan(["a"])
    text = str(err.value)
    assert "generate.seed: 42 -> 7" in text
    assert "output.dir" in text and "output.allow_settings_mismatch=true" in text
    assert "model.name" not in text  # only the keys that differ
    # allowed: the old video is pending (other settings), and replaced via quarantine
    allowed = make_store(tmp_path, fingerprint="fp-two", settings=changed, allow_mismatch=True)
    result = allowed.scan(["a"])
    assert result.pending == ["a"] and result.other_settings == ["a"] and result.quarantined == []
    assert any("generate.seed" in n for n in allowed.notes)
    allowed.write_video("a", frames(), 24, {})
    assert allowed.is_done("a") and len(list((tmp_path / ".wmsub/quarantine").glob("a.*.mp4"))) == 1
    # the folder now belongs to the new settings; the first ones are refused
    assert make_store(tmp_path, fingerprint="fp-two", settings=changed).scan(["a"]).done == ["a"]
    with pytest.raises(SettingsMismatch, match="generate.seed: 7 -> 42"):
        make_store(tmp_path).check_settings()


# ---- failures -------------------------------------------------------------------------------

def test_failures_count_until_failed_then_retry_and_clear(tmp_path):
    store = make_store(tmp_path, max_attempts=2)
    assert store.record_failure("a", "CUDA out of memory", "Traceback ...") == 1
    assert store.scan(["a"]).pending == ["a"]
    assert store.record_failure("a", "NaN in latents", "tb2") == 2
    result = store.scan(["a", "b"])
    assert list(result.failed) == ["a"] and result.pending == ["b"]
    record = result.failed["a"]
    assert (record.attempts, record.reason, record.traceback) == (2, "NaN in latents", "tb2")
    assert [h["reason"] for h in record.history] == ["CUDA out of memory", "NaN in latents"]
    assert store.scan(["a"], retry_failed=True).pending == ["a"]
    store.clear_failure("a")
    assert store.failures() == {} and store.scan(["a"]).pending == ["a"]


def test_ranks_recording_one_attempt_count_it_once(tmp_path):
    store = make_store(tmp_path, max_attempts=3)
    assert store.record_failure("a", "injected on rank 1", "tb1", attempt="job/0/1") == 1
    assert store.record_failure("a", "collective timed out", "tb0", attempt="job/0/1") == 1
    assert store.record_failure("a", "again", "tb", attempt="job/0/2") == 2
    record = store.failures()["a"]
    assert [h["reason"] for h in record.history] == ["injected on rank 1", "again"]


# ---- crash in the middle of a write ---------------------------------------------------------

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


def test_temps_of_live_writers_are_kept(tmp_path):
    store = make_store(tmp_path)
    mine = tmp_path / f".a.mp4.{os.getpid()}.tmp"  # this process is alive
    mine.write_bytes(b"partial")
    # a writer on another host holding a live claim on its stem
    remote = tmp_path / ".b.mp4.999999.tmp"
    remote.write_bytes(b"partial")
    claims = tmp_path / ".wmsub/claims"
    claims.mkdir(parents=True)
    (claims / "b.claim").write_text(json.dumps({"stem": "b", "token": "t", "host": "gpu-node-17",
                                                "pid": 999999}))
    orphan = tmp_path / ".c.mp4.999999.tmp"  # pid not running here, no claim
    orphan.write_bytes(b"partial")
    assert store.remove_stale_temps() == [orphan.name]
    assert mine.exists() and remote.exists()
    old = time.time() - 4000  # older than the claim TTL: gone whoever wrote it
    os.utime(mine, (old, old))
    assert store.remove_stale_temps() == [mine.name]


# ---- claims ---------------------------------------------------------------------------------

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


def test_claim_from_another_container_on_this_host_waits_for_the_ttl(tmp_path):
    """Same hostname, other pid namespace: its pid cannot be checked from here."""
    from wmsub.state.claims import this_host
    book = ClaimBook(tmp_path, ttl_s=60)
    book.path("a").write_text(json.dumps({"stem": "a", "token": "theirs", "host": this_host(),
                                          "pidns": "pid:[1]", "pid": 999999}))
    assert not book.is_stale(book.read("a"))[0]
    assert book.claim("a") is None
    old = time.time() - 120
    os.utime(book.path("a"), (old, old))
    assert book.claim("a") is not None


def test_broken_claim_is_lost_by_its_old_owner(tmp_path):
    book = ClaimBook(tmp_path, ttl_s=60)
    first = book.claim("a")
    old = time.time() - 600
    os.utime(first.path, (old, old))
    second = book.claim("a")
    assert second is not None and second.token != first.token
    assert not book.refresh(first)
    assert not book.release(first)  # must not remove the new owner's claim
    assert book.read("a")["token"] == second.token
    assert book.refresh(second)
    assert time.time() - book.read("a")["heartbeat"] < 60


def test_store_scan_reports_live_claims(tmp_path):
    store = make_store(tmp_path)
    claim = store.claim("a", {"job_id": "5_1"})
    assert claim is not None and store.claim("a") is None
    result = store.scan(["a", "b"])
    assert result.pending == ["a", "b"] and result.claimed == ["a"]
    store.release(claim)
    assert store.scan(["a"]).claimed == []
