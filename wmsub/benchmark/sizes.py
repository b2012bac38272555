"""The one owner of the output-size rule: which video size an instance gets, and its tokens.

TI2V-5B: VAE stride 16 x patch 2 = 32 pixels per token side; 4 frames per latent frame.
The planner (cost estimates), the engine (what it generates) and `adopt` (what a valid
video must measure) all ask here. No torch: the login node uses it.
"""
from __future__ import annotations

PIXELS_PER_TOKEN_SIDE = 32
T2V_BASE_SIZE = (1280, 704)  # (width, height): generate.py's t2v size at the default area


class SizeError(ValueError):
    """No aligned output size fits: the image is too elongated for the area."""


def best_output_size(w, h, dw, dh, expected_area):
    """wan.utils.utils.best_output_size, verbatim (the tests compare it with the official)."""
    ratio = w / h
    ow = (expected_area * ratio)**0.5
    oh = expected_area / ow
    ow1 = int(ow // dw * dw)
    oh1 = int(expected_area / ow1 // dh * dh)
    assert ow1 % dw == 0 and oh1 % dh == 0 and ow1 * oh1 <= expected_area
    ratio1 = ow1 / oh1
    oh2 = int(oh // dh * dh)
    ow2 = int(expected_area / oh2 // dw * dw)
    assert oh2 % dh == 0 and ow2 % dw == 0 and ow2 * oh2 <= expected_area
    ratio2 = ow2 / oh2
    if max(ratio / ratio1, ratio1 / ratio) < max(ratio / ratio2, ratio2 / ratio):
        return ow1, oh1
    return ow2, oh2


def i2v_size(width: int, height: int, max_area: int,
             align: int = PIXELS_PER_TOKEN_SIDE) -> tuple[int, int]:
    """(width, height) of the video made from a `width` x `height` first frame.

    Raises SizeError where the official rule has no answer (it divides by zero for a frame
    so elongated that one side rounds to less than one token).
    """
    try:
        return best_output_size(width, height, align, align, max_area)
    except (ZeroDivisionError, AssertionError):
        raise SizeError(
            f"a {width}x{height} first frame is too elongated for generate.max_area={max_area}: "
            f"no {align}x{align}-aligned size of that aspect fits (aspect "
            f"{max(width, height) / max(1, min(width, height)):.1f}:1) — fix: crop the frame "
            "nearer to 16:9, raise generate.max_area, or leave the instance out "
            "(bench.stems / bench.domains)") from None


def t2v_size(max_area: int, align: int = PIXELS_PER_TOKEN_SIDE) -> tuple[int, int]:
    """generate.py's 1280x704 at the default area, else the landscape size of the same
    aspect that best fits max_area."""
    return i2v_size(*T2V_BASE_SIZE, max_area, align)


def video_tokens(width: int, height: int, frame_num: int) -> int:
    """DiT tokens of one video: latent frames x token rows x token columns."""
    latent_frames = (frame_num - 1) // 4 + 1
    return latent_frames * (height // PIXELS_PER_TOKEN_SIDE) * (width // PIXELS_PER_TOKEN_SIDE)


# ---- Wan2.2-I2V-A14B (WanI2V.generate): VAE stride 8 x patch 2 = 16 pixels per token side ----

I2V_VAE_STRIDE = 8
I2V_PATCH = 2


def wan_i2v_size(width: int, height: int, max_area: int) -> tuple[int, int]:
    """(width, height) of WanI2V's video from a `width` x `height` first frame: the latent
    sides of generate() (sqrt of the area at the frame's aspect, floored to whole patches),
    times the VAE stride. The frame is resized to it without a crop."""
    import math
    aspect = height / width
    lat_h = round(math.sqrt(max_area * aspect) // I2V_VAE_STRIDE // I2V_PATCH * I2V_PATCH)
    lat_w = round(math.sqrt(max_area / aspect) // I2V_VAE_STRIDE // I2V_PATCH * I2V_PATCH)
    if lat_h < I2V_PATCH or lat_w < I2V_PATCH:
        raise SizeError(
            f"a {width}x{height} first frame is too elongated for generate.max_area={max_area}: "
            f"one side of the video rounds to less than {I2V_VAE_STRIDE * I2V_PATCH} pixels — fix: "
            "crop the frame nearer to 16:9, raise generate.max_area, or leave the instance out "
            "(bench.stems / bench.domains)")
    return lat_w * I2V_VAE_STRIDE, lat_h * I2V_VAE_STRIDE


def wan_i2v_tokens(width: int, height: int, frame_num: int) -> int:
    """DiT tokens of one WanI2V video (one forward of one expert)."""
    side = I2V_VAE_STRIDE * I2V_PATCH
    return ((frame_num - 1) // 4 + 1) * (height // side) * (width // side)
