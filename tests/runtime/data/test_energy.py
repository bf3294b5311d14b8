"""The wide Gaussian the calibration flattens frames with: OpenCV's own blur, to within a fifth of a grey level."""
import cv2
import numpy as np
import pytest

from runtime.data.energy import wide_gaussian


def _field(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A float32 grey frame with what makes a wide blur hard to copy: cells (sharp edges), camera noise, and uneven
    lighting that is brightest at one edge (where the blur's border reflection decides)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = 120 + 60 * xx / width + 25 * np.sin(yy / 37.0)
    for _ in range(height * width // 2500):
        cv2.circle(image, (int(rng.integers(width)), int(rng.integers(height))), int(rng.integers(6, 20)),
                   float(rng.uniform(40, 90)), -1)
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.float32)


@pytest.mark.parametrize("shape", [(512, 512), (480, 640), (301, 517), (1032, 1376)])
def test_the_wide_gaussian_is_opencvs_blur_at_a_frames_side_over_eight(shape):
    """Sides that the shrink does not divide and a σ of a frame's side ÷ 8 (the calibration's): within 0.1 grey of
    `cv2.GaussianBlur` everywhere, borders included, and within 0.025 on average."""
    image = _field(*shape)
    sigma = min(shape) / 8
    error = np.abs(wide_gaussian(image, sigma) - cv2.GaussianBlur(image, (0, 0), sigma))
    assert error.max() < 0.1 and error.mean() < 0.025, (error.max(), error.mean())


@pytest.mark.parametrize("sigma", [17.0, 33.0])
def test_just_above_a_doubling_of_the_shrink_it_stays_within_a_fifth_of_a_grey_level(sigma):
    """Where the shrink has just doubled (σ/shrink near 8) the copy is coarsest: within 0.2 grey, 0.04 on average."""
    image = _field(140, 300)
    error = np.abs(wide_gaussian(image, sigma) - cv2.GaussianBlur(image, (0, 0), sigma))
    assert error.max() < 0.2 and error.mean() < 0.04, (error.max(), error.mean())


def test_below_sixteen_px_it_is_opencvs_blur_itself():
    image = _field(200, 240)
    assert np.array_equal(wide_gaussian(image, 12.0), cv2.GaussianBlur(image, (0, 0), 12.0))
