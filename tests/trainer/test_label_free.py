"""Auto-labels of label-free images: the modality decided and recorded, cells found whole whatever the sign of their
contrast, macrophage pseudopods kept."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from runtime.counting.metrics import match_instances
from trainer.autolabel import AutoLabelConfig, _remove_thin, auto_label
from trainer.cli.label import app

REAL = Path(__file__).resolve().parents[3] / "shared" / "real"
BBBC = REAL / "bbbc030-dic"
needs_bbbc = pytest.mark.skipif(not BBBC.is_dir(), reason=f"BBBC030 not present at {BBBC} (see ../shared/real/README.md)")
STEMS = ("cho31", "cho42", "cho53")


@pytest.fixture(scope="module")
def dic_folder(tmp_path_factory) -> Path:
    """Three real DIC images, one of them re-saved as 16-bit (what a scientific camera writes)."""
    folder = tmp_path_factory.mktemp("dic")
    for stem in STEMS[:-1]:
        (folder / f"{stem}.png").write_bytes((BBBC / "images" / f"{stem}.png").read_bytes())
    grey = cv2.imread(str(BBBC / "images" / f"{STEMS[-1]}.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(folder / f"{STEMS[-1]}.png"), grey.astype(np.uint16) * 257)
    return folder


@needs_bbbc
def test_csc_label_contract_on_real_dic_images(dic_folder, tmp_path):
    """`csc-label auto DIR --kind macrophage --split-touching --out OUT`, nothing else: the optics is found and
    recorded, and each annotated cell is one instance (not a bright and a dark half)."""
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["auto", str(dic_folder), "--kind", "macrophage", "--split-touching",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "modality: dic ×3" in result.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["modality"] == {"dic": 3} and meta["threshold"] == {"texture": 3}
    assert all(meta["autolabel_images"][s]["modality"] == "dic" for s in STEMS)
    tp = fn = 0
    for stem in STEMS:
        instances = cv2.imread(str(out / "instances" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert instances.dtype == np.uint16
        assert cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED).max() == 2  # macrophage
        a, _, c = match_instances(instances, cv2.imread(str(BBBC / "instances" / f"{stem}.png"), cv2.IMREAD_UNCHANGED))
        tp, fn = tp + a, fn + c
    assert tp >= 0.8 * (tp + fn), f"{tp} of {tp + fn} annotated cells found whole"


@needs_bbbc
def test_a_given_modality_overrides_detection(dic_folder):
    image = cv2.imread(str(dic_folder / f"{STEMS[0]}.png"), cv2.IMREAD_GRAYSCALE)
    detected = auto_label(image, AutoLabelConfig(kind="macrophage"))
    forced = auto_label(image, AutoLabelConfig(kind="macrophage", modality="stained"))
    assert (detected.modality, detected.threshold) == ("dic", "texture")
    assert forced.modality == "stained" and forced.threshold != "texture" and forced.polarity == "dark"
    paper = auto_label(image, AutoLabelConfig(kind="macrophage", threshold="adaptive"))
    assert paper.threshold == "adaptive", "a threshold chosen by hand is honoured"
    assert paper.modality == "not checked", "and the optics, which could not change the path, are not detected"
    told = auto_label(image, AutoLabelConfig(kind="macrophage", modality="dic", threshold="otsu"))
    assert told.modality == "dic" and told.threshold == "otsu", "a label-free optics with a hand-chosen threshold"


def test_unknown_modality_is_a_clear_error():
    with pytest.raises(ValueError, match="--modality must be one of auto, stained"):
        AutoLabelConfig(kind="rbc", modality="darkfield")


def test_pseudopods_stay_with_a_macrophage_but_fibres_go():
    """Opening by reconstruction (macrophages) keeps a cell's thin protrusion; the plain opening (RBCs, where a
    thin object crossing a cell is a fibre) cuts it. An object that is thin all over goes either way."""
    binary = np.zeros((120, 160), np.uint8)
    cv2.circle(binary, (50, 60), 20, 255, -1)
    cv2.line(binary, (70, 60), (100, 60), 255, 3)  # a pseudopod
    cv2.line(binary, (120, 10), (150, 110), 255, 2)  # a fibre on its own
    kept, gone = _remove_thin(binary, 4.0, keep_outline=True)
    cut, gone_too = _remove_thin(binary, 4.0)
    assert kept[60, 95] and not cut[60, 95]
    assert not kept[60, 135] and not cut[60, 135] and gone == gone_too == 1
    assert np.array_equal(kept[:, :72] > 0, binary[:, :72] > 0), "the cell keeps its whole outline"


def test_the_labeller_keeps_a_macrophages_pseudopod_but_cuts_a_fibre_from_an_rbc():
    """The kind decides (`auto_label` passes keep_outline for macrophages only): the same blob with a thin
    protrusion keeps it as a macrophage label and loses it as an RBC label."""
    image = np.full((160, 200), 200, np.uint8)
    cv2.circle(image, (70, 80), 30, 90, -1)
    cv2.line(image, (100, 80), (150, 80), 90, 4)  # thin, 50 px long
    for kind, kept in (("macrophage", True), ("rbc", False)):
        label = auto_label(image, AutoLabelConfig(kind=kind, diameter_px=60, modality="stained"))
        assert bool(label.mask[80, 140]) is kept, kind
        assert label.mask[80, 70], "the body is a cell either way"


def test_halo_lines_that_reach_the_outside_cut_but_a_bright_centre_does_not():
    """`halo_free`: a bright line across a blob, joined to the background, is left out of the seeds; a bright
    patch enclosed by the cell (an unstained RBC's centre) is filled back."""
    from trainer.label_free import bright_halos, halo_free

    rng = np.random.default_rng(0)
    grey = np.clip(rng.normal(120, 3, (100, 160)), 0, 255).astype(np.uint8)
    mask = np.zeros_like(grey)
    cv2.ellipse(mask, (50, 50), (34, 30), 0, 0, 360, 255, -1)  # a blob with a halo line across it
    cv2.circle(mask, (125, 50), 22, 255, -1)  # a cell with a bright centre
    grey[mask > 0] = 90
    grey[:, 49:52] = 200  # the line, continued into the background like the halo it belongs to
    cv2.circle(grey, (125, 50), 6, 200, -1)
    halos = bright_halos(grey, mask)
    assert halos[50, 50] and halos[50, 125] and not halos[50, 30] and not halos[10, 100]
    seeds = halo_free(mask, halos)
    assert not seeds[50, 50] and seeds[50, 125] and seeds[50, 30] and seeds[50, 70]
    assert not seeds[5, 5]  # the background stays out


@pytest.mark.parametrize("modality", ["phase", "brightfield"])  # phase fields are often taken for brightfield
def test_touching_phase_contrast_macrophages_split_at_their_halo_lines(monkeypatch, modality):
    """A simulated phase-contrast frame (seed 55, which no benchmark uses) with macrophages welded into one blob by
    the texture mask: split at the halos, the labeller finds more of them whole than without, whether the frame is
    labelled as phase contrast or as unstained brightfield."""
    from runtime.data.simulator import make_microscope
    from trainer import label_free

    frame = make_microscope("macrophage", size=512, seed=55, optics="phase", pseudopods=2.0).frame(0)
    config = AutoLabelConfig(kind="macrophage", split_touching=True, modality=modality)
    monkeypatch.setattr(label_free, "path_cores", lambda path, mask, diameter_px: mask)  # the halos alone
    found = match_instances(auto_label(frame.image, config).instances.astype(np.int32), frame.instances)[0]
    monkeypatch.setattr(label_free, "HALOS", ())
    without = match_instances(auto_label(frame.image, config).instances.astype(np.int32), frame.instances)[0]
    assert found > without


def _two_domes(radius: int, apart: int) -> tuple[np.ndarray, np.ndarray]:
    """The optical path of two touching cells (domes of height 30, ``apart`` px between centres) on a 120×180 field,
    and their mask: one blob."""
    yy, xx = np.mgrid[0:120, 0:180].astype(np.float32)
    domes, mask = [], np.zeros((120, 180), np.uint8)
    for cx in (90 - apart // 2, 90 + apart // 2):
        domes.append(30 * np.sqrt(np.clip(1 - ((xx - cx) ** 2 + (yy - 60) ** 2) / radius ** 2, 0, 1)))
        cv2.circle(mask, (cx, 60), radius, 255, -1)
    assert cv2.connectedComponents(mask)[0] - 1 == 1
    return np.maximum(*domes), mask


def test_path_cores_cut_where_the_path_falls_to_the_cells_rims_between_them():
    """`path_cores`: two overlapping domes whose waist stays well above their rims are one core (the rule cuts
    nothing there); with the trough a band-passed path has between touching cells (13 px wide, below the rims'
    level), the cores are two, inside the mask's one blob, whichever sign the path has."""
    from trainer.label_free import path_cores

    path, mask = _two_domes(22, 36)
    assert cv2.connectedComponents(path_cores(path, mask, 44.0))[0] - 1 == 1
    path[:, 84:97] -= 20
    for sign in (1, -1):
        cores = path_cores(sign * path, mask, 44.0)
        assert cv2.connectedComponents(cores)[0] - 1 == 2
        assert not cores[mask == 0].any() and cores[60, 72] and cores[60, 108]


def test_a_dic_relief_of_touching_cells_gives_two_cores():
    """From the image alone: a DIC relief (the x-derivative of two touching cells' path) integrated along the shear
    it shows (`dic_path`) gives the two cores, at shares of the path from 2 to 40 %: the integration's band-pass
    leaves the trough between them that the domes alone do not have."""
    from trainer import label_free

    path, mask = _two_domes(20, 40)
    relief = np.gradient(cv2.GaussianBlur(path, (0, 0), 1.5), axis=1) * 8
    grey = np.clip(128 + relief + np.random.default_rng(0).normal(0, 1.5, path.shape), 0, 255).astype(np.uint8)
    for percent in (2, 10, 40):
        label_free.PATH_CORE_PERCENT = percent
        try:
            assert cv2.connectedComponents(label_free.path_cores(label_free.dic_path(grey, 40.0), mask, 40.0))[0] == 3
        finally:
            label_free.PATH_CORE_PERCENT = 10.0


@pytest.mark.parametrize(("modality", "processes", "halos", "cores"), [
    ("phase", True, True, True), ("phase", False, True, False), ("brightfield", True, True, True),
    ("brightfield", False, True, False), ("dic", True, False, True), ("dic", False, False, False)])
def test_split_seeds_by_optics(monkeypatch, modality, processes, halos, cores):
    """`split_seeds`: halo lines where the optics give halos (phase contrast, unstained brightfield); the optical
    path's cores for cells with processes in every label-free optics (unstained brightfield's darkness as phase
    contrast's), never for smooth cells; neither for smooth DIC cells (None: the mask itself)."""
    from trainer import label_free

    used = []
    monkeypatch.setattr(label_free, "halo_free", lambda mask, halos: used.append("halos") or mask)
    monkeypatch.setattr(label_free, "path_cores", lambda path, mask, diameter_px: used.append("cores") or mask)
    grey = np.full((64, 64), 120, np.uint8)
    mask = np.zeros_like(grey)
    cv2.circle(mask, (32, 32), 10, 255, -1)
    seeds = label_free.split_seeds(grey, mask, modality, 20.0, processes)
    if seeds is not None:
        seeds(mask)
    assert (seeds is None) == (not halos and not cores)
    assert used == ["cores"] * cores + ["halos"] * halos


@pytest.mark.parametrize("optics", ["dic", "phase", "brightfield"])
def test_touching_macrophages_split_at_their_optical_path(monkeypatch, optics):
    """Simulated DIC, phase-contrast and unstained-brightfield macrophages (seed 55, which no benchmark uses; four
    frames, 31 cells): split from the cores of their optical path (`path_cores`; in the halo optics as well as at
    the halo lines), the labeller finds more of them whole than without (24 against 20 in DIC, 28 against 25 in
    phase contrast and 20 against 17 in unstained brightfield when written)."""
    from runtime.data.simulator import make_microscope
    from trainer import label_free

    microscope = make_microscope("macrophage", size=512, seed=55, optics=optics, pseudopods=2.0)
    frames = [microscope.frame(i) for i in range(4)]
    config = AutoLabelConfig(kind="macrophage", split_touching=True, modality=optics)

    def whole() -> int:
        return sum(match_instances(auto_label(f.image, config).instances.astype(np.int32), f.instances)[0]
                   for f in frames)

    found = whole()
    monkeypatch.setattr(label_free, "path_cores", lambda path, mask, diameter_px: mask)
    assert found > whole()


@pytest.mark.parametrize("optics", ["phase", "brightfield"])
def test_label_free_rbcs_are_outlined_without_the_high_pass_rim(optics):
    """The texture energy shows an edge's contrast a pixel or two outside it; on 20-px RBCs that rim made labels
    1.35–1.46× the true area (IoU 0.68–0.74 on this frame). Without it the outline fits (seed 55: no benchmark
    uses it)."""
    from runtime.data.simulator import make_microscope

    frame = make_microscope("rbc", size=512, seed=55, optics=optics).frame(0)
    label = auto_label(frame.image, AutoLabelConfig(kind="rbc", split_touching=True))
    cells, truth = label.mask > 0, frame.instances > 0
    assert label.modality == optics
    assert 0.9 < cells.sum() / truth.sum() < 1.25
    assert (cells & truth).sum() / (cells | truth).sum() > 0.78


def test_only_cells_without_processes_lose_the_rim(monkeypatch):
    """A macrophage's pseudopods are about as thin as the rim: with it (`label_free_mask(processes=True)`, what
    macrophages get) the mask covers about twice as many of a simulated frame's pseudopod pixels (the true cells'
    parts thinner than 9 px; seed 55) as without it (what RBCs get)."""
    from runtime.data.simulator import make_microscope
    from trainer import autolabel
    from trainer.label_free import label_free_mask

    frame = make_microscope("macrophage", size=512, seed=55, optics="phase", pseudopods=2.0).frame(0)
    grey = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
    cells = (frame.instances > 0).astype(np.uint8)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    thin = (cells > 0) & (cv2.morphologyEx(cells, cv2.MORPH_OPEN, disc) == 0)
    kept = (label_free_mask(grey, 40.0) > 0)[thin].sum()
    assert kept > 1.5 * (label_free_mask(grey, 40.0, processes=False) > 0)[thin].sum() and kept > 0
    asked = []
    monkeypatch.setattr(autolabel, "label_free_mask", lambda g, d, processes=True, factor=1: asked.append(processes)
                        or label_free_mask(g, d, processes, factor))
    for kind in ("rbc", "macrophage"):
        auto_label(grey, AutoLabelConfig(kind=kind, split_touching=True, modality="phase"))
    assert asked == [False, True]


@pytest.mark.parametrize("pixel_size, size, index", [(0.2, 512, 3), (0.1, 1024, 5)])
def test_dic_rbcs_at_a_high_magnification_are_counted_as_cells_not_as_relief_edges(pixel_size, size, index):
    """RBCs 30 and 60 px across in DIC (seed 55, which no benchmark uses; the issue's held-out DIC RBCs are about
    72): measured at full size, the first pass saw the relief's sides and specks, so the labeller took cells for
    5-px objects and counted 3–10× their number. Now the count is within 20 % and nearly every cell is found
    whole; on these frames that takes the estimated cell's area for the one-cell rule (few single cells: without
    it, 9 and 5 of them whole)."""
    from runtime.data.simulator import make_microscope

    zoom = pixel_size / 0.4
    frame = make_microscope("rbc", size=size, seed=55, optics="dic", pixel_size_um=pixel_size,
                            density=55 * zoom * zoom).frame(index)
    label = auto_label(frame.image, AutoLabelConfig(kind="rbc", split_touching=True))
    tp, _, fn = match_instances(label.instances.astype(np.int32), frame.instances)
    assert label.modality == "dic" and abs(label.diameter_px * pixel_size / 6.0 - 1) < 0.2
    assert abs(int(label.instances.max()) / (tp + fn) - 1) <= 0.2
    assert tp >= 0.85 * (tp + fn)


def test_only_label_free_images_give_the_split_a_cell_area(monkeypatch):
    """The estimated cell's area stands in for the one-cell rule's median on label-free images (where a field of a
    few large cells can hold no single one), not on stained smears, where a frame without five single cells is a
    dense smear of overlapping cells that it joined (on the BCCD training half)."""
    from runtime.data.simulator import make_microscope
    from trainer import autolabel

    given = []
    real = autolabel._instances
    monkeypatch.setattr(autolabel, "_instances", lambda *args: given.append(args[4]) or real(*args))
    for optics in ("stained", "dic"):
        auto_label(make_microscope("rbc", size=256, seed=55, optics=optics).frame(0).image,
                   AutoLabelConfig(kind="rbc", split_touching=True))
    assert given[0] is None and given[1] > 0


def test_smooth_cells_wider_than_twenty_pixels_get_scales_that_grow_with_them():
    """Unstained RBCs 60 px across in brightfield (seed 55): the first pass's scales see only faint ring segments,
    which the thin-object rejection removes; scales that grow with the diameter beyond 20 px (SMOOTH_CELLS_UP_TO)
    see the cells' bodies (10 of 10 found whole here, 7 with BBBC030's 53-px reference that macrophages keep;
    before holes were filled ahead of the energy's erosion, 7 and none)."""
    from runtime.data.simulator import make_microscope
    from trainer import label_free

    frame = make_microscope("rbc", size=1024, seed=55, optics="brightfield", pixel_size_um=0.1,
                            density=55 / 16).frame(0)
    config = AutoLabelConfig(kind="rbc", split_touching=True)
    found = match_instances(auto_label(frame.image, config).instances.astype(np.int32), frame.instances)[0]
    assert found >= 5
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(label_free, "SMOOTH_CELLS_UP_TO", label_free.BBBC030_DIAMETER)
        assert match_instances(auto_label(frame.image, config).instances.astype(np.int32), frame.instances)[0] < found


def test_an_unstained_cells_outline_is_filled_before_the_erosion_can_open_it():
    """Unstained RBCs 30 and 60 px across in brightfield (seed 55) show contrast only along their outline. Filled
    before the energy's erosion, all of these frames' cells are found (12 of 12 and 10 of 10; the bound allows one
    miss); with the holes left to the labeller's later filling, the eroded rings open, and 3 and 3 of them are lost
    as thin arcs."""
    from runtime.data.simulator import make_microscope
    from trainer import label_free

    config = AutoLabelConfig(kind="rbc", split_touching=True)
    for pixel_size, size, index in ((0.2, 512, 3), (0.1, 1024, 0)):
        zoom = pixel_size / 0.4
        frame = make_microscope("rbc", size=size, seed=55, optics="brightfield", pixel_size_um=pixel_size,
                                density=55 * zoom * zoom).frame(index)

        def found() -> int:
            return match_instances(auto_label(frame.image, config).instances.astype(np.int32), frame.instances)[0]

        filled, cells = found(), int(frame.instances.max())
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(label_free, "fill_holes", lambda mask, max_area: mask)
            assert filled >= cells - 1 and filled >= found() + 2


def test_a_sparse_unstained_field_is_labelled_cell_by_cell_not_as_one_frame_wide_object():
    """Seed 102's second frame at 0.2 µm/px: unstained RBCs so sparse that detection finds two objects, too few to
    judge a relief or a halo by, but faint (`runtime.data.modality`). Taken for a stain, as before, its noise was
    thresholded into a third of the frame (1 314 false cells); as unstained brightfield, the cells seen are cells."""
    from runtime.data.simulator import make_microscope

    frame = make_microscope("rbc", size=512, seed=102, optics="brightfield", pixel_size_um=0.2,
                            density=55 / 4).frame(1)
    found = auto_label(frame.image, AutoLabelConfig(kind="rbc", split_touching=True))
    tp, fp, _ = match_instances(found.instances.astype(np.int32), frame.instances)
    assert found.modality == "brightfield" and tp >= 3 and fp <= 2 and (found.instances > 0).mean() < 0.05


@pytest.mark.parametrize("degrees", [30.0, 45.0, 160.0])
def test_the_shear_axis_is_read_off_a_dic_image(monkeypatch, degrees):
    """A prism shearing at 30°, 45° or 160° (image x right, y down; the sign is free): the axis (x, y) read off the
    image is within 5° of it, and turns with the image."""
    from runtime.data import simulator
    from trainer.label_free import shear_axis

    monkeypatch.setattr(simulator, "_DIC_SHEAR_DEG", (degrees,))
    grey = cv2.cvtColor(simulator.make_microscope("rbc", seed=55, optics="dic").frame(0).image, cv2.COLOR_BGR2GRAY)
    t = np.radians(degrees)
    assert abs(shear_axis(grey, 15.0) @ np.array([np.cos(t), np.sin(t)])) > np.cos(np.radians(5))
    turned = np.ascontiguousarray(np.rot90(grey))  # counter-clockwise: (x, y) → (y, −x)
    assert abs(shear_axis(turned, 15.0) @ np.array([np.sin(t), -np.cos(t)])) > np.cos(np.radians(5))


def test_dic_rbcs_are_closed_along_the_shear_and_macrophages_are_not(monkeypatch):
    """A smooth cell's DIC relief fades where its outline runs along the shear, so its mask has a waist there and
    was cut in two: closed along the shear, more simulated DIC RBCs are found whole (seed 55). Macrophages, whose
    texture shows inside, are not closed so (it joined touching ones)."""
    from runtime.data.simulator import make_microscope
    from trainer import autolabel

    frame = make_microscope("rbc", seed=55, optics="dic").frame(0)
    config = AutoLabelConfig(kind="rbc", split_touching=True)
    closed = match_instances(auto_label(frame.image, config).instances.astype(np.int32), frame.instances)[0]
    asked = []
    monkeypatch.setattr(autolabel, "closed_along_shear", lambda mask, grey, d: asked.append(d) or mask)
    assert closed > match_instances(auto_label(frame.image, config).instances.astype(np.int32), frame.instances)[0]
    auto_label(make_microscope("macrophage", seed=55, optics="dic").frame(0).image,
               AutoLabelConfig(kind="macrophage", split_touching=True))
    assert len(asked) == 1, "once, for the RBC frame"


def _dic_relief(path: np.ndarray, axis: tuple[float, float], sign: float) -> np.ndarray:
    """A DIC image of an optical path: grey 128 plus its derivative along the shear ``axis`` (x, y), and noise."""
    gy, gx = np.gradient(cv2.GaussianBlur(path, (0, 0), 1.0))
    relief = 128 + sign * 40 * (gx * axis[0] + gy * axis[1])
    return np.clip(relief + np.random.default_rng(0).normal(0, 1.5, path.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("degrees", [40.0, 10.0, 100.0])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_smooth_cells_dic_relief_integrates_back_to_the_whole_cell(sign, degrees):
    """A biconcave disc (a ring of path, thinner at its centre) seen in DIC shows two crescents: integrated along the
    shear (`optical_path`) it is the whole disc again whichever way and at whatever angle the prism shears (at 10°
    and 100°, an x/y swap of the frequencies loses it), and a speck (debris) gives no cell (`path_cells`)."""
    from trainer.label_free import optical_path, path_cells

    yy, xx = np.mgrid[:256, :256]
    r = np.hypot(xx - 128, yy - 120)
    disc = r <= 30
    path = np.where(disc, 1.0 - 0.4 * np.exp(-(r / 12) ** 2), 0.0).astype(np.float32)
    path[np.hypot(xx - 40, yy - 210) <= 1.5] = 3.0  # a speck
    axis = (np.cos(np.radians(degrees)), np.sin(np.radians(degrees)))
    image = _dic_relief(path, axis, sign)
    edges = cv2.compare(cv2.absdiff(image, np.full_like(image, 128)), 8, cv2.CMP_GT)  # the crescents, as energy sees
    cells = path_cells(optical_path(image, 60.0, np.array(axis)), edges, 60.0) > 0
    assert (cells & disc).sum() / (cells | disc).sum() > 0.85
    assert not cells[195:225, 25:55].any()
    assert (edges > 0).sum() < 0.5 * disc.sum()  # the relief alone showed less than half the cell


def test_dic_rbcs_at_a_high_magnification_are_outlined_whole_with_the_integrated_path():
    """DIC RBCs 30 and 60 px across (seed 55): the texture energy and the closing along the shear leave the cells'
    faint sides out (foreground IoU 0.68 and 0.65 without the integrated path); with it, 0.88 and 0.82 (the bound
    below leaves that room, the gain must be 0.1 or more)."""
    from runtime.data.simulator import make_microscope
    from trainer import label_free

    config = AutoLabelConfig(kind="rbc", split_touching=True)
    for pixel_size, size, index in ((0.2, 512, 3), (0.1, 1024, 5)):
        zoom = pixel_size / 0.4
        frame = make_microscope("rbc", size=size, seed=55, optics="dic", pixel_size_um=pixel_size,
                                density=55 * zoom * zoom).frame(index)
        truth = frame.semantic > 0

        def iou() -> float:
            mask = auto_label(frame.image, config).mask > 0
            return (mask & truth).sum() / (mask | truth).sum()

        whole = iou()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(label_free, "path_cells", lambda path, mask, d: np.zeros(mask.shape, np.uint8))
            assert whole > 0.78 and whole > iou() + 0.1


def test_thin_streaks_of_the_integrated_path_are_not_cells():
    """A fibre or a scratch integrates into a thin line of path: above the threshold it is a band 3–4 px wide and
    ~790 px in all, more than the speck rule's quarter cell (177 px), and the opening removes it, while the cell
    beside it stays whole."""
    from trainer.label_free import path_cells

    yy, xx = np.mgrid[:200, :260]
    disc = np.hypot(xx - 60, yy - 100) <= 15
    path = np.random.default_rng(1).normal(0, 1, disc.shape).astype(np.float32)
    path[disc] += 12
    path[148:150, 20:240] += 4  # 2 px wide, a third of the cell's height
    mask = cv2.dilate(disc.view(np.uint8) * np.uint8(255), np.ones((5, 5), np.uint8))
    mask[146:152, 120:130] = 255  # the scratch shows some relief too: the rule for untouched parts does not drop it
    cells = path_cells(path, mask, 30.0) > 0
    assert cells[disc].mean() > 0.95 and not cells[140:158, :].any()


def test_a_faint_blob_of_the_integrated_path_that_the_relief_does_not_show_is_not_a_cell():
    """Real DIC frames (BBBC030) hold faint out-of-focus blobs that the integrated path raises above its noise but
    that show no relief of their own: a part of the path that the mask does not touch is not a cell; the cell
    whose relief the mask holds in part is kept whole."""
    from trainer.label_free import path_cells

    yy, xx = np.mgrid[:200, :260]
    disc = np.hypot(xx - 60, yy - 100) <= 15
    blob = np.hypot(xx - 190, yy - 100) <= 30
    path = np.random.default_rng(2).normal(0, 1, disc.shape).astype(np.float32)
    path[disc] += 12
    path[blob] += 4
    mask = (disc & (np.abs(xx - 60) > 8)).view(np.uint8) * np.uint8(255)  # the relief: the disc's two sides only
    cells = path_cells(path, mask, 30.0) > 0
    assert cells[disc].mean() > 0.95 and not cells[blob].any()
