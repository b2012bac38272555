"""Shared pytest fixtures. Keep helpers in their own modules (e.g. tests/slurm_helpers.py)."""
import pytest

from tests.helpers.slurm import DevCluster, start_devcluster


@pytest.fixture(scope="session")
def slurm_cluster() -> DevCluster:
    """The local dev Slurm cluster, brought up once per session (idempotent).

    It fails, never skips: every Slurm test needs the real cluster.
    """
    try:
        return start_devcluster()
    except Exception as exc:
        pytest.fail(f"the dev Slurm cluster could not start:\n{exc}", pytrace=False)


# ---- generation fixtures: a tiny checkpoint and small benchmarks (real wan modules) ----
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight Wan2.2-TI2V checkpoint folder in the official layout, tiny sizes."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    subprocess.run([sys.executable, "-m", "wmsub.dev.checkpoints", str(out)], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    return out


@pytest.fixture
def synthetic_bench(tmp_path):
    """`synthetic_bench(n)` writes an n-instance benchmark in the official format."""
    from wmsub.dev.synthetic import write_synthetic_benchmark

    def make(n: int = 6, seed: int = 0) -> Path:
        return write_synthetic_benchmark(tmp_path / f"bench{n}-{seed}", n=n, seed=seed)
    return make
