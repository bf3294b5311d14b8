"""Mutation check: break each rule the labeller, the counter and the annotation readers rest on, one at a time,
and see whether the tests notice. A rule whose removal leaves its tests green is a rule nothing checks.

Each mutation is an exact source edit — a snippet that must occur exactly once in its file, or the script stops
(a mutation that silently misses its target would be counted as a kill it never made) — applied to a copy of
the working tree (`git ls-files`: tracked and untracked files, ignored ones left out), never to the tree itself.
The copy sits at ``<tmp>/main`` beside a link ``<tmp>/shared`` to the real ``../shared``, the layout the tests
use to find the real images, and the tests run there with ``PYTHONPATH`` set to the copy, so the mutated modules
are imported rather than the editable install's; the script checks that before it starts. First the tests run
on the unmutated copy and must pass (otherwise a "kill" proves nothing); then each mutation runs its tests
(``pytest -x``) and is **killed** when a test fails, **survived** when all pass, and an **error** when pytest
could not run them (collection error, timeout). Score: killed / total.

Run: python -m benchmarks.accuracy.mutation [--only NAME …] [--out benchmarks/results/mutation.json]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.publish import git, machine, publish, tree_state

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600  # per pytest run: a mutation that hangs the tests is reported, not waited for

AUTOLABEL_TESTS = ("tests/trainer/test_autolabel.py",)
ANNOTATION_TESTS = ("tests/runtime/data/test_annotations.py",)
CVAT_ELLIPSE_TESTS = (*ANNOTATION_TESTS, "tests/runtime/data/test_cvat_ellipse.py")
SCORING_TESTS = ("tests/runtime/counting/test_count_metrics.py", "tests/runtime/counting/test_count_evaluation.py")
COUNTER_TESTS = ("tests/runtime/counting/test_instances.py", "tests/runtime/counting/test_counting.py")
SEED_TESTS = ("tests/runtime/counting/test_instances.py",)
LABEL_FREE_TESTS = ("tests/trainer/test_label_free.py",)
MODALITY_TESTS = ("tests/runtime/data/test_modality.py",)
PIPELINE_TESTS = ("tests/runtime/pipeline/test_pipeline.py",)
CALIBRATION_TESTS = ("tests/runtime/counting/test_calibration.py", "tests/runtime/data/test_energy.py")


class MutationError(RuntimeError):
    """The check itself cannot be trusted: a snippet not found once, a copy importing the wrong modules, a
    baseline that fails."""


@dataclass(frozen=True)
class Mutation:
    """One rule broken by one exact source edit, and the tests that should notice."""

    name: str
    rule: str  # what the rule does, and so what breaking it should break
    path: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest paths or node ids, relative to the repository root


MUTATIONS = (
    # The rules issue #25 names as broken with the suite still green.
    Mutation("unstained rejection disabled",
             "objects whose colour barely moves from the background's (grey dust, lysed ghosts) are left out",
             "trainer/autolabel.py", "~bad & _unstained(found, sample, labels, binary[::step, ::step])",
             "~bad & np.zeros(len(found.ids), bool)", AUTOLABEL_TESTS),
    Mutation("UNSTAINED 0.35 -> 0.05",
             "an object stained under 0.35 of the typical object's colour shift is not a cell",
             "trainer/autolabel.py", "UNSTAINED = 0.35", "UNSTAINED = 0.05", AUTOLABEL_TESTS),
    Mutation("colour channel disabled",
             "colour images are thresholded along the colour direction that separates cells from background",
             "trainer/autolabel.py", 'colour = config.channel == "auto" and image.ndim == 3', "colour = False",
             AUTOLABEL_TESTS),
    Mutation("polarity: spanning-background rule removed",
             "the background is the Otsu class whose largest region spans the frame (dense smears)",
             "trainer/autolabel.py",
             '    if spans[0] != spans[1]:\n        return "dark" if spans[0] else "bright"\n', "",
             AUTOLABEL_TESTS),
    Mutation("polarity: auto detection removed",
             "polarity auto decides per image whether cells are darker or brighter than the background",
             "trainer/autolabel.py", 'polarity = detect_polarity(grey) if polarity == "auto" else polarity',
             'polarity = "dark" if polarity == "auto" else polarity', AUTOLABEL_TESTS),
    Mutation("CVAT ellipse drawn geometrically",
             "a CVAT ellipse is CVAT's own mask of it (centre and axes rounded, OpenCV's fill), not the geometric "
             "ellipse with its centre on pixel corners",
             "runtime/data/annotations/cvat.py", "return CvatEllipse.from_xml(label, cx, cy, rx, ry,",
             "return Ellipse(label, cx - 0.5, cy - 0.5, rx, ry,", CVAT_ELLIPSE_TESTS),
    Mutation("CVAT ellipse centre truncated",
             "CVAT rounds an ellipse's centre to the nearest pixel (Python's round)",
             "runtime/data/annotations/cvat.py", "centre, axes = (round(self.cx), round(self.cy)),",
             "centre, axes = (int(self.cx), int(self.cy)),", CVAT_ELLIPSE_TESTS),
    Mutation("CVAT ellipse axes not from 2-decimal points",
             "CVAT keeps an uploaded ellipse as points written to 2 decimals and takes its axes back from them",
             "runtime/data/annotations/cvat.py", 'right, top = float(f"{cx + rx:.2f}"), float(f"{cy - ry:.2f}")',
             "right, top = cx + rx, cy - ry", CVAT_ELLIPSE_TESTS),
    Mutation("edge band: points in the band scored",
             "annotated points within the edge band are left out of point scoring",
             "runtime/counting/metrics.py", "        if edge_band > 0:\n", "        if False:\n", SCORING_TESTS),
    Mutation("edge band: cells centred in the band scored",
             "counted cells centred within the edge band are not false positives when no point hits them",
             "runtime/counting/metrics.py", 'h - 1 - cells["cy"])) < edge_band)', 'h - 1 - cells["cy"])) < 0)',
             SCORING_TESTS),
    Mutation("edge band: PointScorer drops it",
             "the scorer behind csc-data count --truth and the real-image benchmark applies its edge band",
             "runtime/counting/evaluation.py", "self.edge_band = edge_band", "self.edge_band = 0.0", SCORING_TESTS),
    # More of the labeller's and the counter's core rules.
    Mutation("nucleated rejection disabled",
             "for RBC labels, white cells (a nucleus stained blue-purple) are left out",
             "trainer/autolabel.py", "~bad & _nucleated(found, sample, labels)",
             "~bad & np.zeros(len(found.ids), bool)",
             AUTOLABEL_TESTS),
    Mutation("COUNTER_SPLIT dynamics 0.08 -> 0",
             "two distance maxima stay apart only when each rises the counter's dynamics x r above the saddle",
             "runtime/counting/instances.py", "SplitSettings(dynamics=0.08, one_cell=1.25, divide_large=None",
             "SplitSettings(dynamics=0.0, one_cell=1.25, divide_large=None", COUNTER_TESTS),
    Mutation("COUNTER_SPLIT dynamics 0.08 -> 0.3",
             "the same rule, too strict: touching cells with a clear neck must still split",
             "runtime/counting/instances.py", "SplitSettings(dynamics=0.08, one_cell=1.25, divide_large=None",
             "SplitSettings(dynamics=0.3, one_cell=1.25, divide_large=None", COUNTER_TESTS),
    Mutation("COUNTER_SPLIT cut_fraction 0.25 -> 1",
             "a part cut by the frame edge is kept down to a quarter of the minimum area",
             "runtime/counting/instances.py", "divide_large=None, cut_fraction=0.25",
             "divide_large=None, cut_fraction=1.0", COUNTER_TESTS),
    Mutation("COUNTER_SPLIT one_cell 1.25 -> 0",
             "two parts no larger together than 1.25 x the median single cell are one cell",
             "runtime/counting/instances.py", "SplitSettings(dynamics=0.08, one_cell=1.25",
             "SplitSettings(dynamics=0.08, one_cell=0.0", COUNTER_TESTS),
    Mutation("counter: a fresh label image every frame",
             "a counter labels each class into the label image it keeps from frame to frame",
             "runtime/counting/counter.py", "cfg.split_settings(class_id), labels=labels))",
             "cfg.split_settings(class_id)))", COUNTER_TESTS),
    Mutation("classes in one pass: one window for all",
             "the classes split in one pass each find their markers at their own window",
             "runtime/counting/instances.py",
             "peaks[start:end] = window_maxima(dist[start:end], int(rules.window[c])",
             "peaks[start:end] = window_maxima(dist[start:end], int(rules.window.max())", COUNTER_TESTS),
    Mutation("classes in one pass: the first class's dynamics for all",
             "the classes split in one pass each merge parts at their own dynamics",
             "runtime/counting/instances.py", "rules.dynamics[part_class]",
             "rules.dynamics[np.zeros_like(part_class)]", COUNTER_TESTS),
    Mutation("merge: the dynamics compared in float64",
             "a drop of exactly the dynamics keeps two parts apart (compared in the distance map's float32)",
             "runtime/counting/instances.py",
             "    dynamics, one_cell_area = dynamics.tolist(), one_cell_area.tolist()\n",
             "    one_cell_area = one_cell_area.tolist()\n", COUNTER_TESTS),
    # The faster counter (issue #24): statistics from runs, runs of components on threads, no instance without pixels.
    Mutation("runs: a new row does not start a run",
             "the statistics are summed over runs of a row's consecutive pixels, one component's",
             "runtime/counting/instances.py", "    new_run[1:] |= y[1:] != y[:-1]\n", "", COUNTER_TESTS),
    Mutation("counter: every class split in runs on all workers",
             "the workers the classes present leave over are what each class is split in runs on",
             "runtime/counting/counter.py", "return max(1, self.workers // max(1, present))", "return self.workers",
             COUNTER_TESTS),
    Mutation("a marker without pixels kept",
             "a marker whose pixels all drained to another one's end gets no instance",
             "runtime/counting/instances.py", "    kept[roots] = True\n", "    kept[:] = True\n", COUNTER_TESTS),
    # The label-free split at halo lines (issue #21).
    Mutation("seeds ignored",
             "with seeds, touching cells are split from the mask without the lines between them",
             "runtime/counting/instances.py", "        if seeds is not None:\n            dist, peaks = _seeded",
             "        if False:\n            dist, peaks = _seeded", SEED_TESTS),
    Mutation("seeds without the mask's fallback",
             "a blob whose seeds hold fewer than two cells is split as without seeds",
             "runtime/counting/instances.py", "use = np.concatenate([[False], found[-1] > 1])",
             "use = np.concatenate([[False], found[-1] >= 0])", SEED_TESTS),
    Mutation("halo: enclosed bright patches cut",
             "a bright patch a cell encloses (an unstained RBC's centre) is not a line between cells",
             "trainer/label_free.py", "return fill_all_holes(cv2.bitwise_and(mask, cv2.bitwise_not(halos)))",
             "return cv2.bitwise_and(mask, cv2.bitwise_not(halos))", LABEL_FREE_TESTS),
    Mutation("halo: dark instead of bright",
             "a halo is brighter than the background",
             "trainer/label_free.py", "level + HALO_SIGMAS * max(noise, 1.0), cv2.CMP_GT)",
             "level + HALO_SIGMAS * max(noise, 1.0), cv2.CMP_LT)", LABEL_FREE_TESTS),
    Mutation("halo: brightfield left out",
             "phase-contrast fields taken for unstained brightfield are split at their halos too",
             "trainer/label_free.py", 'HALOS = ("phase", "brightfield")', 'HALOS = ("phase",)', LABEL_FREE_TESTS),
    Mutation("DIC cores: the whole mask",
             "touching DIC cells with processes are split from the mask without its lowest tenth of optical path",
             "trainer/label_free.py", "PATH_CORE_PERCENT = 10.0", "PATH_CORE_PERCENT = 0.0", LABEL_FREE_TESTS),
    Mutation("DIC cores: macrophages left out",
             "DIC cells with processes (macrophages) get the optical path's cores as their seeds",
             "trainer/label_free.py", '    if processes and modality == "dic":\n', '    if False:\n', LABEL_FREE_TESTS),
    Mutation("phase cores: macrophages left out",
             "phase-contrast cells with processes get the cores of their path (darkness) within the halo lines",
             "trainer/label_free.py", '    elif processes and modality in HALOS:\n', '    elif False:\n',
             LABEL_FREE_TESTS),
    Mutation("phase cores: the halos dropped",
             "in phase contrast the cores are cut at the halo lines as well",
             "trainer/label_free.py", "return cores if halos is None else halo_free(cores, halos)", "return cores",
             LABEL_FREE_TESTS),
    Mutation("cores: smooth cells too",
             "only cells with processes (macrophages) are split at the cores of their optical path",
             "trainer/label_free.py", '    if processes and modality == "dic":\n', '    if modality == "dic":\n',
             LABEL_FREE_TESTS),
    Mutation("cores: phase contrast only",
             "unstained brightfield's cells with processes are split at the cores of their darkness too",
             "trainer/label_free.py", '    elif processes and modality in HALOS:\n',
             '    elif processes and modality == "phase":\n', LABEL_FREE_TESTS),
    Mutation("label-free: RBCs keep the high-pass rim",
             "cells without processes (RBCs) are outlined without the texture energy's rim",
             "trainer/autolabel.py", "processes=not smooth, factor", "processes=True, factor",
             LABEL_FREE_TESTS),
    Mutation("label-free: macrophages lose the rim",
             "a macrophage keeps the rim its pseudopods are as thin as",
             "trainer/autolabel.py", "processes=not smooth, factor", "processes=False, factor",
             LABEL_FREE_TESTS),
    # Label-free cells at high magnification (issue #21): measured on the copy where the first pass sees them, and
    # the estimated cell's area standing in for the one-cell rule's median where no cell is single.
    Mutation("first pass: full size only",
             "cells too wide and smooth for the first pass's scales are measured on a smaller copy",
             "runtime/data/first_pass.py", "for level in range(FIRST_PASS_LEVELS + 1):", "for level in range(1):",
             MODALITY_TESTS),
    Mutation("first pass: a near jump taken unconfirmed",
             "cells a halving blurs to nearly twice their size are not taken for specks",
             "runtime/data/first_pass.py", "SCALE_JUMP = 1.9", "SCALE_JUMP = 1.7", MODALITY_TESTS),
    Mutation("first pass: a near jump never confirmed",
             "specks that measure a little under twice as wide halved, and the cells on the copy after, are passed",
             "runtime/data/first_pass.py", "CONFIRMED_JUMP = 3.0", "CONFIRMED_JUMP = 99.0", MODALITY_TESTS),
    Mutation("first pass: raw frames",
             "the first pass looks through the paper's filter, on which its ratios were measured",
             "runtime/data/first_pass.py", "    if not blurred:\n", "    if False:\n", MODALITY_TESTS),
    # A folder's label-free cells measured together (`csc-label auto DIR`: sparse fields at high magnification).
    Mutation("folder: its cells never taken",
             "an image whose own cells measure under half the folder's, or none, is labelled at the folder's",
             "trainer/autolabel.py", "    from_folder = folder is not None and folder", "    from_folder = False and folder",
             ("tests/trainer/test_labelling.py",)),
    Mutation("folder: a narrower folder taken too",
             "only a folder's wider cells replace an image's own measure (its own wider one may be the cells)",
             "trainer/autolabel.py", "folder[0] >= FOLDER_WIDER * (first.diameter or _fallback(config))",
             "abs(np.log(folder[0] / (first.diameter or _fallback(config)))) >= np.log(FOLDER_WIDER)",
             ("tests/trainer/test_labelling.py",)),
    Mutation("folder optics: a tentative stain kept",
             "an image taken for a stain without a stain's colour, in a folder of label-free images, takes their optics",
             "trainer/autolabel.py",
             "return config.folder_modality if config.folder_modality and entry.tentative else entry.modality",
             "return entry.modality", ("tests/trainer/test_labelling.py",)),
    Mutation("folder optics: not voted",
             "a folder whose images are mostly label-free has their commonest optics",
             "trainer/autolabel.py", "if config.votes_optics and 2 * sum(label_free.values()) > len(checked):",
             "if False:", ("tests/trainer/test_labelling.py",)),
    Mutation("folder optics: colour stains overruled too",
             "only a stain's verdict without its colour is tentative",
             "runtime/data/modality.py", 'return self.modality == "stained" and self.chroma < STAIN_CHROMA',
             'return self.modality == "stained"', ("tests/trainer/test_labelling.py",)),
    Mutation("calibration: a grey stain among label-free frames",
             "a frame taken for a stain without its colour, among mostly label-free frames, is measured as one of them",
             "runtime/counting/calibration.py",
             "if evidence.modality in LABEL_FREE or (label_free_run and evidence.tentative):",
             "if evidence.modality in LABEL_FREE:", CALIBRATION_TESTS),
    Mutation("optics check: a grey stain warns a label-free model",
             "a stain without its colour is no evidence against a label-free model",
             "runtime/pipeline/domain.py", "(evidence.tentative and any(m in LABEL_FREE for m in trained))", "False",
             PIPELINE_TESTS),
    Mutation("folder: taken wherever an image measured nothing",
             "an image that measured no cells takes the folder's only where they are wider than its default size",
             "trainer/autolabel.py", "(first.diameter or _fallback(config))", "(first.diameter or 0.0)",
             ("tests/trainer/test_labelling.py",)),
    Mutation("calibration: one label-free frame's measure",
             "the calibration measures its label-free frames as one (a sparse field alone measures its specks)",
             "runtime/counting/calibration.py", "label_free = pooled(copies)", "label_free = pooled(copies[:1])",
             CALIBRATION_TESTS),
    Mutation("folder: copies not pooled",
             "a folder's images are measured as one image: each copy's cells pooled over them",
             "runtime/data/first_pass.py", "[FirstPass(keep(np.concatenate(parts)), factor)",
             "[FirstPass(keep(parts[0]), factor)", MODALITY_TESTS),
    Mutation("folder: specks kept in the pool",
             "a folder's pool drops the measures of specks by area (empty fields of dust outnumber a few large cells)",
             "runtime/data/first_pass.py", "    return diameters[~small]", "    return diameters", MODALITY_TESTS),
    Mutation("folder: the labeller's pool keeps its specks",
             "a folder to label measures its cells with its specks dropped by area",
             "trainer/autolabel.py", "entry.copies), drop_specks=True)", "entry.copies), drop_specks=False)",
             MODALITY_TESTS),
    Mutation("folder: small cells dropped as specks",
             "measures under half the pool's median by area are specks only where they hold little of its area",
             "runtime/data/first_pass.py", ">= SPECK_AREA * area[-1]:", ">= 2 * area[-1]:", MODALITY_TESTS),
    Mutation("one-cell rule: the given cell area ignored",
             "where a frame has too few single cells, the caller's cell area is the one-cell rule's yardstick",
             "runtime/counting/instances.py", "(_median_cell(stats, shape, min_area, single) or cell_area)",
             "_median_cell(stats, shape, min_area, single)", COUNTER_TESTS),
    Mutation("label-free: no cell area for the split",
             "label-free images give the split their estimated cell's area",
             "trainer/autolabel.py", 'scaled.typical_area if label_free and origin != "default" else None)', "None)",
             LABEL_FREE_TESTS),
    Mutation("label-free: smooth cells' scales fixed",
             "the energy's scales grow with smooth cells (RBCs) wider than 20 px",
             "trainer/label_free.py", "(BBBC030_DIAMETER if processes else SMOOTH_CELLS_UP_TO)", "BBBC030_DIAMETER",
             LABEL_FREE_TESTS),
    Mutation("label-free: holes filled only after the erosion",
             "an unstained cell's outline is filled before the energy's erosion can open it into an arc",
             "trainer/label_free.py", "fill_holes(rings, max_area=np.pi * diameter_px ** 2 / 4)", "rings",
             LABEL_FREE_TESTS),
    Mutation("DIC RBCs not closed along the shear",
             "a DIC mask of smooth cells is closed along the shear axis, where their relief fades",
             "trainer/autolabel.py", 'if modality == "dic" and smooth:', "if False:",
             LABEL_FREE_TESTS),
    Mutation("DIC RBCs: the integrated path not joined",
             "a DIC mask of smooth cells is joined by the cells of its optical path, integrated along the shear",
             "trainer/label_free.py",
             "return cv2.bitwise_or(closed, path_cells(optical_path(grey, diameter_px, u), closed, diameter_px))",
             "return closed", LABEL_FREE_TESTS),
    Mutation("DIC path: sign not chosen",
             "the integrated path's sign is the one that makes the cells rise above the background",
             "trainer/label_free.py", "return -path if cv2.mean(path, mask)[0] < cv2.mean(path, outside)[0] else path",
             "return path",
             LABEL_FREE_TESTS),
    Mutation("DIC path: the shear read on the wrong axis",
             "the path is integrated along the shear axis (x and y as the image has them)",
             "trainer/label_free.py", "np.float32(2 * np.pi * axis[1]) * np.fft.fftfreq(x.shape[0])",
             "np.float32(2 * np.pi * axis[0]) * np.fft.fftfreq(x.shape[0])", LABEL_FREE_TESTS),
    Mutation("DIC path: streaks kept",
             "a thin line of the path (a fibre or a scratch integrated) is opened away",
             "trainer/label_free.py",
             "cv2.morphologyEx(cells, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))", "cells",
             LABEL_FREE_TESTS),
    Mutation("DIC path: parts the relief does not show kept",
             "a part of the integrated path that the mask does not touch (an out-of-focus blob) is not a cell",
             "trainer/label_free.py", "unseen = np.bincount(labels[mask > 0], minlength=n) == 0",
             "unseen = np.zeros(n, bool)", LABEL_FREE_TESTS),
    Mutation("DIC path: specks kept",
             "a part of the path under a quarter of a cell (an integrated speck) is not a cell",
             "trainer/label_free.py", "PATH_MIN_AREA = 0.25", "PATH_MIN_AREA = 0.0", LABEL_FREE_TESTS),
    Mutation("DIC macrophages closed along the shear too",
             "textured cells are not: it joined touching ones",
             "trainer/autolabel.py", 'if modality == "dic" and smooth:', 'if modality == "dic":',
             LABEL_FREE_TESTS),
    Mutation("stained: the cell area given too",
             "stained smears do not: there it joined overlapping cells",
             "trainer/autolabel.py", 'scaled.typical_area if label_free and origin != "default" else None)',
             'scaled.typical_area if origin != "default" else None)',
             LABEL_FREE_TESTS),
    # Modality detection (issue #21).
    Mutation("relief: unit vectors",
             "a relief's direction counts as far as its bright and dark sides lie apart, not a halo moved a pixel",
             "runtime/data/modality.py", "* min(1.0, length / full))", ")", MODALITY_TESTS),
    Mutation("faint: judged only with enough objects",
             "a sparse field's faint cells (one or two objects) are unstained brightfield, not a stain",
             "runtime/data/modality.py", 'if evidence["contrast"] and evidence["contrast"] < FAINT:',
             'if deviation is not None and evidence["contrast"] < FAINT:', MODALITY_TESTS),
    Mutation("detection: the whole frame shrunk, whatever its cells' width",
             "a large frame of small cells is judged where they keep the width detection was set on",
             "runtime/data/modality.py", "if found.diameters is None or found.diameter / factor >= narrowest:",
             "if True:", MODALITY_TESTS),
    Mutation("detection: a large frame's colour judged shrunk whole",
             "a large frame of small stained cells is told by their colour where they keep their width",
             "runtime/data/modality.py", "if window is not None and image.ndim == 3:", "if False:", MODALITY_TESTS),
    Mutation("detection: a few specks believed",
             "a large frame is sent to a window only where the first pass measured a field of cells, not a few specks",
             "runtime/data/modality.py", "< PROBE_MIN_COVER * probe.size:", "< 0:", MODALITY_TESTS),
    Mutation("blank: the whole frame's copy alone",
             "a full frame of small cells that average away on its copy is not blank where its windows show them",
             "runtime/counting/blank.py", "return all(_flat(window, noise_test_lit=True) for window in _windows(image))",
             "return True", ("tests/runtime/counting/test_blank.py",)),
    Mutation("optics checked on blank frames",
             "a blank frame (lamp off, lens cap) shows no optics and is not checked for them",
             "runtime/pipeline/stream.py", "optics = None if frame.blank else self.domain.check_optics(frame)",
             "optics = self.domain.check_optics(frame)", PIPELINE_TESTS),
    Mutation("faint: dark-only rule first",
             "contrast too faint for a stain is unstained brightfield, of either sign",
             "runtime/data/modality.py", 'and evidence["contrast"] < FAINT:\n',
             'and evidence["contrast"] < FAINT and (evidence["bright_share"] or 0) >= BRIGHT_SHARE:\n', MODALITY_TESTS),
    Mutation("absorbers: grey smears left to brightfield",
             "a grey field darkened by more than its texture covers is a stain's smooth absorbers, not unstained cells",
             "runtime/data/modality.py", 'elif evidence["absorption"] >= ABSORBING and evidence["cover"] < TEXTURED_COVER:',
             'elif False:', MODALITY_TESTS),
    Mutation("absorbers: texture's cover ignored",
             "dense label-free cells darken as much of the field as a grey smear, but their texture covers it",
             "runtime/data/modality.py", 'elif evidence["absorption"] >= ABSORBING and evidence["cover"] < TEXTURED_COVER:',
             'elif evidence["absorption"] >= ABSORBING:', MODALITY_TESTS),
    # The calibration's cost (issue #24: a run's start, a 4000×3000 frame's minutes).
    Mutation("calibration: whole frame always segmented",
             "the model sees the centre of a large frame that one input holds, not every tile",
             "runtime/counting/calibration.py",
             "first = [frames[0]] if (crop_h, crop_w) == (height, width) else [frames[0][y:y + crop_h, x:x + crop_w], "
             "frames[0]]", "first = [frames[0]]", CALIBRATION_TESTS),
    Mutation("calibration: an empty centre kept",
             "a centre with too few cells gives way to the whole frame",
             "runtime/counting/calibration.py", "        if sum(cells) >= MIN_CELLS:\n", "        if True:\n",
             CALIBRATION_TESTS),
    Mutation("calibration: the first frame alone votes",
             "where the first frame holds too few cells, the next calibration frames say which class is the ruler too",
             "runtime/counting/calibration.py", "for k, view in enumerate([*first, *frames[1:]]):",
             "for k, view in enumerate(first):", CALIBRATION_TESTS),
    Mutation("calibration: a named ruler still voted",
             "a ruler the user names (--calibrate-on) is taken without the model's vote",
             "runtime/counting/calibration.py", "voted = not given and len(targets) > 1 and max(cells) > 0",
             "voted = len(targets) > 1 and max(cells) > 0", CALIBRATION_TESTS),
    Mutation("calibration: a vote on label-free frames unwarned",
             "the model's vote on the ruler is warned about on label-free frames (it cannot tell a field of one kind "
             "of cell there)", "runtime/counting/calibration.py",
             "if not (calibration.found and calibration.voted and calibration.label_free):", "if True:",
             CALIBRATION_TESTS),
    Mutation("calibration: every vote taken for a label-free one",
             "a vote on stained frames is not warned about: their colour tells the model's classes apart",
             "runtime/counting/calibration.py", "voted=voted,\n                       label_free=label_free)",
             "voted=voted,\n                       label_free=True)", CALIBRATION_TESTS),
    Mutation("scale watch: RBCs whatever the ruler",
             "the scale watch follows the calibration's ruler (an RBC watch over macrophage fields never sees a change)",
             "runtime/pipeline/stream.py", "            self.scale_watch = ScaleWatch(names.index(found.ruler))\n",
             "            pass\n", CALIBRATION_TESTS),
    Mutation("recalibration: the ruler voted again",
             "a recalibration after a change of magnification keeps the first calibration's ruler",
             "runtime/pipeline/stream.py", "ruler = self.calibration.ruler if carried else self.options.calibrate_on",
             "ruler = self.options.calibrate_on", CALIBRATION_TESTS),
    Mutation("run: a vote on label-free frames unwarned",
             "a run whose ruler the model voted on label-free frames warns, once, and records it as the scale warning",
             "runtime/pipeline/stream.py", "            self.scale_warning = vote_warning(self.calibration, meta)\n",
             "", CALIBRATION_TESTS),
    Mutation("wide Gaussian: border replicated",
             "the flattening blur reflects the frame at its border as OpenCV's own blur does",
             "runtime/data/energy.py", "(-w) % factor, cv2.BORDER_REFLECT_101)", "(-w) % factor, cv2.BORDER_REPLICATE)",
             CALIBRATION_TESTS),
    # Which model and which backend a run takes untold.
    Mutation("auto: the first frames' optics not read",
             "a camera, a video or a folder of label-free frames runs the bundled label-free model under --modality auto",
             "runtime/cli/run.py", "modality = _first_optics(src)", "modality = \"auto\"", PIPELINE_TESTS),
    Mutation("auto: dark frames vote on the optics",
             "the model is chosen by the optics of the lit frames read ahead, not a camera's dark first frames",
             "runtime/cli/run.py", "for frame in read.first if not frame.blank)", "for frame in read.first)", PIPELINE_TESTS),
    Mutation("read ahead: blank frames taken as lit",
             "frames are read ahead until enough lit ones, past a camera's first dark frames",
             "runtime/io/sources.py", "read, seen = read + 1, seen + (not frame.blank)", "read, seen = read + 1, seen + 1",
             PIPELINE_TESTS),
    Mutation("read ahead: frames read ahead not played",
             "every frame read ahead is played to the run, in order",
             "runtime/io/sources.py", "yield held.pop(0)", "held.pop(0)", PIPELINE_TESTS),
    Mutation("read ahead: a stalled read ahead played at its end",
             "frames of a read ahead that stopped waiting are played as they come, not once it has read them all",
             "runtime/io/sources.py", "        while self._outcome is None:  # a read ahead that stalled",
             "        self._reader.join()\n        while self._outcome is None:  # a read ahead that stalled", PIPELINE_TESTS),
    Mutation("read ahead: a camera left unread while the model loads",
             "a live source is read on after its read ahead, its newest frame kept for the run",
             "runtime/io/sources.py", "        if self.live:\n            self._drain()\n", "", PIPELINE_TESTS),
    Mutation("read ahead: no bound on the wait",
             "the read ahead waits for a frame at most 5 s or the stall timeout, so a camera stalled at the start stops",
             "runtime/cli/run.py", "min(stall_timeout, READ_AHEAD_WAIT)", "None", PIPELINE_TESTS),
    Mutation("read ahead: closed under its reader",
             "a read ahead closed before the run stops its reader first: a camera released under a read reconnected",
             "runtime/io/sources.py", "        self._closing.set()\n        self._handed_over.set()\n        self._reader.join(READER_JOIN)\n",
             "", PIPELINE_TESTS),
    Mutation("stall: frames after it taken",
             "the capture stops at a stall: a source back after it does not keep the stalled run going",
             "runtime/pipeline/stream.py", "if frame is None or self._source_over.is_set():", "if frame is None:",
             PIPELINE_TESTS),
    Mutation("stall: captured frames left unsegmented",
             "frames captured before a source stalls are counted, also while the run gathers its calibration frames",
             "runtime/pipeline/stream.py", "held them unsegmented).\n                        self._source_over.set()",
             "held them unsegmented).\n                        return", PIPELINE_TESTS),
    Mutation("auto: OpenVINO whenever installed",
             "the CPU backend that ran the model faster in the trial is taken, not OpenVINO by default",
             "runtime/backends/select.py", 'if rates["openvino"] >= rates["ort"] else ("ort", "openvino")',
             'if True else ("ort", "openvino")', ("tests/runtime/backends/test_openvino_runner.py",)),
    Mutation("uploads: a second trial",
             "a runner beside a live one opens the live one's CPU backend, not auto's trial",
             "runtime/backends/select.py", 'return {"onnxruntime": "ort", "openvino": "openvino"}.get(runner.name, asked)',
             "return asked", ("tests/runtime/backends/test_openvino_runner.py",)),
)


@dataclass(frozen=True)
class Outcome:
    """What one mutation's tests did."""

    name: str
    rule: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    outcome: str  # killed | survived | error
    seconds: float
    failed: list[str]  # pytest's FAILED/ERROR lines: which test noticed


