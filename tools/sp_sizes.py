"""Every WorldModelBench output size under Ulysses `sp` on two GPUs, with each attention
kernel, against `none` (the whole model on one GPU): one DiT forward per size and kernel.

    torchrun --nproc_per_node 2 tools/sp_sizes.py [--kernels flash,cudnn,efficient,flash3]
                                                  [--frames 81] [--out sp_sizes.json]

Real-size random DiT (official sizes), the seed's FSDP + Ulysses wiring as the engine
applies it (`parallelize_dit`), the official per-token timesteps. 1312x672 has 18,081
tokens, an odd count: two ranks pad one key, which the dispatcher slices away (SDPA's flash
backend has no masked kernel). Prints one JSON object: per kernel and size, the relative
error of sp against none (same kernel), the error of that kernel against the first one
listed (flash) on `none` (the size of a kernel swap), and the forward's seconds. flash3 runs when FA3 is installed
(`fa3-fwd` or the official build) and is reported as skipped otherwise.
`--tiny` runs the same on two CPU ranks (gloo) with a tiny DiT at small sizes of odd token
counts (the math kernel; a smoke test of this script).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

# GUIDE section 3: the six output sizes (width, height) of WorldModelBench at 704*1280
SIZES = [(1248, 704), (1088, 800), (960, 928), (704, 1248), (1152, 768), (1312, 672)]
TINY_SIZES = [(160, 96), (96, 160)]  # 45 tokens each at 9 frames: odd
SANITY_REL_ERR = 2e-2  # a broken padding or wiring gives O(1) errors; kernels differ by ~2e-3


def rel_err(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def inputs_for(size, frames, text_dim, sp_size, device, seed=0):
    """Latent noise, per-token timesteps (first latent frame at 0, as i2v), a context."""
    w, h = size
    g = torch.Generator().manual_seed(seed)
    f = (frames - 1) // 4 + 1
    latent = torch.randn(48, f, h // 16, w // 16, generator=g).to(device)
    tokens = f * (h // 32) * (w // 32)
    t = torch.full((f, h // 32, w // 32), 900.0)
    t[0] = 0.0
    padded = -(-tokens // sp_size) * sp_size
    timestep = torch.cat([t.flatten(), torch.full((padded - tokens,), 900.0)])
    text_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # T5's output dtype
    context = (0.1 * torch.randn(120, text_dim, generator=g)).to(device, text_dtype)
    return latent, timestep, context, tokens, padded


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward(model, latent, timestep, context, seq_len):
    ts = timestep[:seq_len].unsqueeze(0).to(latent.device)
    on_cuda = latent.device.type == "cuda"
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda), torch.no_grad():
        sync(latent.device)
        t0 = time.perf_counter()
        out = model([latent], t=ts, context=[context], seq_len=seq_len)[0]
        sync(latent.device)
    return out.float(), time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kernels", default="flash,cudnn,efficient,flash3")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--out", default="")
    p.add_argument("--tiny", action="store_true", help="2 CPU ranks, tiny DiT, math kernel")
    args = p.parse_args(argv)

    from wmsub.config import load_config
    from wmsub.dev.checkpoints import REAL_DIT, TINY_DIT, random_dit
    from wmsub.node.engines.attention import fa3_bound, fa3_interface, install_attention
    from wmsub.node.engines.parallel import init_distributed
    from wmsub.node.engines.parallelize import parallelize_dit

    dims, sizes = (TINY_DIT, TINY_SIZES) if args.tiny else (REAL_DIT, SIZES)
    if args.tiny:
        args.kernels, args.frames = "math", 9
    cfg = load_config(None, ["generate.parallel=sp",
                             f"generate.device={'cpu' if args.tiny else 'cuda'}"])
    ctx = init_distributed(cfg.generate)
    assert ctx.world_size == 2, "run with torchrun --nproc_per_node 2"
    rank = ctx.rank
    model = random_dit(dims, ctx.device, torch.float32)
    whole = copy.deepcopy(model) if rank == 0 else None  # `none`: fp32 params + autocast
    sharded = parallelize_dit(model, ctx, torch.bfloat16)
    res = {"gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
           if torch.cuda.is_available() else ["cpu"],
           "torch": torch.__version__, "frames": args.frames, "fa3": fa3_interface(),
           "sanity_rel_err": SANITY_REL_ERR, "kernels": {}}
    reference = {}  # size -> none output with flash: the kernel-swap scale
    for kernel in [k for k in args.kernels.split(",") if k]:
        if kernel == "flash3" and fa3_interface() is None:
            res["kernels"][kernel] = {"skipped": "no FlashAttention 3 installed (pip install fa3-fwd)"}
            continue
        install_attention(kernel, ctx.device)
        rows = {}
        for size in sizes:
            latent, timestep, context, tokens, padded = inputs_for(
                size, args.frames, dims["text_dim"], ctx.world_size, ctx.device)
            row = {"tokens": tokens, "padded_keys": padded - tokens}
            try:
                out_sp, row["sp_s"] = forward(sharded, latent, timestep, context, padded)
                if rank == 0:
                    out_none, row["none_s"] = forward(whole, latent, timestep, context, tokens)
                    row["sp_vs_none_rel_err"] = rel_err(out_sp, out_none)
                    key = f"{size[0]}x{size[1]}"
                    if kernel == args.kernels.split(",")[0]:
                        reference[key] = out_none.cpu()
                    elif key in reference:
                        row["vs_first_kernel_none_rel_err"] = rel_err(out_none.cpu(), reference[key])
                    row["ok"] = bool(torch.isfinite(out_sp).all()) and \
                        row["sp_vs_none_rel_err"] < SANITY_REL_ERR
            except Exception as e:  # noqa: BLE001 - a kernel that cannot run is the finding
                row["error"] = f"{type(e).__name__}: {e}"[:400]
                row["ok"] = False
            rows[f"{size[0]}x{size[1]}"] = row
            dist.barrier()
        res["kernels"][kernel] = {"sizes": rows, "fa3_module": fa3_bound() if kernel == "flash3" else None}
        if rank == 0:
            print(f"[sp_sizes] {kernel}: {json.dumps(rows)}", file=sys.stderr, flush=True)
    res["all_ok"] = all(r.get("ok") for k in res["kernels"].values()
                        for r in k.get("sizes", {}).values())
    if rank == 0:
        text = json.dumps(res, indent=1)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    sys.exit(main())
