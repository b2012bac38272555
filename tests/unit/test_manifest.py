"""Manifest: the official format, filters, and every validation problem reported at once."""
import json
import pickle
from collections import Counter
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import real_bench_root
from PIL import Image

from wmsub.config import BenchConfig
from wmsub.benchmark.images import inspect_image, open_rgb
from wmsub.benchmark.manifest import Instance, ManifestError, load_manifest
from wmsub.dev.synthetic import DOMAINS





def _bench(root, **kw) -> BenchConfig:
    return BenchConfig(root=str(root), **kw)


def _write_entries(root: Path, entries) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "worldmodelbench.json").write_text(json.dumps(entries))
    return root


def _entry(name: str, domain="human") -> dict:
    return {"domain": domain, "subdomain": "sub", "text_first_frame": f"frame {name}",
            "text_instruction": f"do {name}", "first_frame": f"images/{name}.jpg"}


def _jpeg(path: Path, size=(48, 32), mode="RGB", colour=(200, 30, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, quality=90)
    return path


# ---- the real benchmark ----------------------------------------------------------------

@pytest.mark.skipif(not (real_bench_root() / "worldmodelbench.json").is_file(),
                    reason="real WorldModelBench data not present")
def test_real_benchmark_validates():
    manifest = load_manifest(_bench(real_bench_root()))
    assert len(manifest.instances) == 350
    assert Counter(i.domain for i in manifest.instances) == {d: 50 for d, _ in DOMAINS}
    assert "000000007259.2" in manifest.by_stem  # dots kept in stems
    assert all(i.image_size and i.image_size[0] > 0 for i in manifest.instances)
    assert all(Path(i.image).is_file() for i in manifest.instances)
    assert [i.index for i in manifest.instances] == list(range(350))


# ---- format, prompts, filters ----------------------------------------------------------

def test_synthetic_benchmark_i2v_and_t2v(synthetic_bench):
    root = synthetic_bench(8)
    raw = json.loads((root / "worldmodelbench.json").read_text())
    i2v = load_manifest(_bench(root))
    assert [i.stem for i in i2v.instances] == [Path(e["first_frame"]).stem for e in raw]
    assert any("." in i.stem for i in i2v.instances)
    first = i2v.instances[0]
    assert first.prompt == raw[0]["text_instruction"]
    assert first.image == str((root / raw[0]["first_frame"]).resolve())
    assert first.image_size == Image.open(first.image).size
    assert {i.image_size[0] > i.image_size[1] for i in i2v.instances} == {True, False}
    t2v = load_manifest(_bench(root, prompt_mode="t2v"))
    assert t2v.instances[3].prompt == f"{raw[3]['text_first_frame']} {raw[3]['text_instruction']}"
    assert all(i.image is None for i in t2v.instances)
    # picklable (shipped to Slurm jobs) and frozen
    assert pickle.loads(pickle.dumps(i2v.instances)) == i2v.instances
    with pytest.raises(FrozenInstanceError):
        first.stem = "other"


def test_filters_limit_stems_domains(synthetic_bench):
    root = synthetic_bench(14)
    every = load_manifest(_bench(root))
    dotted = next(i.stem for i in every.instances if "." in i.stem)
    assert [i.stem for i in load_manifest(_bench(root, limit=3)).instances] == every.stems[:3]
    picked = load_manifest(_bench(root, stems=[every.stems[5], dotted]))
    assert picked.stems == [dotted, every.stems[5]]  # manifest order, not filter order
    robots = load_manifest(_bench(root, domains=["robotics"]))
    assert robots.stems and {i.domain for i in robots.instances} == {"robotics"}
    both = load_manifest(_bench(root, domains=["human", "animation"], limit=1))
    assert len(both.instances) == 1 and both.instances[0].domain == "human"


def test_unknown_stem_and_domain_are_named(synthetic_bench):
    root = synthetic_bench(7)
    with pytest.raises(ManifestError) as err:
        load_manifest(_bench(root, stems=["synthetic_0002.3", "nope"], domains=["robot"]))
    text = str(err.value)
    assert len(err.value.problems) == 3
    assert "'nope'" in text and "'synthetic_0002.3'" in text
    assert "did you mean 'synthetic_0002.2'" in text
    assert "unknown domain 'robot'" in text
    for domain, _ in DOMAINS:  # known domains listed as the fix
        assert repr(domain) in text


# ---- validation: each problem with a real file on disk -----------------------------------

def test_missing_file_not_json_not_a_list(tmp_path):
    with pytest.raises(ManifestError, match="does not exist.*bench.root"):
        load_manifest(_bench(tmp_path / "nowhere"))
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "worldmodelbench.json").write_text('[\n {"domain": "human",\n  "subdomain": }\n]')
    with pytest.raises(ManifestError, match=r"not valid JSON at line 3 column 16"):
        load_manifest(_bench(bad))
    obj = _write_entries(tmp_path / "obj", {"domain": "human"})
    with pytest.raises(ManifestError, match="top level is a dict, expected a list"):
        load_manifest(_bench(obj))


