"""Blank frames (lens cap, lamp off, a uniform field) are found, and no frame of cells is taken for one: a wrong
"blank" would count real cells as zero."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.counting.blank import is_blank
from runtime.data.modality import MODALITIES
from runtime.data.simulator import make_microscope

REAL = Path(__file__).resolve().parents[4] / "shared" / "real"


def _jpeg(image, quality):
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_uniform_frames_are_blank_lit_or_not(value):
    assert is_blank(np.full((300, 400, 3), value, np.uint8))
    assert is_blank(np.full((300, 400), value * 257, np.uint16))


@pytest.mark.parametrize("level, sigma", [(3, 2), (20, 6)])
def test_dark_noisy_frames_are_blank_raw_demosaiced_or_compressed(level, sigma):
    rng = np.random.default_rng(level)
    dark = np.clip(level + rng.normal(0, sigma, (960, 1280)), 0, 255).astype(np.uint8)
    for frame in (dark, _jpeg(dark, 70), cv2.cvtColor(dark, cv2.COLOR_BayerBG2BGR), cv2.GaussianBlur(dark, (0, 0), 0.7)):
        assert is_blank(frame)


def test_a_few_faint_cells_in_a_dark_frame_are_not_blank():
    rng = np.random.default_rng(0)
    frame = np.clip(5 + rng.normal(0, 2, (512, 512)), 0, 255).astype(np.uint8)
    for x in (100, 300):
        cv2.circle(frame, (x, 200), 15, 20, -1)  # fluorescence: two dim cells, 15 grey levels above a dark field
    assert not is_blank(frame)


@pytest.mark.parametrize("optics", MODALITIES)
@pytest.mark.parametrize("kind", ["rbc", "macrophage"])
def test_simulated_frames_of_every_optics_are_not_blank(optics, kind):
    microscope = make_microscope(kind, size=512, seed=11, optics=optics)
    assert not any(is_blank(microscope.frame(i).image) for i in range(4))


def test_a_full_frame_of_small_reliefs_is_not_blank_and_full_frames_of_noise_are():
    """A 4000×3000 simulated frame of 15-px DIC RBCs (seed 43: the label-free benchmark's full-frame scene) averages
    to flat on the whole frame's 256-px copy, where each relief's bright and dark halves cancel: its windows show
    the cells. Noise fills every window of a full frame alike, compressed or demosaiced, and stays blank."""
    from runtime.counting.blank import _flat

    frame = make_microscope("rbc", size=4000, seed=43, optics="dic", height=3000).frame(0).image
    assert _flat(frame, noise_test_lit=False), "the whole frame's copy alone takes it for blank"
    assert not is_blank(frame)
    rng = np.random.default_rng(2)
    dark, lit = (np.clip(level + rng.normal(0, sigma, (3000, 4000)), 0, 255).astype(np.uint8)
                 for level, sigma in ((20, 6), (180, 4)))
    for frame in (dark, _jpeg(dark, 70), cv2.cvtColor(lit, cv2.COLOR_BayerBG2BGR), cv2.GaussianBlur(lit, (0, 0), 0.7)):
        assert is_blank(frame)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real images not present at {REAL} (see its README)")
@pytest.mark.parametrize("pattern", ["chula-rbc12/images/*", "bccd-txlpbc/images/*", "bbbc030-dic/images/*.png"])
def test_real_images_are_not_blank(pattern):
    from runtime.io.imageio import read_image

    files = sorted(REAL.glob(pattern))[::20]
    assert files, f"no {pattern} under {REAL}"
    assert not any(is_blank(read_image(f)) for f in files)
