import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from runtime.data.dataset import DatasetWriter, check_dataset, open_dataset
from runtime.errors import CscError
from runtime.io.imageio import LABEL_MAP_PNG, place_file, read_image, read_raw, write_image


def test_round_trip_synth_open_load(tmp_path):
    from runtime.data.simulator import make_microscope
    from runtime.data.synthesize import synthesize_dataset

    root = synthesize_dataset("mixed", 3, tmp_path / "ds", seed=7, size=96)
    dataset = open_dataset(root)
    assert len(dataset) == 3 and dataset.classes == ["background", "rbc", "macrophage"]
    frame = make_microscope("mixed", size=96, seed=7).frame(1)
    labels = dataset.load(1)
    assert np.array_equal(labels.image, frame.image)
    assert np.array_equal(labels.mask, frame.semantic)
    assert np.array_equal(labels.instances, frame.instances)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["complete"] is True and meta["seed"] == 7
    assert meta["images"][dataset.samples[1].stem] == frame.counts
    report = check_dataset(root)
    assert report.ok and report.cells["rbc"] == meta["counts"]["rbc"]


def _copy(ds, tmp_path):
    return shutil.copytree(ds, tmp_path / "copy")


def _first(root, sub):
    return sorted((root / sub).iterdir())[0]


def test_unreadable_image_is_named(mixed_dataset, tmp_path):
    root = _copy(mixed_dataset, tmp_path)
    bad = _first(root, "images")
    bad.write_bytes(b"not a png")
    report = check_dataset(root)
    assert not report.ok and str(bad) in report.problems[0] and "unreadable" in report.problems[0]


def test_images_without_masks_are_all_listed_by_check(mixed_dataset, tmp_path):
    root = _copy(mixed_dataset, tmp_path)
    masks = sorted((root / "masks").iterdir())
    for mask in masks[:2]:
        mask.unlink()
    report = check_dataset(root)
    assert not report.ok and report.n_images == 6
    assert [p.split(":")[0] for p in report.problems] == [str(root / "images" / f"{m.stem}.png") for m in masks[:2]]
    assert all("image has no mask" in p for p in report.problems)
    assert sum(report.sizes.values()) == 4, "the images that have masks are still checked"
    with pytest.raises(CscError, match="image has no mask.*1 more problem.*csc-data check"):
        open_dataset(root)  # training stops at the first, and says where to see them all


def test_size_mismatch(mixed_dataset, tmp_path):
    root = _copy(mixed_dataset, tmp_path)
    mask_path = _first(root, "masks")
    cv2.imwrite(str(mask_path), np.zeros((10, 10), np.uint8))
    report = check_dataset(root)
    assert any(str(mask_path) in p and "same size" in p for p in report.problems)


def test_class_id_outside_declared_classes(mixed_dataset, tmp_path):
    root = _copy(mixed_dataset, tmp_path)
    mask_path = _first(root, "masks")
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    mask[0, 0] = 7
    cv2.imwrite(str(mask_path), mask)
    report = check_dataset(root)
    assert any("class id 7" in p for p in report.problems)


def test_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(CscError, match="no images found"):
        open_dataset(tmp_path)


def test_hidden_files_are_not_images(tmp_path):
    from runtime.io.imageio import list_images

    write_image(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    (tmp_path / ".a.1234-0.tmp.png").write_bytes(b"half-written by a killed run")
    (tmp_path / "._a.png").write_bytes(b"macOS metadata")
    assert [p.name for p in list_images(tmp_path)] == ["a.png"]


def test_missing_folder(tmp_path):
    with pytest.raises(CscError, match="dataset folder not found"):
        open_dataset(tmp_path / "nope")


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_loads_8_and_16_bit_grey_and_colour(tmp_path, suffix):
    grey16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096)  # a 12-bit camera in 16-bit words
    colour8 = np.dstack([np.full((64, 64), v, np.uint8) for v in (10, 120, 250)])
    for name, img in (("g16", grey16), ("c8", colour8)):
        if suffix == ".jpg" and img.dtype == np.uint16:
            continue  # JPEG holds 8 bits only
        cv2.imwrite(str(tmp_path / f"{name}{suffix}"), img)
        out = read_image(tmp_path / f"{name}{suffix}")
        assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
        if name == "g16":
            assert out.max() == 255, "a 12-bit image keeps its full contrast"
            assert np.array_equal(out[..., 0], (grey16 >> 4).astype(np.uint8))


