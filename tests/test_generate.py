"""``anydepth generate`` and the library under it: items, resume, seeds, failures, pipeline loading."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth.cli import main
from anydepth.generate import GenerateSettings, Item, generate, item_seed, read_items
from anydepth.io import read_png16
from anydepth.pipelines import load_depth_pipeline
from conftest import write_photo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def items_file(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    write_photo(imgs / "a.png", 30, 40, 0)
    write_photo(imgs / "b.png", 50, 40, 1)
    (imgs / "c.png").write_bytes(b"not a png")
    lines = [{"image": "imgs/a.png", "prompt": "a cat", "seed": 7},
             {"image": "imgs/b.png", "prompt": "a dog", "negative": "blurry"},
             {"image": "imgs/c.png", "prompt": "a broken file"}]
    f = tmp_path / "items.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return f


def _cli(*args) -> int:
    return main(["generate", *[str(a) for a in args]])


# ------------------------------------------------------------------------------------------------ items


def test_read_items_from_jsonl_csv_and_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    write_photo(tmp_path / "sub" / "x.png", 8, 8, 0)
    write_photo(tmp_path / "sub" / "y.jpg", 8, 8, 1)
    (tmp_path / "sub" / "x.txt").write_text("a caption\n")
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text('{"image": "sub/x.png", "prompt": "p1", "seed": "12"}\n\n# comment\n'
                     '{"image": "sub/x.png", "prompt": "p2", "negative_prompt": "n"}\n'
                     '{"image": "sub/y.jpg", "seed": "twelve"}\nnot json\n{"prompt": "no image"}\n')
    items = read_items(jsonl)
    assert [i.name for i in items] == ["x", "x_2", "y", "line-6", "line-7"]
    assert items[0].image == tmp_path / "sub" / "x.png" and items[0].seed == 12 and items[0].prompt == "p1"
    assert items[1].negative == "n" and items[1].seed is None and items[1].error is None
    assert "seed 'twelve' is not an integer" in items[2].error
    assert "list.jsonl:6: invalid JSON" in items[3].error
    assert "list.jsonl:7: no image given" in items[4].error

    csv_file = tmp_path / "list.csv"
    csv_file.write_text("image,prompt,negative,seed,name\nsub/x.png,hello,,3,first\nsub/y.jpg,,bad,,\n")
    rows = read_items(csv_file)
    assert [(r.name, r.prompt, r.negative, r.seed) for r in rows] == [("first", "hello", None, 3), ("y", None, "bad", None)]
    with pytest.raises(ValueError, match="needs a header row with an 'image' column"):
        (tmp_path / "bad.csv").write_text("file_name,text\nx,y\n")
        read_items(tmp_path / "bad.csv")

    folder = read_items(tmp_path / "sub")  # named like every command's outputs: the folder mirrored
    assert [(i.name, i.prompt) for i in folder] == [("sub/x", "a caption"), ("sub/y", None)]
    assert [i.name for i in read_items(str(tmp_path / "sub" / "*.jpg"))] == ["y"]
    (tmp_path / "sub" / "deeper").mkdir()
    write_photo(tmp_path / "sub" / "deeper" / "x.png", 8, 8, 2)  # same name, another folder: kept apart
    assert [i.name for i in read_items(tmp_path / "sub", recursive=True)] == ["sub/deeper/x", "sub/x", "sub/y"]
    with pytest.raises(ValueError, match="does not exist"):
        read_items(tmp_path / "missing.jsonl")


def test_item_seed_is_own_seed_or_base_plus_index():
    assert item_seed(Item("a", None, seed=99), 5, 1000) == 99
    assert item_seed(Item("a", None), 5, 1000) == 1005
    assert item_seed(Item("a", None), 0, 2**63 - 1) == 2**63 - 1


# ------------------------------------------------------------------------------------------------ the command


def test_generate_three_items_with_one_bad_image(items_file, tiny_pipelines, tiny_files, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("--items", items_file, "--pipeline", tiny_pipelines["sd15"], "--controlnet", tiny_pipelines["sd15-controlnet"],
            "--out", out, "--steps", "2", "--seed", "100", "--model", tiny_files["pth"], "--depth-input-size", "70",
            "--width", "48", "--height", "40")
    assert _cli(*args) == 1
    captured = capsys.readouterr()
    assert "generated 2 item(s)" in captured.out and "1 failed" in captured.out
    assert "1 of 3 item(s) failed" in captured.err and "c: cannot read image" in captured.err and "c.png" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "a_depth.png", "b.json", "b.png", "b_depth.png"]

    meta = {n: json.loads((out / f"{n}.json").read_text()) for n in "ab"}
    assert meta["a"]["seed"] == 7 and meta["b"]["seed"] == 101  # own seed; base seed + index 1
    assert meta["b"]["prompt"] == "a dog" and meta["b"]["negative"] == "blurry"
    assert meta["a"]["pipeline_class"] == "StableDiffusionControlNetPipeline"
    assert meta["a"]["controlnet"] == str(tiny_pipelines["sd15-controlnet"])
    assert meta["a"]["depth_kind"] == "disparity" and meta["a"]["normalization"]["mode"] == "v2_style"
    assert (meta["a"]["width"], meta["a"]["height"], meta["a"]["steps"]) == (48, 40, 2)
    for n in "ab":
        assert Image.open(out / f"{n}.png").size == (48, 40)
        control = read_png16(out / f"{n}_depth.png")
        assert control.shape == (40, 48) and control.min() == 0 and control.max() == 65535

    # run again: the two finished items are skipped untouched, the bad one is reported again
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert _cli(*args) == 1
    captured = capsys.readouterr()
    assert "generated 0 item(s)" in captured.out and "skipped 2 finished" in captured.out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left

    # the seeds make it reproducible: redoing item a gives the same pixels
    first = np.asarray(Image.open(out / "a.png"))
    assert _cli(*args, "--overwrite") == 1
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), first)


def test_missing_prompt_fails_that_item_only(tmp_path, tiny_pipelines, tiny_files, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    write_photo(imgs / "p.png", 30, 30, 0)
    write_photo(imgs / "q.png", 30, 30, 1)
    (imgs / "p.txt").write_text("a captioned photo")
    out = tmp_path / "out"
    assert _cli("--items", imgs, "--pipeline", tiny_pipelines["flux-depth"], "--out", out, "--steps", "1",
                "--model", tiny_files["pth"], "--depth-input-size", "70", "--width", "72", "--height", "40") == 1
    err = capsys.readouterr().err
    assert "imgs/q: no prompt for" in err and "q.txt caption" in err
    out = out / "imgs"  # a folder's items mirror it under --out, like every command's outputs
    meta = json.loads((out / "p.json").read_text())
    assert meta["prompt"] == "a captioned photo" and meta["pipeline_class"] == "FluxControlPipeline"
    assert (meta["width"], meta["height"]) == (64, 32)  # snapped down to Flux's multiple of 16
    assert meta["controlnet_conditioning_scale"] is None
    assert Image.open(out / "p.png").size == (64, 32)
    # a negative prompt is refused clearly by pipelines without one; --prompt fills the gap for q
    assert _cli("--items", imgs, "--pipeline", tiny_pipelines["flux-depth"], "--out", out.parent, "--steps", "1",
                "--model", tiny_files["pth"], "--depth-input-size", "70", "--width", "72", "--height", "40",
                "--prompt", "fallback", "--negative", "ugly") == 1
    assert "takes no negative prompt" in capsys.readouterr().err
    assert not (out / "q.json").exists()


def test_seed_changes_the_image_and_the_same_seed_repeats_it(tmp_path, tiny_pipelines, tiny_estimator):
    pipe = load_depth_pipeline(tiny_pipelines["sdxl"], tiny_pipelines["sdxl-controlnet"], device="cpu")
    pipe.set_progress_bar_config(disable=True)
    est = tiny_estimator
    photo = write_photo(tmp_path / "s.png", 20, 30, 0)
    outs = {}
    for tag, seed in (("one", 5), ("two", 5), ("three", 6)):
        report = generate(pipe, est, [Item("s", photo, "a prompt", seed=seed)], tmp_path / tag,
                          GenerateSettings(steps=2, width=32, height=24), progress=False)
        assert report.ok and report.done == ["s"]
        outs[tag] = np.asarray(Image.open(tmp_path / tag / "s.png"))
    assert outs["one"].shape == (24, 32, 3)
    np.testing.assert_array_equal(outs["one"], outs["two"])
    assert np.abs(outs["one"].astype(int) - outs["three"]).max() > 0


# ------------------------------------------------------------------------------------------------ loading


def test_load_depth_pipeline_picks_the_pipeline_class(tiny_pipelines, tmp_path):
    p = tiny_pipelines
    assert type(load_depth_pipeline(p["sd15"], p["sd15-controlnet"], device="cpu")).__name__ == \
        "StableDiffusionControlNetPipeline"
    assert type(load_depth_pipeline(p["sdxl"], p["sdxl-controlnet"], device="cpu")).__name__ == \
        "StableDiffusionXLControlNetPipeline"
    assert type(load_depth_pipeline(p["flux"], p["flux-controlnet"], device="cpu")).__name__ == "FluxControlNetPipeline"
    assert type(load_depth_pipeline(p["flux-depth"], device="cpu")).__name__ == "FluxControlPipeline"
    # a Flux folder whose model_index says FluxPipeline but whose transformer takes control latents
    plain = shutil.copytree(p["flux-depth"], tmp_path / "flux-depth-as-flux")
    index = json.loads((plain / "model_index.json").read_text())
    (plain / "model_index.json").write_text(json.dumps(dict(index, _class_name="FluxPipeline")))
    assert type(load_depth_pipeline(plain, device="cpu")).__name__ == "FluxControlPipeline"
    pipe = load_depth_pipeline(p["sd15"], p["sd15-controlnet"], device="cpu", dtype="bf16")
    assert pipe.unet.dtype == torch.bfloat16 and pipe.controlnet.dtype == torch.bfloat16

    with pytest.raises(ValueError, match="without a depth control model; pass a depth ControlNet"):
        load_depth_pipeline(p["sd15"], device="cpu")
    with pytest.raises(ValueError, match="is a FluxControlNetModel, but a StableDiffusionPipeline needs a ControlNetModel"):
        load_depth_pipeline(p["sd15"], p["flux-controlnet"], device="cpu")
    with pytest.raises(ValueError, match="offload must be none, model or sequential"):
        load_depth_pipeline(p["sd15"], p["sd15-controlnet"], offload="gpu")
