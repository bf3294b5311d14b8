"""Scale without being told (`csc-run --pixel-size auto`): the frames' pixel size from their own cells."""
import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from runtime.backends.onnxruntime import OnnxRuntimeRunner
from runtime.counting.calibration import DISAGREE, MIN_CELLS, calibrate, disagreement
from runtime.cli.run import DEFAULT_MODEL, app as run_app
from runtime.errors import CscError
from runtime.pipeline.stream import Pipeline, RunOptions, Segmenter
from runtime.data.simulator import make_microscope
from runtime.io.sources import Frame, MemorySource


@pytest.fixture(scope="module")
def runner():
    with OnnxRuntimeRunner(DEFAULT_MODEL) as r:
        yield r


@pytest.fixture(scope="module")
def scene():
    """Three simulated fields at the model's 0.4 µm/px."""
    microscope = make_microscope("mixed", seed=12)
    return [microscope.frame(i).image for i in range(3)]


def test_one_scene_at_three_magnifications_counts_alike_with_no_pixel_size(runner, scene):
    """The same fields at 0.4, 0.2 and 0.1 µm/px (enlarged 2× and 4×): each run calibrates to its own scale and
    counts the same cells."""
    runs = {}
    for factor in (1, 2, 4):
        frames = [cv2.resize(f, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR) for f in scene]
        runs[factor] = Pipeline(MemorySource(frames), runner).run()
        calibrated = runs[factor]["scale"]["calibration"]["pixel_size_um"]
        assert calibrated == pytest.approx(0.4 / factor, rel=0.12), (factor, runs[factor]["scale"])
    for factor in (2, 4):
        for name in ("rbc", "macrophage"):
            base, other = runs[1]["counts"][name]["total"], runs[factor]["counts"][name]["total"]
            assert abs(other - base) <= max(2, 0.05 * base), (factor, name, base, other)


def test_the_ruler_is_the_class_the_frames_hold(runner):
    """Macrophage-only fields: macrophages (13–20 µm) are the ruler, not RBCs (5–7 µm), or the scale would be
    off 2.75×."""
    frames = [make_microscope("macrophage", seed=4).frame(i).image for i in range(2)]
    enlarged = [cv2.resize(f, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR) for f in frames]
    zooms = []
    found = calibrate(enlarged, runner.metadata, lambda f, z: zooms.append(z) or Segmenter(runner, zoom=z).segment(f))
    assert found.ruler == "macrophage" and found.pixel_size_um == pytest.approx(0.2, rel=0.15), found
    assert len(zooms) == 2 and zooms[1] > 2 * zooms[0], "segmented again at the macrophage ruler's zoom"


def test_a_frame_is_segmented_once_where_the_first_ruler_stays(runner, scene):
    """Mixed fields, RBCs the ruler from the start: the class map made at its zoom is the one the correction
    measures (a second segmentation at the same zoom was a third of the calibration's time)."""
    zooms = []
    found = calibrate(scene, runner.metadata, lambda f, z: zooms.append(z) or Segmenter(runner, zoom=z).segment(f))
    assert found.ruler == "rbc" and found.pixel_size_um == pytest.approx(0.4, rel=0.12) and len(zooms) == 1, found


def test_a_large_frame_is_calibrated_on_the_centre_one_model_input_holds(runner):
    """A 1024×1024 field at the model's scale: the model sees its centre, one input's worth (one inference, not
    four tiles); where the centre is empty, the whole frame, rather than no correction."""
    field = make_microscope("mixed", size=1024, seed=12).frame(0).image
    empty_centre = field.copy()
    empty_centre[192:832, 192:832] = np.median(field.reshape(-1, 3), axis=0).astype(np.uint8)
    for frame, views in ((field, 1), (empty_centre, 2)):
        shapes = []
        found = calibrate([frame], runner.metadata,
                          lambda f, z: shapes.append((f.shape[:2], z)) or Segmenter(runner, zoom=z).segment(f))
        assert found.pixel_size_um == pytest.approx(0.4, rel=0.12) and len(shapes) == views, (found, shapes)
        (crop, zoom) = shapes[0]
        assert max(crop) * zoom <= 512 < min(crop) * zoom + 2 and crop[0] < 1024, "one model input's worth"
        if views == 2:
            assert shapes[1][0] == (1024, 1024), "the whole frame where the centre shows no cells"


