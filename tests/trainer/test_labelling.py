import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from runtime.data.dataset import check_dataset
from runtime.errors import CscError
from runtime.data.synthesize import synthesize_dataset
from trainer.autolabel import AutoLabelConfig
from trainer.cli.label import app
from trainer.labelling import label_folder


@pytest.fixture(scope="module")
def rbc_images(tmp_path_factory):
    root = synthesize_dataset("rbc", 5, tmp_path_factory.mktemp("rbc"), seed=2, size=256)
    return root / "images"


def test_folder_becomes_a_valid_dataset_and_bad_images_are_skipped(rbc_images, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    for p in rbc_images.iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    (images / "zz_broken.png").write_bytes(b"\x89PNG garbage")
    run = label_folder(images, tmp_path / "out", AutoLabelConfig(kind="rbc"), workers=2)
    assert run.labelled == 5 and len(run.skipped) == 1 and "zz_broken.png" in run.skipped[0][0]
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["skipped"][0]["file"].endswith("zz_broken.png") and meta["complete"] is True
    assert meta["polarity"] == {"dark": 5}
    assert check_dataset(tmp_path / "out").ok
    mask = (tmp_path / "out" / "masks" / "rbc_00000.png")
    assert mask.exists()
    linked = tmp_path / "out" / "images" / "rbc_00000.png"
    assert linked.stat().st_ino == (images / "rbc_00000.png").stat().st_ino, "same file system: hard link"
    label_folder(images, tmp_path / "copied", AutoLabelConfig(kind="rbc"), workers=1, copy_images=True)
    copied = tmp_path / "copied" / "images" / "rbc_00000.png"
    assert copied.stat().st_ino != linked.stat().st_ino and copied.read_bytes() == linked.read_bytes()
    with pytest.raises(CscError, match="zz_broken.png"):
        label_folder(images, tmp_path / "strict", AutoLabelConfig(kind="rbc"), strict=True, workers=1)


def test_refuses_to_overwrite_the_input_dataset(rbc_images):
    with pytest.raises(CscError, match="holds the input images"):
        label_folder(rbc_images, rbc_images.parent, AutoLabelConfig(kind="rbc"))


def test_cli_contract_writes_masks_instances_and_preview(rbc_images, tmp_path):
    out = tmp_path / "lab"
    result = CliRunner().invoke(app, ["auto", str(rbc_images), "--kind", "rbc", "--out", str(out), "--split-touching",
                                      "--preview", str(tmp_path / "p.png"), "--polarity", "auto"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "masks").glob("*.png"))) == 5
    assert len(list((out / "instances").glob("*.png"))) == 5
    printed = " ".join(result.output.split())
    assert (tmp_path / "p.png").exists() and "polarity: dark ×5" in printed
    meta = json.loads((out / "dataset.json").read_text())
    # No --pixel-size: the diameter is estimated in every image, printed, and recorded with the pixel size it
    # implies (the simulator's RBCs are 5–7 µm at 0.4 µm/px, i.e. 12.5–17.5 px).
    assert meta["scale"] == "estimated" and 12 <= meta["diameter_px"]["median"] <= 18
    assert f"median {meta['diameter_px']['median']:.1f} px" in printed
    assert abs(meta["pixel_size_um"] - 0.4) < 0.1
    assert set(meta["autolabel_images"]) == {f"rbc_{i:05d}" for i in range(5)}
    labels = check_dataset(out)
    assert labels.ok and labels.cells["rbc"] > 0 and labels.cells["macrophage"] == 0
    # the labels are close to the simulator's ground truth (mIoU over background and cells, paper eq. 5)
    import cv2

    from trainer.metrics import confusion_matrix, miou

    truth = cv2.imread(str(rbc_images.parent / "masks" / "rbc_00000.png"), cv2.IMREAD_UNCHANGED) > 0
    pred = cv2.imread(str(out / "masks" / "rbc_00000.png"), cv2.IMREAD_UNCHANGED) > 0
    assert miou(confusion_matrix(pred, truth, 2)) > 0.8


