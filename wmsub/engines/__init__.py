"""Video engines. Import the submodules directly; this package imports no torch.

    from wmsub.engines.parallel import init_distributed
    from wmsub.engines.wan_ti2v import load_engine
"""


def load_engine(cfg, ctx):
    """Lazy alias of wmsub.engines.wan_ti2v.load_engine (keeps launch.py torch-free)."""
    from .wan_ti2v import load_engine as _load
    return _load(cfg, ctx)


def init_distributed(gen_cfg):
    """Lazy alias of wmsub.engines.parallel.init_distributed."""
    from .parallel import init_distributed as _init
    return _init(gen_cfg)
