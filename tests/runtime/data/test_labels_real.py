"""`csc-data import` and `csc-data export` on files the labelling tools themselves wrote (issue #26): Roboflow's
box-only COCO, CVAT's boxes, points and project exports, StarDist's 3-D label stack, LabelMe's embedded images,
its `__ignore__` and labelme2coco's `_background_`, COCO crowd regions, labelme2voc's palette PNGs.

The files live in ../shared/labels-real (see its MANIFEST.txt; never copied into this tree); each test skips
without them. Expected counts are read from the files themselves (JSON, XML, Pillow's palette indices), not from
this project's readers.
"""
import base64
import io
import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from runtime.data.annotations import export_dataset, read_annotations
from runtime.data.annotations.classmap import ClassMap
from runtime.data.annotations.writer import NothingImported, import_annotations
from runtime.cli.data import app
from runtime.data.count_dataset import open_count_dataset
from runtime.data.dataset import open_dataset
from runtime.errors import CscError

REAL = Path(__file__).resolve().parents[4] / "shared" / "labels-real"


def real(*parts: str) -> Path:
    path = REAL.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the labelling tools' own files live in ../shared/labels-real")
    return path


def run_import(fmt, src, images, out, classes=None, crowd="cell", **kw):
    return import_annotations(read_annotations(fmt, src, crowd=crowd), images, out, ClassMap.parse(classes),
                              origin=f"import:{fmt}", **kw)


def cli_import(fmt, src, images, out, *options):
    return CliRunner().invoke(app, ["import", fmt, str(src), "--images", str(images), "--out", str(out), *options])


def linked(folder: Path, links: dict[str, Path]) -> Path:
    """A folder of symbolic links to real files under other names (the real files stay where they are)."""
    folder.mkdir(parents=True)
    for name, target in links.items():
        (folder / name).symlink_to(target)
    return folder


def box_counts(root: Path) -> Counter:
    data = open_count_dataset(root)
    return Counter({n: sum(len(s.boxes.get(n, ())) for s in data.samples) for n in data.classes[1:]})


# ---------------------------------------------------------------- 2. box-only COCO: a count-only boxes dataset