@pytest.mark.parametrize("modality, hint", [("auto", True), ("brightfield", False)])
def test_lit_images_without_a_cell_are_named(rbc_images, tmp_path, modality, hint):
    """A lit image that gives no cell (an empty field, or cells the labeller missed: a stained smear imaged in grey
    was taken for unstained brightfield and gave none, silently) is counted and the first named, with the
    --modality hint where the optics were guessed; a blank frame is no such image."""
    images = tmp_path / "in"
    images.mkdir()
    for p in list(rbc_images.iterdir())[:2]:
        (images / p.name).write_bytes(p.read_bytes())
    noise = np.random.default_rng(0).normal(128, 6, (256, 256)).clip(0, 255).astype(np.uint8)  # lit, cell-free
    cv2.imwrite(str(images / "zz_noise.png"), noise)
    cv2.imwrite(str(images / "zz_black.png"), np.zeros((256, 256), np.uint8))  # blank: no cell expected
    result = CliRunner().invoke(app, ["auto", str(images), "--kind", "rbc", "--out", str(tmp_path / "out"),
                                      "--modality", modality])
    printed = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "no cell found in 1 image(s) that are not blank (the first: zz_noise.png, taken for" in printed
    assert ("give --modality" in printed) == hint
    # optics given: they may be the wrong ones (a stained smear labelled as DIC found no cell, and said nothing)
    assert ("or they are not brightfield images: give their optics with --modality, or auto" in printed) != hint
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["autolabel_images"]["zz_noise"]["cell_px"] == 0 < meta["autolabel_images"]["rbc_00000"]["cell_px"]


def test_paths_with_brackets_are_printed_as_they_are(rbc_images, tmp_path):
    """An --out like `labels[/old]` ended auto (after every image was labelled) and ablation (after its report was
    written) in rich's MarkupError traceback, exit 1, and `[bold]` vanished from the paths printed: paths are not
    markup."""
    out, preview = tmp_path / "labels[" / "old] [bold]", tmp_path / "p [bold].png"  # out reads labels[/old] [bold]
    result = CliRunner().invoke(app, ["auto", str(rbc_images), "--kind", "rbc", "--out", str(out),
                                      "--preview", str(preview)])
    printed = " ".join(result.output.split())
    assert result.exit_code == 0 and f"into {out}" in printed and f"preview: {preview}" in printed, result.output
    report = out / "ablation.md"
    result = CliRunner().invoke(app, ["ablation", str(out), "--no-real", "--out", str(report)])
    printed = " ".join(result.output.split())
    assert result.exit_code == 0 and f"wrote {report} and {report.with_suffix('.json')}" in printed, result.output


def test_cli_rejects_even_block_size(rbc_images, tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", "from trainer.cli.label import main; main()", "auto", str(rbc_images),
                          "--kind", "rbc", "--out", str(tmp_path / "o"), "--block-size", "30"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "block-size must be odd" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name, message", [("pv", "is not an image file name"), ("pv.txt", "is not an image file name"),
                                           ("folder", "names a folder")])
def test_a_bad_preview_path_is_refused_before_any_image_is_labelled(rbc_images, tmp_path, name, message):
    (tmp_path / "folder").mkdir()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["auto", str(rbc_images), "--kind", "rbc", "--out", str(out),
                                      "--preview", str(tmp_path / name)])
    assert isinstance(result.exception, CscError) and f"--preview {message}" in str(result.exception)
    assert not out.exists()


@pytest.mark.parametrize("name, message", [("out/images/p.png", "--preview lies among the dataset's own files"),
                                           ("out/masks/p.png", "--preview lies among the dataset's own files"),
                                           ("in/p.png", "--preview lies in the folder of images to label")])
def test_a_preview_where_a_run_would_take_it_for_an_image_is_refused(rbc_images, tmp_path, name, message):
    """A preview in OUT/images/ broke the dataset it was made of (`csc-data check`: image has no mask); one in the
    input folder was labelled as a cell image by the same command run again."""
    images = tmp_path / "in"
    images.mkdir()
    for p in rbc_images.iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    result = CliRunner().invoke(app, ["auto", str(images), "--kind", "rbc", "--out", str(tmp_path / "out"),
                                      "--preview", str(tmp_path / name)])
    assert isinstance(result.exception, CscError) and message in str(result.exception), result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / name).exists()


