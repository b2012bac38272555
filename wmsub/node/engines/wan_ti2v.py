"""Our TI2V sampler on the official Wan2.2 modules: step for step `WanTI2V.i2v` / `t2v`.

Every line of the official computation that changes numbers is mirrored here in the
same order (size, resize/crop, noise draw, text encoding, VAE encode, per-token
timesteps, guidance, re-masking, decode); comments name the official line where the
reason is not obvious. What differs is only where things run (device placement,
parallel modes, caching of the fixed negative prompt) and none of it changes a bit.
"""
from __future__ import annotations

import math
import random
import sys
import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from wmsub.benchmark.sizes import i2v_size, t2v_size
from wmsub.engine_specs import WAN22_TI2V_5B
from wmsub.node.engines import checkpoint as ckpt_mod
from wmsub.node.engines.parallel import DistContext
from wmsub.node.engines.attention import current_attention, install_attention
from wmsub.node.engines.fast import apply_speedups, speedups_applied
from wmsub.node.engines.parallelize import parallelize_dit, text_encoder_shard_fn
from wmsub.node.engines.shims import cpu_context, wan_module, wan_version


# ---- helpers copied from wan.utils.utils / torchvision (no CPU torchvision here) ----

def masks_like(tensor, zero=False):
    """wan.utils.utils.masks_like without the training-only `generator` branch."""
    assert isinstance(tensor, list)
    out1 = [torch.ones(u.shape, dtype=u.dtype, device=u.device) for u in tensor]
    out2 = [torch.ones(u.shape, dtype=u.dtype, device=u.device) for u in tensor]
    if zero:
        for u, v in zip(out1, out2):
            u[:, 0] = torch.zeros_like(u[:, 0])
            v[:, 0] = torch.zeros_like(v[:, 0])
    return out1, out2


def to_tensor(img: Image.Image) -> torch.Tensor:
    """torchvision.transforms.functional.to_tensor for an 8-bit RGB PIL image."""
    if img.mode != "RGB":
        raise ValueError(f"to_tensor expects an RGB image, got mode {img.mode}")
    arr = np.array(img, dtype=np.uint8, copy=True)
    t = torch.from_numpy(arr).view(img.size[1], img.size[0], 3).permute(2, 0, 1).contiguous()
    return t.to(dtype=torch.get_default_dtype()).div(255)


