"""A user engine named by import path (model.engine=package.module:Class): the spec is
found, its errors say what is wrong and the fix, the config, planner, fingerprint and
preflight follow it, and the example engine (tests/helpers/still_engine.py, shown whole in
docs/ENGINES.md) makes the video it promises. The spec read without torch, in a fresh
interpreter: tests/procs/test_user_engine.py."""
from __future__ import annotations

import re
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.helpers.still_engine import NAME, StillFrameEngine, pixel_tokens
from wmsub import CHECKOUT
from wmsub.benchmark import sizes
from wmsub.config import ConfigError, load_config, settings_fingerprint
from wmsub.engine_specs import BUILT_IN, DEFAULT_ENGINE, EngineSpecError, engine_spec

USER = f"model.engine={NAME}"


def _cfg(*overrides, path=None):
    return load_config(path, list(overrides))


# ---- engine_spec: the import path --------------------------------------------------------

def test_the_import_path_resolves_to_the_class_spec():
    spec = engine_spec(NAME)
    assert spec is StillFrameEngine.spec
    assert spec.name == spec.loader == NAME
    assert spec.checkpoint_check == "" and spec.t2v_size is None and not spec.guide_pair
    assert _cfg(USER).engine_spec is spec


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """`user_module(name, body)`: a module on sys.path, as a user's package would be."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, body: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
        sys.modules.pop(name, None)
        return name
    yield write


@pytest.mark.parametrize("value, says, fix", [
    ("still_engine", "is not a built-in engine", "a user engine is package.module:Class"),
    ("wan22-ti2v5b", "is not a built-in engine", "did you mean wan22-ti2v-5b?"),
    ("tests.helpers.still_engine:", "expected a built-in engine", "package.module:Class"),
    ("no_such_package.engines:Mine", "cannot import no_such_package.engines here",
     "put its package on PYTHONPATH"),
    ("tests.helpers.still_engine:StillEngine", "has no StillEngine",
     f"did you mean {NAME}?"),
    ("tests.helpers.engine:make_instance", "has no `spec` EngineSpec attribute",
     "give it spec = EngineSpec(...)"),
])
def test_each_bad_value_says_what_is_wrong_and_the_fix(value, says, fix):
    with pytest.raises(EngineSpecError) as err:
        engine_spec(value)
    assert f"model.engine={value!r}" in str(err.value)
    assert says in str(err.value) and fix in str(err.value), str(err.value)
    # the config names it the same way, before anything is planned
    with pytest.raises(ConfigError, match=re.escape(says)):
        _cfg(f"model.engine={value}")


def test_a_spec_named_for_another_path_is_refused_with_the_path_to_set(user_module):
    mod = user_module("copied_engine", """
        import dataclasses
        from tests.helpers.still_engine import StillFrameEngine

        class Copied(StillFrameEngine):  # copied, the spec's names left as they were
            pass
    """)
    with pytest.raises(EngineSpecError) as err:
        engine_spec(f"{mod}:Copied")
    assert f"its spec says name={NAME!r}" in str(err.value)
    assert f"fix: set both to '{mod}:Copied'" in str(err.value)


def test_a_module_that_fails_to_import_says_so(user_module):
    mod = user_module("broken_engine", "import torch_that_is_not_here\n")
    with pytest.raises(EngineSpecError, match="cannot import broken_engine here .*torch_that_is_not_here"
                                              ".*import heavy packages such as torch inside"):
        engine_spec(f"{mod}:Engine")


# ---- the config: the engine's defaults where the config sets none ------------------------

def test_config_defaults_come_from_the_user_spec():
    cfg = _cfg(USER)
    d = StillFrameEngine.spec.defaults
    assert cfg.model.name == d["model.name"] == "still-frame-baseline"
    assert cfg.model.checkpoint_dir == ""  # no weights, no folder
    assert (cfg.generate.frame_num, cfg.generate.sampling_steps, cfg.generate.fps) == (81, 1, 24)
    assert cfg.plan.seconds_per_video == 3.0 and cfg.generate.device == "cpu"
    # what the config does set wins over the engine's default
    cfg = _cfg(USER, "generate.frame_num=9", "model.name=mine")
    assert (cfg.generate.frame_num, cfg.model.name, cfg.generate.sampling_steps) == (9, "mine", 1)


def test_a_config_file_may_name_the_user_engine(tmp_path):
    path = tmp_path / "still.yaml"
    path.write_text(f"model:\n  engine: {NAME}\ngenerate:\n  frame_num: 5\n")
    cfg = _cfg(path=path)
    assert cfg.engine_spec is StillFrameEngine.spec
    assert (cfg.generate.frame_num, cfg.generate.sampling_steps, cfg.model.name) == (5, 1, "still-frame-baseline")


# ---- the planner: sizes and cost by the spec ---------------------------------------------

def test_the_planner_sizes_and_costs_follow_the_user_spec(synthetic_bench, tmp_path):
    from wmsub.login.planner import build_plan, estimate_seconds, output_size
    from wmsub.login.views import format_plan
    bench = synthetic_bench(7)
    common = [f"bench.root={bench}", f"output.dir={tmp_path / 'out'}", "generate.max_area=4096",
              "generate.frame_num=5", "plan.chunks=2"]
    cfg = _cfg(USER, *common)
    plan = build_plan(cfg)
    spv, (rw, rh, rf, rsteps) = cfg.plan.seconds_per_video, StillFrameEngine.spec.reference_video
    for inst in plan.instances:
        w, h = output_size(inst, cfg)
        assert (w, h) == sizes.i2v_size(*inst.image_size, 4096)
        # pixels x steps, anchored at seconds_per_video for the reference video
        assert estimate_seconds(inst, cfg) == pytest.approx(
            pixel_tokens(w, h, 5) * 1 * spv / (rw * rh * rf * rsteps))
    # the reference video itself costs exactly plan.seconds_per_video
    assert StillFrameEngine.spec.seconds(rw, rh, rf, rsteps, spv) == pytest.approx(spv)
    # the same benchmark under the 5B: another cost (DiT tokens x 50 steps at 90 s)
    five_b = _cfg(*common)
    assert five_b.engine_spec.name == DEFAULT_ENGINE
    assert [estimate_seconds(i, five_b) for i in plan.instances] != \
           [estimate_seconds(i, cfg) for i in plan.instances]
    text = format_plan(plan, cfg)
    assert f"model:     still-frame-baseline (model.engine={NAME})" in text
    assert "per 1280x704x81 video at 1 steps" in text


def test_the_planner_asks_the_spec_for_sizes_not_the_5b_rule(user_module, synthetic_bench, tmp_path):
    from wmsub.login.planner import build_plan
    mod = user_module("odd_size_engine", """
        import dataclasses
        from tests.helpers.still_engine import StillFrameEngine

        class OddSize(StillFrameEngine):
            spec = dataclasses.replace(StillFrameEngine.spec, name="odd_size_engine:OddSize",
                                       loader="odd_size_engine:OddSize",
                                       i2v_size=lambda w, h, area: (48, 24))
    """)
    cfg = _cfg(f"model.engine={mod}:OddSize", f"bench.root={synthetic_bench(5)}",
               f"output.dir={tmp_path / 'out'}")
    assert build_plan(cfg).output_sizes == {"48x24": 5}


# ---- the settings fingerprint ------------------------------------------------------------

# settings_fingerprint of the defaults on main before engines were named (e9caa94~1,
# computed with that commit's wmsub/config.py): folders made then must keep their hash
DEFAULT_5B_FINGERPRINT = "1eebc04236cbbeb5"


def test_the_default_5b_fingerprint_is_unchanged_and_has_no_engine_key():
    for cfg in (_cfg(), _cfg(f"model.engine={DEFAULT_ENGINE}"),
                _cfg(path=CHECKOUT / "configs" / "wan22_ti2v_5b.yaml")):
        digest, settings = settings_fingerprint(cfg)
        assert "model.engine" not in settings
        assert digest == DEFAULT_5B_FINGERPRINT


def test_a_user_engine_is_part_of_the_fingerprint():
    same = ["model.name=m", "generate.frame_num=81", "generate.sampling_steps=50",
            "generate.fps=24", "generate.max_area=901120"]
    user_digest, settings = settings_fingerprint(_cfg(USER, *same))
    assert settings["model.engine"] == NAME
    default_digest, default_settings = settings_fingerprint(_cfg(*same))
    assert {k: v for k, v in settings.items() if k != "model.engine"} == default_settings
    assert user_digest != default_digest


# ---- preflight: no checkpoint asked of an engine without one -----------------------------

def test_preflight_asks_no_checkpoint_of_the_user_engine(tmp_path):
    from wmsub.login import preflight
    cfg = _cfg(USER, "model.checkpoint_dir=" + str(tmp_path / "nothing-here"))
    result = preflight.check_checkpoint(cfg, preflight.Context())
    assert result.skipped == f"model.engine={NAME} declares no checkpoint check"
    assert not result.problems
    # the 5B, pointed at the same missing folder, is refused
    assert preflight.check_checkpoint(_cfg("model.checkpoint_dir=" + str(tmp_path / "nothing-here")),
                                      preflight.Context()).problems
    config = preflight.check_config(cfg, preflight.Context())
    assert config.ok and config.info["engine"] == NAME


def test_the_interpreter_probe_imports_the_user_engine_and_asks_no_wan():
    from wmsub.login.interpreters import interpreter_problems
    from wmsub.node.probe import interpreter_report
    report = interpreter_report("cpu", NAME)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["engine"]["ok"] and checks["engine"]["detail"] == NAME
    assert "wan" not in checks  # a user's engine need not have the official wan modules
    problems, found = interpreter_problems(_cfg(USER, "generate.device=cpu"), report)
    assert problems == [] and found["engine"] == NAME
    # a user engine the interpreter cannot import: the fix is PYTHONPATH in slurm.setup
    bad = "no_such_package.engines:Mine"
    report = interpreter_report("cpu", bad)
    engine = {c["name"]: c for c in report["checks"]}["engine"]
    assert not engine["ok"] and "cannot import no_such_package.engines" in engine["error"]


# ---- the engine itself -------------------------------------------------------------------

class _Ctx:
    def __init__(self, is_writer=True, mode="sp", group_size=2):
        self.is_writer, self.mode, self.group_size = is_writer, mode, group_size


def test_the_still_engine_repeats_the_resized_first_frame(tmp_path):
    from wmsub.node.engines.base import Engine, engine_class
    from wmsub.node.worker import sample_instance
    from wmsub.state.video_io import frames_to_uint8
    from tests.helpers.engine import make_instance
    cfg = _cfg(USER, "generate.max_area=4096", "generate.frame_num=5")
    assert engine_class(cfg) is StillFrameEngine
    rng = np.random.default_rng(0)
    path = tmp_path / "frame.png"
    Image.fromarray(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)).save(path)
    engine = StillFrameEngine(cfg, _Ctx())
    assert isinstance(engine, Engine)
    steps = []
    engine.step_callback = lambda step, n: steps.append((step, n))
    video = sample_instance(engine, make_instance(0, "frame", "a ball rolls", str(path)), seed=42)
    w, h = sizes.i2v_size(96, 72, 4096)
    assert video.shape == (3, 5, h, w) and video.dtype == np.float32
    assert video.min() >= -1.0 and video.max() <= 1.0
    assert steps == [(1, 1)] and set(engine.last_timings) == {"text_s", "image_s", "steps_s",
                                                                  "s_per_step", "decode_s"}
    frames = frames_to_uint8(video)  # what the worker writes
    # every frame is the first frame as the 5B sees it (resize to cover, centre crop), exactly
    from wmsub.node.engines.wan_ti2v import resize_and_crop
    expected = np.asarray(resize_and_crop(Image.open(path).convert("RGB"), w, h))
    assert all(np.array_equal(f, expected) for f in frames)
    # the seed and the prompt change nothing: the baseline never moves
    again = engine.sample("something else", Image.open(path).convert("RGB"), seed=7)
    assert np.array_equal(again, video)
    # the group's other ranks return None; a text-only instance is refused with the reason
    assert StillFrameEngine(cfg, _Ctx(is_writer=False)).sample("p", Image.open(path), 1) is None
    with pytest.raises(ValueError, match="needs a first frame"):
        engine.sample("p", None, 1)
    fp = engine.fingerprint()
    assert fp["engine"] == NAME and fp["parallel"] == "sp"


def test_bench_t2v_is_refused_for_the_image_only_engine():
    with pytest.raises(ConfigError, match="image-to-video only"):
        _cfg(USER, "bench.prompt_mode=t2v")


# ---- the docs show the example's code as it is ------------------------------------------

def test_docs_engines_shows_the_example_engine_verbatim():
    doc = (CHECKOUT / "docs" / "ENGINES.md").read_text()
    blocks = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```\n", doc, re.S)
    assert blocks, "docs/ENGINES.md has no <!-- file: PATH --> code block"
    for path, code in blocks:
        assert code == (CHECKOUT / path).read_text(), f"docs/ENGINES.md's copy of {path} differs"
    assert "tests/helpers/still_engine.py" in [p for p, _ in blocks]
    # the built-ins table names every built-in engine
    for name in BUILT_IN:
        assert f"`{name}`" in doc


def test_the_docs_config_for_the_engine_loads_with_its_defaults(tmp_path):
    doc = (CHECKOUT / "docs" / "ENGINES.md").read_text()
    block = re.search(r"```yaml\n(# still.yaml.*?)```\n", doc, re.S).group(1)
    (tmp_path / "still.yaml").write_text(block)
    cfg = _cfg(path=tmp_path / "still.yaml")
    assert cfg.engine_spec is StillFrameEngine.spec
    assert (cfg.model.name, cfg.generate.sampling_steps, cfg.slurm.gpus_per_job) == ("still-frame-baseline", 1, 1)


def test_without_config_an_engine_override_reads_that_engines_config_not_the_5bs():
    from wmsub.cli import DEFAULT_CONFIG, default_config_path
    from wmsub.engine_specs import WAN22_I2V_A14B
    assert default_config_path([]).endswith(DEFAULT_CONFIG)
    a14b = default_config_path(["generate.seed=1", "model.engine=wan22-i2v-a14b"])
    assert a14b.endswith(WAN22_I2V_A14B.config)
    cfg = load_config(a14b, ["model.engine=wan22-i2v-a14b"])
    assert (cfg.model.name, cfg.generate.sampling_steps, cfg.generate.guide_scale) == (
        "Wan2.2-I2V-A14B", 40, [3.5, 3.5])
    assert default_config_path([f"model.engine={NAME}"]) is None  # its defaults alone
