"""Config: the seed's settings exactly, overrides, and clear errors for typos and bad values."""
import pytest

from wmsub.config import (OFFICIAL_NEGATIVE_PROMPT, ConfigError, load_config, settings_fingerprint)


def test_seed_config_holds_the_seed_settings():
    cfg = load_config("configs/wan22_ti2v_5b.yaml")
    g = cfg.generate
    assert cfg.model.name == "Wan2.2-TI2V-5B" and cfg.bench.prompt_mode == "i2v"
    assert (g.max_area, g.frame_num, g.sampling_steps, g.sample_solver) == (704 * 1280, 81, 50, "unipc")
    assert (g.shift, g.guide_scale, g.fps, g.seed) == (5.0, 5.0, 24, 42)
    assert cfg.negative_prompt == OFFICIAL_NEGATIVE_PROMPT and g.exact and g.parallel == "sp"
    assert cfg.slurm.gpus_per_job == 2


def test_negative_prompt_matches_the_official_config():
    from wmsub.node.engines.shims import wan_module  # the official file, imported through our shim
    assert OFFICIAL_NEGATIVE_PROMPT == wan_module("configs.shared_config").wan_shared_cfg.sample_neg_prompt


def test_overrides_are_typed_and_keep_stems_as_text():
    cfg = load_config("configs/wan22_ti2v_5b.yaml", [
        "bench.limit=10", "bench.stems=000000007259.2,abc", "generate.guide_scale=4",
        "generate.exact=false", "slurm.additional={gpu-bind: closest}", "generate.max_area=480*832"])
    assert cfg.bench.limit == 10 and cfg.bench.stems == ["000000007259.2", "abc"]
    assert cfg.generate.guide_scale == 4.0 and cfg.generate.exact is False
    assert cfg.slurm.additional == {"gpu-bind": "closest"} and cfg.generate.max_area == 480 * 832


@pytest.mark.parametrize("override, words", [
    ("generate.sed=1", ["generate.sed", "did you mean generate.seed"]),
    ("genrate.seed=1", ["unknown section 'genrate'"]),
    ("generate.seed=abc", ["generate.seed", "integer"]),
    ("generate.exact=maybe", ["generate.exact", "true or false"]),
    ("generate.parallel=tp", ["generate.parallel", "sp, cfg, dp, none"]),
    ("generate.frame_num=80", ["frame_num=80", "4n+1"]),
    ("seed", ["expected key=value"]),
    ("judge.paired=true", ["unknown key 'judge.paired'"]),
])
def test_bad_overrides_are_clear_errors(override, words):
    with pytest.raises(ConfigError) as e:
        load_config("configs/wan22_ti2v_5b.yaml", [override])
    for w in words:
        assert w in str(e.value)


def test_unknown_key_in_a_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generate:\n  sampling_step: 50\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'generate.sampling_step'.*sampling_steps"):
        load_config(bad)


def test_fingerprint_changes_with_pixels_not_with_slurm():
    base = settings_fingerprint(load_config("configs/wan22_ti2v_5b.yaml"))[0]
    assert settings_fingerprint(load_config("configs/wan22_ti2v_5b.yaml", ["slurm.mem_gb=9"]))[0] == base
    assert settings_fingerprint(load_config("configs/wan22_ti2v_5b.yaml", ["generate.seed=7"]))[0] != base


@pytest.mark.parametrize("override, key, expected", [
    ('slurm.setup=["module load cuda/12.4"]', "setup", ["module load cuda/12.4"]),
    ("slurm.setup=export NCCL_IB_HCA=mlx5_0,mlx5_1", "setup", ["export NCCL_IB_HCA=mlx5_0,mlx5_1"]),
    ('slurm.setup=["module load cuda/12.4", "export A=1,2"]', "setup", ["module load cuda/12.4", "export A=1,2"]),
    ("slurm.setup=", "setup", []),
    ("bench.stems=[000000007259.2]", "stems", ["000000007259.2"]),
    ("bench.stems=[000000007259.2, 000000001069.10]", "stems", ["000000007259.2", "000000001069.10"]),
    ("slurm.additional={gpu-bind: closest, mail-type: ALL}", "additional",
     {"gpu-bind": "closest", "mail-type": "ALL"}),
])
def test_list_and_mapping_overrides_are_yaml_in_brackets_and_shell_lines_stay_whole(override, key, expected):
    cfg = load_config("configs/wan22_ti2v_5b.yaml", [override])
    section = cfg.bench if key == "stems" else cfg.slurm
    assert getattr(section, key) == expected


def test_a_broken_yaml_list_override_names_the_key_and_the_quoting_fix():
    with pytest.raises(ConfigError) as e:
        load_config("configs/wan22_ti2v_5b.yaml", ['slurm.setup=["module load cuda/12.4"'])
    assert "slurm.setup" in str(e.value) and "quote it" in str(e.value)


def test_yaml_files_keep_dotted_stems_as_text_and_name_the_file_on_a_type_error(tmp_path):
    good = tmp_path / "stems.yaml"
    good.write_text("bench:\n  stems: [000000007259.2]\nslurm:\n  additional: {exclusive: true}\n"
                    "  python: null\n")
    cfg = load_config(good)
    assert cfg.bench.stems == ["000000007259.2"] and cfg.slurm.additional == {"exclusive": "true"}
    assert cfg.slurm.python == ""
    bad = tmp_path / "types.yaml"
    bad.write_text("slurm:\n  mem_gb: lots\n")
    with pytest.raises(ConfigError, match=r"types\.yaml: slurm\.mem_gb: expected an integer, got 'lots' — fix: write a whole number"):
        load_config(bad)