def test_roboflow_box_only_coco_imports_as_a_boxes_dataset_and_checks_ok(tmp_path):
    """Roboflow's usual export (segmentation [] beside every bbox) imported 0 cells, exit 0, and check said ok."""
    folder = real("coco-roboflow-rbc-boxes")
    doc = json.loads((folder / "_annotations.coco.json").read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    assert all(a["segmentation"] == [] for a in doc["annotations"])
    result = cli_import("coco", folder / "_annotations.coco.json", folder, tmp_path / "out")
    assert result.exit_code == 0, result.output
    data = open_count_dataset(tmp_path / "out")
    assert data.kind == "boxes" and len(data) == len(doc["images"]) == 10
    assert box_counts(tmp_path / "out") == Counter(names[a["category_id"]] for a in doc["annotations"])
    assert sum(box_counts(tmp_path / "out").values()) == 221
    assert data.classes == ["background", "rbc", "wbc"], "Roboflow's parent category RBC-WBC is not a class"
    first = doc["annotations"][0]
    image = next(i for i in doc["images"] if i["id"] == first["image_id"])
    x, y, w, h = first["bbox"]
    sample = data.by_stem()[Path(image["file_name"]).stem]
    assert [x, y, x + w, y + h] in sample.boxes[names[first["category_id"]]].tolist()
    check = CliRunner().invoke(app, ["check", str(tmp_path / "out")])
    assert check.exit_code == 0 and "ok" in check.output


def test_coco_boxes_beside_polygons_are_ignored_and_alone_are_a_boxes_dataset(tmp_path):
    """Datumaro's COCO assets: a box-only annotation (train) makes a boxes dataset."""
    root = real("datumaro-assets", "coco_dataset", "coco_instances")
    src = root / "annotations" / "instances_train.json"
    doc = json.loads(src.read_text())
    s = run_import("coco", src, root / "images" / "train", tmp_path / "out")
    assert s.kind == "boxes" and s.images == 1 and sum(s.cells.values()) == len(doc["annotations"]) == 1
    x, y, w, h = doc["annotations"][0]["bbox"]
    assert open_count_dataset(tmp_path / "out").samples[0].boxes["b"].tolist() == [[x, y, x + w, y + h]]


# ---------------------------------------------------------------- 3. CVAT <box> and <points>: count-only marks


def cvat_subset_of(src: Path, out: Path, keep: set[str]) -> Path:
    """The real CVAT file with only the elements ``keep`` in its images (as a task of boxes or points would be)."""
    tree = ET.parse(src)
    for image in tree.getroot().iter("image"):
        for child in list(image):
            if child.tag not in keep:
                image.remove(child)
    tree.write(out)
    return out


def test_cvat_boxes_and_points_are_count_only_marks(tmp_path):
    task = real("datumaro-assets", "cvat_dataset", "for_images", "export_task")
    root = ET.parse(task / "train.xml").getroot()
    n_points = sum(len(el.get("points").split(";")) for el in root.iter("points"))
    n_boxes = len(root.findall(".//box"))
    assert (n_points, n_boxes) == (3, 1)

    boxes = cvat_subset_of(task / "train.xml", tmp_path / "boxes.xml", {"box"})
    s = run_import("cvat", boxes, task / "images", tmp_path / "b")
    box = root.find(".//box")
    assert s.kind == "boxes" and s.images == 2 and s.cells == {"label1": n_boxes, "label2": 0}
    expected = [[float(box.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")]]
    assert open_count_dataset(tmp_path / "b").by_stem()["img0"].boxes["label1"].tolist() == expected

    marks = cvat_subset_of(task / "train.xml", tmp_path / "marks.xml", {"box", "points"})
    s = run_import("cvat", marks, task / "images", tmp_path / "p")
    assert s.kind == "points" and s.cells == {"label1": n_boxes, "label2": n_points}
    assert any("each box counted at its centre" in note for note in s.notes)
    points = open_count_dataset(tmp_path / "p").by_stem()
    assert points["img0"].points["label1"].tolist() == [[(expected[0][0] + expected[0][2]) / 2,
                                                          (expected[0][1] + expected[0][3]) / 2]]
    assert points["img1"].points["label2"].tolist() == [[1, 2], [3, 4], [5, 6]]


def test_cvat_file_mixing_shapes_and_marks_imports_the_shapes_and_says_so(tmp_path):
    """The rule for a mixed file: shapes win; its boxes and points are reported as ignored, one per mark."""
    task = real("datumaro-assets", "cvat_dataset", "for_images", "export_task")
    s = run_import("cvat", task / "train.xml", task / "images", tmp_path / "out", "*=cell")
    assert s.kind == "masks" and s.ignored == {"box": 1, "point": 3, "polyline": 1}
    assert any("not imported beside polygons or masks" in note for note in s.notes)


# ---------------------------------------------------------------- 4. CVAT project export: subsets


def test_cvat_project_export_imports_every_subset_under_its_own_name(tmp_path):
    """A project export holds Train/Validation/Test, each with its own img0.jpg and img1.jpg: it imported 0 images."""
    project = real("datumaro-assets", "cvat_dataset", "for_images", "export_project")
    root = ET.parse(project / "annotations.xml").getroot()
    entries = [(el.get("subset"), el.get("name")) for el in root.iter("image")]
    assert len(entries) == 6 and len(set(entries)) == 6 and len({name for _, name in entries}) == 2
    s = run_import("cvat", project / "annotations.xml", project / "images", tmp_path / "out")
    assert s.images == 6 and not s.missing_images
    stems = sorted(p.stem for p in (tmp_path / "out" / "images").iterdir())
    assert stems == sorted(f"{subset}_{Path(name).stem}" for subset, name in entries)
    for subset, name in entries:
        written = tmp_path / "out" / "images" / f"{subset}_{name}"
        assert written.read_bytes() == (project / "images" / subset / name).read_bytes()
    polygons = len(root.findall(".//polygon"))
    assert sum(s.cells.values()) + s.outside == polygons == 3
    assert s.ignored["box"] == 3 and s.ignored["point"] == 9 and s.ignored["polyline"] == 3


# ---------------------------------------------------------------- 5. 3-D label stacks


def test_a_3d_label_stack_is_refused_naming_the_file(tmp_path):
    """StarDist's mask3d.tif (31 planes, 51 cells) imported as its first plane (10 cells) without a word."""
    original = real("masks-stardist", "original")
    ok, planes = cv2.imreadmulti(str(original / "mask3d.tif"), flags=cv2.IMREAD_UNCHANGED)
    assert ok and len(planes) == 31 and len(np.unique(np.stack(planes))) - 1 == 51
    labels = linked(tmp_path / "labels", {"cells_mask.tif": original / "mask3d.tif"})
    images = linked(tmp_path / "images", {"cells.tif": original / "img3d.tif"})
    with pytest.raises(CscError, match=r"cells_mask\.tif: a stack of 31 label planes of 57×61 px"):
        run_import("masks", labels, images, tmp_path / "strict", "*=nucleus", strict=True)
    result = cli_import("masks", labels, images, tmp_path / "out", "--classes", "*=nucleus")
    assert result.exit_code != 0
    assert "cells_mask.tif" in result.output and "a stack of 31 label planes" in result.output


def test_stardist_2d_labels_still_import_every_nucleus(tmp_path):
    layout = real("masks-stardist", "layout")
    truth = cv2.imread(str(layout / "labels" / "img2d_mask.tif"), cv2.IMREAD_UNCHANGED)
    nuclei = len(np.unique(truth)) - 1
    s = run_import("masks", layout / "labels", layout / "images", tmp_path / "out", "*=nucleus")
    assert nuclei == 125 and s.images == 1 and s.cells == {"nucleus": nuclei}


# ---------------------------------------------------------------- 6. LabelMe's embedded imageData


def test_labelme_embedded_image_data_becomes_the_dataset_image(tmp_path):
    """apc2016_obj3.json names itself as imagePath and carries the image: "not found", 0 images, exit 0."""
    src = real("labelme", "tutorial", "apc2016_obj3.json")
    doc = json.loads(src.read_text())
    assert doc["imagePath"] == src.name
    empty = tmp_path / "no-images"
    empty.mkdir()
    result = cli_import("labelme", src, empty, tmp_path / "out")
    assert result.exit_code == 0, result.output
    data = open_dataset(tmp_path / "out")
    assert [p.name for p in (tmp_path / "out" / "images").iterdir()] == ["apc2016_obj3.jpg"]
    assert data.samples[0].image.read_bytes() == base64.b64decode(doc["imageData"])
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert sum(meta["counts"].values()) == len(doc["shapes"]) == 4 and meta["import"]["hidden"] == 0
    assert data.load(0).mask.shape == (doc["imageHeight"], doc["imageWidth"])


# ---------------------------------------------------------------- 7. nothing imported from something: an error


def test_zero_cells_from_a_non_empty_file_is_an_error(tmp_path):
    root = real("datumaro-assets", "coco_dataset", "coco_instances")
    src = root / "annotations" / "instances_val.json"
    result = cli_import("coco", src, root / "images" / "val", tmp_path / "out", "--classes", "c=rbc")
    assert result.exit_code != 0
    assert "imported no cell from the 2 annotations" in str(result.exception)
    result = cli_import("coco", src, root / "images" / "val", tmp_path / "ok", "--classes", "a=rbc")
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- 8. conventions: __ignore__, _background_, crowds


def labelme_instances(folder: Path) -> tuple[int, int]:
    """Cells a LabelMe folder holds as LabelMe's own converters count them (one per label and group_id, or per
    ungrouped shape), and its __ignore__ shapes."""
    cells = ignored = 0
    for path in folder.glob("*.json"):
        shapes = json.loads(path.read_text())["shapes"]
        ignored += sum(s["label"] == "__ignore__" for s in shapes)
        kept = [s for s in shapes if s["label"] != "__ignore__"]
        cells += sum(s.get("group_id") is None for s in kept)
        cells += len({(s["label"], s["group_id"]) for s in kept if s.get("group_id") is not None})
    return cells, ignored


def test_labelme_ignore_label_is_ignored_by_default(tmp_path):
    """__ignore__ stopped the import without --classes, with advice that dropped every other class."""
    folder = real("labelme", "instance_segmentation", "data_annotated")
    cells, ignored = labelme_instances(folder)
    assert (cells, ignored) == (12, 2)
    result = cli_import("labelme", folder, folder, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "__ignore__" in result.output and "LabelMe's region to ignore" in result.output
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["import"]["ignored"] == {"__ignore__": ignored} and "__ignore__" not in meta["classes"]
    assert sum(meta["counts"].values()) + meta["import"]["hidden"] == cells


def test_labelme2coco_background_category_is_not_a_class(tmp_path):
    root = real("labelme", "instance_segmentation", "data_dataset_coco")
    doc = json.loads((root / "annotations.json").read_text())
    assert doc["categories"][0]["name"] == "_background_"
    s = run_import("coco", root / "annotations.json", root / "JPEGImages", tmp_path / "out")
    assert "_background_" not in s.classes and s.images == 3
    assert sum(s.cells.values()) + s.hidden == len(doc["annotations"]) == 12
    assert any("_background_" in note for note in s.notes)
    used = {c["name"] for c in doc["categories"] if any(a["category_id"] == c["id"] for a in doc["annotations"])}
    assert set(s.classes[1:]) >= used and "potted plant" not in s.classes, "VOC's unused 'potted plant' left out"


def test_advice_for_an_unusable_class_name_keeps_the_other_classes():
    """The advice used to be `--classes '__ignore__=NAME'`, which drops every class it does not name."""
    with pytest.raises(CscError, match=r"--classes 'potted plant=NAME,person,RBC=rbc'"):
        ClassMap().resolve(["potted plant", "person", "RBC"])


def test_crowd_regions_are_cells_by_default_or_skipped_and_the_rule_is_said(tmp_path):
    root = real("datumaro-assets", "coco_dataset", "coco_instances")
    src = root / "annotations" / "instances_val.json"
    crowds = sum(a["iscrowd"] for a in json.loads(src.read_text())["annotations"])
    assert crowds == 1
    s = run_import("coco", src, root / "images" / "val", tmp_path / "cell")
    assert s.cells == {"a": 0, "b": 1, "c": 0} and s.hidden == 1, "the crowd region, drawn later, covers a's cell"
    assert any("--crowd cell" in n for n in s.notes)
    s = run_import("coco", src, root / "images" / "val", tmp_path / "skip", crowd="skip")
    assert s.cells == {"a": 1, "b": 0, "c": 0} and s.ignored == {"crowd region": crowds}
    assert any("left out (--crowd skip" in n for n in s.notes)
    result = cli_import("coco", src, root / "images" / "val", tmp_path / "cli", "--crowd", "skip")
    assert result.exit_code == 0 and "--crowd skip" in result.output


# ---------------------------------------------------------------- 9. palette PNGs


def test_palette_label_pngs_import_their_indices(tmp_path):
    """labelme2voc's SegmentationObject PNGs were refused: OpenCV expanded the palette to colours."""
    image_module = pytest.importorskip("PIL.Image")
    labels = real("labelme", "instance_segmentation", "data_dataset_voc", "SegmentationObject")
    photos = real("labelme", "instance_segmentation", "data_annotated")
    indices = {p.stem: np.array(image_module.open(p)) for p in sorted(labels.glob("*.png"))}
    assert all(image_module.open(p).mode == "P" for p in labels.glob("*.png"))
    s = run_import("masks", labels, photos, tmp_path / "out", "*=object", strict=True)
    data = open_dataset(tmp_path / "out")
    assert s.images == 3 and not s.skipped
    for i, sample in enumerate(data.samples):
        truth = indices[sample.stem]
        cells = np.setdiff1d(np.unique(truth), [0, 255])
        instances = data.load(i).instances
        assert len(np.unique(instances)) - 1 == len(cells)
        assert np.array_equal(instances > 0, np.isin(truth, cells)), "255 (void) and 0 are not cells"
    assert sum(s.cells.values()) == 12


def test_palette_void_index_is_not_a_cell(tmp_path):
    """VOC's 255 border, written as labelme2voc writes its PNGs (the palette of a real SegmentationObject file)."""
    image_module = pytest.importorskip("PIL.Image")
    real_png = real("labelme", "instance_segmentation", "data_dataset_voc", "SegmentationObject", "2011_000003.png")
    palette = image_module.open(real_png).getpalette()
    ids = np.zeros((20, 30), np.uint8)
    ids[2:8, 2:8], ids[10:16, 10:16] = 1, 2
    ids[1, 1:9] = ids[9, 9:17] = 255
    (tmp_path / "labels").mkdir()
    label = image_module.fromarray(ids)
    label.putpalette(palette)  # an 'L' image with a palette is a 'P' image
    assert label.mode == "P"
    label.save(tmp_path / "labels" / "a.png")
    images = tmp_path / "img"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((20, 30, 3), 200, np.uint8))
    s = run_import("masks", tmp_path / "labels", images, tmp_path / "out", "*=rbc")
    instances = open_dataset(tmp_path / "out").load(0).instances
    assert s.cells == {"rbc": 2, "macrophage": 0} and instances[1, 1] == 0 and instances[9, 12] == 0


def test_an_unusable_label_image_is_reported_by_its_own_name(tmp_path):
    """A colour rendering given as labels was reported as the photo being skipped, not the label file."""
    tutorial = real("labelme", "tutorial")
    labels = linked(tmp_path / "labels", {"apc2016_obj3_label.png": tutorial / "apc2016_obj3" / "label_viz.png"})
    images = linked(tmp_path / "images", {"apc2016_obj3.jpg": tutorial / "apc2016_obj3.jpg"})
    with pytest.raises(NothingImported) as failed:
        run_import("masks", labels, images, tmp_path / "out", "*=rbc")
    s = failed.value.summary
    assert s.images == 0 and s.skipped[0]["file"] == str(labels / "apc2016_obj3_label.png")
    assert "one channel" in s.skipped[0]["reason"]


# ---------------------------------------------------------------- 10. LabelMe export LabelMe itself reads


def labelme_shapes(folder: Path) -> list[dict]:
    return [s for p in sorted(folder.glob("*.json")) for s in json.loads(p.read_text())["shapes"]]


def labelme_polygons(folder: Path) -> list[dict]:
    return [s for s in labelme_shapes(folder) if s["shape_type"] == "polygon"]


def test_labelme_export_of_real_labels_gives_shapes_labelme_accepts(tmp_path):
    """labelme.utils.shape_to_mask asserts more than two points per polygon; the round trip keeps every cell, the
    two objects with holes in LabelMe's own example (filled back before) as masks."""
    folder = real("labelme", "instance_segmentation", "data_annotated")
    run_import("labelme", folder, folder, tmp_path / "in")
    written = export_dataset(tmp_path / "in", "labelme", tmp_path / "lm")
    assert all(len(shape["points"]) > 2 for shape in labelme_polygons(tmp_path / "lm"))
    assert Counter(s["shape_type"] for s in labelme_shapes(tmp_path / "lm"))["mask"] >= 2
    s = run_import("labelme", tmp_path / "lm", tmp_path / "in" / "images", tmp_path / "back")
    before = json.loads((tmp_path / "in" / "dataset.json").read_text())["counts"]
    assert s.cells == before and sum(before.values()) == written
    a, b = open_dataset(tmp_path / "in"), open_dataset(tmp_path / "back")
    for k in range(len(a)):
        was, now = a.load(k), b.load(k)
        pairs = np.unique(np.stack([was.instances.ravel(), now.instances.ravel()]), axis=1)
        assert np.array_equal(np.array(a.classes)[was.mask], np.array(b.classes)[now.mask]), "every pixel's class"
        assert len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1], "every cell back as exactly its pixels"


def ring_and_disc(tmp_path: Path) -> tuple[np.ndarray, Path]:
    """An instance label image: a square ring (a cell with a hole) with a cell in its hole, and a disc beside them."""
    ids = np.zeros((30, 50), np.uint16)
    ids[5:25, 6:28] = 1  # a ring: rows 5..24, columns 6..27
    ids[10:20, 11:21] = 0  # its hole
    ids[12:18, 13:19] = 2  # a cell in the hole
    cv2.circle(ids, (40, 15), 6, 3, -1)  # a disc: no hole
    return ids, import_label_image(tmp_path, ids)


def import_label_image(tmp_path: Path, ids: np.ndarray) -> Path:
    """``ids`` written as an instance mask beside a plain image and imported as RBCs into ``tmp_path/ds``; returns
    the images folder."""
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "labels" / "a.png"), ids)
    images = tmp_path / "img"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((*ids.shape, 3), 200, np.uint8))
    run_import("masks", tmp_path / "labels", images, tmp_path / "ds", "*=rbc")
    return images


