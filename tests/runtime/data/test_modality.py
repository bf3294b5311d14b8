"""Modality detection: each contrast mechanism told apart by its physics, on scenes built from that physics here
and on the real images in ../shared/real where present."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.counting.instances import fill_all_holes
from runtime.counting.scale import peak_diameters
from runtime.data.first_pass import BLUR_KSIZE, BLUR_SIGMA, first_pass
from runtime.data.energy import energy_cells, energy_mask, texture_energy
from runtime.data.modality import LABEL_FREE, MIN_OBJECTS, MODALITIES, RELIEF_COHERENCE, check_modality, detect_modality

REAL = Path(__file__).resolve().parents[4] / "shared" / "real"
CENTRES = [(60, 70), (200, 90), (330, 60), (90, 250), (250, 230), (400, 300), (150, 400), (380, 430)]


def _phase(radius: float = 22.0, size: int = 512, centres: list[tuple[int, int]] = CENTRES) -> np.ndarray:
    """Optical path of dome-shaped cells (float32, 0 outside)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = np.zeros((size, size), np.float32)
    for cy, cx in centres:
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2
        phase += np.sqrt(np.clip(1 - r2, 0, None))
    return phase


def _camera(intensity: np.ndarray, noise: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(intensity + rng.normal(0, noise, intensity.shape), 0, 255).astype(np.uint8)


def dic_image() -> np.ndarray:
    """Shear interference: the path's derivative along 45°, a relief with a bright and a dark side."""
    phase = cv2.GaussianBlur(_phase(), (0, 0), 1.0)
    gy, gx = np.gradient(phase)
    return _camera(128 + 300 * (gx + gy) / np.sqrt(2))


def phase_contrast_image() -> np.ndarray:
    """Zernike phase contrast: the path minus its wide blur, darkened: dark cells in bright halos."""
    phase = _phase()
    return _camera(150 - 60 * (phase - cv2.GaussianBlur(phase, (0, 0), 15)))


def stained_colour_image() -> np.ndarray:
    inside = _phase() > 0
    image = np.full(inside.shape + (3,), (215, 212, 220), np.float32)
    image[inside] = (150, 110, 190)  # pink: green and blue absorbed
    return _camera(image)


def fluorescence_image() -> np.ndarray:
    return _camera(15 + 180 * np.clip(_phase(), 0, 1))


@pytest.mark.parametrize("make, expected", [
    (dic_image, "dic"), (phase_contrast_image, "phase"), (stained_colour_image, "stained"),
    (fluorescence_image, "fluorescence"),
])
def test_each_physics_is_recognised(make, expected):
    evidence = detect_modality(make())
    assert evidence.modality == expected, evidence.as_dict()


def test_dic_is_told_by_a_shared_relief_direction_not_by_the_relief_alone():
    """Each DIC cell alone is a relief; turning every other one by 180° breaks the shared shear direction."""
    image = dic_image().astype(np.int16)
    evidence = detect_modality(image.astype(np.uint8))
    assert evidence.relief_coherence > RELIEF_COHERENCE and evidence.objects >= len(CENTRES)
    mixed = image.copy()
    for cy, cx in CENTRES[::2]:
        patch = (slice(cy - 30, cy + 31), slice(cx - 30, cx + 31))
        mixed[patch] = mixed[patch][::-1, ::-1]
    assert detect_modality(np.clip(mixed, 0, 255).astype(np.uint8)).relief_coherence < 0.5


@pytest.mark.parametrize("flaw", ["tilted light", "halo off centre"])
def test_phase_contrast_with_a_lopsided_halo_is_not_a_relief(flaw):
    """Uneven light, or a phase ring slightly off centre, moves every halo a little the same way: as unit vectors
    those offsets all point one way, as a relief does (the coherence was 0.96 here), but a relief's halves lie a
    good part of the cell's radius apart and these a pixel or two."""
    phase = _phase()
    low = cv2.GaussianBlur(phase, (0, 0), 15)
    if flaw == "halo off centre":
        low = cv2.warpAffine(low, np.float32([[1, 0, 1], [0, 1, 1]]), low.shape[::-1], flags=cv2.INTER_LINEAR)
    intensity = 150 - 60 * (phase - low)
    if flaw == "tilted light":
        intensity *= 1 + 0.3 * (np.arange(intensity.shape[1], dtype=np.float32) / intensity.shape[1] - 0.5)
    evidence = detect_modality(_camera(intensity))
    assert evidence.modality == "phase" and evidence.relief_coherence < 0.5, evidence.as_dict()


def test_cells_that_barely_darken_the_field_are_unstained_brightfield_not_a_stain():
    """Unstained cells in focus absorb a few per cent and show no bright fringe: dark only, like a stain imaged in
    grey, but far fainter than any stain; the intensity path would find nothing at this contrast."""
    evidence = detect_modality(_camera(160 - 8 * (_phase() > 0)))
    assert evidence.bright_share < 0.2 and evidence.modality == "brightfield", evidence.as_dict()
    assert detect_modality(_camera(160 - 60 * (_phase() > 0))).modality == "stained", "a stain's contrast"


def test_two_faint_cells_are_enough_to_call_a_field_unstained():
    """A relief or a halo needs MIN_OBJECTS objects to be told; faintness does not. A sparse unstained field (two
    cells) was taken for a stain, and the classical threshold made one frame-wide object of its noise."""
    inside = _phase(centres=CENTRES[:2]) > 0
    faint = detect_modality(_camera(160 - 8 * inside, noise=1.0))
    assert faint.objects < MIN_OBJECTS and faint.modality == "brightfield", faint.as_dict()
    assert detect_modality(_camera(160 - 60 * inside, noise=1.0)).modality == "stained", "a stain's contrast"


def test_grey_noise_from_a_colour_camera_is_not_a_stain():
    grey = dic_image()
    rng = np.random.default_rng(1)
    colour = np.clip(np.repeat(grey[..., None], 3, 2) + rng.normal(0, 5, grey.shape + (3,)), 0, 255).astype(np.uint8)
    assert detect_modality(colour).modality == "dic"


@pytest.mark.parametrize("kind", ["rbc", "macrophage"])
def test_simulated_optics_go_to_their_path(kind):
    """The simulator's optics (a fixture): every label-free frame is taken as label-free (which of the three
    matters little: they share one labelling path), DIC frames as DIC, stained frames as stained."""
    from runtime.data.simulator import make_microscope

    for optics in ("stained", "brightfield", "phase", "dic", "fluorescence"):
        microscope = make_microscope(kind, seed=20, optics=optics)
        found = [detect_modality(microscope.frame(i).image).modality for i in range(4)]
        if optics in LABEL_FREE:
            assert all(m in LABEL_FREE for m in found), (optics, found)
        if optics == "phase":  # a halo beside a faint relief: the most common call, not always
            assert max(set(found), key=found.count) == optics, found
        elif optics != "brightfield":  # faint unstained cells show rings that can read as a relief or a halo
            assert found.count(optics) >= 3, (optics, found)


@pytest.mark.parametrize("kind, optics", [("rbc", "dic"), ("macrophage", "phase")])
def test_a_large_frame_of_small_cells_is_judged_where_they_keep_their_width(kind, optics, monkeypatch):
    """A 2048-px simulated frame at the simulator's own magnification (RBCs 15 px, macrophages 41; seed 56): shrunk
    whole to DETECT_SIDE its cells are 4–10 px across and both were taken for unstained brightfield; judged on the
    central window at full size, where they keep the width detection was set on, they are told."""
    import runtime.data.modality as modality
    from runtime.data.simulator import make_microscope

    image = make_microscope(kind, size=2048, seed=56, optics=optics).frame(0).image
    assert detect_modality(image).modality == optics
    window = modality._grey_copy(modality._detection_window(image), np.zeros((512, 512), np.uint8))
    assert np.array_equal(window, cv2.cvtColor(image[768:1280, 768:1280], cv2.COLOR_BGR2GRAY))
    monkeypatch.setattr(modality, "DETECT_CELLS_PX", (0.0, 41.0))  # the whole frame's copy always, as before
    assert detect_modality(image).modality == "brightfield"


def test_a_large_frame_of_small_stained_cells_is_told_by_their_colour():
    """The paper's camera (4000×3000) on a smear at its 512-px crops' magnification: shrunk whole to DETECT_SIDE px,
    the simulator's stained cells (15–41 px) blend into the background, and the frame's colour spanned 0.014 — grey
    to the detector, which took a mosaic of its demo frames for unstained cells. In the window where the cells keep
    their width, the colour is a stain's again."""
    import runtime.data.modality as modality
    from runtime.io.sources import DemoSource

    frames = [frame.image for _, frame in zip(range(48), DemoSource(size=512, seed=0).frames())]
    mosaic = np.vstack([np.hstack(frames[row * 8:(row + 1) * 8]) for row in range(6)])[:3000, :4000]
    assert modality._chroma_span(mosaic) < modality.STAIN_CHROMA, "the whole frame's colour, blended away"
    found = detect_modality(mosaic)
    assert found.modality == "stained" and found.chroma >= modality.STAIN_CHROMA and not found.tentative


def test_a_few_specks_do_not_send_a_large_frame_to_a_window(monkeypatch):
    """Eight 12-px specks in the middle of an empty 2048-px field: the first pass measures them as narrow cells, but
    they cover a fraction of a percent of its window, not a field of cells (as specks of BBBC030's images enlarged
    2× did, whose cells are 106 px): the whole frame's copy is judged. Believed, they would send it to a window."""
    import runtime.data.modality as modality

    image = np.clip(np.random.default_rng(0).normal(180, 4, (2048, 2048)), 0, 255).astype(np.uint8)
    for k in range(8):
        cv2.circle(image, (900 + (k % 4) * 60, 950 + (k // 4) * 80), 6, 120, -1)
    assert len(first_pass(modality._central(image, modality.PROBE_SIDE)).diameters) == 8
    assert modality._detection_window(image) is None
    monkeypatch.setattr(modality, "PROBE_MIN_COVER", 0.0)
    assert modality._detection_window(image) is not None


def test_cells_wide_enough_on_the_whole_frames_copy_are_judged_there():
    """Macrophages 82 px across in a 1024-px frame (0.2 µm/px) are 41 px on the half-size copy of the whole frame,
    the width detection was set on: that copy is judged, as before; a window is only for cells too narrow there."""
    import runtime.data.modality as modality
    from runtime.data.simulator import make_microscope

    microscope = make_microscope("macrophage", size=1024, seed=56, optics="phase", pixel_size_um=0.2, density=3.0)
    image = microscope.frame(0).image
    assert first_pass(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)).diameter / 2 >= modality.DETECT_CELLS_PX[0]
    assert modality._detection_window(image) is None


@pytest.mark.parametrize("pixel_size, size, optics, copy", [(0.2, 512, "dic", True), (0.1, 1024, "dic", True),
                                                            (0.2, 512, "brightfield", False),
                                                            (0.1, 1024, "phase", False)])
def test_the_first_pass_measures_smooth_cells_too_wide_for_its_scales_on_a_smaller_copy(pixel_size, size, optics, copy):
    """RBCs 30 and 60 px across (the simulator at 2× and 4× its magnification; seed 55, which no benchmark uses) are
    measured within 20 %. In DIC the full size's scales see only a relief's sides, and specks, a few px across: the
    copy on which the cells show measures them. (Here the unstained and phase-contrast cells show at full size.)"""
    from runtime.data.simulator import make_microscope

    zoom = pixel_size / 0.4
    frame = make_microscope("rbc", size=size, seed=55, optics=optics, pixel_size_um=pixel_size,
                            density=55 * zoom * zoom).frame(0)
    grey = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
    true = 6.0 / pixel_size
    found = first_pass(grey)
    assert abs(found.diameter / true - 1) < 0.2, (found.factor, found.diameter)
    if copy:
        blurred = cv2.GaussianBlur(grey, (BLUR_KSIZE, BLUR_KSIZE), BLUR_SIGMA)
        assert np.median(peak_diameters(fill_all_holes(energy_cells(blurred)))) < true / 2, "the full size alone"
        assert found.factor > 1


def test_cells_a_halving_blurs_to_nearly_twice_their_size_keep_the_full_size():
    """A simulated DIC field of 15-px RBCs (seed 11) whose cells measure 1.78× wider on the half-size copy: not the
    twice-as-wide of specks, so the full size stands (at a jump of 1.7 the copy was taken, cells of 26 px)."""
    from runtime.data.simulator import make_microscope

    grey = cv2.cvtColor(make_microscope("rbc", seed=11, optics="dic").frame(0).image, cv2.COLOR_BGR2GRAY)
    found = first_pass(grey)
    assert found.factor == 1 and 12 < found.diameter < 18


def test_specks_a_halving_leaves_under_twice_as_wide_give_way_to_the_cells_on_the_copy_after():
    """A simulated DIC field of 60-px RBCs (seed 91, frame 2): specks and relief edges measure 8 px, 14 at half size
    (1.8×, no clear jump), and the cells 62 px on the quarter-size copy, which confirms it."""
    from runtime.data.simulator import make_microscope

    frame = make_microscope("rbc", size=1024, seed=91, optics="dic", pixel_size_um=0.1, density=55 / 16).frame(2)
    found = first_pass(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY))
    assert found.factor == 4 and abs(found.diameter / 60 - 1) < 0.2


@pytest.mark.parametrize("pixel_size", [0.4, 0.6, 0.8])
@pytest.mark.parametrize("optics", ["brightfield", "phase", "dic"])
def test_the_first_pass_keeps_the_full_size_where_it_sees_the_cells(optics, pixel_size):
    """RBCs 15, 10 and 7.5 px across (four frames of seed 55): the full size is kept, raw frames or blurred, and
    measures what it did before the copies were looked at; halved, cells this small were taken for specks."""
    from runtime.data.simulator import make_microscope

    zoom = pixel_size / 0.4
    microscope = make_microscope("rbc", seed=55, optics=optics, pixel_size_um=pixel_size, density=55 * zoom * zoom)
    for i in range(4):
        grey = cv2.cvtColor(microscope.frame(i).image, cv2.COLOR_BGR2GRAY)
        blurred = cv2.GaussianBlur(grey, (BLUR_KSIZE, BLUR_KSIZE), BLUR_SIGMA)
        for found in (first_pass(grey), first_pass(blurred, blurred=True)):
            assert found.factor == 1, (i, found.diameter)
            assert np.array_equal(found.diameters, peak_diameters(fill_all_holes(energy_cells(blurred))))


def test_a_blank_frame_has_nothing_to_judge_by():
    evidence = detect_modality(np.full((200, 300), 128, np.uint8))
    assert evidence.objects < MIN_OBJECTS and evidence.modality == "stained" and evidence.relief_coherence is None


def test_texture_energy_marks_contrast_of_either_sign():
    image = dic_image()
    mask = energy_mask(texture_energy(image, 1.5, 3.0)) > 0
    deviation = image.astype(np.float32) - 128
    assert mask[deviation > 25].mean() > 0.9 and mask[deviation < -25].mean() > 0.9, "both halves of each relief"
    inside = _phase() > 0
    assert mask[~cv2.dilate(inside.view(np.uint8), np.ones((15, 15), np.uint8)).view(bool)].mean() < 0.05


def test_camera_noise_alone_is_no_cell():
    """Otsu always splits something; the noise floor keeps it from splitting the noise of an empty field."""
    rng = np.random.default_rng(2)
    for level, sigma in ((128, 3.0), (60, 8.0)):
        noise = np.clip(level + rng.normal(0, sigma, (400, 500)), 0, 255).astype(np.uint8)
        assert (energy_mask(texture_energy(noise, 1.5, 3.0)) > 0).mean() < 0.002
    cells = energy_mask(texture_energy(dic_image(), 1.5, 3.0)) > 0
    assert cells.mean() > 0.02, "the floor leaves real cells alone"


def test_unknown_modality_lists_the_valid_ones():
    assert check_modality("dic") == "dic" and check_modality("auto") == "auto"
    with pytest.raises(ValueError, match="stained, brightfield, phase, dic, fluorescence"):
        check_modality("darkfield")
    with pytest.raises(ValueError):
        check_modality("auto", allow_auto=False)
    assert set(MODALITIES) == {"stained", "brightfield", "phase", "dic", "fluorescence"}


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real images not present at {REAL} (see its README)")
@pytest.mark.parametrize("pattern, expected", [
    ("bbbc030-dic/images/cho3*.png", "dic"), ("chula-rbc12/images/1*.jpg", "stained"),
    ("bccd-txlpbc/images/BloodImage_001*.jpg", "stained"),
])
def test_real_images_are_recognised(pattern, expected):
    files = sorted(REAL.glob(pattern))[:6]
    assert files, f"no {pattern} under {REAL}"
    for path in files:
        assert detect_modality(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)).modality == expected, path.name


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real images not present at {REAL} (see its README)")
def test_grey_stained_smears_of_wide_smooth_cells_are_stained():
    """BCCD's smears converted to grey (a monochrome camera): their 100-px RBCs are smooth inside, the textured
    objects were specks and edges, and most images were taken for unstained brightfield (the label-free path then
    labelled the specks: point F1 0.17). Their cells darken far more of the field than their texture covers."""
    files = sorted(REAL.glob("bccd-txlpbc/images/BloodImage_*.jpg"))[0:40:4]  # the training half's (even) images
    assert files, f"no BCCD images under {REAL}"
    found = [detect_modality(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)) for path in files]
    assert sum(e.modality == "stained" for e in found) >= 8, [e.as_dict() for e in found]