def test_an_earlier_output_is_replaced_only_with_overwrite_and_never_mixed(rbc_images, tmp_path):
    """Labelling into an OUT that held a dataset kept its samples beside the new ones (5 images, dataset.json
    describing 2; stale instances/ disagreeing with new masks)."""
    out = tmp_path / "out"
    label_folder(rbc_images, out, AutoLabelConfig(kind="rbc", split_touching=True), workers=1)
    two = _folder(rbc_images, tmp_path, {})
    with pytest.raises(CscError, match=f"already holds auto-labels of {rbc_images} .* add --overwrite"):
        label_folder(two, out, AutoLabelConfig(kind="rbc"), workers=1)
    assert len(list((out / "masks").iterdir())) == 5 and json.loads((out / "dataset.json").read_text())["n_images"] == 5
    label_folder(two, out, AutoLabelConfig(kind="rbc"), workers=1, overwrite=True)
    assert len(list((out / "images").iterdir())) == len(list((out / "masks").iterdir())) == 2
    assert not (out / "instances").exists() and json.loads((out / "dataset.json").read_text())["n_images"] == 2
    assert check_dataset(out).ok
    label_folder(two, out, AutoLabelConfig(kind="rbc", split_touching=True), workers=1)  # the same input, again
    assert len(list((out / "instances").iterdir())) == len(list((out / "masks").iterdir())) == 2
    assert check_dataset(out).ok, "a rerun of the same command replaces its own output, as scripts expect"


def test_an_out_that_is_not_an_earlier_output_is_refused_even_with_overwrite(rbc_images, tmp_path):
    simulated = synthesize_dataset("rbc", 1, tmp_path / "sim", seed=1, size=64)
    (tmp_path / "killed" / "masks").mkdir(parents=True)  # a run killed before it wrote dataset.json
    (tmp_path / "killed" / "masks" / "a.png").write_bytes(b"a mask")
    (tmp_path / "file").write_text("keep me")
    for out, message in ((simulated, "holds a dataset of simulator labels"),
                         (tmp_path / "killed", "holds masks but no dataset.json"), (tmp_path / "file", "is a file")):
        before = sorted(p.name for p in out.rglob("*")) if out.is_dir() else None
        with pytest.raises(CscError, match=f"--out {message}"):
            label_folder(rbc_images, out, AutoLabelConfig(kind="rbc"), overwrite=True)
        assert (sorted(p.name for p in out.rglob("*")) if out.is_dir() else None) == before
    (tmp_path / "empty").mkdir()
    label_folder(rbc_images, tmp_path / "empty", AutoLabelConfig(kind="rbc"), workers=1)
    (tmp_path / "logged").mkdir()  # `mkdir OUT && csc-label auto … --out OUT | tee OUT/label.log`
    (tmp_path / "logged" / "label.log").write_text("started")
    label_folder(rbc_images, tmp_path / "logged", AutoLabelConfig(kind="rbc"), workers=1)
    assert (tmp_path / "logged" / "label.log").read_text() == "started" and check_dataset(tmp_path / "logged").ok


CTRL_C = """
import os, signal, sys
import trainer.labelling as labelling
from trainer.cli.label import main

label_folder = labelling.label_folder


def ctrl_c_at_the_first_image(*args, on_image, **kwargs):
    def ctrl_c():  # as a terminal sends it, to the whole process group; `timeout -s INT` sends it twice
        os.killpg(0, signal.SIGINT)
        os.killpg(0, signal.SIGINT)
    return label_folder(*args, on_image=ctrl_c, **kwargs)


labelling.label_folder = ctrl_c_at_the_first_image
sys.argv[0] = "csc-label"
main()
"""


