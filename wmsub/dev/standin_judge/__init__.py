"""A STAND-IN for the external VILA judge (WorldModelBench's evaluation.py), for the tests
and `make demo` only: it watches nothing, its verdicts come from a hash of each stem.
Scores made with it are not real scores of anything."""
from pathlib import Path

STANDIN_JUDGE = Path(__file__).resolve().parent / "evaluation.py"
