"""The simulated microscope photographs one scene in every optics: same ground truth, each optics' physics."""
import json
import math

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from runtime.data.modality import MODALITIES
from runtime.data.simulator import SimConfig, SimulatedMicroscope, make_microscope

# Sparse, separate cells on an even lamp: each cell's own signature can be read off the frame.
SPARSE = dict(height=256, width=256, density=20, touching_prob=0.0, macrophage_touching_prob=0.0, max_overlap=0.0,
              debris_per_frame=0.0, illumination=0.0)


def _microscope(optics: str, mode: str = "mixed", seed: int = 5) -> SimulatedMicroscope:
    return SimulatedMicroscope(SimConfig(mode=mode, optics=optics, macrophage_fraction=0.4, **SPARSE), seed=seed)


def _grey(frame) -> np.ndarray:
    return frame.image.astype(np.float32).mean(axis=2)


def _distance_to_cells(frame) -> np.ndarray:
    return cv2.distanceTransform((frame.instances == 0).astype(np.uint8), cv2.DIST_L2, 5)


def _far_background(frame) -> float:
    return float(np.median(_grey(frame)[_distance_to_cells(frame) > 30]))


def _contrast(frame) -> float:
    """Mean |cell − background| over the background."""
    background = _far_background(frame)
    return float(np.abs(_grey(frame)[frame.instances > 0] - background).mean() / background)


def test_every_optics_shows_the_same_scene_with_the_same_ground_truth():
    for index in (0, 3):
        frames = {optics: make_microscope("mixed", size=128, seed=2, optics=optics).frame(index)
                  for optics in MODALITIES}
        reference = frames["stained"]
        assert sum(reference.counts.values()) > 0
        for optics, frame in frames.items():
            assert np.array_equal(frame.semantic, reference.semantic), optics
            assert np.array_equal(frame.instances, reference.instances), optics
            assert frame.counts == reference.counts, optics
            assert frame.image.dtype == np.uint8 and frame.image.shape == (128, 128, 3)
        images = [frame.image for frame in frames.values()]
        assert all(not np.array_equal(a, b) for i, a in enumerate(images) for b in images[i + 1 :])
    for optics in MODALITIES[1:]:  # label-free and fluorescence cameras are grey
        spread = np.ptp(frames[optics].image.astype(np.int16), axis=2).mean()
        assert spread < 6, (optics, spread)


def test_stream_keeps_the_scene_in_every_optics():
    streams = {optics: list(make_microscope("mixed", size=96, seed=3, optics=optics).stream(n_frames=2))
               for optics in MODALITIES}
    for optics, frames in streams.items():
        for frame, reference in zip(frames, streams["stained"]):
            assert np.array_equal(frame.instances, reference.instances), optics
            assert frame.counts == reference.counts, optics


def test_new_options_at_their_defaults_leave_the_stained_frame_alone():
    default = SimulatedMicroscope(SimConfig(height=128, width=128), seed=6).frame(2)
    explicit = SimulatedMicroscope(SimConfig(height=128, width=128, optics="stained", pseudopods=0.0), seed=6).frame(2)
    assert np.array_equal(default.image, explicit.image) and np.array_equal(default.instances, explicit.instances)


def test_pseudopods_grow_macrophages_and_change_nothing_else():
    plain, spread = (make_microscope("mixed", size=256, seed=4, macrophage_fraction=0.5, pseudopods=p)
                     for p in (0.0, 3.0))
    plain_area = spread_area = 0
    for index in range(3):
        a, b = plain.frame(index), spread.frame(index)
        assert a.counts == b.counts
        assert not np.any((a.semantic > 0) & (b.semantic == 0)), "pseudopods only add to cells"
        plain_area += int((a.semantic == 2).sum())
        spread_area += int((b.semantic == 2).sum())
        # the protrusions' pixels (and the defocus blur around them) are the only change: same scene, same draws
        changed = cv2.dilate((a.instances != b.instances).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        assert np.array_equal(a.image[~changed], b.image[~changed])
    assert spread_area > 1.03 * plain_area


def _isolated_cells(frame, margin: int):
    """(mask of the cell and its margin, centre) of each cell whose margin touches no other cell and no border."""
    h, w = frame.instances.shape
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    for label in range(1, int(frame.instances.max()) + 1):
        cell = (frame.instances == label).astype(np.uint8)
        region = cv2.dilate(cell, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))) > 0
        ys, xs = np.nonzero(cv2.dilate(cell, kernel))
        if ys.min() == 0 or xs.min() == 0 or ys.max() == h - 1 or xs.max() == w - 1:
            continue
        if np.setdiff1d(frame.instances[ys, xs], [0, label]).size:
            continue
        yc, xc = np.nonzero(cell)
        yield region, (float(yc.mean()), float(xc.mean()))