def test_ctrl_c_stops_the_workers_and_leaves_only_the_samples_dataset_json_lists(rbc_images, tmp_path):
    """Ctrl-C hung the run (workers interrupted mid-queue) or let it exit while the workers labelled on, leaving
    more masks than dataset.json listed and a mask without its instance map, with no word said."""
    import subprocess
    import sys

    images = tmp_path / "in"
    images.mkdir()
    for i in range(24):  # three chunks of 8 for two workers: one still queued when the first result is in
        source = sorted(rbc_images.iterdir())[i % 5]
        (images / f"{i:02d}.png").write_bytes(source.read_bytes())
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", CTRL_C, "auto", str(images), "--kind", "rbc", "--split-touching",
                          "--workers", "2", "--out", str(out)], capture_output=True, text=True, timeout=300,
                         start_new_session=True)  # its own process group: the signal reaches no one else
    printed = " ".join(run.stderr.split())
    assert run.returncode == 130 and "interrupted: 0 of 24 images labelled" in printed, run.stderr
    assert "Traceback" not in run.stderr
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["complete"] is False and meta["n_images"] == 0
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != "dataset.json"]


CTRL_C_AT_A_WORKERS_START = """
import os, signal, sys
from concurrent.futures import ProcessPoolExecutor
from trainer.cli.label import main

spawn = ProcessPoolExecutor._spawn_process


def spawn_then_ctrl_c(self):  # the worker just started is importing the labeller when the terminal's signal comes
    spawn(self)
    os.killpg(0, signal.SIGINT)


ProcessPoolExecutor._spawn_process = spawn_then_ctrl_c
sys.argv[0] = "csc-label"
main()
"""


def test_ctrl_c_while_the_workers_start_kills_none(rbc_images, tmp_path):
    """A worker reached by Ctrl-C before `_worker_init` made it ignore SIGINT died with a traceback (seen in CI under
    load). Workers now start with SIGINT ignored (`_workers_start_deaf`): a Ctrl-C in that moment is lost, and the
    run labels every image."""
    import subprocess
    import sys

    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", CTRL_C_AT_A_WORKERS_START, "auto", str(rbc_images), "--kind", "rbc",
                          "--split-touching", "--workers", "2", "--out", str(out)], capture_output=True, text=True,
                         timeout=300, start_new_session=True)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert json.loads((out / "dataset.json").read_text())["n_images"] == 5 and check_dataset(out).ok


CTRL_C_ONCE_EVERY_IMAGE_IS_IN = """
import os, signal, sys
import trainer.labelling as labelling

record = labelling._record_decisions


def ctrl_c_then_record(*args):
    os.kill(os.getpid(), signal.SIGINT)
    record(*args)


labelling._record_decisions = ctrl_c_then_record
from trainer.autolabel import AutoLabelConfig

run = labelling.label_folder(sys.argv[1], sys.argv[2], AutoLabelConfig(kind="rbc"), workers=1)
print("labelled", run.labelled)
"""


def test_ctrl_c_once_every_image_is_in_lets_the_dataset_be_finished(rbc_images, tmp_path):
    """A Ctrl-C after the last image's result, while the workers were joined or the run's decisions recorded, ended
    the command with exit 130 and no word said, and left every sample listed in a dataset.json marked incomplete,
    without the estimated pixel size. With every image in, the run now finishes its dataset. (In a process of its
    own: a SIGINT sent to the test session's own process, among its many threads, once ended it.)"""
    import subprocess
    import sys

    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", CTRL_C_ONCE_EVERY_IMAGE_IS_IN, str(rbc_images), str(out)],
                         capture_output=True, text=True, timeout=300, start_new_session=True)
    assert run.returncode == 0 and "labelled 5" in run.stdout, run.stderr
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["complete"] is True and meta["scale"] == "estimated" and check_dataset(out).ok


SIGTERM_AT_THE_FIRST_IMAGE = """
import os, signal, sys
import trainer.labelling as labelling
from trainer.cli.label import main

label_folder = labelling.label_folder
to = sys.argv.pop()


def sigterm_at_the_first_image(*args, on_image, **kwargs):
    def sigterm():  # `timeout` signals its process group, workers included; `kill PID` and `docker stop` the parent
        os.killpg(0, signal.SIGTERM) if to == "group" else os.kill(os.getpid(), signal.SIGTERM)
    return label_folder(*args, on_image=sigterm, **kwargs)


labelling.label_folder = sigterm_at_the_first_image
sys.argv[0] = "csc-label"
main()
"""


