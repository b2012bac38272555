"""Padded Ulysses keys on one GPU: the attention dispatcher at every WorldModelBench output
size, as one of two `sp` ranks sees it (12 of 24 heads, the sequence padded to a multiple of
two, `k_lens` giving the true length), for each kernel, against the same kernel on the
unpadded keys. Before the fix, the odd-token size (1312x672, 18,081 tokens) failed with
SDPA's flash kernel ("No available kernel" for the boolean mask).

    python tools/odd_keys.py [--kernels flash,cudnn,efficient,flash3] [--out odd_keys.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from wmsub.benchmark.sizes import video_tokens  # noqa: E402
from wmsub.node.engines.attention import install_attention, make_flash_attention  # noqa: E402

SIZES = [(1248, 704), (1088, 800), (960, 928), (704, 1248), (1152, 768), (1312, 672)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kernels", default="flash,cudnn,efficient,flash3")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    res = {"gpu": torch.cuda.get_device_name(0), "sizes": {}}
    for w, h in SIZES:
        tokens = video_tokens(w, h, args.frames)
        padded = -(-tokens // 2) * 2
        q, k, v = (torch.randn(1, padded, 12, 128, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        row = {"tokens": tokens, "padded": padded}
        for kernel in args.kernels.split(","):
            try:
                install_attention(kernel, "cuda")  # binds FA3 for flash3
            except ValueError as e:
                row[kernel] = {"skipped": str(e)[:160]}
                continue
            attn = make_flash_attention(kernel)
            try:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = attn(q, k, v, k_lens=torch.tensor([tokens], device="cuda"))
                torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
                ref = attn(q, k[:, :tokens], v[:, :tokens])
                err = float((out.float() - ref.float()).norm() / ref.float().norm())
                row[kernel] = {"ok": True, "rel_err_vs_unpadded": err, "seconds": round(seconds, 4)}
            except Exception as e:  # noqa: BLE001 - reported per kernel and size
                row[kernel] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
        res["sizes"][f"{w}x{h}"] = row
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
