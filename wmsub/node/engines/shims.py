"""Small, named shims that let the official Wan2.2 modules run on CPU and CUDA.

Each shim names the upstream behaviour it works around; none changes the numerics of the
official modules. The attention kernel, which does, is chosen in attention.py.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import torch

from wmsub.node.engines.attention import current_attention, install_attention

_BARE_PACKAGES = ("wan", "wan.modules", "wan.utils", "wan.distributed")
# Every official submodule wmsub imports (through wan_module): what a compute node's
# interpreter must import, and what `launch.py check` imports there.
WAN_MODULES = ("configs.wan_ti2v_5B", "modules.t5", "modules.model", "modules.vae2_2",
               "distributed.fsdp", "distributed.sequence_parallel", "utils.fm_solvers",
               "utils.fm_solvers_unipc",
               # wan22-i2v-a14b (wan_i2v.py)
               "configs.wan_i2v_A14B", "modules.vae2_1")


def _register_bare_packages() -> None:
    # wan/__init__.py imports every pipeline (animate, speech: decord, librosa, cv2,
    # torchvision); bare package objects with the right __path__ let us import only
    # the submodules we need.
    existing = sys.modules.get("wan")
    if existing is not None:
        if not getattr(existing, "__wmsub_bare__", False):
            return  # the real package is already imported (a box with all its deps): use it
        root = Path(existing.__path__[0])
    else:
        spec = importlib.util.find_spec("wan")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the official Wan2.2 code is not installed: "
                              "run `pip install --no-deps wan22==2.2.11` (see Makefile)")
        root = Path(list(spec.submodule_search_locations)[0])
    for name in _BARE_PACKAGES:
        if name in sys.modules:
            continue
        mod = types.ModuleType(name)
        sub = root.joinpath(*name.split(".")[1:])
        # a spec keeps importlib.util.find_spec("wan") working once the bare package is in
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        mod.__spec__.submodule_search_locations = [str(sub)]
        mod.__path__ = [str(sub)]
        mod.__file__ = str(sub / "__init__.py")
        mod.__package__ = name
        mod.__wmsub_bare__ = True
        sys.modules[name] = mod
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(sys.modules[parent], child, mod)


@contextlib.contextmanager
def _cpu_safe_current_device():
    # wan.modules.t5 evaluates `torch.cuda.current_device()` as a default argument of
    # T5EncoderModel.__init__ at import time; on CPU-only torch that raises. We always
    # pass `device=` explicitly, so a placeholder default is never used.
    if torch.cuda.is_available():
        yield
        return
    original = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0
    try:
        yield
    finally:
        torch.cuda.current_device = original


def wan_module(name: str) -> types.ModuleType:
    """Import `wan.<name>` (e.g. "modules.model") without running wan/__init__.py."""
    _register_bare_packages()
    full = f"wan.{name}"
    if full in sys.modules:
        return sys.modules[full]
    with _cpu_safe_current_device():
        if name in ("modules.t5", "modules.tokenizers"):
            module = importlib.import_module(full)
        else:
            importlib.import_module("wan.modules.t5")  # via the shim, before anything needs it
            module = importlib.import_module(full)
    install_attention(current_attention())
    return module


def cpu_context(context):
    # WanTI2V feeds T5's bf16 output into the DiT's fp32 text_embedding and relies on
    # CUDA autocast to cast; CPU has no CUDA autocast, so we upcast (bf16 -> fp32 is
    # lossless). Only used off CUDA.
    if context is None:
        return None
    return [u.float() for u in context]


def sp_attention_fp32_output_on_cpu() -> None:
    # sp_attn_forward casts q/k/v to bf16 before Ulysses attention and feeds the bf16
    # result to the fp32 output Linear, relying on CUDA autocast to cast. Off CUDA we
    # upcast that result (lossless), as the non-SP flash_attention returns q's fp32 dtype.
    seq = wan_module("distributed.sequence_parallel")
    original = seq.distributed_attention
    if getattr(original, "__wmsub_fp32__", False):
        return

    def distributed_attention(*args, **kwargs):
        return original(*args, **kwargs).float()

    distributed_attention.__wmsub_fp32__ = True
    seq.distributed_attention = distributed_attention


def wan_version() -> str:
    try:
        from importlib.metadata import version
        return version("wan22")
    except Exception:  # noqa: BLE001 - a source checkout has no metadata
        return "unknown"
