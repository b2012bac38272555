"""Probes that run in another interpreter or on a compute node, for `launch.py check`.

- `interpreter_report(device)`: run by `slurm.python` (login check and on-node check): what
  a chunk imports, each import tried alone, with versions.
- `JUDGE_IMPORTS`: a stdlib-only program run by `judge.python`: the import statements of
  the judge's evaluation.py, each tried alone, as the official script would run them.
- `on_node_probe(spec)`: the on-node check job, run by every rank of a job shaped like a
  generation chunk: the rank's GPU, the process group, GPU memory, output writes, judge.

Only the standard library at module level: an interpreter without torch (or without
anything) must still say what it lacks. The login side (wmsub/login/interpreters.py,
wmsub/login/onnode.py) turns these reports into problems with their fixes.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

MARK = "WMSUB_PROBE "  # the report's line on stdout; anything else there is the env talking
JUDGE_IMPORT_TIMEOUT_S = 300


def _attempt(checks: list, name: str, fn) -> bool:
    t0 = time.time()
    try:
        detail = fn()
        checks.append({"name": name, "ok": True, "detail": "" if detail is None else str(detail),
                       "seconds": round(time.time() - t0, 2)})
        return True
    except BaseException as e:  # noqa: BLE001 - SystemExit from a broken package counts too
        checks.append({"name": name, "ok": False, "error": f"{type(e).__name__}: {e}",
                       "seconds": round(time.time() - t0, 2)})
        return False


DEFAULT_ENGINE_LOADER = "wmsub.node.engines.wan_ti2v:WanTI2VEngine"


def interpreter_report(device: str, engine_loader: str = DEFAULT_ENGINE_LOADER) -> dict:
    """What a chunk job needs from its interpreter, each import tried on its own;
    `engine_loader` is model.engine's class (`module:Class`)."""
    report = {"python": sys.executable, "python_version": ".".join(map(str, sys.version_info[:3])),
              "host": socket.gethostname(), "checks": [], "torch_cuda": None, "wan": None}
    checks = report["checks"]

    def wmsub_path():
        import wmsub
        return str(Path(wmsub.__file__).resolve().parent.parent)
    _attempt(checks, "wmsub", wmsub_path)
    _attempt(checks, "wmsub.node.worker", lambda: __import__("wmsub.node.worker") and None)

    def torch_version():
        import torch
        report["torch_cuda"] = torch.version.cuda
        return torch.__version__
    if not _attempt(checks, "torch", torch_version):
        return report

    def engine():
        from wmsub.engine_specs import import_object
        import_object(engine_loader)  # the engine's module and its imports
        return engine_loader
    _attempt(checks, "engine", engine)

    def wan_modules():
        from wmsub.node.engines.shims import WAN_MODULES, wan_module, wan_version
        for name in WAN_MODULES:
            wan_module(name)
        report["wan"] = wan_version()
        return report["wan"]
    if engine_loader.startswith("wmsub."):  # a user's engine need not have the wan modules
        _attempt(checks, "wan", wan_modules)

    def ffmpeg():
        import imageio_ffmpeg
        exe = imageio_ffmpeg.get_ffmpeg_exe()
        return f"{imageio_ffmpeg.__version__} ({exe})"
    _attempt(checks, "imageio_ffmpeg", ffmpeg)
    if device != "cpu":
        def cuda():
            import torch
            if not torch.cuda.is_available():
                return "no GPU visible here"
            return f"{torch.cuda.device_count()} GPU(s), {torch.cuda.get_device_name(0)}"
        _attempt(checks, "cuda", cuda)
    return report


# A program for judge.python: stdlib only, any Python 3. argv[1]: JSON list of statements.
JUDGE_IMPORTS = r'''
import json, sys, traceback
out = {"python": sys.executable, "python_version": sys.version.split()[0], "imports": []}
for statement in json.loads(sys.argv[1]):
    entry = {"statement": statement, "ok": True}
    try:
        exec(statement, {})
    except BaseException as e:
        frames = traceback.extract_tb(sys.exc_info()[2])
        entry.update(ok=False, error="%s: %s" % (type(e).__name__, e),
                     where="%s:%s" % (frames[-1].filename, frames[-1].lineno) if frames else "")
    out["imports"].append(entry)
numpy = sys.modules.get("numpy")
out["numpy"] = getattr(numpy, "__version__", None)
print("WMSUB_PROBE " + json.dumps(out))
'''


