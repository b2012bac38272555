"""generate.compile_cache_dir: torch.compile's caches in a shared folder, so a second
process (a later chunk or job) reuses what the first compiled. That second process:
tests/procs/test_compile_cache.py."""
from __future__ import annotations

from wmsub.config import absolutize_paths, load_config
from wmsub.node.compile_cache import INDUCTOR_ENV, compile_cache_dir, use_compile_cache


def test_default_folder_is_under_the_logs_folder_and_a_key_moves_it(tmp_path):
    cfg = absolutize_paths(load_config(None, ["run.logs_dir=logs"]), base=tmp_path)
    assert compile_cache_dir(cfg) == tmp_path / "logs" / "compile-cache"
    cfg = absolutize_paths(load_config(None, ["generate.compile_cache_dir=shared/cc"]),
                           base=tmp_path)
    assert compile_cache_dir(cfg) == tmp_path / "shared" / "cc"  # relative: from the launch folder


def test_the_folder_is_made_and_handed_to_inductor(tmp_path):
    env = {}
    cfg = load_config(None, [f"run.logs_dir={tmp_path / 'logs'}"])
    folder = use_compile_cache(cfg, env)
    assert folder == tmp_path / "logs" / "compile-cache"
    assert env[INDUCTOR_ENV] == str(folder / "inductor") and (folder / "inductor").is_dir()
