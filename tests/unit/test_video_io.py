"""video_io: the official pixel mapping, the official encoder settings, loud failures."""
import numpy as np
import pytest

from wmsub.state import video_io
from wmsub.state.video_io import VideoError, frames_to_uint8, probe_mp4, read_frames, write_mp4

# Values away from integer boundaries after *255, so the hand computation is unambiguous.
# x -> clamp(x, -1, 1) -> (x + 1) / 2 -> * 255 -> truncate
HAND = [(-3.0, 0), (-1.0, 0), (-0.5, 63), (0.0, 127), (0.001, 127), (0.3, 165),
        (0.5, 191), (0.99, 253), (1.0, 255), (7.0, 255)]


def _video_from_hand_values() -> np.ndarray:
    """(3, F=2, H=1, W=len(HAND)); channel c, frame f holds HAND values shifted by c + f."""
    values = np.array([v for v, _ in HAND], dtype=np.float32)
    video = np.zeros((3, 2, 1, len(HAND)), dtype=np.float32)
    for c in range(3):
        for f in range(2):
            video[c, f, 0] = np.roll(values, c + 2 * f)
    return video


def _expected_from_hand() -> np.ndarray:
    expected = np.array([e for _, e in HAND], dtype=np.uint8)
    out = np.zeros((2, 1, len(HAND), 3), dtype=np.uint8)
    for c in range(3):
        for f in range(2):
            out[f, 0, :, c] = np.roll(expected, c + 2 * f)
    return out


def test_frames_to_uint8_numpy_matches_hand_computation():
    got = frames_to_uint8(_video_from_hand_values())
    assert got.dtype == np.uint8 and got.shape == (2, 1, len(HAND), 3)
    np.testing.assert_array_equal(got, _expected_from_hand())


def test_frames_to_uint8_torch_matches_hand_and_numpy():
    torch = pytest.importorskip("torch")
    video = _video_from_hand_values()
    got = frames_to_uint8(torch.from_numpy(video))
    np.testing.assert_array_equal(got, _expected_from_hand())
    # the (1, C, F, H, W) batch the official save_video receives gives the same frames
    np.testing.assert_array_equal(frames_to_uint8(torch.from_numpy(video)[None]), got)
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1.3, 1.3, size=(3, 3, 8, 12)).astype(np.float32)
    np.testing.assert_array_equal(frames_to_uint8(torch.from_numpy(noise)), frames_to_uint8(noise))


def test_frames_to_uint8_rejects_wrong_layout():
    with pytest.raises(ValueError, match=r"\(3, F, H, W\)"):
        frames_to_uint8(np.zeros((2, 3, 4, 4), dtype=np.float32))


def _colour_frames(n=5, w=96, h=64) -> np.ndarray:
    frames = np.zeros((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        frames[i] = (40 * i + 20, 200 - 30 * i, 90)
    return frames


def test_write_probe_read_roundtrip(tmp_path):
    frames = _colour_frames()
    path = write_mp4(tmp_path / "v.mp4", frames, fps=24)
    assert probe_mp4(path) == {"frames": 5, "width": 96, "height": 64, "fps": 24.0}
    last, first, again = read_frames(path, [4, 0, 4])
    assert first.shape == (64, 96, 3) and first.dtype == np.uint8
    # lossy codec: solid colours come back within a few levels
    assert np.abs(first.astype(int) - frames[0]).max() <= 6
    assert np.abs(last.astype(int) - frames[4]).max() <= 6
    np.testing.assert_array_equal(last, again)
    with pytest.raises(VideoError, match="do not exist"):
        read_frames(path, [5])


def test_write_mp4_is_byte_identical_to_the_official_writer(tmp_path):
    """The official save_video: imageio.get_writer(file, fps, codec='libx264', quality=8)."""
    import imageio

    frames = _colour_frames(n=3)
    official = tmp_path / "official.mp4"
    writer = imageio.get_writer(str(official), fps=16, codec="libx264", quality=8)
    for frame in frames:
        writer.append_data(frame)
    writer.close()
    # a temp-style name without a video suffix, as the store writes
    ours = write_mp4(tmp_path / ".x.mp4.123.tmp", frames, fps=16)
    assert ours.read_bytes() == official.read_bytes()


def test_write_mp4_raises_naming_the_path(tmp_path):
    missing_dir = tmp_path / "no" / "such" / "dir" / "v.mp4"
    with pytest.raises(VideoError, match=str(missing_dir)):
        write_mp4(missing_dir, _colour_frames(n=2), fps=24)
    with pytest.raises(VideoError, match="uint8"):
        write_mp4(tmp_path / "f.mp4", _colour_frames(n=2).astype(np.float32), fps=24)


def test_truncated_mp4_is_detected_by_structure_and_probe(tmp_path):
    path = write_mp4(tmp_path / "v.mp4", _colour_frames(), fps=24)
    assert video_io.mp4_structure_problem(path) == ""
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated" in video_io.mp4_structure_problem(cut)
    with pytest.raises(VideoError, match="cut.mp4"):
        probe_mp4(cut)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all, just text" * 10)
    assert video_io.mp4_structure_problem(junk) != ""
