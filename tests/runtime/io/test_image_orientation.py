"""One reader, one rule: an image is read as a viewer shows it, EXIF orientation applied, whichever path reads it
(issue: `--paper` read a rotated JPEG upright as grey but sideways as colour and wrote a mask of the wrong shape)."""
import numpy as np
import pytest

from runtime.io.imageio import read_grey, read_image, read_raw

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture
def rotated_jpeg(tmp_path):
    """A JPEG stored 96 wide × 48 high with EXIF orientation 6 (turn 90° clockwise to show): shown 48 × 96."""
    stored = np.full((48, 96, 3), 200, np.uint8)
    stored[:, :24] = 40  # a dark band on the stored image's left: on the shown image's top
    image = PIL.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "in" / "rotated.jpg"
    path.parent.mkdir()
    image.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_every_reader_turns_the_image_upright(rotated_jpeg):
    assert read_image(rotated_jpeg).shape == (96, 48, 3)
    assert read_grey(rotated_jpeg).shape == (96, 48)
    assert read_raw(rotated_jpeg).shape[:2] == (96, 48)
    shown = read_grey(rotated_jpeg)
    assert shown[:20].mean() < 80 < shown[30:].mean(), "the stored left band is on top once turned"


@pytest.mark.parametrize("paper", [False, True])
def test_labels_of_a_rotated_jpeg_have_its_shown_shape(rotated_jpeg, tmp_path, paper):
    from runtime.data.dataset import open_dataset
    from trainer.autolabel import PAPER_STEPS, AutoLabelConfig
    from trainer.labelling import label_folder

    config = AutoLabelConfig(kind="rbc", **(PAPER_STEPS if paper else {}))
    label_folder(rotated_jpeg.parent, tmp_path / "out", config, workers=1)
    sample = open_dataset(tmp_path / "out").load(0)
    assert sample.image.shape[:2] == sample.mask.shape == (96, 48)
