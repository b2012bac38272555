# STAND-IN for the external VILA judge program (evaluation.py of the WorldModelBench repo).
# Tests and `make demo` only: it judges nothing; its answers come from a hash of the video's stem.
"""STAND-IN for the official WorldModelBench judge `evaluation.py` (tests and `make demo` only).

The real judge runs the VILA model on each video; this stand-in keeps everything
around it the same so wmsub's judge stage can be tested without a GPU:

- the same command line: --judge --video_dir --model_name [--save_name] [--cot] [--no-save];
- it must run from a "repo root": it loads ./worldmodelbench.json and walks it in order;
- stems without `<video_dir>/<stem>.mp4` are skipped, so the denominator shrinks;
- every video file it judges is read (and must look like an mp4);
- results go to `<save_name>_cot.json` (`<save_name>.json` without --cot), written
  only at the end, same layout and key order; an existing file means "load it and
  skip all inference";
- accs are made from the answers with the official rules: the instruction score is
  the number after the last ':'; a physics / common-sense answer passes when "no"
  occurs in its lowered text.

Answers are a function of the stem (see `answers`), so tests can compute the
expected scores by hand. Each call appends its argv as one JSON line to
./standin_calls.log (in the working directory). WMSUB_STANDIN_FAIL=<code> makes it
exit with that code before judging anything. Plain Python: no torch, no numpy.
"""
import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

PHYSICS_QUESTIONS = 5
COMMON_SENSE_QUESTIONS = 2


def answers(stem: str, cot: bool):
    """(instruction text, [5 physics texts], [2 common-sense texts]) for a stem.

    digest = sha256(stem); instruction score = digest[0] % 4; physics answer j is
    "No" (passes) when bit j of digest[1] is set, else "Yes"; common-sense answer j
    is "No" when bit j of digest[2] is set.
    """
    digest = hashlib.sha256(stem.encode()).digest()
    lead = "Step by step: the video was watched frame by frame. " if cot else ""
    instruction = f"{lead}Score: {digest[0] % 4}"
    physics = [lead + ("No." if digest[1] >> j & 1 else "Yes.") for j in range(PHYSICS_QUESTIONS)]
    common = [lead + ("No." if digest[2] >> j & 1 else "Yes.") for j in range(COMMON_SENSE_QUESTIONS)]
    return instruction, physics, common


def read_video(path: Path) -> bytes:
    data = path.read_bytes()
    if data[4:8] != b"ftyp":
        raise SystemExit(f"stand-in judge: {path} is not an mp4 (no ftyp box)")
    return data


def main():
    parser = argparse.ArgumentParser(description="STAND-IN WorldModelBench judge (tests only)")
    parser.add_argument("--judge", type=str, required=True)
    parser.add_argument("--video_dir", type=str, required=True)
    parser.add_argument("--model_name", type=str, required=True)
    parser.add_argument("--save_name", type=str, default="worldmodelbench_results")
    parser.add_argument("--cot", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    # the report looks for this line to label the scores as the stand-in's
    print("STAND-IN for the VILA judge: verdicts come from a hash of each stem, not from the videos")

    with open("standin_calls.log", "a") as log:
        log.write(json.dumps(sys.argv[1:]) + "\n")
    if os.environ.get("WMSUB_STANDIN_FAIL"):
        print("stand-in judge: failing on request (WMSUB_STANDIN_FAIL)", file=sys.stderr)
        sys.exit(int(os.environ["WMSUB_STANDIN_FAIL"]))

    validation_set = json.loads(Path("./worldmodelbench.json").read_text())
    save_path = f"{args.save_name}_cot.json" if args.cot else f"{args.save_name}.json"
    if os.path.exists(save_path):
        print("Loading existing results...")
        results = json.loads(Path(save_path).read_text())
        preds, accs = results["preds"], results["accs"]
    else:
        print("Starting new evaluation...")
        preds, accs = {}, {}
        for entry in validation_set:
            stem = Path(entry["first_frame"]).stem
            video_path = Path(args.video_dir) / f"{stem}.mp4"
            if not video_path.exists():
                print(f"Video not found: {video_path}")
                continue
            read_video(video_path)
            instruction, physics, common = answers(stem, args.cot)
            try:
                score = float(instruction.split(":")[-1].strip(" ."))
            except ValueError:
                score = 0
            accs.setdefault("instruction", []).append(score)
            accs.setdefault("physical_laws", []).extend("no" in p.lower() for p in physics)
            accs.setdefault("common_sense", []).extend("no" in c.lower() for c in common)
            preds[stem] = {"instruction": [instruction], "physical_laws": physics,
                           "common_sense": common}
        if not args.no_save:
            results = {"model_name": args.model_name, "preds": preds, "accs": accs}
            Path(save_path).write_text(json.dumps(results, indent=4))
            print(f"Results saved to: {save_path}")
    print(f"Final Evaluation Results: {len(preds)} videos")


if __name__ == "__main__":
    main()
