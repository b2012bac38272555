"""Video tensors to uint8 frames, mp4 writing and probing.

`frames_to_uint8` reproduces the official `wan.utils.utils.save_video` pixel mapping
bit for bit; `write_mp4` uses the same encoder settings (imageio, libx264, quality 8)
but, unlike the official writer, never swallows an error. No torch at module level:
the login node imports this without torch.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
from pathlib import Path

import numpy as np


class VideoError(RuntimeError):
    """An mp4 could not be written, read or verified. The message names the file."""


def frames_to_uint8(video) -> np.ndarray:
    """(C, F, H, W) or (1, C, F, H, W) video in [-1, 1] -> (F, H, W, C) uint8.

    Same arithmetic as the official writer: clamp to [-1, 1], torchvision
    `make_grid(normalize=True, value_range=(-1, 1))` (for one video: clamp again, then
    `(x - (-1)) / max(1 - (-1), 1e-5)`), then `(x * 255).type(torch.uint8)`, which
    truncates rather than rounds. Accepts a torch tensor or a numpy array.
    """
    low, high = -1.0, 1.0
    if isinstance(video, np.ndarray):
        x = video
        if x.ndim == 5 and x.shape[0] == 1:
            x = x[0]
        _check_shape(x.shape)
        x = np.clip(x, low, high)
        x = (x - low) / max(high - low, 1e-5)
        x = (x * 255).astype(np.uint8)  # float -> uint8 truncates toward zero, like torch
        return np.ascontiguousarray(x.transpose(1, 2, 3, 0))

    import torch  # lazily: only compute nodes have it

    if not isinstance(video, torch.Tensor):
        raise TypeError(f"frames_to_uint8: expected a torch.Tensor or numpy array, "
                        f"got {type(video).__name__}")
    x = video.detach()
    if x.dim() == 5 and x.shape[0] == 1:
        x = x[0]
    _check_shape(tuple(x.shape))
    x = x.clamp(low, high)
    x = x.clamp(low, high).sub(low).div(max(high - low, 1e-5))
    x = (x * 255).type(torch.uint8).cpu()
    return np.ascontiguousarray(x.permute(1, 2, 3, 0).numpy())


def _check_shape(shape) -> None:
    if len(shape) != 4 or shape[0] != 3:
        raise ValueError(f"frames_to_uint8: expected a (3, F, H, W) video, got shape {tuple(shape)}")


def write_mp4(path: str | Path, frames: np.ndarray, fps: int) -> Path:
    """Encode (F, H, W, 3) uint8 frames with the official settings; raise on any failure."""
    import imageio_ffmpeg

    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise VideoError(f"{path}: expected (F, H, W, 3) uint8 frames with F >= 1, "
                         f"got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    try:
        # The arguments imageio's FFMPEG writer passes for the official
        # get_writer(file, fps=fps, codec='libx264', quality=8), plus `-f mp4`: temp
        # names such as `.x.mp4.123.tmp` carry no suffix for ffmpeg to infer it from.
        gen = imageio_ffmpeg.write_frames(
            str(path), (width, height), pix_fmt_in="rgb24", pix_fmt_out="yuv420p", fps=fps,
            quality=8, codec="libx264", macro_block_size=16, output_params=["-f", "mp4"])
        gen.send(None)
        try:
            for frame in frames:
                gen.send(np.ascontiguousarray(frame))
        finally:
            gen.close()
    except Exception as e:
        raise VideoError(f"{path}: writing the mp4 failed: {type(e).__name__}: {e}") from e
    if not path.is_file() or path.stat().st_size == 0:
        raise VideoError(f"{path}: the encoder reported success but wrote no file")
    return path


_VIDEO_LINE = re.compile(r"Stream #\d+:\d+.*?: Video: (.*)")
_SIZE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")
_FPS = re.compile(r"([\d.]+) fps")
_FRAME = re.compile(r"frame=\s*(\d+)")
_DECODE_ERROR = re.compile(r"^\[.*(error while decoding|corrupt decoded frame|Invalid data)")  # a decoder's line


def probe_mp4(path: str | Path) -> dict:
    """Decode the first video stream fully: {frames, width, height, fps}.

    One ffmpeg run (the binary bundled with imageio-ffmpeg); a file ffmpeg cannot
    open or decode raises VideoError with its message. A decoding error anywhere counts
    (`-xerror`): without it ffmpeg conceals damaged frames, counts them and exits 0, so a
    file with a corrupted payload but an intact structure would pass.
    """
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-xerror", "-i", str(path),
           "-map", "0:v:0", "-vf", "null", "-f", "null", "-"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        lines = out.strip().splitlines()
        first = next((line for line in lines if _DECODE_ERROR.search(line)), None)
        tail = "\n".join(([first] if first and first not in lines[-3:] else []) + lines[-3:])
        raise VideoError(f"{path}: ffmpeg cannot decode it (exit {proc.returncode}): {tail}")
    stream = _VIDEO_LINE.search(out)
    frames = _FRAME.findall(out)
    if not stream or not frames:
        raise VideoError(f"{path}: ffmpeg found no video stream")
    size = _SIZE.search(stream.group(1))
    fps = _FPS.search(stream.group(1))
    return {
        "frames": int(frames[-1]),
        "width": int(size.group(1)) if size else 0,
        "height": int(size.group(2)) if size else 0,
        "fps": float(fps.group(1)) if fps else 0.0,
    }


def read_frames(path: str | Path, indices) -> list[np.ndarray]:
    """Decode the frames at `indices` (any order, repeats allowed) as (H, W, 3) uint8."""
    import imageio_ffmpeg

    path = Path(path)
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        return []
    if wanted[0] < 0:
        raise ValueError(f"{path}: frame indices must be >= 0, got {wanted[0]}")
    found: dict[int, np.ndarray] = {}
    n_read = 0
    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)
        width, height = meta["size"]
        try:
            for i, raw in enumerate(gen):
                n_read = i + 1
                if i in wanted:
                    found[i] = np.frombuffer(raw, np.uint8).reshape(height, width, 3).copy()
                if i >= wanted[-1]:
                    break
        finally:
            gen.close()
    except Exception as e:
        raise VideoError(f"{path}: reading frames failed: {type(e).__name__}: {e}") from e
    missing = [i for i in wanted if i not in found]
    if missing:
        raise VideoError(f"{path}: has {n_read} frames; frame(s) {missing} do not exist")
    return [found[int(i)] for i in indices]


def mp4_structure_problem(path: str | Path) -> str:
    """Why an mp4's top-level boxes are incomplete, or "" when they look whole.

    Reads only box headers: the boxes must tile the file exactly, and `ftyp`, `mdat`
    and `moov` must be present. A write cut short loses the tail (ffmpeg writes `moov`
    last), so truncation shows up here without decoding anything.
    """
    path = Path(path)
    seen = []
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            offset = 0
            while offset < size:
                f.seek(offset)
                header = f.read(8)
                if len(header) < 8:
                    return f"cut off inside a box header at byte {offset} of {size}"
                box_size, box_type = struct.unpack(">I4s", header)
                if box_size == 1:
                    large = f.read(8)
                    if len(large) < 8:
                        return f"cut off inside a box header at byte {offset} of {size}"
                    box_size = struct.unpack(">Q", large)[0]
                elif box_size == 0:
                    box_size = size - offset  # "extends to the end of the file"
                if box_size < 8:
                    return f"invalid box size {box_size} at byte {offset}"
                seen.append(box_type.decode("latin-1"))
                offset += box_size
            if offset != size:
                return f"box '{seen[-1]}' ends at byte {offset}, beyond the file's {size} bytes (truncated)"
    except OSError as e:
        return f"cannot be read ({e})"
    missing = [b for b in ("ftyp", "mdat", "moov") if b not in seen]
    if missing:
        return f"no {', '.join(missing)} box (boxes found: {', '.join(seen) or 'none'})"
    return ""