def judge_imports_report(python: str, statements: list[str], repo: str,
                         timeout_s: float = JUDGE_IMPORT_TIMEOUT_S) -> dict:
    """Run JUDGE_IMPORTS in `python` (exactly as given) from the judge repo."""
    try:
        proc = subprocess.run([python, "-c", JUDGE_IMPORTS, json.dumps(statements)], cwd=repo,
                              capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    report = parse_report(proc.stdout)
    if report is None:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-2000:]}"}
    return report


def parse_report(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return None


# ---- the on-node check job ------------------------------------------------------------------

def on_node_probe(spec: dict) -> dict:
    """One rank of the on-node check job. `spec` (built by login/onnode.py): device,
    dist_timeout_s, output_dir, judge (python, repo, statements) or None."""
    from wmsub.node.ranks import export_rank_env, global_rank, rank_gpu_problem
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    allocation = os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS")
    out = {"rank": global_rank(), "host": socket.gethostname(), "visible": visible,
           "allocation": allocation, "device_cgroup": _device_cgroup(), "problems": []}
    try:
        # the worker's own mapping, for a GPU job (a CPU job leaves the list alone)
        export_rank_env("cuda")
        out["gpu"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        out["local_rank"] = int(os.environ.get("LOCAL_RANK", "0"))
        out["gpu_problem"] = rank_gpu_problem(out["gpu"] or "", visible, allocation,
                                              out["device_cgroup"])
    except Exception as e:  # noqa: BLE001 - reported, the other checks still run
        out["gpu"], out["gpu_problem"] = None, f"{type(e).__name__}: {e}"
    out["interpreter"] = interpreter_report(spec["device"], spec.get("engine", DEFAULT_ENGINE_LOADER))
    if any(c["name"] == "torch" and c["ok"] for c in out["interpreter"]["checks"]):
        out["dist"] = _dist_check(spec)
        out["memory"] = _gpu_memory()
    out["output"] = _write_check(spec["output_dir"])
    if spec.get("judge") and out["rank"] == 0:
        j = spec["judge"]
        out["judge"] = judge_imports_report(j["python"], j["statements"], j["repo"])
    return out


def _device_cgroup() -> bool:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return False
    return any("job_" in line for line in lines if ":devices:" in line or line.startswith("0::"))


def _dist_check(spec: dict) -> dict:
    """init_process_group as the worker does (engines/parallel.py), then one all-reduce."""
    t0 = time.time()
    try:
        import torch
        import torch.distributed as dist

        from wmsub.config import GenerateConfig
        from wmsub.node.engines.parallel import init_distributed, shutdown
        gen = GenerateConfig(device=spec["device"], parallel="dp", dist_timeout_s=spec["dist_timeout_s"])
        ctx = init_distributed(gen)
        value = torch.ones(1, device=ctx.device)
        if ctx.world_size > 1:
            dist.all_reduce(value)
        result = {"ok": int(value.item()) == ctx.world_size, "world_size": ctx.world_size,
                  "sum": int(value.item()), "device": str(ctx.device),
                  "backend": dist.get_backend() if dist.is_initialized() else "none (one rank)",
                  "seconds": round(time.time() - t0, 2)}
        if ctx.device.type == "cuda":
            result["uuid"] = str(getattr(torch.cuda.get_device_properties(ctx.device), "uuid", ""))
        shutdown(ctx)
        return result
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "seconds": round(time.time() - t0, 2)}


def _gpu_memory() -> dict | None:
    try:
        import torch
        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return {"free_gb": round(free / 2**30, 1), "total_gb": round(total / 2**30, 1),
                "name": torch.cuda.get_device_name()}
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}


def _write_check(output_dir: str) -> dict:
    path = Path(output_dir) / f".wmsub-check-{socket.gethostname()}-{os.getpid()}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"wmsub check\n")
            f.flush()
            os.fsync(f.fileno())
        path.unlink()
        return {"ok": True, "path": str(path.parent)}
    except OSError as e:
        return {"ok": False, "path": str(path.parent), "error": f"{type(e).__name__}: {e}"}


def main(argv: list[str] | None = None) -> int:
    """`... -c "from wmsub.node.probe import main; main()" interpreter --device cpu
    [--engine module:Class]`"""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) in (3, 5) and argv[0] == "interpreter" and argv[1] == "--device" and (
            len(argv) == 3 or argv[3] == "--engine"):
        loader = argv[4] if len(argv) == 5 else DEFAULT_ENGINE_LOADER
        print(MARK + json.dumps(interpreter_report(argv[2], loader)), flush=True)
        return 0
    print(f"usage: interpreter --device auto|cuda|cpu [--engine module:Class] (got {argv})",
          file=sys.stderr)
    return 2
