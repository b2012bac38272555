"""A still-frame baseline: the zero-motion video of a first frame, as a user engine.

The video is the first frame, resized and centre-cropped to the engine's size (the TI2V-5B
rule, benchmark.sizes.i2v_size), repeated generate.frame_num times: no motion at all,
whatever the prompt and the seed. It is a reference point for WorldModelBench scores: a
model's instruction following should beat it (the instructions ask for motion), while a
video that never moves breaks few physical laws, so physics and common-sense scores alone
can flatter a model that barely moves. It needs no weights and no GPU.

Use it with `model.engine=tests.helpers.still_engine:StillFrameEngine` from a wmsub
checkout (the jobs put the checkout on PYTHONPATH). docs/ENGINES.md walks through it.
"""
from __future__ import annotations

import time

from wmsub.benchmark import sizes
from wmsub.engine_specs import EngineSpec

NAME = "tests.helpers.still_engine:StillFrameEngine"


def pixel_tokens(width: int, height: int, frame_num: int) -> int:
    """The cost unit: pixels written (resizing one frame is nothing beside encoding them all)."""
    return width * height * frame_num


class StillFrameEngine:
    """model.engine=tests.helpers.still_engine:StillFrameEngine"""

    spec = EngineSpec(
        name=NAME,
        loader=NAME,
        i2v_size=sizes.i2v_size,  # the 5B's size: the baseline sits beside the 5B's videos
        tokens=pixel_tokens,
        reference_video=(1280, 704, 81, 1),
        defaults={"model.name": "still-frame-baseline", "model.checkpoint_dir": "",
                  "generate.max_area": 704 * 1280, "generate.frame_num": 81,
                  "generate.sampling_steps": 1, "generate.fps": 24,
                  "generate.device": "cpu",  # it computes nothing on a GPU
                  "plan.seconds_per_video": 3.0},
        checkpoint_check="",  # no weights: preflight skips the checkpoint check
        description="still-frame baseline: the first frame repeated, zero motion (CPU, no weights)",
    )

    def __init__(self, cfg, ctx):
        t0 = time.perf_counter()
        self.cfg, self.ctx = cfg, ctx
        self.step_callback = None
        self.last_timings: dict = {}
        self.load_timings = {"load_s": time.perf_counter() - t0}

    def sample(self, prompt: str, image, seed: int):
        """(3, F, H, W) float32 in [-1, 1] (numpy) on the writer rank, None elsewhere. The
        prompt and the seed are not used: the baseline never moves."""
        import numpy as np  # heavy imports inside the methods: the login node reads `spec`

        if image is None:
            raise ValueError("the still-frame baseline needs a first frame (bench.prompt_mode=i2v)")
        if not self.ctx.is_writer:
            return None
        t0 = time.perf_counter()
        width, height = self.spec.i2v_size(image.width, image.height, self.cfg.generate.max_area)
        frame = np.asarray(_resize_and_crop(image, width, height), dtype=np.float32)  # (H, W, 3)
        # pixel centres, so that the worker's uint8 conversion (which truncates) gives the
        # frame's own pixels back; 255 lands on 1.0
        frame = np.minimum((frame + 0.5) / 127.5 - 1.0, 1.0)
        video = np.repeat(frame.transpose(2, 0, 1)[:, None], self.cfg.generate.frame_num, axis=1)
        if self.step_callback is not None:
            self.step_callback(1, 1)
        seconds = time.perf_counter() - t0
        self.last_timings = {"text_s": 0.0, "image_s": seconds, "steps_s": 0.0,
                             "s_per_step": 0.0, "decode_s": 0.0}
        return video

    def fingerprint(self) -> dict:
        import numpy as np
        from PIL import Image
        return {"engine": NAME, "numpy": np.__version__, "pillow": Image.__version__,
                "resize": "lanczos+centre-crop", "device": "cpu", "parallel": self.ctx.mode,
                "group_size": self.ctx.group_size}


def _resize_and_crop(img, width: int, height: int):
    """LANCZOS resize to cover (width, height), then a centre crop: what the 5B does to its
    first frame, so the baseline's frame is the one the model starts from."""
    from PIL import Image
    scale = max(width / img.width, height / img.height)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    left, top = (img.width - width) // 2, (img.height - height) // 2
    return img.crop((left, top, left + width, top + height))