def test_tifffile_written_16_bit(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    data = np.full((32, 48), 60000, np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", data)
    assert read_image(tmp_path / "x.tif").shape == (32, 48, 3)


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "mask.png"
    write_image(target, np.ones((8, 8), np.uint8))
    with pytest.raises(CscError):
        write_image(target, np.ones((8, 8, 7), np.float64))  # PNG cannot hold this: encoding fails
    assert np.array_equal(cv2.imread(str(target), cv2.IMREAD_UNCHANGED), np.ones((8, 8), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"], "no temporary file left behind"


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    write_image(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_label_map_png_round_trips_exactly(tmp_path, dtype):
    labels = np.zeros((64, 80), dtype)
    labels[10:30, 5:40] = 2
    labels[40:60, 50:70] = 700 if dtype == np.uint16 else 1
    write_image(tmp_path / "l.png", labels, LABEL_MAP_PNG)
    back = read_raw(tmp_path / "l.png")
    assert back.dtype == dtype and np.array_equal(back, labels)


def test_place_file_links_where_it_can_and_copies_otherwise(tmp_path, monkeypatch):
    import os

    source = tmp_path / "a.png"
    source.write_bytes(b"pixels")
    place_file(source, tmp_path / "out" / "a.png")
    assert (tmp_path / "out" / "a.png").stat().st_ino == source.stat().st_ino
    place_file(source, tmp_path / "out" / "a.png")  # again over the existing file: replaced, not an error
    place_file(source, tmp_path / "copy" / "a.png", link=False)
    assert (tmp_path / "copy" / "a.png").stat().st_ino != source.stat().st_ino

    def cross_device(*_):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    place_file(source, tmp_path / "other" / "a.png")
    copied = tmp_path / "other" / "a.png"
    assert copied.read_bytes() == b"pixels" and copied.stat().st_ino != source.stat().st_ino
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_place_file_links_a_symlinks_file_not_the_symlink(tmp_path):
    """A relative symlink hard-linked as itself pointed nowhere from the dataset's images/ folder."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.png").write_bytes(b"pixels")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").symlink_to("../src/a.png")
    for link in (True, False):
        target = tmp_path / f"out-{link}" / "a.png"
        place_file(tmp_path / "in" / "a.png", target, link=link)
        assert not target.is_symlink() and target.read_bytes() == b"pixels"


def test_interrupted_writer_marks_dataset_incomplete(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with DatasetWriter(tmp_path / "ds", source="test") as writer:
            writer.add("a", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint16))
            raise KeyboardInterrupt
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["complete"] is False and meta["n_images"] == 1
    # every file sound, and still not the dataset asked for: `csc-data check` says so (it used to say "ok")
    problems = check_dataset(tmp_path / "ds").problems
    assert len(problems) == 1 and "dataset.json: incomplete: the run that wrote it stopped early" in problems[0]


def test_a_dataset_interrupted_before_its_first_image_is_reported_incomplete(tmp_path):
    """Ctrl-C before the first image leaves an empty images/: `csc-data check` stopped at "no images found — put
    images there", hiding that the run stopped early (and putting images there makes no dataset)."""
    with pytest.raises(KeyboardInterrupt):
        with DatasetWriter(tmp_path / "ds", source="test"):
            raise KeyboardInterrupt
    report = check_dataset(tmp_path / "ds")
    assert not report.ok and report.n_images == 0
    assert "incomplete: the run that wrote it stopped early" in report.problems[-1], report.problems


def test_cli_check_exits_1_naming_every_bad_file(mixed_dataset, tmp_path):
    root = _copy(mixed_dataset, tmp_path)
    images = sorted((root / "images").iterdir())
    images[0].write_bytes(b"")
    (root / "masks" / f"{images[1].stem}.png").unlink()
    (root / "masks" / f"{images[2].stem}.png").unlink()
    (root / "dataset.json").write_text("{ not json")
    run = subprocess.run([sys.executable, "-c", "from runtime.cli.data import main; main()", "check", str(root)],
                         capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    problems = [line for line in run.stderr.splitlines() if line.startswith("problem:")]
    assert len(problems) == 4, run.stderr
    for bad in (images[0].name, images[1].name, images[2].name, "dataset.json"):
        assert sum(bad in line for line in problems) == 1, (bad, run.stderr)
    assert "Traceback" not in run.stderr


def test_cli_missing_dataset_is_one_line_exit_2(tmp_path):
    run = subprocess.run([sys.executable, "-c", "from runtime.cli.data import main; main()", "check", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "dataset folder not found" in run.stderr and "Traceback" not in run.stderr


def test_cli_synth_and_show(tmp_path):
    from typer.testing import CliRunner

    from runtime.cli.data import app

    runner = CliRunner()
    result = runner.invoke(app, ["synth", "--kind", "rbc", "--n", "2", "--out", str(tmp_path / "d"), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["dataset.json", "images", "instances", "masks"]
    result = runner.invoke(app, ["show", str(tmp_path / "d"), "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "g.png")).shape == (256, 512, 3)
    assert runner.invoke(app, ["--version"]).output.startswith("auto-csc ")


def test_two_images_with_one_stem_are_named(mixed_dataset, tmp_path):
    root = _copy(mixed_dataset, tmp_path)
    first = _first(root, "images")
    cv2.imwrite(str(first.with_suffix(".tif")), read_image(first))
    report = check_dataset(root)
    assert len(report.problems) == 1 and report.problems[0].startswith(f"{first.with_suffix('.tif')}: shares its stem")
    with pytest.raises(CscError, match="shares its stem"):
        open_dataset(root)


def test_counts_not_computed_are_absent_from_the_metadata(tmp_path):
    image, mask = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    with DatasetWriter(tmp_path / "masks_only", source="test") as writer:
        writer.add("a", image, mask)
        writer.add("b", image, mask)
    meta = json.loads((tmp_path / "masks_only" / "dataset.json").read_text())
    assert meta["n_images"] == 2
    assert "counts" not in meta and "images" not in meta, "no instances, no counts: not a count of 0"
    instances = (mask > 0).astype(np.uint16)
    with DatasetWriter(tmp_path / "partly", source="test") as writer:
        writer.add("a", image, mask, instances)
        writer.add("b", image, mask)
    meta = json.loads((tmp_path / "partly" / "dataset.json").read_text())
    assert meta["images"] == {"a": {"rbc": 1, "macrophage": 0}}
    assert "counts" not in meta, "a total over some of the images would pass for the dataset's"


def test_rescale_brings_a_dataset_to_another_pixel_size(tmp_path, mixed_dataset):
    """csc-data rescale: images resampled, class and instance maps by nearest neighbour (ids never blend), counts
    kept; an estimated pixel size is refused unless the camera's is given."""
    import json as _json

    from runtime.data.rescale import rescale_dataset

    zoom = rescale_dataset(mixed_dataset, tmp_path / "fine", 0.2)
    fine = open_dataset(tmp_path / "fine")
    source = open_dataset(mixed_dataset)
    assert zoom == pytest.approx(source.pixel_size_um / 0.2) and fine.pixel_size_um == 0.2
    a, b = source.load(0), fine.load(0)
    assert b.image.shape[:2] == (round(a.image.shape[0] * zoom), round(a.image.shape[1] * zoom))
    assert set(np.unique(b.instances)) == set(np.unique(a.instances)), "no blended or lost ids"
    assert _json.loads((tmp_path / "fine" / "dataset.json").read_text())["counts"] == \
        _json.loads((mixed_dataset / "dataset.json").read_text())["counts"]
    assert check_dataset(tmp_path / "fine").ok
    meta = _json.loads((tmp_path / "fine" / "dataset.json").read_text())
    meta["scale"] = "estimated"
    (tmp_path / "fine" / "dataset.json").write_text(_json.dumps(meta))
    with pytest.raises(CscError, match="estimated"):
        rescale_dataset(tmp_path / "fine", tmp_path / "x", 0.4)
    del meta["pixel_size_um"], meta["scale"]  # an import without --pixel-size: none recorded, none estimated
    (tmp_path / "fine" / "dataset.json").write_text(_json.dumps(meta))
    with pytest.raises(CscError, match="pixel size was not recorded"):
        rescale_dataset(tmp_path / "fine", tmp_path / "x", 0.4)
    assert rescale_dataset(tmp_path / "fine", tmp_path / "back", 0.4, source_pixel_size_um=0.2) == 0.5


def test_synth_and_rescale_refuse_a_folder_that_is_not_new(tmp_path):
    """A second `synth` into a dataset kept the first one's extra images (dataset.json listed 2 of the 4 that
    `check` passed and training read), and `rescale --out` its own input overwrote the images it was reading:
    both now stop before writing, and leave the folder as it was."""
    from runtime.data.rescale import rescale_dataset
    from runtime.data.synthesize import synthesize_dataset

    root = synthesize_dataset("rbc", 4, tmp_path / "d", seed=1, size=48)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(CscError, match="already holds a dataset"):
        synthesize_dataset("mixed", 2, root, seed=1, size=48)
    with pytest.raises(CscError, match="already holds a dataset"):
        rescale_dataset(root, root, 0.8)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(CscError, match="not an empty folder"):
        synthesize_dataset("rbc", 1, tmp_path / "other", size=48)
    (tmp_path / "empty").mkdir()
    assert len(open_dataset(synthesize_dataset("rbc", 1, tmp_path / "empty", size=48))) == 1


def test_paths_with_brackets_are_printed_as_they_are(tmp_path):
    """A folder like `data[/old]` ended synth, check, rescale, show, export and count in rich's MarkupError
    traceback (exit 1) once their work was done, as csc-label and csc-export did: paths are not markup."""
    from typer.testing import CliRunner

    from runtime.cli.data import app

    data, scaled, where = tmp_path / "d[" / "old]", tmp_path / "r[" / "old]", tmp_path / "o[" / "old]"
    commands = [(["synth", "--kind", "rbc", "--n", "1", "--size", "48", "--out", str(data)], data),
                (["check", str(data)], data),
                (["rescale", str(data), "--pixel-size", "0.8", "--from", "0.4", "--out", str(scaled)], scaled),
                (["show", str(data), "--out", str(where / "grid.png")], where / "grid.png"),
                (["export", str(data), "--format", "coco", "--out", str(where / "cells.json")], where / "cells.json"),
                (["count", str(data), "--json", str(where / "counts.json")], where / "counts.json")]
    for args, printed in commands:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert "".join(str(printed).split()) in "".join(result.output.split()), (args, result.output)


def test_show_checks_out_before_rendering(mixed_dataset, tmp_path):
    """`show --out grid` (no extension) failed only after every tile was drawn, with OpenCV's words; a grid
    written into the dataset's images/ became an image without a mask, and the dataset stopped opening."""
    from typer.testing import CliRunner

    from runtime.cli.data import app

    root = _copy(mixed_dataset, tmp_path)
    for out, reason in ((tmp_path / "grid", "not an image file name"), (root / "images" / "grid.png", "images/")):
        result = CliRunner().invoke(app, ["show", str(root), "--out", str(out)])
        assert isinstance(result.exception, CscError) and reason in str(result.exception), result.output
        assert not out.exists()
    assert check_dataset(root).ok


@pytest.mark.parametrize("fmt, target", [("coco", "dataset.json"), ("cvat", "masks/cells.xml"),
                                         ("labelme", "images")])
def test_export_refuses_to_write_among_the_datasets_own_files(mixed_dataset, tmp_path, fmt, target):
    """`export --format coco --out DS/dataset.json` replaced the dataset's description (classes, pixel size,
    provenance) with the COCO file, and `check` still said ok; an export into masks/ or images/ left files there
    that the dataset's readers take for its own."""
    from typer.testing import CliRunner

    from runtime.cli.data import app

    root = _copy(mixed_dataset, tmp_path)
    before = (root / "dataset.json").read_text()
    result = CliRunner().invoke(app, ["export", str(root), "--format", fmt, "--out", str(root / target)])
    assert isinstance(result.exception, CscError) and "among the dataset's own files" in str(result.exception)
    assert (root / "dataset.json").read_text() == before and check_dataset(root).ok
    assert not list((root / "masks").glob("*.xml")) and not list((root / "images").glob("*.json"))


def test_sigterm_stops_a_writing_command_like_ctrl_c(tmp_path):
    """`timeout` and batch schedulers stop with SIGTERM: `csc-data synth` died on the spot, leaving images without
    a dataset.json, which `check` passed as a whole dataset; now dataset.json says it is incomplete."""
    import signal
    import time

    out = tmp_path / "d"
    process = subprocess.Popen([sys.executable, "-c", "from runtime.cli.data import main; main()", "synth", "--kind",
                                "mixed", "--n", "100000", "--size", "64", "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list((out / "instances").glob("*.png"))) < 2:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130 and "Traceback" not in output, output  # as on Ctrl-C
    assert json.loads((out / "dataset.json").read_text())["complete"] is False
    report = check_dataset(out)
    assert not report.ok and "incomplete" in report.problems[-1]
    assert not [p for p in out.rglob(".*")], "no temporary file left"
