"""Our copies of the official helpers equal the official ones; the attention dispatcher
equals plain math with the official flash_attention semantics."""
from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import real_bench_root
import torch
from PIL import Image

from wmsub.node.engines import attention, shims
from wmsub.benchmark.sizes import best_output_size
from wmsub.node.engines.wan_ti2v import masks_like, resize_and_crop, to_tensor

BENCH = real_bench_root()


def _official_functions(*names):
    """Compile the named functions from the installed wan/utils/utils.py.

    That module imports torchvision at the top, which has no CPU build here, so we take
    the functions' own source instead of importing the module.
    """
    spec = importlib.util.find_spec("wan")
    src_path = Path(list(spec.submodule_search_locations)[0]) / "utils" / "utils.py"
    tree = ast.parse(src_path.read_text())
    wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    assert {n.name for n in wanted} == set(names), f"{names} not found in {src_path}"
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(src_path), "exec"), namespace)
    return [namespace[n] for n in names]


def test_best_output_size_equals_official():
    (official,) = _official_functions("best_output_size")
    rng = np.random.RandomState(0)
    cases = [(1280, 704), (704, 1280), (640, 480), (1920, 1080), (1000, 1000), (333, 2000)]
    cases += [tuple(int(x) for x in rng.randint(64, 4000, size=2)) for _ in range(300)]
    def outcome(fn, *args):
        try:
            return fn(*args)
        except (ZeroDivisionError, AssertionError) as e:  # extreme aspect at a small area
            return type(e)

    for area in (704 * 1280, 64 * 96, 480 * 832):
        for w, h in cases:
            args = (w, h, 32, 32, area)
            assert outcome(best_output_size, *args) == outcome(official, *args), args


def test_masks_like_equals_official():
    (official,) = _official_functions("masks_like")
    x = [torch.randn(48, 3, 4, 6)]
    for zero in (False, True):
        ours, theirs = masks_like(x, zero=zero), official(x, zero=zero)
        for a, b in zip(ours, theirs):
            assert torch.equal(a[0], b[0])
    _, m2 = masks_like(x, zero=True)
    assert float(m2[0][:, 0].abs().sum()) == 0.0 and float(m2[0][:, 1:].min()) == 1.0


def test_to_tensor_equals_torchvision_or_its_formula():
    img = Image.fromarray(np.random.RandomState(1).randint(0, 256, (7, 5, 3), dtype=np.uint8))
    ours = to_tensor(img)
    try:
        import torchvision.transforms.functional as TF
        reference = TF.to_tensor(img)
    except Exception:  # noqa: BLE001 - no usable torchvision for CPU torch here
        # torchvision's documented formula for uint8 HWC: permute to CHW, divide by 255
        reference = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)
    assert ours.shape == (3, 7, 5) and ours.dtype == torch.float32
    assert torch.equal(ours, reference)


def test_resize_and_crop_gives_the_output_size():
    img = Image.new("RGB", (1000, 563), (10, 200, 30))
    ow, oh = best_output_size(1000, 563, 32, 32, 704 * 1280)
    out = resize_and_crop(img, ow, oh)
    assert out.size == (ow, oh) == (1248, 704)


@pytest.mark.skipif(not (BENCH / "worldmodelbench.json").is_file(),
                    reason="WorldModelBench data not present (set WMSUB_BENCH_ROOT)")
def test_worldmodelbench_output_sizes_match_the_field_guide():
    entries = json.loads((BENCH / "worldmodelbench.json").read_text())
    counts = {}
    for e in entries:
        with Image.open(BENCH / e["first_frame"]) as im:
            w, h = im.size
        size = best_output_size(w, h, 32, 32, 704 * 1280)
        counts[size] = counts.get(size, 0) + 1
    # GUIDE section 3: these sizes and counts at max_area 704*1280
    assert counts == {(1248, 704): 214, (1088, 800): 114, (960, 928): 14, (704, 1248): 5,
                      (1152, 768): 2, (1312, 672): 1}


def _qkv(b, lq, lk, nq, nk, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, lq, nq, d, generator=g, dtype=torch.float32).to(dtype)
    k = torch.randn(b, lk, nk, d, generator=g, dtype=torch.float32).to(dtype)
    v = torch.randn(b, lk, nk, d, generator=g, dtype=torch.float32).to(dtype)
    return q, k, v


@pytest.mark.parametrize("case", [
    dict(lq=12, lk=12, k_lens=None),
    dict(lq=12, lk=12, k_lens=[12, 7]),             # key padding as under Ulysses SP
    dict(lq=9, lk=20, k_lens=[20, 3]),              # cross-attention shaped
    dict(lq=4, lk=10, k_lens=[10, 6], causal=True),  # aligned to each true key length
    dict(lq=6, lk=10, k_lens=None, causal=True),    # bottom-right causal alignment
    dict(lq=10, lk=10, k_lens=None, window=(2, 1)),
    dict(lq=8, lk=8, k_lens=[8, 5], scale=0.3, q_scale=0.5),
    dict(lq=8, lk=8, k_lens=None, nk=1),            # grouped-query heads
])
@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
def test_attention_dispatcher_matches_reference_math(case, in_dtype):
    q, k, v = _qkv(2, case["lq"], case["lk"], 2, case.get("nk", 2), 16, in_dtype)
    k_lens = torch.tensor(case["k_lens"]) if case["k_lens"] is not None else None
    kwargs = dict(k_lens=k_lens, softmax_scale=case.get("scale"), causal=case.get("causal", False),
                  window_size=case.get("window", (-1, -1)))
    attn = attention.make_flash_attention("math")
    q_scale = case.get("q_scale")
    out = attn(q, k, v, q_scale=q_scale, **kwargs)
    q_ref = q.to(torch.bfloat16) * q_scale if q_scale is not None else q
    ref = attention.reference_attention(q_ref, k, v, **kwargs)
    assert out.dtype == in_dtype and out.shape == (2, case["lq"], 2, 16)
    # both run on bf16 inputs; the kernel rounds its output to bf16 once
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    if k_lens is not None:
        # keys past k_lens must not matter: scribble over them and get the same output
        k2, v2 = k.clone(), v.clone()
        for i, n in enumerate(case["k_lens"]):
            k2[i, n:] = 100.0
            v2[i, n:] = -100.0
        assert torch.equal(attn(q, k2, v2, q_scale=q_scale, **kwargs), out)


def test_attention_is_installed_into_the_official_modules():
    model_mod = shims.wan_module("modules.model")
    ulysses = shims.wan_module("distributed.ulysses")
    kernel = attention.install_attention("math", "cpu")
    assert kernel == "math"
    assert model_mod.flash_attention.kernel == "math"
    assert ulysses.flash_attention is model_mod.flash_attention


def test_attention_names_resolve_and_bad_names_are_rejected():
    assert attention.resolve_attention("auto", "cpu") == "math"
    assert attention.resolve_attention("cudnn", "cpu") == "math"
    with pytest.raises(ValueError, match="generate.attention"):
        attention.resolve_attention("flashy", "cpu")