def test_every_problem_is_reported_at_once(tmp_path):
    root = tmp_path / "bench"
    outside = _jpeg(tmp_path / "outside.jpg")
    for name in ("ok", "dup", "trunc", "text"):
        _jpeg(root / "images" / f"{name}.jpg")
    full = (root / "images" / "trunc.jpg").read_bytes()
    (root / "images" / "trunc.jpg").write_bytes(full[: len(full) * 2 // 3])
    (root / "images" / "text.jpg").write_text("this is not an image")
    (root / "images" / "link.jpg").symlink_to(outside)
    empty_key = _entry("emptykey")
    empty_key["text_instruction"] = "  "
    missing_key = _entry("missingkey")
    del missing_key["subdomain"]
    entries = [
        _entry("ok"),                                   # 0 fine
        "just a string",                                # 1 not an object
        missing_key,                                    # 2
        empty_key,                                      # 3
        _entry("dup"),                                  # 4
        _entry("dup"),                                  # 5 duplicate of 4
        _entry("missing_image"),                        # 6
        _entry("trunc"),                                # 7 truncated JPEG
        _entry("text"),                                 # 8 not an image
        {**_entry("abs"), "first_frame": str(outside)},  # 9 absolute
        {**_entry("up"), "first_frame": "images/../../up.jpg"},  # 10 ..
        _entry("link"),                                 # 11 symlink out of the root
    ]
    _write_entries(root, entries)
    json_path = str((root / "worldmodelbench.json").resolve())

    with pytest.raises(ManifestError) as err:
        load_manifest(_bench(root))
    text = str(err.value)
    problems = err.value.problems
    assert text.startswith("10 problems in the benchmark manifest:")
    expect = {
        1: "is a str, expected an object",
        2: "(stem 'missingkey'): missing key 'subdomain'",
        3: "(stem 'emptykey'): 'text_instruction' is '  '",
        5: "(stem 'dup'): duplicate stem 'dup', also entry 4",
        6: "(stem 'missing_image'): image images/missing_image.jpg does not exist",
        7: "(stem 'trunc'): image images/trunc.jpg is unreadable or truncated",
        8: "(stem 'text'): image images/text.jpg is not an image",
        9: "(stem 'outside'): first_frame",
        10: "(stem 'up'): first_frame 'images/../../up.jpg' contains '..'",
        11: "(stem 'link'): first_frame 'images/link.jpg' resolves to",
    }
    assert len(problems) == len(expect)
    for (index, fragment), problem in zip(expect.items(), problems):
        assert f"{json_path}: entry {index} {fragment}" in problem
        assert "fix:" in problem
    assert "absolute path" in problems[7] and "outside" in problems[9]


def test_truncated_jpeg_caught_but_trailing_bytes_accepted(tmp_path):
    good = _jpeg(tmp_path / "good.jpg", size=(64, 48))
    data = good.read_bytes()
    trailing = tmp_path / "trailing.jpg"
    trailing.write_bytes(data + b"\x00camera-maker-metadata" * 4)
    assert inspect_image(trailing).problem == ""
    for cut in (len(data) - 2, len(data) // 2, 400):
        truncated = tmp_path / f"cut{cut}.jpg"
        truncated.write_bytes(data[:cut])
        assert "truncated" in inspect_image(truncated).problem, cut
        assert "truncated" in inspect_image(truncated, full=True).problem, cut
    assert inspect_image(good, full=True).problem == ""


def test_non_rgb_images_are_noted_and_converted(tmp_path):
    root = tmp_path / "bench"
    images = root / "images"
    _jpeg(images / "grey.jpg", mode="L", colour=128)
    _jpeg(images / "cmyk.jpg", mode="CMYK", colour=(0, 255, 255, 0))
    Image.new("RGBA", (40, 30), (10, 220, 30, 0)).save(images / "rgba.png")
    sixteen = (np.arange(30 * 40, dtype=np.uint32).reshape(30, 40) * 54).astype(np.uint16)
    sixteen[0, 0], sixteen[0, 1] = 65535, 32896
    Image.fromarray(sixteen).save(images / "deep.png")
    assert Image.open(images / "deep.png").mode == "I;16"
    entries = [_entry(n) for n in ("grey", "cmyk")]
    entries += [{**_entry(n), "first_frame": f"images/{n}.png"} for n in ("rgba", "deep")]
    _write_entries(root, entries)

    manifest = load_manifest(_bench(root))
    notes = "\n".join(manifest.notes)
    for stem, word in (("grey", "grey"), ("cmyk", "CMYK"), ("rgba", "alpha dropped"), ("deep", "16-bit")):
        assert any(n.startswith(f"{stem}: ") and word in n for n in manifest.notes), notes
    for inst in manifest.instances:
        im = open_rgb(inst.image)
        assert im.mode == "RGB" and im.size == inst.image_size
    rgba = np.asarray(open_rgb(manifest.by_stem["rgba"].image))
    np.testing.assert_array_equal(rgba, np.asarray(Image.open(images / "rgba.png").convert("RGB")))
    deep = np.asarray(open_rgb(manifest.by_stem["deep"].image))
    assert deep[0, 0].tolist() == [255, 255, 255] and deep[0, 1].tolist() == [128, 128, 128]
    # proper scaling keeps the range (PIL's convert would clip nearly all of it to 255)
    np.testing.assert_array_equal(deep[..., 0], np.rint(sixteen / 257.0).astype(np.uint8))


def test_instance_fields_match_design():
    fields = list(Instance.__dataclass_fields__)
    assert fields == ["index", "stem", "prompt", "image", "domain", "subdomain", "image_size"]