def test_dic_is_a_relief_along_the_shear():
    projections, balances = [], []
    for seed in (5, 9):  # shear at 45° and at 225°
        microscope = _microscope("dic", seed=seed)
        angle = math.radians(microscope.optics.shear_deg)
        for index in range(3):
            frame = microscope.frame(index)
            deviation = _grey(frame) - _far_background(frame)
            ys, xs = np.mgrid[: deviation.shape[0], : deviation.shape[1]]
            for region, (cy, cx) in _isolated_cells(frame, margin=8):
                along = (xs[region] - cx) * math.cos(angle) + (ys[region] - cy) * math.sin(angle)
                dev = deviation[region]
                projections.append(float((dev * along).sum() / (np.abs(dev) * np.abs(along)).sum()))
                balances.append(abs(float(dev.mean())) / float(np.abs(dev).mean()))
    assert len(projections) >= 8
    signs = np.sign(projections)
    assert np.all(signs == signs[0]), projections  # one bright and one dark side, the same way round for every cell
    assert np.median(np.abs(projections)) > 0.3
    assert np.median(balances) < 0.25  # a relief, not a darkening or brightening of the cell


def test_phase_contrast_has_dark_cells_and_bright_halos():
    microscope = _microscope("phase")
    for index in range(3):
        frame = microscope.frame(index)
        grey, distance = _grey(frame), _distance_to_cells(frame)
        background = _far_background(frame)
        halo = grey[(distance > 1) & (distance <= 5)].mean()
        assert halo > background + 3, (halo, background)
        assert grey[frame.instances > 0].mean() < background - 15


def test_unstained_brightfield_is_faint_and_fluorescence_dark_with_bright_cells():
    frames = {optics: _microscope(optics).frame(1) for optics in ("stained", "brightfield", "fluorescence")}
    assert _contrast(frames["brightfield"]) < 0.5 * _contrast(frames["stained"])
    assert 0.02 < _contrast(frames["brightfield"]) < 0.15
    fluorescence = frames["fluorescence"]
    background = _far_background(fluorescence)
    assert background < 40
    assert _grey(fluorescence)[fluorescence.instances > 0].mean() > background + 40


def test_unknown_optics_is_a_clear_error():
    with pytest.raises(ValueError, match="optics must be one of stained, brightfield, phase, dic, fluorescence"):
        make_microscope("rbc", optics="darkfield")
    with pytest.raises(ValueError, match="pseudopods"):
        SimConfig(pseudopods=-1)


def test_cli_synth_records_the_optics(tmp_path):
    from runtime.cli.data import app

    result = CliRunner().invoke(app, ["synth", "--kind", "macrophage", "--n", "2", "--out", str(tmp_path / "d"),
                                      "--size", "64", "--optics", "dic", "--pseudopods", "1.5"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert meta["optics"] == "dic" and meta["pseudopods"] == 1.5
    assert sorted(p.name for p in (tmp_path / "d" / "images").iterdir()) == ["macrophage_00000.png",
                                                                               "macrophage_00001.png"]
    bad = CliRunner().invoke(app, ["synth", "--kind", "rbc", "--n", "1", "--out", str(tmp_path / "e"),
                                   "--optics", "xray"])
    assert bad.exit_code != 0