@pytest.mark.parametrize("to", ["parent", "group"])
def test_sigterm_stops_a_run_as_ctrl_c_does(rbc_images, tmp_path, to):
    """`timeout`, a batch scheduler's time limit or `kill` stop with SIGTERM: the run died on the spot, leaving
    samples and no dataset.json, and the same command run again refused the folder ("a run that was killed") until
    the user deleted it. It now stops as on Ctrl-C."""
    import subprocess
    import sys

    out = tmp_path / "out"
    command = [sys.executable, "-c", SIGTERM_AT_THE_FIRST_IMAGE, "auto", str(rbc_images), "--kind", "rbc",
               "--split-touching", "--workers", "2", "--out", str(out)]
    run = subprocess.run(command + [to], capture_output=True, text=True, timeout=300, start_new_session=True)
    printed = " ".join(run.stderr.split())
    assert run.returncode == 130 and "interrupted: 0 of 5 images labelled" in printed, run.stderr
    assert "Traceback" not in run.stderr
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["complete"] is False and meta["n_images"] == 0
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != "dataset.json" and not p.name.startswith(".")]
    assert label_folder(rbc_images, out, AutoLabelConfig(kind="rbc"), workers=1).labelled == 5, "the same run again"


def test_counts_only_where_instances_were_written(rbc_images, tmp_path):
    label_folder(rbc_images, tmp_path / "plain", AutoLabelConfig(kind="rbc"), workers=1)
    meta = json.loads((tmp_path / "plain" / "dataset.json").read_text())
    assert meta["n_images"] == 5 and "counts" not in meta and "images" not in meta
    label_folder(rbc_images, tmp_path / "split", AutoLabelConfig(kind="rbc", split_touching=True), workers=1)
    meta = json.loads((tmp_path / "split" / "dataset.json").read_text())
    assert meta["counts"] == check_dataset(tmp_path / "split").cells and meta["counts"]["rbc"] > 0
    assert sum(c["rbc"] for c in meta["images"].values()) == meta["counts"]["rbc"]


def test_cli_refuses_the_input_dataset_as_output_before_any_progress(rbc_images):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", "from trainer.cli.label import main; main()", "auto", str(rbc_images),
                          "--kind", "rbc", "--out", str(rbc_images.parent)], capture_output=True, text=True)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and "holds the input images" in lines[0], run.stderr


def _folder(rbc_images, tmp_path, extra):
    images = tmp_path / "in"
    images.mkdir()
    for p in sorted(rbc_images.iterdir())[:2]:
        (images / p.name).write_bytes(p.read_bytes())
    for name, image in extra.items():
        cv2.imwrite(str(images / name), image)
    return images


