"""Typed run configuration: YAML files plus dotted `key=value` overrides.

Every key has a type; unknown keys and values of the wrong type are errors, because a
typo in a benchmark config must never be silently ignored.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from wmsub.engine_specs import DEFAULT_ENGINE, EngineSpecError, engine_spec

# The official default negative prompt of Wan2.2 (wan/configs/shared_config.py,
# `sample_neg_prompt`). Kept verbatim so the seed's settings are visible in one place;
# an empty `generate.negative_prompt` means "use this".
OFFICIAL_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


# The default engine's (TI2V-5B, the seed's) values of the keys an engine declares: its spec
# owns them (engine_specs.py); the dataclass defaults below read them from there.
_ENGINE_DEFAULTS = engine_spec(DEFAULT_ENGINE).defaults


class ConfigError(ValueError):
    """A bad config file, key or value. The message names the key and the fix."""


# generate.guide_scale: one scale, or the (low-noise, high-noise) pair of a two-expert engine
# in the official order (wan/configs/wan_i2v_A14B.py `sample_guide_scale`)
GuideScale = typing.Union[float, list]


@dataclass
class RunConfig:
    name: str = ""  # empty: "<config stem>-<UTC timestamp>"
    logs_dir: str = "logs"


@dataclass
class BenchConfig:
    root: str = "data/worldmodelbench"  # folder with worldmodelbench.json and images/
    json_file: str = "worldmodelbench.json"
    prompt_mode: str = "i2v"  # i2v: image + text_instruction; t2v: text only
    limit: int = 0  # 0: all instances
    stems: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)


@dataclass
class OutputConfig:
    dir: str = "outputs"
    verify: str = "cheap"  # cheap: size + header + sidecar; decode: full decode of every mp4
    allow_settings_mismatch: bool = False
    max_attempts: int = 3  # per-instance generation attempts before it is reported failed
    claim_ttl_s: int = 1800  # a claim not refreshed for this long belongs to a dead job


@dataclass
class ModelConfig:
    engine: str = DEFAULT_ENGINE  # wan22-ti2v-5b | wan22-i2v-a14b | package.module:Class (engine_specs.py)
    name: str = _ENGINE_DEFAULTS["model.name"]
    checkpoint_dir: str = _ENGINE_DEFAULTS["model.checkpoint_dir"]


@dataclass
class GenerateConfig:
    # the default engine's values (engine_specs.WAN22_TI2V_5B.defaults: the seed's);
    # another model.engine brings its own (load_config)
    max_area: int = _ENGINE_DEFAULTS["generate.max_area"]
    frame_num: int = _ENGINE_DEFAULTS["generate.frame_num"]
    sampling_steps: int = _ENGINE_DEFAULTS["generate.sampling_steps"]
    sample_solver: str = _ENGINE_DEFAULTS["generate.sample_solver"]  # unipc | dpm++
    shift: float = _ENGINE_DEFAULTS["generate.shift"]
    # a number, or [low-noise, high-noise] for two-expert engines
    guide_scale: GuideScale = _ENGINE_DEFAULTS["generate.guide_scale"]
    fps: int = _ENGINE_DEFAULTS["generate.fps"]
    seed: int = 42
    negative_prompt: str = ""  # empty: the official default (OFFICIAL_NEGATIVE_PROMPT)
    parallel: str = "sp"  # sp | cfg | dp | none
    device: str = "auto"  # auto | cuda | cpu
    exact: bool = True  # bitwise the official computation; false enables the fast path
    # official: the seed's (flash3 when installed, else flash2); auto: official when exact,
    # else the fastest installed; resolved on the node (wmsub/node/kernel.py)
    attention: str = "auto"  # auto | official | flash3 | flash2 | cudnn | flash | efficient | math
    compile: bool = False  # torch.compile each DiT block (fast path)
    fast_blocks: bool = False  # bf16 modulation/RoPE instead of the official fp32 (fast path)
    offload_t5: bool = False  # move T5 off the GPU after encoding (the seed kept it: offload_model=False)
    cache_negative_prompt: bool = True  # encode the fixed negative prompt once per chunk
    vae_dtype: str = "float32"  # float32 (official) | bfloat16
    async_write: bool = True  # write the mp4 (CPU work) while the next video generates
    dist_timeout_s: int = 600  # collective timeout: a dead peer ends the job instead of a hang
    compile_cache_dir: str = ""  # torch.compile caches (shared); empty: <run.logs_dir>/compile-cache


@dataclass
class PlanConfig:
    chunks: int = 0  # 0: derive from target_chunk_minutes
    target_chunk_minutes: float = 120.0
    # the default engine's: the seed's time per video at its settings (one 2-GPU job)
    seconds_per_video: float = _ENGINE_DEFAULTS["plan.seconds_per_video"]


@dataclass
class SlurmConfig:
    executor: str = "auto"  # auto (slurm when sbatch is on PATH) | slurm | local
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    exclude: str = ""
    gpus_per_job: int = 2
    gpu_type: str = ""  # GPU type in the gres request (gpu:<type>:<n>), e.g. h100; empty: any
    cpus_per_task: int = 8
    mem_gb: int = 64
    time_min: int = 240
    array_parallelism: int = 64
    requeue: bool = True
    signal_delay_s: int = 120
    max_timeout_requeues: int = 3
    python: str = ""  # interpreter on the compute nodes; empty: the launching interpreter
    setup: list[str] = field(default_factory=list)  # shell lines before the job (module load, ...)
    additional: dict[str, str] = field(default_factory=dict)  # extra sbatch flags
    # extra srun flags of the generation job step, e.g. ["--cpus-per-task=8"] (Slurm
    # 22.05-23.02 does not hand sbatch's --cpus-per-task to srun)
    srun_args: list[str] = field(default_factory=list)


@dataclass
class JudgeConfig:
    enabled: bool = False
    python: str = ""  # the VILA environment's interpreter
    repo: str = ""  # WorldModelBench repo root (evaluation.py runs from here)
    checkpoint: str = ""  # vila-ewm-qwen2-1.5b weights folder
    cot: bool = True
    shards: int = 1
    partition: str = ""
    gpu_type: str = ""  # GPU type of the judge jobs; empty: slurm.gpu_type
    report_partition: str = ""  # the report job needs no GPU: e.g. a CPU partition; empty: judge.partition
    time_min: int = 120
    cpus: int = 8
    mem_gb: int = 64
    setup: list[str] = field(default_factory=list)
    report: bool = True  # run the report as the last job


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def negative_prompt(self) -> str:
        return self.generate.negative_prompt or OFFICIAL_NEGATIVE_PROMPT

    @property
    def engine_spec(self):
        """model.engine's EngineSpec (engine_specs.py); ConfigError if it names none."""
        try:
            return engine_spec(self.model.engine)
        except EngineSpecError as e:
            raise ConfigError(str(e)) from None


