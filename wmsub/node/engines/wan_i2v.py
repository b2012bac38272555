"""Our Wan2.2-I2V-A14B sampler on the official modules: step for step `wan.WanI2V.generate`
(wan22 2.2.11, wan/image2video.py) with `lightning=False`.

**The lightning trap.** The PyPI `wan22` fork's `WanI2V.__init__` defaults to
`lightning=True`: it then ignores `checkpoint_dir` for the experts (it loads them from
"/mnt/engines/wan22/i2v/") and `generate` skips the unconditional forward (no guidance).
Upstream Wan2.2 (Wan-Video/Wan2.2) has no such flag: its behaviour is `lightning=False`,
which is what this engine mirrors and what the tests and tools/verify_official_i2v.py
compare against (they always pass `lightning=False`).

What `generate` computes, mirrored line for line below (comments name the official step
where the reason is not obvious):
- the frame goes through `TF.to_tensor` then `.sub_(0.5).div_(0.5)`; the video size is
  `lat_h = round(sqrt(max_area * h / w) // 8 // 2 * 2)` (and lat_w likewise), i.e.
  `benchmark.sizes.wan_i2v_size`; no crop: the frame is resized (bicubic, on the CPU as
  the official `img[None].cpu()`) to exactly that size;
- `max_seq_len` rounded up to a multiple of the sequence-parallel ranks;
- the noise (16 channels) is drawn first, with the seeded generator on the device;
- the first-frame mask `msk` (4 x latent frames), the prompt then the negative prompt
  through T5, the VAE (Wan2.1, z_dim 16) encode of [the resized frame, F-1 zero frames],
  y = concat([msk, latent]) (20 channels; the DiT's in_dim 36 = 16 + 20);
- unipc or dpm++ exactly as official; per step the expert is `high_noise_model` when
  `t.item() >= boundary * 1000` (boundary 0.9), else `low_noise_model`, and the guide
  scale is `guide_scale[1]` (high) or `guide_scale[0]` (low): the config's pair is
  [low-noise, high-noise], the official order; one number g means (g, g);
- cond then uncond forward, both with y; `scheduler.step(..., generator=seed_g)`; the
  latent is NOT re-masked (unlike TI2V: the frame enters through y only); decode on the
  writer rank.

Parallel modes as the 5B engine (`generate.parallel`): `sp` (both experts FSDP-sharded with
the Ulysses forward, T5 sharded: `WanI2V(t5_fsdp, dit_fsdp, use_sp)`), `cfg` (cond and
uncond on two ranks), `dp`, `none`; the expert switch happens inside each the same way.
The fast path (`exact: false`) applies `fast.apply_speedups` to each expert (fast.py's
forward takes `y`, so every lever applies; under `sp` only the attention kernel does).

**Memory.** Both experts stay resident on each GPU, in float32 as the official loads them
(no `convert_model_dtype`): 2 x 14.3B x 4 bytes = 114 GB, plus T5 (11.4 GB bf16, dropped
from the GPU after encoding with `generate.offload_t5`), the VAE and activations (~10 GB
at 720p). One H200 holds that for `none`/`dp`/`cfg` at 480p (121.3 GiB peak, measured), most
likely not at 720p (not measured); an 80 GB GPU does not: there use `sp` on 2+ GPUs (FSDP: 57 GB of experts per GPU on 2, 29 GB on 4). Under `sp` each
expert is read and sharded in turn (one unsharded expert at a time; read through the CPU
when the GPU has less than 100 GiB).
"""
from __future__ import annotations

import math
import random
import sys
import time
from contextlib import ExitStack

import torch
import torch.distributed as dist
from PIL import Image

from wmsub.benchmark.sizes import wan_i2v_size
from wmsub.engine_specs import WAN22_I2V_A14B
from wmsub.node.engines import checkpoint as ckpt_mod
from wmsub.node.engines import layout_i2v
from wmsub.node.engines.attention import current_attention
from wmsub.node.engines.checkpoint_i2v import i2v_config, load_vae21
from wmsub.node.engines.fast import apply_speedups, speedups_applied
from wmsub.node.engines.parallel import DistContext
from wmsub.node.engines.parallelize import parallelize_dit, text_encoder_shard_fn
from wmsub.node.engines.wan_ti2v import (WanTI2VEngine, _reset_fsdp_state, _run_concurrently,
                                         _sync, _timed, to_tensor)

