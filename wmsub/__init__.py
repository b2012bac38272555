"""wmsub: WorldModelBench video generation on Slurm (see README.md and docs/DESIGN.md)."""
__version__ = "0.1.0"
from pathlib import Path

# The checkout compute nodes import wmsub from (shared filesystem), and the package's data.
CHECKOUT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / "data"