CHOICES = {
    "bench.prompt_mode": ("i2v", "t2v"),
    "output.verify": ("cheap", "decode"),
    "generate.sample_solver": ("unipc", "dpm++"),
    "generate.parallel": ("sp", "cfg", "dp", "none"),
    "generate.device": ("auto", "cuda", "cpu"),
    "generate.attention": ("auto", "official", "flash3", "flash2", "cudnn", "flash", "efficient", "math"),
    "generate.vae_dtype": ("float32", "bfloat16"),
    "slurm.executor": ("auto", "slurm", "local"),
}

# Settings that change the pixels of a video. Changing any of them makes existing
# outputs incomparable; the output store refuses such a folder (see store.py). The
# parallel mode joins them in settings_fingerprint (as parallel_numerics), and the
# attention kernel, resolved on the node, through the store's per-folder pin.
FINGERPRINT_KEYS = (
    "model.name", "bench.prompt_mode",
    "generate.max_area", "generate.frame_num", "generate.sampling_steps",
    "generate.sample_solver", "generate.shift", "generate.guide_scale", "generate.fps",
    "generate.seed", "generate.negative_prompt", "generate.exact", "generate.fast_blocks",
    "generate.vae_dtype",
)


# Lists of shell lines: a command-line value is one line, never split on commas
# (`slurm.setup=export NCCL_IB_HCA=mlx5_0,mlx5_1` is one line).
ONE_LINE_LISTS = ("slurm.setup", "judge.setup")


def _yaml_text(key: str, text: str, kind: str):
    # BaseLoader keeps every scalar as text: a stem like 000000007259.2 stays a stem
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        example = '\'[\"module load cuda/12.4\"]\'' if kind == "list" else "'{gpu-bind: closest}'"
        raise ConfigError(f"{key}={text!r} is not a YAML {kind} ({first}); fix: quote it for the "
                          f"shell as a whole, e.g. {key}={example}") from None


def _list_from_text(key: str, text: str) -> list:
    """A command-line list: `[...]` is YAML, a shell-line key takes the text as one line,
    any other key is comma-separated."""
    if text.strip().startswith("["):
        return _yaml_text(key, text.strip(), "list")
    if key in ONE_LINE_LISTS:
        return [text] if text.strip() else []
    return [v.strip() for v in text.split(",") if v.strip()]


