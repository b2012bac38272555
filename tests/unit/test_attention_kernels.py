"""generate.attention: which kernel a name resolves to (FA3 preference, fallbacks, the
errors that explain a missing kernel), and padded keys that never become a mask."""
from __future__ import annotations

import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from wmsub.node.engines import attention

HOPPER, AMPERE = (9, 0), (8, 0)


@pytest.mark.parametrize("fa3, flash2, capability, expected", [
    ("fa3_fwd_interface", False, HOPPER, "flash3"),      # PyPI fa3-fwd on an H100/H200
    ("flash_attn_interface", True, HOPPER, "flash3"),    # FA3 beats flash_attn 2
    (None, True, HOPPER, "flash2"),
    (None, False, HOPPER, "cudnn"),
    ("fa3_fwd_interface", False, AMPERE, "cudnn"),       # FA3 runs on Hopper only
    ("fa3_fwd_interface", True, AMPERE, "flash2"),
])
def test_auto_prefers_fa3_on_hopper_then_flash2_then_cudnn(fa3, flash2, capability, expected):
    assert attention.choose_kernel("auto", "cuda", fa3, flash2, capability) == expected


def test_explicit_kernels_resolve_to_themselves_when_usable():
    for name in ("cudnn", "flash", "efficient", "math"):
        assert attention.choose_kernel(name, "cuda", None, False, AMPERE) == name
    assert attention.choose_kernel("flash3", "cuda", "fa3_fwd_interface", False, HOPPER) == "flash3"
    assert attention.choose_kernel("flash2", "cuda", None, True, AMPERE) == "flash2"


def test_cpu_runs_math_whatever_the_name():
    for name in attention.ATTENTION_CHOICES:
        assert attention.choose_kernel(name, "cpu", "fa3_fwd_interface", True, None) == "math"


def test_flash3_without_fa3_names_the_package_to_install():
    with pytest.raises(ValueError) as err:
        attention.choose_kernel("flash3", "cuda", None, True, HOPPER)
    text = str(err.value)
    assert "generate.attention=flash3" in text and "pip install fa3-fwd==0.0.3" in text
    assert "flash_attn_interface" in text and "auto" in text


def test_flash3_off_hopper_names_the_gpu_and_the_alternatives():
    with pytest.raises(ValueError, match=r"needs a Hopper GPU .*this GPU is sm_80: use auto"):
        attention.choose_kernel("flash3", "cuda", "fa3_fwd_interface", False, AMPERE)


def test_flash2_without_flash_attn_and_unknown_names_are_explained():
    with pytest.raises(ValueError, match="flash_attn is not installed"):
        attention.choose_kernel("flash2", "cuda", "fa3_fwd_interface", False, HOPPER)
    with pytest.raises(ValueError, match=r"generate.attention='fa3' is not one of auto, flash3"):
        attention.choose_kernel("fa3", "cuda", None, False, HOPPER)


def test_the_official_fa3_is_preferred_to_pypi_fa3_fwd(tmp_path, monkeypatch):
    # two importable modules under the two names: discovery order only, nothing is run
    for name in attention.FA3_INTERFACES:
        (tmp_path / f"{name}.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert attention.fa3_interface() == "flash_attn_interface"
    (tmp_path / "flash_attn_interface.py").unlink()
    for name in attention.FA3_INTERFACES:
        sys.modules.pop(name, None)
    assert attention.fa3_interface() == "fa3_fwd_interface"


def test_this_machine_resolves_flash3_only_when_installed():
    # CPU here: every name means math, and installing flash3 binds nothing
    assert attention.resolve_attention("flash3", "cpu") == "math"
    assert attention.install_attention("auto", "cpu") == "math"
    assert attention.fa3_bound() is None


class FlashCalls(TorchDispatchMode):
    """(key length, mask given) of every call that reaches CPU torch's flash SDPA kernel."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "scaled_dot_product_flash_attention" in str(func):
            self.calls.append((int(args[1].shape[2]), kwargs.get("attn_mask") is not None))
        return func(*args, **kwargs)


@pytest.mark.parametrize("k_lens", [[15], [16, 11]])
def test_padded_keys_are_sliced_away_before_the_kernel(k_lens):
    """The Ulysses case (one padded key) and a batch of unequal lengths: the flash kernel
    (CPU torch has one) sees only real keys and no mask, and the result is the reference's."""
    g = torch.Generator().manual_seed(0)
    b = len(k_lens)
    q = torch.randn(b, 16, 2, 16, generator=g).bfloat16()
    k = torch.randn(b, 16, 2, 16, generator=g).bfloat16()
    v = torch.randn(b, 16, 2, 16, generator=g).bfloat16()
    lens = torch.tensor(k_lens)
    flash = attention.make_flash_attention("flash")
    with FlashCalls() as seen:
        out = flash(q, k, v, k_lens=lens)
    assert seen.calls == ([(15, False)] if b == 1 else [(16, False), (11, False)])
    ref = attention.reference_attention(q, k, v, k_lens=lens)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    # the math kernel agrees, and what lies past the true length never matters
    k2, v2 = k.clone(), v.clone()
    for i, n in enumerate(k_lens):
        k2[i, n:], v2[i, n:] = 50.0, -50.0
    assert torch.equal(flash(q, k2, v2, k_lens=lens), out)
    math_out = attention.make_flash_attention("math")(q, k, v, k_lens=lens)
    torch.testing.assert_close(math_out.float(), out.float(), atol=2e-2, rtol=2e-2)


def test_dense_attention_is_the_fast_paths_call_and_takes_no_mask():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 12, 2, 16, generator=g).bfloat16() for _ in range(3))
    with FlashCalls() as seen:
        out = attention.dense_attention(q, k, v, "flash")
    assert seen.calls == [(12, False)] and out.shape == q.shape
    ref = attention.reference_attention(q, k, v)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