def working_tree(repo: Path) -> list[str]:
    """The files a checkout of ``repo`` would hold now: tracked and untracked, less what .gitignore ignores."""
    listed = git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted({p for p in listed.split("\0") if p and (repo / p).is_file()})  # deleted-but-tracked: skipped


def copy_tree(repo: Path, scratch: Path) -> Path:
    """``repo``'s working tree copied to ``scratch/main``, with ``scratch/shared`` linking ``repo``'s
    ``../shared`` when there is one (tests find the real images as ``../shared/real`` of the repository)."""
    dest = scratch / "main"
    for rel in working_tree(repo):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dest / rel)
    shared = repo.parent / "shared"
    if shared.is_dir():
        (scratch / "shared").symlink_to(shared.resolve(), target_is_directory=True)
    return dest


def copy_env(root: Path) -> dict[str, str]:
    """The environment the copy's tests run in: its own packages first, and no bytecode written — a mutation
    restored within the same second at the same size (0.35 → 0.05) would otherwise be read back from a stale .pyc."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def check_imports(root: Path) -> None:
    """Stop unless the copy's Python imports the copy's packages (an editable install could win otherwise)."""
    code = "import benchmarks, export, runtime, trainer; print('\\n'.join(m.__file__ for m in " \
           "(benchmarks, export, runtime, trainer)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=copy_env(root), capture_output=True, text=True)
    if done.returncode:
        raise MutationError(f"the copy at {root} does not import: {done.stderr.strip()}")
    outside = [f for f in done.stdout.split() if not Path(f).resolve().is_relative_to(root.resolve())]
    if outside:
        raise MutationError(f"the copy at {root} imports modules from elsewhere: {', '.join(outside)}")


def run_tests(root: Path, tests: tuple[str, ...], timeout_s: float = TIMEOUT_S) -> tuple[int | None, float, list[str]]:
    """pytest's exit code (None on a timeout), seconds, and its FAILED/ERROR summary lines, run in ``root``."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=root, env=copy_env(root), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, round(time.perf_counter() - start, 1), [f"timeout after {timeout_s} s"]
    lines = [line for line in done.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return done.returncode, round(time.perf_counter() - start, 1), lines


def apply(mutation: Mutation, root: Path) -> str:
    """Apply ``mutation`` in the tree at ``root``; returns the file's original text to restore."""
    path = root / mutation.path
    text = path.read_text()
    found = text.count(mutation.old)
    if found != 1:
        raise MutationError(f"{mutation.name}: {mutation.old!r} occurs {found} times in {mutation.path}, not once")
    path.write_text(text.replace(mutation.old, mutation.new))
    return text


def mutate(mutation: Mutation, root: Path, timeout_s: float = TIMEOUT_S) -> Outcome:
    """Run ``mutation``'s tests with it applied in ``root``, then restore the file (its text and its times)."""
    path = root / mutation.path
    times = path.stat()
    original = apply(mutation, root)
    try:
        code, seconds, failed = run_tests(root, mutation.tests, timeout_s)
    finally:
        path.write_text(original)
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
    # pytest: 0 all passed, 1 some failed; anything else (collection error, nothing collected, a timeout) says
    # nothing about whether the tests check the rule.
    outcome = {0: "survived", 1: "killed"}.get(code, "error")
    return Outcome(mutation.name, mutation.rule, mutation.path, mutation.old, mutation.new, mutation.tests, outcome,
                   seconds, failed if outcome != "survived" else [])


def measure(mutations: tuple[Mutation, ...] = MUTATIONS, repo: Path = ROOT) -> dict:
    """Every mutation's outcome on a copy of ``repo``'s working tree, after a green baseline of their tests."""
    tests = tuple(dict.fromkeys(t for m in mutations for t in m.tests))
    with tempfile.TemporaryDirectory(prefix="csc-mutation-") as scratch:
        root = copy_tree(repo, Path(scratch))
        check_imports(root)
        code, seconds, failed = run_tests(root, tests)
        if code != 0:
            raise MutationError(f"the tests fail (exit {code}) without any mutation: {failed}")
        outcomes = []
        for mutation in mutations:
            outcome = mutate(mutation, root)
            print(f"{outcome.outcome:8} {outcome.seconds:6.1f} s  {mutation.name}", file=sys.stderr, flush=True)
            outcomes.append(outcome)
    killed = sum(o.outcome == "killed" for o in outcomes)
    return {"what": "each named rule broken by one exact source edit on a copy of the tree; killed = a test failed",
            "machine": machine(), **tree_state(repo),
            "baseline": {"tests": list(tests), "passed": True, "seconds": seconds},
            "killed": killed, "survived": sum(o.outcome == "survived" for o in outcomes),
            "errors": sum(o.outcome == "error" for o in outcomes), "total": len(outcomes),
            "score": round(killed / max(1, len(outcomes)), 3), "mutations": [asdict(o) for o in outcomes]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="run only the mutation(s) with this name (repeat); see MUTATIONS")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    chosen = MUTATIONS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTATIONS}
        if unknown:
            parser.error(f"no mutation named {', '.join(sorted(unknown))}; known: "
                         f"{'; '.join(m.name for m in MUTATIONS)}")
        chosen = tuple(m for m in MUTATIONS if m.name in args.only)
    publish(measure(chosen), args.out)