def test_blank_frames_fall_back_to_the_models_pixel_size_and_say_so(runner):
    warnings = []
    blank = [np.full((300, 400, 3), 180, np.uint8)] * 4
    summary = Pipeline(MemorySource(blank), runner, on_warning=warnings.append).run()
    scale = summary["scale"]
    assert scale["calibration"]["pixel_size_um"] is None and scale["zoom"] == 1.0
    assert scale["warning"] and "no calibration" in scale["warning"] and scale["warning"] in warnings
    assert "no calibration" in scale["note"] and "model's 0.4" in scale["note"]
    assert calibrate(blank, runner.metadata).cells < MIN_CELLS


def test_a_given_pixel_size_far_from_the_frames_is_warned_about(runner, scene):
    warnings = []
    summary = Pipeline(MemorySource(scene), runner, options=RunOptions(pixel_size_um=0.9),
                       on_warning=warnings.append).run()
    assert summary["scale"]["pixel_size_um"] == 0.9, "the given value is used"
    assert summary["scale"]["warning"] in warnings and "--pixel-size 0.9" in summary["scale"]["warning"]
    found = summary["scale"]["calibration"]
    assert disagreement(found["pixel_size_um"] * DISAGREE * 0.95, calibrate(scene, runner.metadata)) is None


def test_save_calibration_then_the_next_run_starts_from_it(scene, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(DEFAULT_MODEL.read_bytes())
    images = tmp_path / "images"
    images.mkdir()
    for i, frame in enumerate(scene):
        cv2.imwrite(str(images / f"f{i}.png"), cv2.resize(frame, None, fx=2, fy=2))
    first = CliRunner().invoke(run_app, ["--images", str(images), "--model", str(model), "--no-show",
                                         "--save-calibration", "--save-csv", str(tmp_path / "c.csv")])
    assert first.exit_code == 0, first.output
    saved = json.loads((tmp_path / "m.camera.json").read_text())
    assert saved["pixel_size_um"] == pytest.approx(0.2, rel=0.12) and saved["calibration"]["cells"] >= MIN_CELLS
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows[0].endswith(",pixel_size_um") and rows[1].split(",")[-1] == f"{saved['pixel_size_um']:.4g}"
    second = CliRunner().invoke(run_app, ["--images", str(images), "--model", str(model), "--no-show"])
    assert second.exit_code == 0 and "from m.camera.json" in " ".join(second.output.split())


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf"])
def test_a_bad_pixel_size_is_refused(value, tmp_path):
    result = CliRunner().invoke(run_app, ["--source", "demo", "--no-show", "--max-frames", "1", "--pixel-size", value])
    assert isinstance(result.exception, CscError) and "--pixel-size must be 'auto' or a positive" in str(result.exception)


def test_a_change_of_magnification_mid_run_is_seen_and_recalibrated(runner):
    """Eight fields at 0.4 µm/px, then eight at twice the magnification (an objective switched): the change is
    warned about within a few frames, recorded with its frame, and the scale follows; frames with too few cells
    keep the last scale."""
    microscope = make_microscope("rbc", seed=21)
    fields = [microscope.frame(i).image for i in range(8)]
    enlarged = [cv2.resize(f, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR) for f in fields]
    blank = [np.full((512, 512, 3), 200, np.uint8)] * 2
    warnings = []
    summary = Pipeline(MemorySource(fields + blank + enlarged), runner, on_warning=warnings.append).run()
    changes = summary["scale"]["changes"]
    assert len(changes) == 1 and 10 <= changes[0]["frame"] <= 15, changes
    assert changes[0]["pixel_size_um_before"] == pytest.approx(0.4, rel=0.12)
    assert changes[0]["pixel_size_um"] == pytest.approx(0.2, rel=0.15)
    assert sum("the scale changed" in w for w in warnings) == 1
    assert summary["counts"]["rbc"]["min"] == 0, "the blank frames were counted, at the last scale"


def test_a_class_maps_own_cells_give_its_scale_with_the_same_ruler_rule():
    """`csc-data count` without a pixel size reads the scale off each class map through class_map_scale: the class
    with the most cells is the ruler (before, the first class with any: a few RBCs among many macrophages would
    have set a macrophage field's scale 2.75× off)."""
    from runtime.counting.calibration import class_map_scale
    from runtime.classes import CLASS_NAMES
    from runtime.counting.counter import CellCounter, CountingConfig

    frame = make_microscope("mixed", seed=3).frame(0)
    pixel, ruler = class_map_scale(frame.semantic, CLASS_NAMES)
    assert ruler == "rbc" and pixel == pytest.approx(0.4, rel=0.15)
    macrophages = make_microscope("macrophage", seed=3).frame(0).semantic.copy()
    for x in (30, 90, 150):  # three RBCs among the macrophages
        cv2.circle(macrophages, (x, 500), 7, 1, -1)
    pixel, ruler = class_map_scale(macrophages, CLASS_NAMES)
    assert ruler == "macrophage" and 0.4 / 1.5 < pixel < 0.4 * 1.5, pixel  # RBCs as the ruler: 2.75× off
    counted = CellCounter(CountingConfig(pixel_size_um=None)).count(macrophages)
    assert counted.pixel_size_um == pytest.approx(pixel) and counted.scale == "estimated"
    assert class_map_scale(np.zeros((64, 64), np.uint8), CLASS_NAMES) is None


def test_implausible_calibrations_are_refused_not_applied():
    """Cells too small to measure, or a scale that would enlarge frames past ×4 (MAX_ENLARGE; tiles grow with its
    square), give no calibration — the run then keeps the model's pixel size and says so."""
    from runtime.backends.model_meta import ModelMetadata

    def discs(radius):
        image = np.full((256, 256, 3), 210, np.uint8)
        for y in range(20, 240, 30):
            for x in range(20, 240, 30):
                cv2.circle(image, (x, y), radius, (90, 90, 90), -1)
        return image

    meta = ModelMetadata(classes=["background", "rbc", "macrophage"], input_size=(64, 64), arch="test")
    assert not calibrate([discs(1)], meta).found, "2–3 px specks are no cells to measure"
    ok = calibrate([discs(6)], meta)
    assert ok.found and ok.pixel_size_um == pytest.approx(0.4 * 15 / 13, rel=0.2)
    meta.cell_diameter_px = {"rbc": 13 * 5.0}  # a model that saw its RBCs 5× larger: frames enlarged ×5
    refused = calibrate([discs(6)], meta)
    assert not refused.found and "enlarging" in refused.note


def test_label_free_frames_at_a_high_magnification_are_measured_on_the_copy_that_shows_their_cells():
    """Unstained DIC RBCs 30 px across (the simulator at 0.2 µm/px; seed 55): the classical measure the calibration
    starts from reads their size off the copy where the first pass sees cells (`first_pass`), not the 5-px relief
    edges and specks of the full size, which made the calibration 6× too coarse."""
    from runtime.counting.calibration import cell_diameters

    frames = [make_microscope("rbc", seed=55, optics="dic", pixel_size_um=0.2, density=55 / 4).frame(i).image
              for i in range(2)]
    for frame in frames:
        assert abs(np.median(cell_diameters(frame)) / 30.0 - 1) < 0.2


def test_sparse_label_free_frames_are_measured_together():
    """Simulated DIC fields of one to eight 60-px RBCs among debris (0.1 µm/px, seed 56): frame by frame, each
    has too few cells on the copy that shows them and measures its specks (8 px); the calibration's frames,
    measured as one (`frames_diameters`), show the cells' size."""
    from runtime.counting.calibration import cell_diameters, frames_diameters

    microscope = make_microscope("rbc", size=1024, seed=56, optics="dic", pixel_size_um=0.1, density=55 / 16 * 0.3)
    frames = [microscope.frame(i).image for i in range(3)]
    alone = np.concatenate([d for d in map(cell_diameters, frames) if d is not None])
    assert np.median(alone) < 15
    together, gave = frames_diameters(frames)
    assert abs(np.median(together) / 60 - 1) < 0.2 and 1 <= gave <= 3


def test_a_sparse_first_frame_leaves_the_ruler_to_the_next_frames_too(runner, scene):
    """Where the model finds fewer than MIN_CELLS cells in the first frame, the next frames are segmented as well
    and the ruler is the class with the most cells over them: one macrophage-like blob in the first frame must not
    make macrophages the ruler of a run whose next frames show RBCs (a sparse field: a few cells a frame)."""
    maps = []
    for k in range(3):
        class_map = np.zeros((512, 512), np.uint8)
        if k == 0:
            cv2.circle(class_map, (256, 256), 20, 2, -1)
        else:
            for x in (100, 250, 400):
                cv2.circle(class_map, (x, 200 + 30 * k), 7, 1, -1)
        maps.append(class_map)
    segmented = []

    def segment(frame, zoom):
        k = next(i for i, f in enumerate(scene) if np.shares_memory(frame, f))  # a frame or its centre
        segmented.append(k)
        return maps[k]

    found = calibrate(scene, runner.metadata, segment)
    assert set(segmented[:-2]) == {0} and segmented[-2:] == [1, 2], \
        ("the first frame (its centre, then all of it), then the next ones until they hold MIN_CELLS cells", segmented)
    assert found.ruler == "rbc" and "rbcs of" in found.note, found


def test_a_large_frame_is_seen_one_model_input_at_a_time_when_the_ruler_changes(runner):
    """A large field whose cells the model calls macrophages: segmented first at the RBC ruler's zoom, then again
    at the macrophage ruler's, each time on the centre that one model input holds at that zoom (the crop chosen at
    the first zoom, segmented at the second, would take about nine tiles)."""
    frames = [make_microscope("macrophage", size=1536, seed=4).frame(0).image]
    views = []

    def segment(view, zoom):  # the model's answer: six macrophages, whatever the zoom
        views.append((view.shape[:2], zoom))
        class_map = np.zeros([round(side * zoom) for side in view.shape[:2]], np.uint8)
        for k in range(6):
            cv2.circle(class_map, (40 + 70 * k, 200), 20, 2, -1)
        return class_map

    found = calibrate(frames, runner.metadata, segment)
    assert found.ruler == "macrophage" and len(views) == 2 and views[1][1] > 2 * views[0][1], (found, views)
    assert all(max(shape) * zoom <= 512 + 2 for shape, zoom in views), ("one model input's worth each", views)
    assert views[1][0][0] < views[0][0][0] < 1536, "a smaller centre at the larger zoom"


def test_a_grey_field_read_as_a_stain_is_measured_with_the_label_free_frames_it_is_among(monkeypatch):
    """`frames_diameters`: among mostly label-free frames, a frame taken for a stain without a stain's colour (a
    sparse DIC field reads like that) is measured as one of them, not by the stain's Otsu mask; among mostly
    stained frames it is a stain."""
    from runtime.counting import calibration
    from runtime.data.simulator import make_microscope

    grey = np.full((256, 256), 180, np.uint8)
    for x, y in ((60, 60), (180, 100), (100, 190)):
        cv2.circle(grey, (x, y), 14, 120, -1)
    dic = [make_microscope("macrophage", size=256, seed=5, optics="dic").frame(i).image for i in range(2)]
    stained = [make_microscope("rbc", size=256, seed=7).frame(i).image for i in range(2)]
    otsu = []
    real = calibration._stained_diameters
    monkeypatch.setattr(calibration, "_stained_diameters", lambda image: otsu.append(image) or real(image))
    calibration.frames_diameters([*dic, grey])
    assert otsu == [], "the grey field joined the label-free frames"
    calibration.frames_diameters([*stained, grey])
    assert len(otsu) == 3 and otsu[-1] is grey


def _votes_rbc(view, zoom):
    """A model's answer that calls every cell an RBC, whatever the zoom (a label-free model shown macrophages
    shrunk to RBC size does much the same)."""
    class_map = np.zeros([round(side * zoom) for side in view.shape[:2]], np.uint8)
    for k in range(6):
        cv2.circle(class_map, (40 + 70 * k, 200), 7, 1, -1)
    return class_map


def test_a_ruler_given_is_taken_without_the_models_vote(runner):
    """`calibrate`'s ``ruler`` (csc-run --calibrate-on): macrophage fields that the model would vote RBCs are
    calibrated on macrophages, segmented once at that ruler's zoom; the vote's own answer says it voted."""
    frames = [make_microscope("macrophage", seed=4).frame(i).image for i in range(2)]
    voted = calibrate(frames, runner.metadata, _votes_rbc)
    zooms = []
    given = calibrate(frames, runner.metadata, lambda v, z: zooms.append(z) or _votes_rbc(v, z), ruler="macrophage")
    assert voted.ruler == "rbc" and voted.voted and "by the model" in voted.describe(), voted
    assert given.ruler == "macrophage" and not given.voted and "by the model" not in given.describe(), given
    assert len(zooms) == 1 and given.pixel_size_um > 2 * voted.pixel_size_um, (zooms, given, voted)
    with pytest.raises(CscError, match="not a cell class"):
        calibrate(frames, runner.metadata, _votes_rbc, ruler="wbc")
    with pytest.raises(CscError, match="not a cell class"):
        Pipeline(MemorySource(frames), runner, options=RunOptions(calibrate_on="wbc"))


def test_a_vote_on_label_free_frames_is_warned_about_and_a_named_ruler_is_not(runner):
    """`vote_warning`: a ruler the model voted on label-free frames names the other class's --calibrate-on; a vote
    on stained frames (colour tells the cells apart), a named ruler and a failed calibration say nothing."""
    from dataclasses import replace

    from runtime.counting.calibration import Calibration, vote_warning

    voted = Calibration(0.2, 0.1, 40, 3, "rbc", "", voted=True, label_free=True)
    warning = vote_warning(voted, runner.metadata)
    assert warning is not None and "--calibrate-on macrophage" in warning and "--pixel-size" in warning
    assert vote_warning(replace(voted, label_free=False), runner.metadata) is None
    assert vote_warning(replace(voted, voted=False), runner.metadata) is None
    assert vote_warning(replace(voted, pixel_size_um=None), runner.metadata) is None


@pytest.mark.parametrize("named", [None, "macrophage"])
def test_a_run_watches_the_class_its_calibration_took_as_the_ruler(runner, named):
    """The scale watch follows the calibration's ruler, voted (the smear model tells stained macrophages by their
    colour) or named (RunOptions.calibrate_on): an RBC watch over macrophage fields would never see a change."""
    frames = [make_microscope("macrophage", seed=4).frame(i).image for i in range(4)]
    pipeline = Pipeline(MemorySource(frames), runner, options=RunOptions(calibrate_on=named))
    summary = pipeline.run()
    assert summary["scale"]["calibration"]["ruler"] == "macrophage", summary["scale"]
    assert summary["scale"]["calibration"]["voted"] is (named is None)
    assert pipeline.scale_watch.ruler_id == runner.metadata.classes.index("macrophage")


def test_calibrate_on_a_class_the_model_lacks_is_refused_before_a_frame(tmp_path):
    result = CliRunner().invoke(run_app, ["--source", "demo", "--no-show", "--max-frames", "1",
                                          "--calibrate-on", "wbc", "--save-csv", str(tmp_path / "c.csv")])
    assert isinstance(result.exception, CscError) and "'wbc' is not a cell class" in str(result.exception)
    assert "--calibrate-on one of rbc, macrophage" in result.exception.fix and not (tmp_path / "c.csv").exists()


def test_a_run_whose_ruler_was_voted_on_label_free_frames_warns_once(runner):
    """The run's side of `vote_warning`: on DIC frames (the label-free model) a voted ruler is warned about once and
    recorded as the summary's scale warning; with the ruler named, or on stained frames (the smear model), it is
    not."""
    from runtime.cli.run import LABEL_FREE_MODEL

    dic = [make_microscope("mixed", seed=12, optics="dic").frame(i).image for i in range(3)]
    stained = [make_microscope("mixed", seed=12).frame(i).image for i in range(3)]
    with OnnxRuntimeRunner(LABEL_FREE_MODEL) as label_free:
        cases = ((dic, label_free, None, True), (dic, label_free, "rbc", False), (stained, runner, None, False))
        for frames, model, named, warns in cases:
            warnings = []
            summary = Pipeline(MemorySource(frames), model, options=RunOptions(calibrate_on=named),
                               on_warning=warnings.append).run()
            voted = [w for w in warnings if "the model's vote" in w]
            assert len(voted) == warns and summary["scale"]["calibration"]["label_free"] is (frames is dic), \
                (named, warnings, summary["scale"])
            assert (summary["scale"]["warning"] == voted[0]) if voted else summary["scale"]["warning"] is None


def test_a_recalibration_keeps_the_first_calibrations_ruler_and_how_it_was_chosen(runner, monkeypatch):
    """After a change of magnification the run recalibrates with the ruler it had (voted or named), and the record
    says whether that ruler was the model's vote; a named one is passed on as named."""
    from runtime.counting.calibration import Calibration
    from runtime.pipeline import stream

    asked = []

    def calibrate(images, meta, segment, ruler=None, optics=None):
        asked.append(ruler)
        return Calibration(0.2, 0.1, 40, 1, ruler or "macrophage", "stub", voted=ruler is None)

    monkeypatch.setattr(stream, "calibrate", calibrate)
    frame = Frame(0, make_microscope("macrophage", seed=4).frame(0).image, "f0")
    for named in (None, "macrophage"):
        asked.clear()
        pipeline = Pipeline(MemorySource([frame.image]), runner, options=RunOptions(calibrate_on=named))
        pipeline._calibrate([frame])
        pipeline._calibrate([frame], change_at=7)
        assert asked == [named, "macrophage"], asked
        assert pipeline.scale_changes[-1]["calibration"]["voted"] is (named is None), pipeline.scale_changes
        assert pipeline.scale_watch.ruler_id == runner.metadata.classes.index("macrophage")
