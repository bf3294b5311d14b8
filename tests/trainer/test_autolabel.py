"""Each auto-labelling step on small hand-made images with known answers."""
import cv2
import numpy as np
import pytest

from runtime.classes import MACROPHAGE, RBC
from trainer.autolabel import AutoLabelConfig, auto_label, config_for, detect_polarity, fill_holes

BG = 200


def canvas(h=96, w=160):
    return np.full((h, w), BG, np.uint8)


def iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def plain(kind="rbc", **kw):
    """Fixed parameters, so the tests do not depend on the size-derived defaults."""
    base = dict(block_size=41, offset=10, min_area_px=20, pixel_size_um=0.4)
    base.update(kw)
    return config_for(kind, **base)


def test_dark_disc_is_found_with_the_kinds_class_id():
    img = canvas()
    cv2.circle(img, (50, 48), 12, 90, -1)
    truth = np.zeros_like(img, bool)
    cv2.circle(truth.view(np.uint8), (50, 48), 12, 1, -1)
    rbc = auto_label(img, plain("rbc"))
    assert set(np.unique(rbc.mask)) == {0, RBC}
    assert iou(rbc.mask > 0, truth) > 0.9
    macro = auto_label(img, plain("macrophage", morphology=False))
    assert set(np.unique(macro.mask)) == {0, MACROPHAGE}


def test_contour_filling_turns_a_ring_into_a_disc():
    img = canvas()
    cv2.circle(img, (80, 48), 14, 80, 3)  # a dark rim with a background-coloured centre (biconcave RBC)
    filled = auto_label(img, plain()).mask > 0
    ring_only = auto_label(img, plain(contours=False)).mask > 0
    assert filled[48, 80] and not ring_only[48, 80]
    assert filled.sum() > 1.5 * ring_only.sum()


def test_hole_filling_without_contours():
    ring = np.zeros((40, 40), np.uint8)
    cv2.circle(ring, (20, 20), 10, 255, 3)
    assert ring[20, 20] == 0 and fill_holes(ring)[20, 20] == 255
    img = canvas()
    cv2.circle(img, (80, 48), 14, 80, 3)
    assert auto_label(img, plain(contours=False, fill_holes=True)).mask[48, 80] == RBC


def test_small_areas_are_removed_in_px_and_um2():
    img = canvas()
    cv2.circle(img, (40, 48), 12, 80, -1)  # area ≈ 450 px
    cv2.circle(img, (120, 48), 2, 80, -1)  # a speck of ≈ 13 px
    mask = auto_label(img, plain(min_area_px=30)).mask
    assert mask[48, 40] == RBC and mask[48, 120] == 0
    assert auto_label(img, plain(min_area_px=0)).mask[48, 120] == RBC
    # 30 px at 0.5 µm/px is 7.5 µm²
    cfg = config_for("rbc", block_size=41, offset=10, min_area_um2=7.5, pixel_size_um=0.5)
    assert cfg.min_area == 30 and auto_label(img, cfg).mask[48, 120] == 0


def test_gaussian_filter_removes_salt_noise_before_thresholding():
    rng = np.random.default_rng(0)
    img = np.clip(canvas() + rng.normal(0, 6, canvas().shape), 0, 255).astype(np.uint8)  # sensor noise, σ 6
    noisy = auto_label(img, plain(min_area_px=0, contours=False, gaussian=False)).mask
    smooth = auto_label(img, plain(min_area_px=0, contours=False, gaussian=True)).mask
    assert (noisy > 0).sum() > 10 * max(1, (smooth > 0).sum())


def test_erosion_then_dilation_separates_stuck_macrophages():
    img = canvas()
    cv2.circle(img, (50, 48), 18, 90, -1)
    cv2.circle(img, (100, 48), 18, 90, -1)
    cv2.line(img, (60, 48), (90, 48), 90, 1)  # a one-pixel bridge: cells stuck together
    n = lambda m: cv2.connectedComponents((m > 0).astype(np.uint8))[0] - 1
    assert n(auto_label(img, plain("macrophage", morphology=False)).mask) == 1
    assert n(auto_label(img, plain("macrophage", morphology=True)).mask) == 2
    assert AutoLabelConfig(kind="macrophage").use_morphology and not AutoLabelConfig(kind="rbc").use_morphology


def test_watershed_split_gives_two_instances_for_two_touching_discs():
    img = canvas()
    cv2.circle(img, (60, 48), 15, 80, -1)
    cv2.circle(img, (86, 48), 15, 80, -1)  # overlapping by 4 px: one blob in the mask
    without = auto_label(img, plain())
    assert without.instances is None
    assert cv2.connectedComponents((without.mask > 0).astype(np.uint8))[0] - 1 == 1
    split = auto_label(img, plain(split_touching=True, pixel_size_um=6.0 / 24))  # min RBC radius 10 px
    assert split.instances is not None and split.instances.max() == 2
    assert split.instances[48, 60] != split.instances[48, 86]
    assert np.array_equal(split.mask > 0, split.instances > 0)


@pytest.mark.parametrize("polarity", ["dark", "bright"])
def test_polarity_detection_on_both_polarities(polarity):
    rng = np.random.default_rng(1)
    bg, cell = (200, 90) if polarity == "dark" else (30, 180)
    img = np.full((128, 128), bg, np.uint8)
    for _ in range(12):
        cv2.circle(img, tuple(int(v) for v in rng.integers(10, 118, 2)), 7, cell, -1)
    assert detect_polarity(img) == polarity
    label = auto_label(img, plain(polarity="auto"))
    assert label.polarity == polarity
    truth = img == cell
    assert iou(label.mask > 0, truth) > 0.85


def test_wrong_parameters_are_clear_errors():
    with pytest.raises(ValueError, match="block-size must be odd"):
        AutoLabelConfig(block_size=30)
    with pytest.raises(ValueError, match="min-area must not be negative"):
        AutoLabelConfig(min_area_px=-1)
    with pytest.raises(ValueError, match="--kind must be rbc or macrophage"):
        AutoLabelConfig(kind="platelet")
    with pytest.raises(ValueError, match="polarity"):
        AutoLabelConfig(polarity="sideways")


def test_size_derived_defaults_scale_with_pixel_size():
    fine, coarse = AutoLabelConfig(kind="rbc", pixel_size_um=0.2), AutoLabelConfig(kind="rbc", pixel_size_um=0.4)
    assert fine.block > coarse.block and fine.block % 2 == 1
    assert fine.min_area > coarse.min_area
    assert AutoLabelConfig(kind="macrophage").block > coarse.block


@pytest.mark.parametrize("polarity", ["dark", "bright"])
@pytest.mark.parametrize(("kind", "block"), [("rbc", 21), ("macrophage", 71)])
def test_fast_wide_block_threshold_matches_opencv(polarity, kind, block):
    from runtime.simulator import make_microscope
    from trainer.autolabel import adaptive_gaussian_threshold

    grey = cv2.cvtColor(make_microscope(kind, size=512, seed=3).frame(0).image, cv2.COLOR_BGR2GRAY)
    grey = cv2.GaussianBlur(grey, (3, 3), 0.8)  # as auto_label feeds it
    if polarity == "bright":
        grey = 255 - grey
    mode, c = (cv2.THRESH_BINARY_INV, 4) if polarity == "dark" else (cv2.THRESH_BINARY, -4)
    reference = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, mode, block, c)
    fast = adaptive_gaussian_threshold(grey, block, 4, polarity)
    assert (fast == reference).mean() > 0.998