@pytest.mark.parametrize("optics", ["brightfield", "phase"])
def test_dense_label_free_fields_that_darken_much_of_the_field_stay_label_free(optics):
    """Dense phase-contrast macrophages (3.5× the simulator's density) darken as much of the field as a grey
    smear does; their texture covers it, and they stay label-free (a fixture)."""
    from runtime.data.simulator import SimConfig, make_microscope

    microscope = make_microscope("macrophage", seed=55, optics=optics, pseudopods=2.0,
                                 density=3.5 * SimConfig(mode="macrophage").mean_cells)
    found = [detect_modality(microscope.frame(i).image) for i in range(4)]
    assert all(e.modality in LABEL_FREE for e in found), [e.as_dict() for e in found]
    if optics == "phase":  # what the rule must not take for absorbers
        assert max(e.absorption for e in found) > 0.15


def test_the_dsb_nuclei_are_fluorescence():
    from trainer.ablation import stardist_nuclei
    from runtime.errors import CscError

    try:
        image, _ = stardist_nuclei()
    except CscError as err:
        pytest.skip(str(err))
    assert detect_modality(image).modality == "fluorescence"


def test_a_folder_pooled_measures_the_cells_its_images_hold_too_few_of_alone():
    """`pooled`: four fields of specks (8 px; 14 on the half-size copy) and one to four 60-px cells each. The two
    with one and two cells have too few to measure on the quarter-size copy that shows them (under MIN_PEAKS), and
    alone are measured on their specks; pooled, the folder's quarter-size copy holds every field's cells (the
    near-jump of the specks confirmed by them, as in a field of three or more alone)."""
    from runtime.data.first_pass import FirstPass, chosen_copy, pooled

    rng = np.random.default_rng(0)

    def field(cells: int) -> list[FirstPass]:
        seen = [FirstPass(rng.normal(8, 0.5, 30).astype(np.float32), 1),
                FirstPass(rng.normal(14, 0.7, 10).astype(np.float32), 2)]
        return seen + [FirstPass(rng.normal(60, 3, cells).astype(np.float32), 4)]  # kept below MIN_PEAKS too

    fields = [field(cells) for cells in (1, 2, 3, 4)]
    assert [chosen_copy(seen).factor for seen in fields] == [1, 1, 4, 4]
    assert chosen_copy([FirstPass(np.float32([60, 61]), 4)]).diameter is None, "two cells: too few alone"
    assert chosen_copy([FirstPass(np.float32([60, 61, 62]), 4)]).diameter == 61.0
    folder = pooled(fields)
    assert folder.factor == 4 and abs(folder.diameter / 60 - 1) < 0.1
    assert len(folder.diameters) == 1 + 2 + 3 + 4, "every field's cells on that copy"
    assert pooled([]).diameter is None