def test_labelme_export_writes_a_cell_with_a_hole_as_labelme_mask_and_reads_it_back_exactly(tmp_path):
    """A cell with a hole came back filled from its outer polygon; it is now a LabelMe ``mask`` shape, written as
    LabelMe 6.3.1 writes one and placed as it reads one (checked against its code, quoted here), and our own
    reader gives back exactly its pixels. Cells without holes stay polygons, editable in LabelMe."""
    image_module = pytest.importorskip("PIL.Image")
    ids, images = ring_and_disc(tmp_path)
    export_dataset(tmp_path / "ds", "labelme", tmp_path / "lm")
    shapes = labelme_shapes(tmp_path / "lm")
    assert sorted(s["shape_type"] for s in shapes) == ["mask", "polygon", "polygon"]
    ring = next(s for s in shapes if s["shape_type"] == "mask")
    # labelme 6.3.1, labelme/utils/shape.py, shapes_to_label:
    #     (x1, y1), (x2, y2) = np.asarray(points).astype(int)
    #     mask[y1 : y2 + 1, x1 : x2 + 1] = shape["mask"]
    # so points are the box's top-left and bottom-right pixels, both inclusive, and the PNG is exactly the box.
    assert ring["points"] == [[6, 5], [27, 24]]
    # labelme 6.3.1, labelme/app.py, _shape_to_dict: mask=utils.img_arr_to_b64(shape.mask.astype(np.uint8)), i.e.
    # PIL.Image.fromarray(uint8 0/1).save(format="PNG") (utils/image.py): an 8-bit greyscale ("L") PNG of 0 and 1;
    # labelme/_label_file.py, _load_shape_json_obj: utils.img_b64_to_arr(shape["mask"]).astype(bool).
    png = image_module.open(io.BytesIO(base64.b64decode(ring["mask"])))
    assert png.format == "PNG" and png.mode == "L"
    crop = np.array(png)
    assert crop.shape == (24 - 5 + 1, 27 - 6 + 1) and set(np.unique(crop)) == {0, 1}
    labelme_drawn = np.zeros(ids.shape, bool)  # LabelMe's own placement, literally
    (x1, y1), (x2, y2) = np.asarray(ring["points"]).astype(int)
    labelme_drawn[y1 : y2 + 1, x1 : x2 + 1] = crop.astype(bool)
    assert np.array_equal(labelme_drawn, ids == 1), "LabelMe's shapes_to_label paints exactly the ring"
    assert ring["group_id"] is None and ring["label"] == "rbc"
    assert all(len(s["points"]) > 2 for s in shapes if s["shape_type"] == "polygon"), "disc and inner cell: polygons"

    s = run_import("labelme", tmp_path / "lm", images, tmp_path / "back")
    back = open_dataset(tmp_path / "back").load(0).instances
    assert s.cells["rbc"] == 3 and (s.overlapping, s.hidden) == (0, 0)
    for k in (1, 2, 3):
        assert len(np.unique(back[ids == k])) == 1 and back[ids == k][0] != 0
    assert np.array_equal(back > 0, ids > 0), "the ring's hole stays a hole, the cells in it and beside it stay"
    assert len(np.unique(back)) == 4


