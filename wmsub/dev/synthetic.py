"""A small benchmark in the official worldmodelbench.json format, for tests and `make demo`
when the real data is absent: `python -m wmsub.dev.synthetic OUT_DIR [N]`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# The seven WorldModelBench domains with one real subdomain each.
DOMAINS = (
    ("autonomous vehicle", "Stopping"),
    ("human", "touching person"),
    ("industrial", "Assembly"),
    ("natural", "Fluid"),
    ("robotics", "Grasping"),
    ("video games", "Racing"),
    ("animation", "Cartoon"),
)
# (width, height): landscape 3:2, portrait, square, 16:9, 4:3.
SIZES = ((96, 64), (64, 96), (80, 80), (112, 63), (96, 72))


def write_synthetic_benchmark(root: str | Path, n: int = 6, seed: int = 0) -> Path:
    """Write `root/worldmodelbench.json` and `root/images/*.jpg`; returns `root`.

    Deterministic for a given (n, seed). Stem 2 has a dot in it, like the real
    `000000007259.2`.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(n):
        domain, subdomain = DOMAINS[i % len(DOMAINS)]
        stem = f"synthetic_{i:04d}.{i % 10}" if i == 2 else f"synthetic_{i:04d}"
        width, height = SIZES[i % len(SIZES)]
        _frame(rng, width, height).save(images / f"{stem}.jpg", quality=90)
        entries.append({
            "domain": domain,
            "subdomain": subdomain,
            "text_first_frame": f"A {domain} scene number {i} with a coloured gradient and a ball.",
            "text_instruction": f"The ball in scene {i} rolls slowly to the right.",
            "first_frame": f"images/{stem}.jpg",
        })
    (root / "worldmodelbench.json").write_text(json.dumps(entries, indent=1))
    return root


def _frame(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A gradient with a disc: smooth enough to encode small, varied enough to tell apart."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, size=3)
    img = np.stack([base[c] * 0.5 + 127 * (x / width if c % 2 else y / height) for c in range(3)], -1)
    cy, cx, r = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width, min(width, height) / 5
    img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, size=3)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="RGB")


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print("usage: python -m wmsub.dev.synthetic OUT_DIR [N]", file=sys.stderr)
        return 2
    n = int(argv[1]) if len(argv) > 1 else 6
    root = write_synthetic_benchmark(argv[0], n=n)
    print(f"wrote {n} instances to {root / 'worldmodelbench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