def _guide_scale(key: str, value):
    if isinstance(value, str) and ("," in value or value.strip().startswith("[")):
        text = value.strip()
        value = _yaml_text(key, text, "list") if text.startswith("[") else text.split(",")
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{key}: expected one number or a [low-noise, high-noise] pair, "
                              f"got {value!r}")
        return [_coerce(key, v, float) for v in value]
    return _coerce(key, value, float)


def _coerce(key: str, value, typ):
    if typ == GuideScale:
        return _guide_scale(key, value)
    origin = typing.get_origin(typ)
    if origin is list:
        if isinstance(value, str):
            value = _list_from_text(key, value)
        if not isinstance(value, list) or any(isinstance(v, (list, dict)) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return [str(v) for v in value]
    if origin is dict:
        if isinstance(value, str):
            value = _yaml_text(key, value, "mapping") if value.strip() else {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r} — fix: write it as {{flag: value, ...}}")
        return {str(k): str(v) for k, v in value.items()}
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r} — fix: write {key}=true or {key}=false")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r} — fix: write a whole number, e.g. {key}=64 (a product such as 704*1280 is allowed)")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(eval_int(value))
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r} — fix: write a whole number, e.g. {key}=64 (a product such as 704*1280 is allowed)")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r} — fix: write a number, e.g. {key}=1.5") from None
    if typ is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r} — fix: quote the value")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {typ}")


def eval_int(text: str) -> int:
    """Integers, allowing products such as `704*1280` for areas."""
    parts = text.replace(" ", "").split("*")
    result = 1
    for p in parts:
        result *= int(p)
    return result


def _section_types(section_cls) -> dict:
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def _set(cfg: Config, key: str, value, source: str) -> None:
    if "." not in key:
        raise ConfigError(f"{source}: '{key}' is not a known key; keys look like 'generate.seed' "
                          f"(sections: {', '.join(_section_names())})")
    section, name = key.split(".", 1)
    if section not in _section_names():
        raise ConfigError(f"{source}: unknown section '{section}' in '{key}' "
                          f"(sections: {', '.join(_section_names())})")
    sec = getattr(cfg, section)
    types = _section_types(type(sec))
    if name not in types:
        close = difflib.get_close_matches(name, list(types), n=1)
        hint = f"; did you mean {section}.{close[0]}?" if close else ""
        raise ConfigError(f"{source}: unknown key '{key}'{hint} "
                          f"(known in {section}: {', '.join(types)})")
    try:
        coerced = _coerce(key, value, types[name])
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    if key in CHOICES and coerced not in CHOICES[key]:
        raise ConfigError(f"{source}: {key}={coerced!r} is not one of {', '.join(CHOICES[key])}")
    setattr(sec, name, coerced)


def _section_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        # dict-valued keys (slurm.additional) are values, not sections
        if isinstance(v, dict) and key.count(".") == 0 and key in _section_names():
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def validate(cfg: Config) -> None:
    g = cfg.generate
    problems = []
    spec = cfg.engine_spec
    if isinstance(g.guide_scale, list) and not spec.guide_pair:
        problems.append(f"generate.guide_scale={g.guide_scale}: model.engine={spec.name} takes one "
                        "scale, not a [low-noise, high-noise] pair — fix: give one number")
    if cfg.bench.prompt_mode == "t2v" and spec.t2v_size is None:
        problems.append(f"bench.prompt_mode=t2v: model.engine={spec.name} is image-to-video only "
                        "— fix: bench.prompt_mode=i2v, or a text-to-video engine")
    if (g.frame_num - 1) % 4 != 0 or g.frame_num < 1:
        problems.append(f"generate.frame_num={g.frame_num}: must be 4n+1 (e.g. 81)")
    if g.sampling_steps < 1:
        problems.append("generate.sampling_steps must be at least 1")
    if g.max_area < 32 * 32:
        problems.append(f"generate.max_area={g.max_area}: must be at least 32*32")
    if g.fps < 1:
        problems.append("generate.fps must be at least 1")
    if cfg.slurm.gpus_per_job < 1:
        problems.append("slurm.gpus_per_job must be at least 1")
    if g.parallel == "cfg" and cfg.slurm.gpus_per_job not in (1, 2):
        problems.append("generate.parallel=cfg needs slurm.gpus_per_job of 1 or 2")
    if cfg.output.max_attempts < 1:
        problems.append("output.max_attempts must be at least 1")
    if cfg.plan.chunks < 0:
        problems.append("plan.chunks must be 0 (derive) or positive")
    if cfg.judge.shards < 1:
        problems.append("judge.shards must be at least 1")
    for arg in cfg.slurm.srun_args:
        if not arg.startswith("-"):
            problems.append(f"slurm.srun_args: {arg!r} is not an srun option — fix: give options "
                            "with their values joined, e.g. ['--cpus-per-task=8']")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """The file, then the overrides, then the engine's own defaults (model.engine's spec) for
    every key neither of them set."""
    cfg = Config()
    given: set[str] = set()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (see configs/ for examples)")
        text = path.read_text()
        try:
            data = yaml.safe_load(text) or {}
            raw = yaml.load(text, Loader=yaml.BaseLoader) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        raw = _flatten(raw)
        for key, value in _flatten(data).items():
            _set(cfg, key, _as_written(key, value, raw.get(key)), str(path))
            given.add(key)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. bench.limit=10")
        key, value = item.split("=", 1)
        # raw text: _coerce parses by the key's type, so a stem like 000000007259.2 stays text
        _set(cfg, key.strip(), value, "command line")
        given.add(key.strip())
    _apply_engine_defaults(cfg, given)
    validate(cfg)
    return cfg