def resize_and_crop(img: Image.Image, ow: int, oh: int) -> Image.Image:
    """WanTI2V.i2v: LANCZOS resize to cover (ow, oh), then centre crop."""
    iw, ih = img.width, img.height
    scale = max(ow / iw, oh / ih)
    img = img.resize((round(iw * scale), round(ih * scale)), Image.LANCZOS)
    x1 = (img.width - ow) // 2
    y1 = (img.height - oh) // 2
    img = img.crop((x1, y1, x1 + ow, y1 + oh))
    assert img.width == ow and img.height == oh
    return img


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class WanTI2VEngine:
    """Loads T5, VAE and DiT once; `sample(prompt, image, seed)` makes one video
    (the base.Engine interface)."""

    spec = WAN22_TI2V_5B

    def __init__(self, cfg, ctx: DistContext):
        t0 = time.perf_counter()
        self._setup(cfg, ctx, ckpt_mod.ti2v_config())
        if not ctx.active:
            return  # `none` on ranks > 0: nothing to load
        self.load_timings["setup_s"] = time.perf_counter() - t0  # imports the wan modules
        self._load()

    def _setup(self, cfg, ctx: DistContext, wan_cfg) -> None:
        """Everything but the load: settings, the official config `wan_cfg`, the attention
        kernel (the A14B engine shares it)."""
        self.cfg = cfg
        self.gen = cfg.generate
        self.ctx = ctx
        self.device = ctx.device
        self.last_timings: dict = {}
        # called as step_callback(step, steps) after each denoising step (the worker shows
        # progress with it); None: nothing is called
        self.step_callback = None
        self.load_timings: dict = {}  # seconds of each part of the load (`_load`)
        self.speedups: list | dict = []
        self.wan_cfg = wan_cfg
        self.num_train_timesteps = self.wan_cfg.num_train_timesteps
        self.param_dtype = self.wan_cfg.param_dtype
        self.vae_stride = self.wan_cfg.vae_stride
        self.patch_size = self.wan_cfg.patch_size
        self.neg_prompt = cfg.negative_prompt
        self.mode = ctx.mode
        self.sp_size = ctx.group_size if self.mode == "sp" else 1
        self._neg_cache = None
        self._t5_on_device = False
        self.attention = install_attention(self.gen.attention, self.device)
        if self.device.type != "cuda":
            # The official code wraps its math in CUDA autocast, which is inert (and
            # warns at every step) off CUDA: the fp32 CPU computation is intended.
            warnings.filterwarnings("ignore", message="CUDA is not available or torch_xla")
            warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.autocast")
        self.vae_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[self.gen.vae_dtype]

    # ---- loading ----

    def _load(self):
        """Read T5, VAE and DiT concurrently (file reads and host-to-device copies), then
        shard and wrap them in a fixed order (the collectives must match across ranks).
        Each part's seconds land in `load_timings` (the worker records them)."""
        t0 = time.perf_counter()
        ckpt = ckpt_mod.check_checkpoint_dir(self.cfg.model.checkpoint_dir)
        dims = ckpt_mod.read_dims(ckpt)
        t5_shard = text_encoder_shard_fn(self.ctx)
        # without FSDP the T5 goes to the device at its first use anyway: copy it now,
        # alongside the other reads, unless it is offloaded between videos
        t5_to_device = t5_shard is None and not self.gen.offload_t5

        def read_t5():
            enc = ckpt_mod.load_text_encoder(ckpt, self.wan_cfg, dims)
            if t5_to_device:
                enc.model.to(self.device)
            return enc

        with _timed(self.load_timings, "build_dit", self.device):
            skeleton = ckpt_mod.dit_skeleton(ckpt)  # before the threads: it patches nn.Module
        t_reads = time.perf_counter()
        parts = {"read_t5": read_t5,
                 "read_vae": lambda: ckpt_mod.load_vae(ckpt, self.wan_cfg, dims, self.device,
                                                       self.vae_dtype),
                 "read_dit": lambda: ckpt_mod.fill_dit(skeleton, ckpt, self.device)}
        loaded = _run_concurrently(parts, self.device, self.load_timings)
        self.load_timings["read_all_s"] = time.perf_counter() - t_reads
        self.text_encoder, self.vae, model = loaded["read_t5"], loaded["read_vae"], loaded["read_dit"]
        self._t5_on_device = t5_to_device
        with _timed(self.load_timings, "shard_t5", self.device):
            if t5_shard is not None:  # FSDP moves it to the device
                self.text_encoder.model = t5_shard(self.text_encoder.model,
                                                   sync_module_states=False)
                self._t5_on_device = True
        model.eval().requires_grad_(False)
        with _timed(self.load_timings, "place_dit", self.device):
            self.model = parallelize_dit(model, self.ctx, self.param_dtype)
        if not self.gen.exact:
            with _timed(self.load_timings, "fast_path", self.device):
                self.apply_fast_path()
        self.load_timings["load_s"] = time.perf_counter() - t0

    def apply_fast_path(self):
        """The fast path's speed-ups (fast.apply_speedups) on the loaded model."""
        self.model = apply_speedups(self.model, self.gen)
        self.speedups = speedups_applied(self.model)
        self.attention = current_attention()

    # ---- public API ----

    def fingerprint(self) -> dict:
        return {
            "engine": "wmsub.wan_ti2v",
            "wan": wan_version(),
            "torch": str(torch.__version__),
            "attention": self.attention,
            "parallel": self.mode,
            "group_size": self.ctx.group_size,
            "device": self.device.type,
            # the report's "GPU type" (and why seed-42 noise matches only on like GPUs)
            "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
            "param_dtype": str(self.param_dtype).replace("torch.", ""),
            "t5_dtype": str(self.wan_cfg.t5_dtype).replace("torch.", ""),
            "vae_dtype": self.gen.vae_dtype,
            "exact": self.gen.exact,
            "speedups": self.speedups,
        }

    def sample(self, prompt: str, image: Image.Image | None, seed: int):
        """One video: i2v from `image` (an RGB PIL image), t2v when it is None.

        (3, F, H, W) float32 in [-1, 1] on CPU on the writer rank, None elsewhere.
        """
        if not self.ctx.active:
            return None
        try:
            if image is not None:
                return self._i2v(prompt, image, seed)
            return self._t2v(prompt, seed)
        except Exception:
            _reset_fsdp_state(self.model)
            raise

    # ---- pieces shared by i2v and t2v ----

    def _encode_text(self, prompt: str):
        """(context, context_null) on the device; order and calls as WanTI2V."""
        t0 = time.perf_counter()
        need_cond = self.mode != "cfg" or self.ctx.group_rank == 0
        need_null = self.mode != "cfg" or self.ctx.group_rank == 1
        if not self._t5_on_device:
            self.text_encoder.model.to(self.device)
            self._t5_on_device = True
        context = self.text_encoder([prompt], self.device) if need_cond else None
        context_null = None
        if need_null:
            if self.gen.cache_negative_prompt and self._neg_cache is not None:
                context_null = self._neg_cache
            else:
                context_null = self.text_encoder([self.neg_prompt], self.device)
                if self.gen.cache_negative_prompt:
                    self._neg_cache = context_null
        if self.device.type != "cuda":
            context = cpu_context(context)
            context_null = cpu_context(context_null)
        if self.gen.offload_t5 and self.mode != "sp" and self.device.type == "cuda":
            self.text_encoder.model.cpu()
            self._t5_on_device = False
        _sync(self.device)
        self.last_timings["text_s"] = time.perf_counter() - t0
        return context, context_null

    def _scheduler(self, steps: int, shift: float):
        solver = self.gen.sample_solver
        if solver == "unipc":
            unipc = wan_module("utils.fm_solvers_unipc")
            sched = unipc.FlowUniPCMultistepScheduler(
                num_train_timesteps=self.num_train_timesteps, shift=1, use_dynamic_shifting=False)
            sched.set_timesteps(steps, device=self.device, shift=shift)
            return sched, sched.timesteps
        if solver == "dpm++":
            dpm = wan_module("utils.fm_solvers")
            sched = dpm.FlowDPMSolverMultistepScheduler(
                num_train_timesteps=self.num_train_timesteps, shift=1, use_dynamic_shifting=False)
            sigmas = dpm.get_sampling_sigmas(steps, shift)
            timesteps, _ = dpm.retrieve_timesteps(sched, device=self.device, sigmas=sigmas)
            return sched, timesteps
        raise ValueError(f"generate.sample_solver={solver!r}: expected unipc or dpm++")

    def _guided(self, latent_model_input, timestep, arg_c, arg_null):
        """uncond + g * (cond - uncond); `cfg` mode runs the two forwards on two ranks."""
        g = self.gen.guide_scale
        if self.mode == "cfg":
            mine = self.model(latent_model_input, t=timestep,
                              **(arg_c if self.ctx.group_rank == 0 else arg_null))[0]
            both = [torch.empty_like(mine) for _ in range(2)]
            dist.all_gather(both, mine.contiguous(), group=self.ctx.group)
            noise_pred_cond, noise_pred_uncond = both
        else:
            noise_pred_cond = self.model(latent_model_input, t=timestep, **arg_c)[0]
            noise_pred_uncond = self.model(latent_model_input, t=timestep, **arg_null)[0]
        return noise_pred_uncond + g * (noise_pred_cond - noise_pred_uncond)

    def _no_sync(self):
        @contextmanager
        def noop_no_sync():
            yield
        return getattr(self.model, "no_sync", noop_no_sync)

    def _finish(self, x0, t_steps, n_steps):
        """Decode on the writer rank; barrier like the official; CPU float32 out."""
        videos = None
        t0 = time.perf_counter()
        if self.ctx.is_writer:
            videos = self.vae.decode(x0)
        _sync(self.device)
        self.last_timings["decode_s"] = time.perf_counter() - t0
        self.last_timings["steps_s"] = t_steps
        self.last_timings["s_per_step"] = t_steps / max(n_steps, 1)
        return videos

    def _report_step(self, step: int, steps: int) -> None:
        if self.step_callback is not None:
            self.step_callback(step, steps)

    def _gather_up(self, videos):
        if self.ctx.group is not None and dist.is_initialized():
            dist.barrier(group=self.ctx.group)
        if videos is None:
            return None
        return videos[0].to("cpu", torch.float32)

    # ---- WanTI2V.i2v ----

    def _i2v(self, input_prompt, img, seed):
        gen = self.gen
        F = gen.frame_num
        t0 = time.perf_counter()
        ih, iw = img.height, img.width
        dh, dw = self.patch_size[1] * self.vae_stride[1], self.patch_size[2] * self.vae_stride[2]
        assert dh == dw  # the size rule takes one alignment
        ow, oh = i2v_size(iw, ih, gen.max_area, dw)
        img = resize_and_crop(img, ow, oh)
        img = to_tensor(img).sub_(0.5).div_(0.5).to(self.device).unsqueeze(1)

        seq_len = ((F - 1) // self.vae_stride[0] + 1) * (oh // self.vae_stride[1]) * (
            ow // self.vae_stride[2]) // (self.patch_size[1] * self.patch_size[2])
        seq_len = int(math.ceil(seq_len / self.sp_size)) * self.sp_size

        seed = seed if seed >= 0 else random.randint(0, sys.maxsize)
        seed_g = torch.Generator(device=self.device)
        seed_g.manual_seed(seed)
        noise = torch.randn(
            self.vae.model.z_dim, (F - 1) // self.vae_stride[0] + 1, oh // self.vae_stride[1],
            ow // self.vae_stride[2], dtype=torch.float32, generator=seed_g, device=self.device)
        t_image0 = time.perf_counter() - t0

        context, context_null = self._encode_text(input_prompt)

        t1 = time.perf_counter()
        with torch.no_grad():  # WanTI2V runs this outside no_grad; the VAE has no grads
            z = self.vae.encode([img])
        _sync(self.device)
        self.last_timings["image_s"] = t_image0 + time.perf_counter() - t1

        with (torch.amp.autocast("cuda", dtype=self.param_dtype), torch.no_grad(),
              self._no_sync()()):
            sample_scheduler, timesteps = self._scheduler(gen.sampling_steps, gen.shift)
            latent = noise
            mask1, mask2 = masks_like([noise], zero=True)
            latent = (1. - mask2[0]) * z[0] + mask2[0] * latent
            arg_c = {"context": [context[0]] if context is not None else None,
                     "seq_len": seq_len}
            arg_null = {"context": context_null, "seq_len": seq_len}

            t2 = time.perf_counter()
            x0 = None
            for step, t in enumerate(timesteps):
                latent_model_input = [latent.to(self.device)]
                timestep = [t]
                timestep = torch.stack(timestep).to(self.device)
                temp_ts = (mask2[0][0][:, ::2, ::2] * timestep).flatten()
                temp_ts = torch.cat([temp_ts, temp_ts.new_ones(seq_len - temp_ts.size(0)) * timestep])
                timestep = temp_ts.unsqueeze(0)

                noise_pred = self._guided(latent_model_input, timestep, arg_c, arg_null)
                temp_x0 = sample_scheduler.step(
                    noise_pred.unsqueeze(0), t, latent.unsqueeze(0), return_dict=False,
                    generator=seed_g)[0]
                latent = temp_x0.squeeze(0)
                latent = (1. - mask2[0]) * z[0] + mask2[0] * latent
                x0 = [latent]
                del latent_model_input, timestep
                self._report_step(step + 1, len(timesteps))
            _sync(self.device)
            self.last_latent = latent
            videos = self._finish(x0, time.perf_counter() - t2, len(timesteps))
        return self._gather_up(videos)

    # ---- WanTI2V.t2v ----

    def t2v_size(self) -> tuple[int, int]:
        """(width, height): generate.py's 1280*704 for the default area, else the
        landscape size of the same aspect that best fits max_area."""
        return t2v_size(self.gen.max_area, self.patch_size[1] * self.vae_stride[1])

    def _t2v(self, input_prompt, seed):
        gen = self.gen
        size = self.t2v_size()
        F = gen.frame_num
        target_shape = (self.vae.model.z_dim, (F - 1) // self.vae_stride[0] + 1,
                        size[1] // self.vae_stride[1], size[0] // self.vae_stride[2])
        seq_len = math.ceil((target_shape[2] * target_shape[3]) /
                            (self.patch_size[1] * self.patch_size[2]) *
                            target_shape[1] / self.sp_size) * self.sp_size
        seed = seed if seed >= 0 else random.randint(0, sys.maxsize)
        seed_g = torch.Generator(device=self.device)
        seed_g.manual_seed(seed)

        context, context_null = self._encode_text(input_prompt)

        noise = [torch.randn(target_shape[0], target_shape[1], target_shape[2], target_shape[3],
                             dtype=torch.float32, device=self.device, generator=seed_g)]
        self.last_timings["image_s"] = 0.0
        with (torch.amp.autocast("cuda", dtype=self.param_dtype), torch.no_grad(),
              self._no_sync()()):
            sample_scheduler, timesteps = self._scheduler(gen.sampling_steps, gen.shift)
            latents = noise
            mask1, mask2 = masks_like(noise, zero=False)
            arg_c = {"context": context, "seq_len": seq_len}
            arg_null = {"context": context_null, "seq_len": seq_len}
            t2 = time.perf_counter()
            for step, t in enumerate(timesteps):
                latent_model_input = latents
                timestep = [t]
                timestep = torch.stack(timestep)
                temp_ts = (mask2[0][0][:, ::2, ::2] * timestep).flatten()
                temp_ts = torch.cat([temp_ts, temp_ts.new_ones(seq_len - temp_ts.size(0)) * timestep])
                timestep = temp_ts.unsqueeze(0)

                noise_pred = self._guided(latent_model_input, timestep, arg_c, arg_null)
                temp_x0 = sample_scheduler.step(
                    noise_pred.unsqueeze(0), t, latents[0].unsqueeze(0), return_dict=False,
                    generator=seed_g)[0]
                latents = [temp_x0.squeeze(0)]
                self._report_step(step + 1, len(timesteps))
            x0 = latents
            _sync(self.device)
            self.last_latent = x0[0]
            videos = self._finish(x0, time.perf_counter() - t2, len(timesteps))
        return self._gather_up(videos)


def load_engine(cfg, ctx: DistContext) -> WanTI2VEngine:
    """Load T5, VAE and DiT once and apply the parallel mode (and the fast path when
    `generate.exact` is false and wmsub.node.engines.fast exists)."""
    return WanTI2VEngine(cfg, ctx)


@contextmanager
def _timed(timings: dict, name: str, device):
    t0 = time.perf_counter()
    yield
    _sync(device)
    timings[f"{name}_s"] = time.perf_counter() - t0


def _run_concurrently(parts: dict, device, timings: dict) -> dict:
    """Run each loader of `parts` in its own thread; their seconds go to `timings`.
    The first exception is raised once every part has ended."""
    from concurrent.futures import ThreadPoolExecutor

    def run(name, fn):
        if device.type == "cuda":
            torch.cuda.set_device(device)  # the current device is per thread
        with _timed(timings, name, device):
            return fn()

    with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="load") as pool:
        futures = {name: pool.submit(run, name, fn) for name, fn in parts.items()}
        return {name: f.result() for name, f in futures.items()}


def _reset_fsdp_state(model) -> None:
    """FSDP1 leaves its units in FORWARD_BACKWARD when a forward raises, and then refuses
    every later forward; a failed instance must not poison the rest of the chunk."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp._common_utils import TrainingState
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, FSDP):
            module.training_state = TrainingState.IDLE