def test_a_bad_image_is_reported_and_skipped_and_the_rest_of_the_folder_labelled(rbc_images, tmp_path):
    """A 3×3 PNG (which crashed OpenCV 5.1), a frame of more cells than a uint16 mask holds, and a black frame:
    before, one bad image ended the folder with a traceback, exit 1 and masks left behind."""
    dots = np.full((600, 600), 230, np.uint8)
    dots[::2, ::2] = 20  # 90 000 one-pixel "cells", none touching
    images = _folder(rbc_images, tmp_path, {"tiny.png": np.full((3, 3), 128, np.uint8), "dots.png": dots,
                                            "black.png": np.zeros((64, 64), np.uint8)})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["auto", str(images), "--kind", "rbc", "--split-touching", "--min-area", "1",
                                      "--no-reject", "--pixel-size", "0.4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "tiny.png: too small to label (3×3 px; at least 16×16)" in text
    assert "dots.png: 90000 cells: more than a uint16 instance mask holds" in text
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["complete"] and meta["n_images"] == 3 and meta["threshold"]["blank"] == 1
    assert not (out / "masks" / "dots.png").exists() and not (out / "images" / "dots.png").exists()
    assert not cv2.imread(str(out / "masks" / "black.png"), cv2.IMREAD_UNCHANGED).any()
    assert check_dataset(out).ok
    strict = CliRunner().invoke(app, ["auto", str(images), "--kind", "rbc", "--strict", "--out", str(tmp_path / "s")])
    assert strict.exit_code != 0 and "tiny.png" in str(strict.exception)


def test_nothing_labelled_is_a_failure(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((3, 3), np.uint8))
    result = CliRunner().invoke(app, ["auto", str(images), "--kind", "rbc", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "no image labelled: all 1 were skipped" in str(result.exception)
    assert "modality:" not in result.output and "polarity:" not in result.output, "no empty lines of decisions"


def test_two_images_with_one_stem_are_refused_before_any_work(rbc_images, tmp_path):
    first = sorted(rbc_images.iterdir())[0]
    images = _folder(rbc_images, tmp_path, {first.stem + ".tif": cv2.imread(str(first))})
    with pytest.raises(CscError, match=f"differ only by their extension: {first.stem}.png and {first.stem}.tif"):
        label_folder(images, tmp_path / "out", AutoLabelConfig(kind="rbc"))
    assert not (tmp_path / "out").exists()


def _sparse_dic_rbcs(folder, frames: int = 4) -> int:
    """Simulated DIC fields of one to eight 60-px RBCs among debris (0.1 µm/px, seed 56, 1024 px) written to
    ``folder``; their true cell count."""
    from runtime.data.simulator import make_microscope

    folder.mkdir()
    microscope = make_microscope("rbc", size=1024, seed=56, optics="dic", pixel_size_um=0.1, density=55 / 16 * 0.3)
    cells = 0
    for i in range(frames):
        frame = microscope.frame(i)
        cv2.imwrite(str(folder / f"f{i}.png"), frame.image)
        cells += len(np.unique(frame.instances)) - 1
    return cells


def test_a_folder_of_sparse_fields_is_labelled_at_the_size_its_images_show_together(tmp_path):
    """Each field alone measures its specks (the cells are too few on the copy that shows them) and is labelled
    as dozens of small cells; the folder, measured as one, finds their size, and the fields that measured specks
    are labelled at it (recorded per image as the folder's scale)."""
    from trainer.autolabel import auto_label

    truth = _sparse_dic_rbcs(tmp_path / "in")
    config = AutoLabelConfig(kind="rbc", split_touching=True)
    alone = sum(int(auto_label(cv2.imread(str(p)), config).instances.max()) for p in (tmp_path / "in").iterdir())
    assert alone > 2 * truth
    run = label_folder(tmp_path / "in", tmp_path / "out", config, workers=2)
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["folder_cells"]["copy_factor"] == 4 and abs(meta["folder_cells"]["diameter_px"] / 60 - 1) < 0.15
    assert abs(meta["counts"]["rbc"] / truth - 1) <= 0.2, (meta["counts"], truth)
    assert run.scale["folder"] >= 1 and {d["scale"] for d in meta["autolabel_images"].values()} <= {"folder", "estimated"}


def test_an_image_takes_the_folders_cells_only_where_its_own_measure_much_narrower(tmp_path):
    """`FOLDER_WIDER`: an image whose own cells measure near the folder's, or wider, keeps its own measure (a
    folder of specks must not shrink a field that shows its cells); one whose own measure (or default size, where
    it measured none) is under half the folder's takes the folder's."""
    from dataclasses import replace

    from runtime.data.simulator import make_microscope
    from trainer.autolabel import FOLDER_WIDER, auto_label

    image = make_microscope("rbc", size=256, seed=5, optics="phase").frame(0).image
    config = AutoLabelConfig(kind="rbc", split_touching=True)
    own = auto_label(image, config)
    assert own.scale == "estimated"
    for folder, taken in ((own.diameter_px / 3, False), (own.diameter_px * 1.5, False),
                          (own.diameter_px * FOLDER_WIDER * 1.05, True)):
        label = auto_label(image, replace(config, folder_cells=(folder, 1)))
        assert (label.scale == "folder") == taken and (label.diameter_px == own.diameter_px) != taken, folder
    # A field of one macrophage measures nothing alone and falls back to the kind's default size: the folder's
    # cells replace that default by the same rule (not a folder of specks, narrower than it).
    lone = make_microscope("macrophage", size=256, seed=4, optics="phase", pixel_size_um=0.2, density=2.0,
                           pseudopods=2.0).frame(0).image
    config = AutoLabelConfig(kind="macrophage", split_touching=True, modality="phase")
    default = auto_label(lone, config)
    assert default.scale == "default"
    for folder, scale in ((8.0, "default"), (default.diameter_px * FOLDER_WIDER * 1.05, "folder")):
        assert auto_label(lone, replace(config, folder_cells=(folder, 1))).scale == scale, folder


def test_an_images_folder_measures_serve_its_label_unchanged(monkeypatch):
    """`auto_label`'s ``entry``: the optics and first-pass measures the folder's measure made of an image label it
    exactly as the image's own would, so the labelling pass does not make them again."""
    from runtime.data.simulator import make_microscope
    from trainer.autolabel import auto_label, folder_entry

    image = make_microscope("macrophage", size=256, seed=5, optics="dic", pseudopods=2.0).frame(0).image
    config = AutoLabelConfig(kind="macrophage", split_touching=True)
    entry = folder_entry(image, config)
    assert entry.copies, "a label-free image at an estimated scale is measured"
    alone = auto_label(image, config)
    from trainer import autolabel
    monkeypatch.setattr(autolabel, "detect_modality", lambda image: pytest.fail("optics detected again"))
    given = auto_label(image, config, entry)
    monkeypatch.undo()
    assert np.array_equal(alone.instances, given.instances) and alone.diameter_px == given.diameter_px
    assert folder_entry(image, AutoLabelConfig(kind="macrophage", diameter_px=40.0)).copies is None, "scale given"


def _grey_absorbing_field(seed: int) -> np.ndarray:
    """A grey field whose three cells only darken it: what `detect_modality` takes for a stain imaged in grey
    (tentatively: no colour says so)."""
    rng = np.random.default_rng(seed)
    image = (np.full((256, 256), 180.0) + rng.normal(0, 3, (256, 256))).clip(0, 255).astype(np.uint8)
    for x, y in ((60, 60), (180, 100), (100, 190)):
        cv2.circle(image, (x, y), 14, 120, -1)
    return image


def test_a_folder_of_label_free_images_overrules_a_grey_images_tentative_stain():
    """`for_folder`: where more than half of a folder's checked images are label-free, their commonest optics is
    the folder's, and an image detected as a stain without a stain's colour is labelled in it; a colour stain keeps
    its own, as does every image of a folder of mostly stained images, or with the optics given."""
    from dataclasses import replace

    from runtime.data.modality import detect_modality
    from runtime.data.simulator import make_microscope
    from trainer.autolabel import FolderEntry, auto_label, for_folder

    config = AutoLabelConfig(kind="macrophage", split_touching=True)
    dic, stain, none = FolderEntry("dic", False, None), FolderEntry("stained", True, None), FolderEntry(None, False, None)
    assert for_folder(config, [dic, dic, FolderEntry("phase", False, None), stain, none]).folder_modality == "dic"
    assert for_folder(config, [dic, stain, stain]).folder_modality is None, "half or less label-free"
    assert for_folder(replace(config, modality="dic"), [dic, dic, stain]).folder_modality is None, "optics given"
    grey = _grey_absorbing_field(0)
    assert detect_modality(grey).tentative
    folder = replace(config, folder_modality="dic")
    assert auto_label(grey, config).modality == "stained" and auto_label(grey, folder).modality == "dic"
    smear = make_microscope("rbc", size=256, seed=1).frame(0).image
    assert not detect_modality(smear).tentative and auto_label(smear, folder).modality == "stained"


def test_csc_label_records_the_folders_optics_and_the_images_that_took_them(tmp_path):
    """`csc-label auto DIR`: a folder of DIC frames with one grey field that reads as a stain labels that field in
    DIC and says so in dataset.json (`folder_modality`, and the image's own modality)."""
    from runtime.data.simulator import make_microscope

    images = tmp_path / "in"
    images.mkdir()
    microscope = make_microscope("macrophage", size=256, seed=5, optics="dic", pseudopods=2.0)
    for i in range(3):
        cv2.imwrite(str(images / f"dic{i}.png"), microscope.frame(i).image)
    cv2.imwrite(str(images / "grey.png"), _grey_absorbing_field(1))
    label_folder(images, tmp_path / "out", AutoLabelConfig(kind="macrophage", split_touching=True), workers=2)
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["folder_modality"] == {"modality": "dic", "images": 1}
    assert meta["autolabel_images"]["grey"]["modality"] == "dic" and meta["modality"] == {"dic": 4}