def _apply_engine_defaults(cfg: Config, given: set[str]) -> None:
    spec = cfg.engine_spec
    for key, value in spec.defaults.items():
        if key not in given:
            _set(cfg, key, value, f"model.engine={spec.name} default")


def _as_written(key: str, value, raw):
    """The file's own text for text-valued keys: YAML would read `stems: [000000007259.2]`
    as the number 7259.2."""
    if value is None or raw is None:
        return value
    section, _, name = key.partition(".")
    cls = type(getattr(Config(), section, None))
    typ = _section_types(cls).get(name) if dataclasses.is_dataclass(cls) else None
    textual = typ is str or typing.get_origin(typ) in (list, dict)
    return raw if textual else value


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config saved with to_dict() (run folders keep the resolved config)."""
    cfg = Config()
    for key, value in _flatten(data).items():
        _set(cfg, key, value, "saved config")
    return cfg


def get_key(cfg: Config, key: str):
    section, name = key.split(".", 1)
    return getattr(getattr(cfg, section), name)


def parallel_numerics(mode: str, ranks: int) -> str:
    """The parallel mode as far as it changes the numbers: `cfg` and `dp` are bitwise
    `none` (tested), and `sp` on one rank runs as `none`; `sp` on N ranks is "sp:N"
    (each rank's GEMMs see other row blocks, and FSDP keeps bf16 params)."""
    return f"sp:{ranks}" if mode == "sp" and ranks > 1 else "none"


def _short_hash(settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def settings_fingerprint(cfg: Config) -> tuple[str, dict]:
    """The settings that change pixels and the login node knows, and a short hash of them.

    The attention kernel is not here: only the compute node can resolve it; the output
    store pins each folder to one kernel and folds it into each video's fingerprint
    (`state.store.video_fingerprint`, docs/ENGINE.md).
    """
    settings = {k: get_key(cfg, k) for k in FINGERPRINT_KEYS}
    settings["generate.negative_prompt"] = cfg.negative_prompt
    settings["generate.parallel"] = parallel_numerics(cfg.generate.parallel, cfg.slurm.gpus_per_job)
    if cfg.model.engine != DEFAULT_ENGINE:
        # absent for the first engine, so folders made before engines were named keep their hash
        settings["model.engine"] = cfg.model.engine
    return _short_hash(settings), settings


def legacy_settings_fingerprint(cfg: Config) -> str:
    """The fingerprint the same settings had before the parallel mode and the kernel were
    part of it: how folders made then are recognised (and kept) by the output store."""
    settings = {k: get_key(cfg, k) for k in FINGERPRINT_KEYS}
    settings["generate.negative_prompt"] = cfg.negative_prompt
    return _short_hash(settings)


PATH_KEYS = ("run.logs_dir", "bench.root", "output.dir", "model.checkpoint_dir",
             "generate.compile_cache_dir")


def absolutize_paths(cfg: Config, base: Path | None = None) -> Config:
    """Make path keys absolute, so a saved run config means the same on a compute node."""
    base = Path(base or Path.cwd())
    for key in PATH_KEYS:
        section, name = key.split(".", 1)
        value = getattr(getattr(cfg, section), name)
        if value and not Path(value).is_absolute():
            setattr(getattr(cfg, section), name, str((base / value).resolve()))
    return cfg