def test_labelme_export_keeps_cells_without_holes_as_polygons(mixed_dataset, tmp_path):
    """The simulated cells have no holes: every one is a polygon (editable in LabelMe), none a mask."""
    written = export_dataset(mixed_dataset, "labelme", tmp_path / "lm")
    shapes = labelme_shapes(tmp_path / "lm")
    assert written > 0 and {s["shape_type"] for s in shapes} == {"polygon"} and len(shapes) >= written


def test_labelme_export_writes_enclosing_cells_first_and_slivers_as_polygons(tmp_path):
    """A cell in another's hole was hidden under the outer cell's filled polygon (the ring is now a mask, which
    paints only its own pixels); a one-pixel-wide cell was written as a two-point polygon LabelMe refuses."""
    ids = np.zeros((30, 40), np.uint16)
    ids[5:25, 5:25] = 2  # a ring, exported after the cell in its hole in id order
    ids[10:20, 10:20] = 0  # the ring's hole
    ids[12:18, 12:18] = 1  # a cell inside it
    ids[3, 30:38] = 3  # one pixel wide: a two-point contour
    ids[27, 35] = 4  # one pixel: a one-point contour
    images = import_label_image(tmp_path, ids)
    export_dataset(tmp_path / "ds", "labelme", tmp_path / "lm")
    shapes = labelme_polygons(tmp_path / "lm")
    assert len(shapes) == 3 and all(len(s["points"]) > 2 for s in shapes)
    assert [s["shape_type"] for s in labelme_shapes(tmp_path / "lm")][0] == "mask", "the ring, written first"
    s = run_import("labelme", tmp_path / "lm", images, tmp_path / "back")
    back = open_dataset(tmp_path / "back").load(0).instances
    assert s.cells["rbc"] == 4 and s.hidden == 0
    assert len(np.unique(back[12:18, 12:18])) == 1 and back[14, 14] != back[6, 6] != 0, "the inner cell survives"
    assert np.array_equal(back[3, 29:39] > 0, ids[3, 29:39] > 0) and back[27, 35] != 0
