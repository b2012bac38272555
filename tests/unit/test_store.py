"""Output store: atomic writes, done checks, quarantine, settings lock, failures, claims.

In one process; the concurrency tests (real processes, spawn) are in tests/procs/test_store.py.
"""
import json
import os
import time

import pytest

from tests.helpers.store import FRAMES, SETTINGS, frames, make_store
from wmsub.state import video_io
from wmsub.state.claims import ClaimBook
from wmsub.state.store import SettingsMismatch


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