HIGH, LOW = layout_i2v.HIGH_NOISE, layout_i2v.LOW_NOISE
Z_DIM = 16  # WanI2V.generate draws 16 noise channels (the Wan2.1 VAE's z_dim)


def guide_pair(guide_scale) -> tuple[float, float]:
    """(low-noise, high-noise) guide scales; a single number g means (g, g) as official."""
    if isinstance(guide_scale, (list, tuple)):
        if len(guide_scale) != 2:
            raise ValueError(f"generate.guide_scale={guide_scale!r}: expected one number or "
                             "[low-noise, high-noise]")
        return float(guide_scale[0]), float(guide_scale[1])
    return float(guide_scale), float(guide_scale)


def first_frame_mask(frame_num: int, lat_h: int, lat_w: int, device) -> torch.Tensor:
    """WanI2V.generate's `msk`: ones on the first frame (repeated 4x: the VAE's temporal
    stride), zeros elsewhere, as [4, latent frames, lat_h, lat_w]."""
    msk = torch.ones(1, frame_num, lat_h, lat_w, device=device)
    msk[:, 1:] = 0
    msk = torch.concat([torch.repeat_interleave(msk[:, 0:1], repeats=4, dim=1), msk[:, 1:]], dim=1)
    msk = msk.view(1, msk.shape[1] // 4, 4, lat_h, lat_w)
    return msk.transpose(1, 2)[0]


class WanI2VEngine(WanTI2VEngine):
    """Loads T5, the Wan2.1 VAE and both A14B experts once; `sample(prompt, image, seed)`
    makes one video (the base.Engine interface). i2v only.

    Text encoding, the schedulers, decode and the parallel plumbing are the 5B engine's
    (inherited); loading, the sampler and the guidance with its expert switch are here.
    `experts` ({"high_noise_model": WanModel, "low_noise_model": WanModel}) hands in
    experts built elsewhere (tools/verify_official_i2v.py: real-size random weights that
    do not fit a disk); then the folder needs no expert weights.
    """

    spec = WAN22_I2V_A14B
    spec_name = WAN22_I2V_A14B.name

    def __init__(self, cfg, ctx: DistContext, experts: dict | None = None):
        t0 = time.perf_counter()
        self.experts: dict = {}
        self._setup(cfg, ctx, i2v_config())  # the 5B engine's settings, with WanI2V's config
        self.last_latent = None
        self.last_experts: list[str] = []  # the expert each step of the last sample used
        self.speedups: dict = {}
        self.boundary = self.wan_cfg.boundary
        if not ctx.active:
            return
        self.load_timings["setup_s"] = time.perf_counter() - t0
        self._load(experts)

    # ---- loading ----

    def _load(self, given: dict | None = None):
        t0 = time.perf_counter()
        ckpt = layout_i2v.check_checkpoint_dir(self.cfg.model.checkpoint_dir, experts=given is None)
        dims = ckpt_mod.read_dims(ckpt)
        t5_shard = text_encoder_shard_fn(self.ctx)
        t5_to_device = t5_shard is None and not self.gen.offload_t5
        sp = self.mode == "sp"

        def read_t5():
            enc = ckpt_mod.load_text_encoder(ckpt, self.wan_cfg, dims)
            if t5_to_device:
                enc.model.to(self.device)
            return enc

        parts = {"read_t5": read_t5,
                 "read_vae": lambda: load_vae21(ckpt, dims, self.device, self.vae_dtype)}
        skeletons = {}
        if given is None:
            with _timed(self.load_timings, "build_dit", self.device):
                # before the threads: it patches nn.Module
                skeletons = {name: ckpt_mod.dit_skeleton(ckpt / name) for name in (LOW, HIGH)}
            if not sp:  # both whole on every rank: read them alongside T5 and the VAE
                for name in (LOW, HIGH):
                    parts[f"read_{name}"] = (lambda n=name: ckpt_mod.fill_dit(
                        skeletons[n], ckpt / n, self.device))
        t_reads = time.perf_counter()
        loaded = _run_concurrently(parts, self.device, self.load_timings)
        self.load_timings["read_all_s"] = time.perf_counter() - t_reads
        self.text_encoder, self.vae = loaded["read_t5"], loaded["read_vae"]
        self._t5_on_device = t5_to_device
        with _timed(self.load_timings, "shard_t5", self.device):
            if t5_shard is not None:
                self.text_encoder.model = t5_shard(self.text_encoder.model, sync_module_states=False)
                self._t5_on_device = True
        # WanI2V.__init__ configures low then high: the same order of collectives here
        for name in (LOW, HIGH):
            with _timed(self.load_timings, f"place_{name}", self.device):
                if given is not None:
                    model = given[name]
                elif sp:
                    model = ckpt_mod.fill_dit(skeletons.pop(name), ckpt / name, self._sp_stage())
                else:
                    model = loaded[f"read_{name}"]
                model.eval().requires_grad_(False)
                self.experts[name] = parallelize_dit(model, self.ctx, self.param_dtype)
        if not self.gen.exact:
            with _timed(self.load_timings, "fast_path", self.device):
                self.apply_fast_path()
        self.load_timings["load_s"] = time.perf_counter() - t0

    def _sp_stage(self):
        """Where an expert is read before FSDP shards it: the GPU when one unsharded fp32
        expert (57 GB) fits beside the rest, else the CPU (FSDP then copies the shards)."""
        if self.device.type == "cuda":
            total = torch.cuda.get_device_properties(self.device).total_memory
            if total >= 100 * 2**30:
                return self.device
        return torch.device("cpu")

    @property
    def model(self):
        """The high-noise expert (what the inherited FSDP reset walks first); see `experts`."""
        return self.experts.get(HIGH)

    def apply_fast_path(self):
        """fast.apply_speedups on each expert; what applied lands in the fingerprint.

        No fused q/k/v: its extra copy of the fp32 q/k/v weights is 12.6 GB per expert, and
        the two experts (114 GB) left no room for it on an H200 (out of memory at 480p,
        measured); it saves ~0.5 % of a step."""
        for name in (LOW, HIGH):
            self.experts[name] = apply_speedups(self.experts[name], self.gen, fuse_qkv=False)
            self.speedups[name] = speedups_applied(self.experts[name])
        self.attention = current_attention()

    # ---- public API ----

    def fingerprint(self) -> dict:
        fp = super().fingerprint()
        low, high = guide_pair(self.gen.guide_scale)
        fp.update({"engine": self.spec_name, "wan_class": "wan.WanI2V", "lightning": False,
                   "boundary": self.boundary,
                   "experts": {HIGH: f"t >= {self.boundary * self.num_train_timesteps:g}",
                               LOW: f"t < {self.boundary * self.num_train_timesteps:g}"},
                   "guide_scale": {"low_noise": low, "high_noise": high},
                   "vae": "Wan2.1"})
        return fp

    def sample(self, prompt: str, image: Image.Image | None, seed: int):
        """One video from `image` (an RGB PIL image): (3, F, H, W) float32 in [-1, 1] on the
        CPU on the writer rank, None elsewhere. image None raises: I2V-A14B is i2v only."""
        if image is None:
            raise ValueError("wan22-i2v-a14b is image-to-video only: the instance has no first "
                             "frame (bench.prompt_mode=t2v?) — fix: bench.prompt_mode=i2v")
        if not self.ctx.active:
            return None
        try:
            return self._i2v(prompt, image, seed)
        except Exception:
            for model in self.experts.values():
                _reset_fsdp_state(model)
            raise

    def expert_for(self, t) -> tuple[str, float]:
        """WanI2V._prepare_model_for_timestep and its guide-scale choice for timestep t:
        (expert name, guide scale)."""
        boundary = self.boundary * self.num_train_timesteps
        low, high = guide_pair(self.gen.guide_scale)
        if t.item() >= boundary:
            return HIGH, high
        return LOW, low

    def _guided(self, model, latent_model_input, timestep, arg_c, arg_null, g):
        """uncond + g * (cond - uncond) with one expert; `cfg` runs the two on two ranks."""
        if self.mode == "cfg":
            mine = model(latent_model_input, t=timestep,
                         **(arg_c if self.ctx.group_rank == 0 else arg_null))[0]
            both = [torch.empty_like(mine) for _ in range(2)]
            dist.all_gather(both, mine.contiguous(), group=self.ctx.group)
            noise_pred_cond, noise_pred_uncond = both
        else:
            noise_pred_cond = model(latent_model_input, t=timestep, **arg_c)[0]
            noise_pred_uncond = model(latent_model_input, t=timestep, **arg_null)[0]
        return noise_pred_uncond + g * (noise_pred_cond - noise_pred_uncond)

    # ---- WanI2V.generate ----

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the video made from a width x height frame."""
        return wan_i2v_size(width, height, self.gen.max_area)

    def condition(self, img: Image.Image):
        """(y, lat_h, lat_w) as generate() builds them: y = [msk, VAE latent of the resized
        frame + F-1 zero frames] (the tests compare y with the official one)."""
        gen = self.gen
        F = gen.frame_num
        img_t = to_tensor(img).sub_(0.5).div_(0.5)
        w, h = self.size_for(img.width, img.height)
        lat_h, lat_w = h // self.vae_stride[1], w // self.vae_stride[2]
        msk = first_frame_mask(F, lat_h, lat_w, self.device)
        frames = torch.concat([
            torch.nn.functional.interpolate(img_t[None], size=(h, w), mode="bicubic").transpose(0, 1),
            torch.zeros(3, F - 1, h, w)], dim=1).to(self.device)
        with torch.no_grad():  # WanI2V runs this outside no_grad; the VAE has no grads
            y = self.vae.encode([frames])[0]
        return torch.concat([msk, y]), lat_h, lat_w

    def _i2v(self, input_prompt, img, seed):
        gen = self.gen
        F = gen.frame_num
        t0 = time.perf_counter()
        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h = self.size_for(img.width, img.height)
        lat_h, lat_w = h // self.vae_stride[1], w // self.vae_stride[2]
        max_seq_len = ((F - 1) // self.vae_stride[0] + 1) * lat_h * lat_w // (
            self.patch_size[1] * self.patch_size[2])
        max_seq_len = int(math.ceil(max_seq_len / self.sp_size)) * self.sp_size

        seed = seed if seed >= 0 else random.randint(0, sys.maxsize)
        seed_g = torch.Generator(device=self.device)
        seed_g.manual_seed(seed)
        noise = torch.randn(Z_DIM, (F - 1) // self.vae_stride[0] + 1, lat_h, lat_w,
                            dtype=torch.float32, generator=seed_g, device=self.device)
        t_image0 = time.perf_counter() - t0

        context, context_null = self._encode_text(input_prompt)

        t1 = time.perf_counter()
        y, _, _ = self.condition(img)
        _sync(self.device)
        self.last_timings["image_s"] = t_image0 + time.perf_counter() - t1

        with ExitStack() as stack:
            stack.enter_context(torch.amp.autocast("cuda", dtype=self.param_dtype))
            stack.enter_context(torch.no_grad())
            for name in (LOW, HIGH):  # generate(): no_sync_low_noise(), no_sync_high_noise()
                no_sync = getattr(self.experts[name], "no_sync", None)
                if no_sync is not None:
                    stack.enter_context(no_sync())
            sample_scheduler, timesteps = self._scheduler(gen.sampling_steps, gen.shift)
            latent = noise
            arg_c = {"context": [context[0]] if context is not None else None,
                     "seq_len": max_seq_len, "y": [y]}
            arg_null = {"context": context_null, "seq_len": max_seq_len, "y": [y]}

            self.last_experts = []
            t2 = time.perf_counter()
            x0 = None
            for step, t in enumerate(timesteps):
                latent_model_input = [latent.to(self.device)]
                timestep = torch.stack([t]).to(self.device)
                name, g = self.expert_for(t)
                self.last_experts.append(name)
                noise_pred = self._guided(self.experts[name], latent_model_input, timestep,
                                          arg_c, arg_null, g)
                temp_x0 = sample_scheduler.step(
                    noise_pred.unsqueeze(0), t, latent.unsqueeze(0), return_dict=False,
                    generator=seed_g)[0]
                latent = temp_x0.squeeze(0)
                x0 = [latent]
                del latent_model_input, timestep
                self._report_step(step + 1, len(timesteps))
            _sync(self.device)
            self.last_latent = latent
            videos = self._finish(x0, time.perf_counter() - t2, len(timesteps))
        return self._gather_up(videos)


def load_engine(cfg, ctx: DistContext, experts: dict | None = None) -> WanI2VEngine:
    return WanI2VEngine(cfg, ctx, experts=experts)
