"""A STAND-IN for the external VILA judge (WorldModelBench's evaluation.py), for the tests
and `make demo` only: it watches nothing, its verdicts come from a hash of each stem.
Scores made with it are not real scores of anything."""
import json
from pathlib import Path

STANDIN_JUDGE = Path(__file__).resolve().parent / "evaluation.py"


def make_standin_checkpoint(folder: Path) -> Path:
    """A folder shaped like the judge's weights folder (config.json + a safetensors file)
    for the STAND-IN judge, which reads nothing in it; the setup check needs the shape."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"note": "stand-in judge: no real weights"}))
    header = b"{}"
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    return folder