def test_a_folder_of_mostly_empty_fields_measures_its_cells_not_their_dust():
    """`pooled` drops specks by area (`without_specks`): eight empty fields of a dozen 9-px specks each and four
    fields of one or two 150-px cells, every one seen on the full size. By count the specks are the median (96 to 6);
    by area the cells are, and the folder measures them. A folder of one population keeps every measure."""
    from runtime.data.first_pass import FirstPass, pooled, without_specks

    rng = np.random.default_rng(1)
    empty = [[FirstPass(rng.normal(9, 1, 12).astype(np.float32), 1)] for _ in range(8)]
    cells = [[FirstPass(rng.normal(150, 10, n).astype(np.float32), 1)] for n in (1, 2, 1, 2)]
    folder = pooled(empty + cells, drop_specks=True)
    assert folder.factor == 1 and abs(folder.diameter / 150 - 1) < 0.1 and len(folder.diameters) == 6
    assert np.median(np.concatenate([seen[0].diameters for seen in empty + cells])) < 12, "by count: the specks"
    assert pooled(empty, drop_specks=True).diameter == pytest.approx(9, abs=1), "specks alone are what there is"
    assert pooled(empty + cells).diameter < 12, "the calibration's pool keeps its specks"
    varied = rng.normal(40, 5, 200).astype(np.float32)  # one kind of cell, sizes ±12 %: none is a speck
    assert np.array_equal(without_specks(varied), varied)
    # Fields of 15 RBCs (30 px) and two objects three times wider: the wide ones hold more of the area, but the
    # RBCs a fair share (45 %): no specks, and the folder measures the RBCs.
    fields = [[FirstPass(np.concatenate([rng.normal(30, 2, 15), rng.normal(90, 3, 2)]).astype(np.float32), 1)]
              for _ in range(3)]
    assert len(pooled(fields, drop_specks=True).diameters) == 51
    assert abs(pooled(fields, drop_specks=True).diameter / 30 - 1) < 0.1
    assert len(without_specks(np.float32([]))) == 0
    from trainer.autolabel import AutoLabelConfig, FolderEntry, for_folder

    folder = for_folder(AutoLabelConfig(kind="macrophage"), [FolderEntry("phase", False, seen) for seen in empty + cells])
    assert abs(folder.folder_cells[0] / 150 - 1) < 0.1, "a folder to label drops its specks"
