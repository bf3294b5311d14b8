"""Bringing labels in and out: round trips per format, every import format on small hand-made files, bad input."""
import json
import re

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from runtime.data.annotations import export_dataset, read_annotations
from runtime.data.annotations.classmap import ClassMap
from runtime.data.annotations.rle import cvat_mask, cvat_rle
from runtime.data.annotations.writer import NothingImported, import_annotations
from runtime.classes import CLASS_NAMES
from runtime.cli.data import app
from runtime.data.count_dataset import open_count_dataset
from runtime.data.dataset import DatasetWriter, label_origin, open_dataset
from runtime.errors import CscError


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two instance maps split the pixels the same way (ids may differ)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def run_import(fmt, src, images, out, classes=None, **kw):
    return import_annotations(read_annotations(fmt, src, kw.pop("class_table", None)), images, out,
                              ClassMap.parse(classes), origin=f"import:{fmt}", **kw)


@pytest.mark.parametrize("fmt, name", [("coco", "cells.json"), ("labelme", "labelme"), ("cvat", "cells.xml")])
def test_export_then_import_gives_the_same_masks_and_counts(mixed_dataset, tmp_path, fmt, name):
    written = export_dataset(mixed_dataset, fmt, tmp_path / name)
    summary = run_import(fmt, tmp_path / name, mixed_dataset / "images", tmp_path / "back")
    before, after = open_dataset(mixed_dataset), open_dataset(tmp_path / "back")
    assert [s.stem for s in before.samples] == [s.stem for s in after.samples]
    for i in range(len(before)):
        a, b = before.load(i), after.load(i)
        assert np.array_equal(a.mask, b.mask)
        assert same_partition(a.instances, b.instances)
    meta_before = json.loads((mixed_dataset / "dataset.json").read_text())
    meta_after = json.loads((tmp_path / "back" / "dataset.json").read_text())
    assert meta_after["counts"] == meta_before["counts"] == summary.cells
    assert meta_after["images"] == meta_before["images"]
    assert written == sum(meta_before["counts"].values())
    assert meta_after["classes"] == list(CLASS_NAMES) and meta_after["labels"] == f"import:{fmt}"
    assert meta_after["complete"] and meta_after["annotations"] == "masks"
    assert (summary.clipped, summary.outside, summary.overlapping, summary.hidden) == (0, 0, 0, 0)




@pytest.mark.parametrize("fmt, name", [("coco", "cells.json"), ("labelme", "labelme"), ("cvat", "cells.xml")])
def test_a_dataset_without_cells_goes_out_and_back(tmp_path, fmt, name):
    """LabelMe files list no classes: an export of images without a cell came back as "no annotated class is
    kept" (COCO and CVAT declare theirs)."""
    with DatasetWriter(tmp_path / "blank", source="test") as writer:
        writer.add("a", np.full((20, 30, 3), 200, np.uint8), np.zeros((20, 30), np.uint8),
                   np.zeros((20, 30), np.uint16))
    assert export_dataset(tmp_path / "blank", fmt, tmp_path / name) == 0
    summary = run_import(fmt, tmp_path / name, tmp_path / "blank" / "images", tmp_path / "back")
    assert summary.images == 1 and summary.cells == {"rbc": 0, "macrophage": 0}
    assert open_dataset(tmp_path / "back").classes == list(CLASS_NAMES)

@pytest.mark.parametrize("fmt, wrong", [("coco", "folder"), ("cvat", "folder"), ("labelme", "file")])
def test_export_onto_the_wrong_kind_of_path_is_a_clear_error_before_any_image(mixed_dataset, tmp_path, fmt, wrong):
    """IsADirectoryError (coco, cvat: only once every image was read) and FileExistsError (labelme) tracebacks."""
    out = tmp_path / "taken"
    if wrong == "folder":
        out.mkdir()
    else:
        out.write_text("mine")
    read = []
    with pytest.raises(CscError, match="folder" if wrong == "folder" else "a file of that name exists"):
        export_dataset(mixed_dataset, fmt, out, on_image=lambda: read.append(1))
    assert not read and (out.is_dir() if wrong == "folder" else out.read_text() == "mine")

def test_images_are_linked_not_copied(mixed_dataset, tmp_path):
    export_dataset(mixed_dataset, "coco", tmp_path / "c.json")
    run_import("coco", tmp_path / "c.json", mixed_dataset / "images", tmp_path / "back")
    image = open_dataset(tmp_path / "back").samples[0].image
    assert image.stat().st_ino == (mixed_dataset / "images" / image.name).stat().st_ino
    run_import("coco", tmp_path / "c.json", mixed_dataset / "images", tmp_path / "copied", copy_images=True)
    copy = tmp_path / "copied" / "images" / image.name
    assert copy.stat().st_ino != image.stat().st_ino and copy.read_bytes() == image.read_bytes()


def test_cli_contracts_import_coco_and_export(mixed_dataset, tmp_path):
    cli = CliRunner()
    result = cli.invoke(app, ["export", str(mixed_dataset), "--format", "coco", "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    result = cli.invoke(app, ["import", "coco", str(tmp_path / "c.json"), "--images", str(mixed_dataset / "images"),
                              "--out", str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    assert "imported 6 images" in result.output
    assert json.loads((tmp_path / "back" / "dataset.json").read_text())["complete"]


# ---------------------------------------------------------------- hand-made files, one behaviour each


def blank_images(folder, names, size=(20, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / name), np.full((*size, 3), 200, np.uint8))
    return folder


def coco_file(path, annotations, images=(("a.png", 20, 30),), categories=("rbc", "wbc")):
    doc = {"images": [{"id": i + 1, "file_name": n, "height": h, "width": w} for i, (n, h, w) in enumerate(images)],
           "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)],
           "annotations": [{"id": i + 1, "image_id": 1, "category_id": c, "segmentation": s}
                           for i, (c, s) in enumerate(annotations)]}
    path.write_text(json.dumps(doc))
    return path


def square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_overlaps_later_wins_and_edges_are_clipped_and_counted(tmp_path):
    images = blank_images(tmp_path / "img", ["a.png"])
    src = coco_file(tmp_path / "c.json", [
        (1, square(2, 2, 10, 10)),     # cell 1
        (2, square(6, 6, 14, 14)),     # cell 2 overlaps cell 1: takes the shared pixels
        (1, square(7, 7, 9, 9)),       # wholly under cell 4 below: gone
        (1, square(6, 6, 10, 10)),     # cell 4 overlaps cells 1 and 2 (and covers cell 3)
        (1, square(25, 12, 40, 30)),   # cut by the right and bottom edges: clipped
        (2, square(50, 50, 60, 60)),   # wholly outside: dropped
    ])
    s = run_import("coco", src, images, tmp_path / "out", "rbc,wbc")
    assert (s.overlapping, s.hidden, s.clipped, s.outside) == (3, 1, 1, 1)
    labels = open_dataset(tmp_path / "out").load(0)
    # pycocotools draws a polygon on pixel corners: square(2, 2, 10, 10) covers pixels 2..9
    assert labels.instances[3, 3] != 0 and labels.instances[3, 3] != labels.instances[8, 8]
    assert labels.mask[8, 8] == 1 and labels.mask[12, 12] == 2 and labels.mask[7, 12] == 2
    assert labels.mask[19, 29] == 1 and labels.instances[19, 29] != 0
    assert len(np.unique(labels.instances)) - 1 == 4 and s.cells == {"rbc": 3, "wbc": 1}


def test_malformed_json_names_the_file_and_position(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"images": [\n  {"id": 1,, "file_name": "a.png"}]}')
    with pytest.raises(CscError, match=r"c.json: malformed JSON at line 2, column 12"):
        read_annotations("coco", bad)


def test_malformed_xml_names_the_file_and_position(tmp_path):
    bad = tmp_path / "a.xml"
    bad.write_text('<annotations>\n<image name="a.png" width="30" height="20">\n</annotations>\n')
    with pytest.raises(CscError, match=r"a.xml: malformed XML at line 3, column 3: mismatched tag"):
        read_annotations("cvat", bad)


def test_unknown_class_names_list_the_known_ones(tmp_path):
    src = coco_file(tmp_path / "c.json", [(1, square(2, 2, 5, 5))], categories=("RBC", "WBC"))
    with pytest.raises(CscError, match=r"'Platelet'.* the annotations name: 'RBC', 'WBC'"):
        run_import("coco", src, blank_images(tmp_path / "i", ["a.png"]), tmp_path / "o", "Platelet=platelet")
    assert not (tmp_path / "o").exists(), "nothing is written before the classes are known"


def test_class_map_keeps_project_ids_and_drops_unmapped_names(tmp_path):
    images = blank_images(tmp_path / "img", ["a.png"])
    src = coco_file(tmp_path / "c.json", [(2, square(2, 2, 6, 6)), (1, square(10, 2, 14, 6)),
                                          (3, square(20, 2, 24, 6))], categories=("WBC", "RBC", "Platelets"))
    s = run_import("coco", src, images, tmp_path / "out", "WBC=wbc,RBC=rbc")
    assert s.classes == ["background", "rbc", "wbc"], "rbc keeps id 1 whatever the order given"
    assert s.cells == {"rbc": 1, "wbc": 1} and s.dropped == {"Platelets": 1}
    labels = open_dataset(tmp_path / "out").load(0)
    assert labels.mask[3, 3] == 1 and labels.mask[3, 11] == 2 and labels.mask[3, 21] == 0
    s = run_import("coco", src, images, tmp_path / "default")
    assert s.classes == ["background", "rbc", "WBC", "Platelets"], "names as given; RBC becomes the project's rbc"
    s = run_import("coco", src, images, tmp_path / "all", "*=macrophage")
    assert s.classes == list(CLASS_NAMES) and s.cells == {"rbc": 0, "macrophage": 3}


@pytest.mark.parametrize("spec, message", [("rbc=background", "reserved"), ("RBC=r b c", "not a usable class name"),
                                           ("RBC=rbc,RBC=wbc", "twice"), ("=rbc", "not SOURCE=target")])
def test_bad_class_specs(spec, message):
    with pytest.raises(CscError, match=message):
        ClassMap.parse(spec)


def test_missing_and_unannotated_images_are_listed_and_strict_stops(tmp_path):
    images = blank_images(tmp_path / "img", ["a.png", "extra.png"])
    src = coco_file(tmp_path / "c.json", [(1, square(2, 2, 6, 6))],
                    images=(("a.png", 20, 30), ("gone.png", 20, 30)))
    s = run_import("coco", src, images, tmp_path / "out")
    assert s.missing_images == ["gone.png"] and s.unannotated == ["extra.png"] and s.images == 1
    with pytest.raises(CscError, match="gone.png"):
        run_import("coco", src, images, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists()


def test_annotation_for_an_image_of_another_size_is_skipped_or_stops(tmp_path):
    images = blank_images(tmp_path / "img", ["a.png"], size=(40, 40))
    src = coco_file(tmp_path / "c.json", [(1, square(2, 2, 6, 6))])
    with pytest.raises(NothingImported, match="imported none of the 1 annotated images") as failed:
        run_import("coco", src, images, tmp_path / "out")
    s = failed.value.summary
    assert s.images == 0 and "30×20 px but the image is 40×40" in s.skipped[0]["reason"]
    with pytest.raises(CscError, match="40×40"):
        run_import("coco", src, images, tmp_path / "strict", strict=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "img"], "a failed import writes nothing"


def test_interrupted_import_leaves_complete_files_and_says_so(mixed_dataset, tmp_path):
    export_dataset(mixed_dataset, "cvat", tmp_path / "c.xml")
    seen = []

    def interrupt():
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_import("cvat", tmp_path / "c.xml", mixed_dataset / "images", tmp_path / "out", on_image=interrupt)
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["complete"] is False and meta["n_images"] == 2
    assert not [p for p in (tmp_path / "out").rglob(".*")], "no temporary file left"
    with pytest.raises(CscError, match="already holds a dataset"):
        run_import("cvat", tmp_path / "c.xml", mixed_dataset / "images", tmp_path / "out")


def test_labelme_groups_circles_rectangles_and_masks(tmp_path):
    images = blank_images(tmp_path / "img", ["a.png"])
    crop = np.zeros((3, 4), np.uint8)
    crop[1:, 1:] = 255
    png = cv2.imencode(".png", crop)[1].tobytes()
    import base64

    shapes = [
        {"label": "rbc", "points": [[1, 1], [3, 1], [3, 3]], "group_id": 7, "shape_type": "polygon"},
        {"label": "rbc", "points": [[6, 1], [8, 1], [8, 3], [6, 3]], "group_id": 7, "shape_type": "polygon"},
        {"label": "rbc", "points": [[15, 10], [17, 10]], "shape_type": "circle"},
        {"label": "wbc", "points": [[22, 2], [25, 4]], "shape_type": "rectangle"},
        {"label": "wbc", "points": [[10, 15], [13, 17]], "shape_type": "mask", "mask": base64.b64encode(png).decode()},
        {"label": "rbc", "points": [[0, 0], [5, 5]], "shape_type": "line"},
    ]
    (tmp_path / "a.json").write_text(json.dumps({"shapes": shapes, "imagePath": "..\\img\\a.png",
                                                 "imageHeight": 20, "imageWidth": 30}))
    s = run_import("labelme", tmp_path / "a.json", images, tmp_path / "out")
    labels = open_dataset(tmp_path / "out").load(0)
    assert s.cells == {"rbc": 2, "wbc": 2} and s.ignored == {"line": 1}
    assert labels.instances[1, 1] == labels.instances[2, 7] != 0, "one group is one cell"
    assert labels.mask[10, 15] == 1 and labels.mask[10, 17] == 1 and labels.mask[10, 18] == 0
    assert labels.mask[2:5, 22:26].all() and labels.mask[2, 21] == 0
    assert labels.mask[16:18, 11:14].all() and labels.mask[15, 10] == 0


def test_cvat_polygons_masks_ellipses_by_z_order(tmp_path):
    images = blank_images(tmp_path / "img", ["a.png"])
    crop = np.zeros((4, 5), bool)
    crop[1:3, 1:4] = True
    xml = f"""<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
<meta><task><labels><label><name>rbc</name></label><label><name>wbc</name></label></labels></task></meta>
<image id="0" name="a.png" width="30" height="20">
  <polygon label="rbc" points="0,0;8,0;8,8;0,8" z_order="2"/>
  <mask label="wbc" rle="{', '.join(map(str, cvat_rle(crop)))}" left="6" top="4" width="5" height="4" z_order="1"/>
  <ellipse label="rbc" cx="20.5" cy="10.5" rx="3" ry="2" rotation="0" z_order="0"/>
  <box label="rbc" xtl="1" ytl="1" xbr="3" ybr="3" z_order="0"/>
</image></annotations>"""
    (tmp_path / "a.xml").write_text(xml)
    s = run_import("cvat", tmp_path / "a.xml", images, tmp_path / "out")
    labels = open_dataset(tmp_path / "out").load(0)
    assert s.ignored == {"box": 1} and s.overlapping == 1 and s.cells == {"rbc": 2, "wbc": 1}
    assert labels.mask[5, 7] == 1, "the polygon's higher z_order wins the overlap"
    assert labels.mask[5, 8] == labels.mask[6, 9] == 2 and labels.mask[4, 8] == 0 and labels.mask[0:8, 0:8].all()
    assert labels.mask[10, 20] == 1 and labels.mask[10, 23] == 1 and labels.mask[10, 24] == 0


def test_cvat_images_in_folders_are_found_in_them(tmp_path):
    """CVAT keeps the folders an image was uploaded in (`day1/a.png`) and its exports keep them under images/ (in
    the subset's folder): the folders were dropped and only --images itself searched, 'not found: a.png, a.png'."""
    images = tmp_path / "images"
    for folder in ("day1", "day2", "Train/day1"):
        blank_images(images / folder, ["a.png"])
    blank_images(images, ["b.png"])
    polygon = '<polygon label="rbc" points="0,0;8,0;8,8;0,8" z_order="0"/>'
    entries = [("day1/a.png", ""), ("day2\\a.png", ""), ("day1/a.png", ' subset="Train"'), ("C:\\scans\\b.png", "")]
    (tmp_path / "a.xml").write_text("<annotations>" + "".join(
        f'<image id="{i}" name="{name}" width="30" height="20"{subset}>{polygon}</image>'
        for i, (name, subset) in enumerate(entries)) + "</annotations>")
    s = run_import("cvat", tmp_path / "a.xml", images, tmp_path / "out", strict=True)
    assert s.images == 4 and s.cells["rbc"] == 4
    names = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert names == ["Train_day1_a.png", "b.png", "day1_a.png", "day2_a.png"], "folders only where the image lay"


def test_cvat_rle_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        crop = rng.random((int(rng.integers(1, 9)), int(rng.integers(1, 9)))) > 0.5
        assert np.array_equal(cvat_mask(cvat_rle(crop), *crop.shape), crop)
    with pytest.raises(ValueError, match="add up"):
        cvat_mask([1, 2], 2, 2)


def test_label_images_with_tool_suffixes_and_a_class_table(tmp_path):
    import tifffile

    images = blank_images(tmp_path / "img", ["a.png", "b.png"])
    masks = tmp_path / "masks"
    masks.mkdir()
    a = np.zeros((20, 30), np.uint16)
    a[1:5, 1:5], a[10:15, 10:15], a[1:5, 20:25] = 3, 700, 9
    cv2.imwrite(str(masks / "a_cp_masks.png"), a)
    b = np.zeros((20, 30), np.int32)
    b[2:6, 2:6] = 100_000
    tifffile.imwrite(masks / "b_masks.tif", b)
    table = tmp_path / "classes.csv"
    table.write_text("image,label,class\na.png,3,RBC\na.png,700,WBC\nb,100000,RBC\n")
    s = run_import("masks", masks, images, tmp_path / "out", "RBC=rbc,WBC=wbc", class_table=table)
    assert s.cells == {"rbc": 2, "wbc": 1} and s.dropped == {"": 1}, "label 9 is in no table row"
    a_labels = open_dataset(tmp_path / "out").load(0)
    assert a_labels.mask[2, 2] == 1 and a_labels.mask[12, 12] == 2 and a_labels.mask[2, 22] == 0
    with pytest.raises(CscError, match="without a class name"):
        run_import("masks", masks, images, tmp_path / "unnamed")
    s = run_import("masks", masks, images, tmp_path / "all", "*=rbc")
    assert s.cells == {"rbc": 4, "macrophage": 0}


def test_cellpose_masks_beside_their_images_in_one_folder(tmp_path):
    """Cellpose writes a_cp_masks.png beside a.png; with both in one folder the images were taken for label files
    too: '2 annotated images not found in --images: a, a', nothing imported."""
    folder = blank_images(tmp_path / "cellpose", ["a.png", "b.png"])
    labels = np.zeros((20, 30), np.uint16)
    labels[1:5, 1:5], labels[10:15, 10:15] = 1, 2
    for stem in ("a", "b"):
        cv2.imwrite(str(folder / f"{stem}_cp_masks.png"), labels)
    s = run_import("masks", folder, folder, tmp_path / "out", "*=rbc")
    assert s.images == 2 and s.cells["rbc"] == 4 and not s.missing_images and not s.unannotated
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["a.png", "b.png"]


def test_a_label_image_of_another_size_is_reported_under_its_own_name(tmp_path):
    """Labels of a resized copy: 'skipped img/a.png: a.png is 15×10 px but its image is 30×20' named the photo, and
    the label file (a.png too) only by its bare name."""
    images = blank_images(tmp_path / "img", ["a.png", "b.png"])
    (tmp_path / "m").mkdir()
    labels = np.zeros((20, 30), np.uint16)
    labels[2:6, 2:6] = 1
    cv2.imwrite(str(tmp_path / "m" / "a.png"), labels[::2, ::2])
    cv2.imwrite(str(tmp_path / "m" / "b.png"), labels)
    s = run_import("masks", tmp_path / "m", images, tmp_path / "out", "*=rbc")
    assert s.images == 1 and s.skipped == [{"file": str(tmp_path / "m" / "a.png"),
                                            "reason": "the label image is 15×10 px but its image is 30×20"}]


def test_colour_label_image_is_refused_with_the_reason(tmp_path):
    images = blank_images(tmp_path / "img", ["a.png"])
    (tmp_path / "m").mkdir()
    cv2.imwrite(str(tmp_path / "m" / "a.png"), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(CscError, match="one channel"):
        run_import("masks", tmp_path / "m", images, tmp_path / "out", "*=rbc", strict=True)


# ---------------------------------------------------------------- count-only: points and boxes


def test_points_csv_imports_as_count_only(tmp_path):
    images = blank_images(tmp_path / "img", ["a.jpg", "b.jpg", "c.jpg"])
    src = tmp_path / "p.csv"
    src.write_text("x,y,image,class\n3,4,a.jpg,RBC\n5.5,6,a,RBC\n7,8,b.jpg,WBC\n40,4,b.jpg,RBC\n")
    s = run_import("points", src, images, tmp_path / "out", "RBC=rbc,WBC=wbc")
    assert s.images == 2 and s.unannotated == ["c.jpg"] and s.outside == 1 and s.cells == {"rbc": 2, "wbc": 1}
    assert not (tmp_path / "out" / "masks").exists()
    data = open_count_dataset(tmp_path / "out")
    assert [x.stem for x in data.samples] == ["a", "b"]
    assert data.samples[0].points["rbc"].tolist() == [[3, 4], [5.5, 6]]
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["annotations"] == "points" and label_origin(meta) == "import:points"
    with pytest.raises(CscError, match="count-only dataset"):
        open_dataset(tmp_path / "out")


def test_points_folder_of_text_files_chula_layout(tmp_path):
    images = blank_images(tmp_path / "img", ["1.jpg", "2.jpg", "3.jpg"])
    pts = tmp_path / "points"
    pts.mkdir()
    (pts / "1.txt").write_text("3 4 0\n10 12 8\n")
    (pts / "2.txt").write_text("")  # annotated, no cells
    s = run_import("points", pts, images, tmp_path / "out", "*=rbc")
    assert s.unannotated == ["3.jpg"], "an image without a points file was never annotated"
    data = open_count_dataset(tmp_path / "out")
    assert {x.stem: x.counts(["rbc"])["rbc"] for x in data.samples} == {"1": 2, "2": 0}
    (pts / "1.txt").write_text("3 4 0\n10 twelve 8\n")
    with pytest.raises(CscError, match=r"1.txt: line 2, y: 'twelve' is not a number"):
        read_annotations("points", pts)


def test_boxes_csv_and_yolo(tmp_path):
    images = blank_images(tmp_path / "img", ["a.jpg"], size=(20, 40))
    src = tmp_path / "b.csv"
    src.write_text("image,class,x1,y1,x2,y2\na,RBC,2,2,6,8\na,RBC,30,10,50,30\na,Platelets,1,1,2,2\n")
    s = run_import("boxes", src, images, tmp_path / "csv", "RBC=rbc")
    assert s.clipped == 1 and s.dropped == {"Platelets": 1}
    data = open_count_dataset(tmp_path / "csv")
    assert data.samples[0].boxes["rbc"].tolist() == [[2, 2, 6, 8], [30, 10, 40, 20]]
    assert data.samples[0].points["rbc"].tolist() == [[4, 5], [35, 15]], "scored at the boxes' centres"
    yolo = tmp_path / "yolo"
    yolo.mkdir()
    (yolo / "classes.txt").write_text("RBC\nWBC\n")
    (yolo / "a.txt").write_text("0 0.1 0.25 0.1 0.3\n1 0.5 0.5 0.2 0.2\n")
    s = run_import("boxes", yolo, images, tmp_path / "yolo-out", "RBC=rbc,WBC=wbc")
    boxes = open_count_dataset(tmp_path / "yolo-out").samples[0].boxes
    assert np.allclose(boxes["rbc"], [[2, 2, 6, 8]]) and np.allclose(boxes["wbc"], [[16, 8, 24, 12]])


def test_yolo_class_id_beyond_the_names_file_is_an_error(tmp_path):
    """A classes.txt one name short: class id 2 became a dataset class named "2", imported without a word."""
    images = blank_images(tmp_path / "img", ["a.jpg"])
    yolo = tmp_path / "yolo"
    yolo.mkdir()
    (yolo / "classes.txt").write_text("RBC\nWBC\n")
    (yolo / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n2 0.2 0.2 0.1 0.1\n")
    with pytest.raises(CscError, match=r"a.txt: line 2: class id '2', but .*classes.txt names 2 classes \(ids 0–1\)"):
        run_import("boxes", yolo, images, tmp_path / "out")
    (yolo / "classes.txt").unlink()  # no names file: the ids are the names
    assert run_import("boxes", yolo, images, tmp_path / "ids").cells == {"0": 1, "2": 1}


def test_cli_contracts_points_and_boxes(tmp_path):
    images = blank_images(tmp_path / "img", ["a.jpg"])
    (tmp_path / "p.csv").write_text("image,x,y,class\na.jpg,3,4,rbc\n")
    (tmp_path / "b.csv").write_text("image,class,x1,y1,x2,y2\na,rbc,2,2,6,8\n")
    cli = CliRunner()
    for fmt, src in (("points", "p.csv"), ("boxes", "b.csv")):
        result = cli.invoke(app, ["import", fmt, str(tmp_path / src), "--images", str(images), "--out",
                                  str(tmp_path / fmt)])
        assert result.exit_code == 0, result.output
        assert open_count_dataset(tmp_path / fmt).kind == fmt
    result = cli.invoke(app, ["check", str(tmp_path / "points")])
    assert result.exit_code == 0 and "ok" in result.output
    result = cli.invoke(app, ["show", str(tmp_path / "boxes"), "--out", str(tmp_path / "grid.png")])
    assert result.exit_code == 0 and cv2.imread(str(tmp_path / "grid.png")) is not None


def test_count_only_check_finds_marks_outside_their_image(tmp_path):
    images = blank_images(tmp_path / "img", ["a.jpg"])
    (tmp_path / "p.csv").write_text("image,x,y,class\na.jpg,3,4,rbc\n")
    run_import("points", tmp_path / "p.csv", images, tmp_path / "out")
    with open(tmp_path / "out" / "points.csv", "a") as f:
        f.write("a,99,4,rbc\n")
    result = CliRunner().invoke(app, ["check", str(tmp_path / "out")])
    assert result.exit_code == 1 and "outside the 30×20 image" in result.output


def test_count_only_check_reports_an_interrupted_import(tmp_path):
    images = blank_images(tmp_path / "img", ["a.jpg"])
    (tmp_path / "p.csv").write_text("image,x,y,class\na.jpg,3,4,rbc\n")
    run_import("points", tmp_path / "p.csv", images, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    (tmp_path / "out" / "dataset.json").write_text(json.dumps({**meta, "complete": False}))
    result = CliRunner().invoke(app, ["check", str(tmp_path / "out")])
    assert result.exit_code == 1 and "incomplete: the run that wrote it stopped early" in " ".join(result.output.split())


def test_image_names_with_dots_match_their_annotations(tmp_path):
    """slide1.x40.png was taken for the stem "slide1" when an annotation named it without its extension: "imported
    0 images", exit 0."""
    images = blank_images(tmp_path / "img", ["slide1.x40.png", "slide2.x40.png"])
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "slide1.x40.txt").write_text("3 4\n10 12\n")
    (folder / "slide2.x40.txt").write_text("5 5\n")
    s = run_import("points", folder, images, tmp_path / "out", "*=rbc")
    assert s.images == 2 and s.cells["rbc"] == 3 and not s.missing_images
    table = tmp_path / "p.csv"
    table.write_text("x,y,image,class\n3,4,slide1.x40,RBC\n5,5,slide2.x40.png,RBC\n")
    assert run_import("points", table, images, tmp_path / "out2", "*=rbc").images == 2


def test_importing_nothing_from_annotations_is_a_failure(tmp_path):
    images = blank_images(tmp_path / "img", ["a.png"])
    src = tmp_path / "p.csv"
    src.write_text("x,y,image,class\n3,4,other.png,RBC\n")
    result = CliRunner().invoke(app, ["import", "points", str(src), "--images", str(images), "--out",
                                      str(tmp_path / "out"), "--classes", "*=rbc"])
    assert result.exit_code != 0 and "imported none of the 1 annotated images" in str(result.exception)


def test_a_failed_import_leaves_no_dataset_behind_and_the_retry_runs(tmp_path):
    """A failed import left dataset.json with ``complete: true`` (no image, or images without a cell), and the
    retry with the right options stopped at "--out already holds a dataset"."""
    images = blank_images(tmp_path / "img", ["a.png"])
    empty, kept = tmp_path / "empty", tmp_path / "kept"  # kept: an empty folder given as --out, which stays
    empty.mkdir()
    kept.mkdir()
    src = coco_file(tmp_path / "c.json", [(1, square(2, 2, 6, 6))])

    def cli(images_dir, out, classes):
        return CliRunner().invoke(app, ["import", "coco", str(src), "--images", str(images_dir), "--out", str(out),
                                        "--classes", classes])

    result = cli(empty, tmp_path / "new" / "out", "rbc")
    assert result.exit_code != 0 and "imported none of the 1" in str(result.exception)
    assert "nothing written to" in result.output
    result = cli(images, kept, "wbc")  # the only annotation is an rbc: dropped
    assert result.exit_code != 0 and "imported no cell from the 1 annotations" in str(result.exception)
    assert not (tmp_path / "new").exists() and kept.is_dir() and not list(kept.iterdir())
    result = cli(images, tmp_path / "new" / ".." / "out2", "wbc")  # the folder made is out2, not new
    assert result.exit_code != 0 and not (tmp_path / "out2").exists() and not (tmp_path / "new").exists()
    result = cli(images, kept, "rbc")
    assert result.exit_code == 0, result.output
    assert json.loads((kept / "dataset.json").read_text())["counts"]["rbc"] == 1


def test_a_coco_rle_that_cannot_be_decoded_skips_its_image_by_name(tmp_path):
    """Runs that do not add up to the image, or a corrupt counts string: pycocotools' ValueError ("Invalid RLE mask
    representation") came out as a traceback and the whole import was undone; now that image is skipped, naming
    the file and the annotation, and the others import (--strict stops on it)."""
    blank_images(tmp_path / "img", ["a.png", "b.png"], size=(40, 50))
    good = {"size": [40, 50], "counts": [100, 20, 1880]}
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 50, "height": 40},
                      {"id": 2, "file_name": "b.png", "width": 50, "height": 40}],
           "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 1,
                            "segmentation": {"size": [40, 50], "counts": [10, 5000]}},
                           {"id": 8, "image_id": 1, "category_id": 1, "iscrowd": 1,
                            "segmentation": {"size": [40, 50], "counts": "zz!!"}},
                           {"id": 9, "image_id": 2, "category_id": 1, "iscrowd": 1, "segmentation": good}],
           "categories": [{"id": 1, "name": "rbc"}]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    summary = run_import("coco", tmp_path / "c.json", tmp_path / "img", tmp_path / "out")
    assert summary.images == 1 and summary.cells["rbc"] == 1
    assert [s["file"] for s in summary.skipped] == [str(tmp_path / "img" / "a.png")]
    assert "c.json annotation id 7: its RLE mask cannot be decoded" in summary.skipped[0]["reason"]
    with pytest.raises(CscError, match="annotation id 7: its RLE mask cannot be decoded"):
        run_import("coco", tmp_path / "c.json", tmp_path / "img", tmp_path / "strict", strict=True)
    doc["annotations"] = doc["annotations"][1:]
    (tmp_path / "c.json").write_text(json.dumps(doc))
    summary = run_import("coco", tmp_path / "c.json", tmp_path / "img", tmp_path / "corrupt")
    assert "annotation id 8: its RLE mask cannot be decoded" in summary.skipped[0]["reason"]


@pytest.mark.parametrize("shape", [
    {"label": "rbc", "shape_type": "mask", "points": [[1, 2], [10, 12]], "mask": "iVBORw0KGgo"},  # cut short
    {"label": "rbc", "shape_type": "polygon", "points": [[1, 2], [10], [3, 4]]},  # a vertex without its y
    {"label": None, "shape_type": "polygon", "points": [[1, 2], [10, 2], [3, 4]]},  # imported as a class "None"
    {"label": "rbc", "group_id": [1], "points": [[1, 2], [10, 2], [3, 4]]},  # "unhashable type: 'list'"
], ids=["mask-base64", "ragged-points", "no-label", "list-group"])
def test_a_malformed_labelme_shape_names_its_file(tmp_path, shape):
    """binascii's 'Incorrect padding', numpy's 'inhomogeneous shape' and a list's 'unhashable type' came out as
    tracebacks; a shape without a label became a cell of a class named "None"."""
    blank_images(tmp_path / "img", ["a.png"])
    (tmp_path / "a.json").write_text(json.dumps({"shapes": [shape], "imagePath": "a.png"}))
    with pytest.raises(CscError, match=r"a\.json: shape 0(: its mask is not a base64 PNG|: points must be| has no "
                                       r"label|: group_id must be a number)"):
        read_annotations("labelme", tmp_path / "a.json")


@pytest.mark.parametrize("field, entries, said", [
    ("categories", [{"id": 1, "name": "rbc"}, {"id": 1, "name": "wbc"}],
     "category id 1 is given twice, as 'rbc' and 'wbc'"),
    ("images", [{"id": 7, "file_name": "a.png"}, {"id": 7, "file_name": "b.png"}], "image id 7 is given twice"),
    ("categories", [{"id": [1], "name": "rbc"}], "a category id must be a number"),
])
def test_a_coco_id_given_twice_is_refused(tmp_path, field, entries, said):
    """Two categories of one id: the later name took every annotation of the earlier, without a word (a list as an
    id: "unhashable type")."""
    doc = {"images": [{"id": 7, "file_name": "a.png"}], "categories": [{"id": 1, "name": "rbc"}], "annotations": []}
    doc[field] = entries
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(CscError, match=re.escape(said)):
        read_annotations("coco", tmp_path / "c.json")


@pytest.mark.parametrize("cls", ["Ellipse", "PillowEllipse"])
def test_an_ellipse_far_beyond_its_image_is_a_corrupt_shape(cls):
    """A CVAT ellipse of rx 3e9 ended the import in OpenCV's "Can't parse 'axes'"; a LabelMe circle of radius 1e9
    walked Pillow's outline a pixel at a time (hours). Both are now an error that skips their image."""
    import runtime.data.annotations.model as model

    shape = getattr(model, cls)("rbc", 40.0, 30.0, 3e9, 5.0)
    with pytest.raises(CscError, match="reaches far beyond the 80×60 px image: a corrupt shape"):
        shape.rasterise(60, 80)
    assert getattr(model, cls)("rbc", 40.0, 30.0, 8.0, 5.0).rasterise(60, 80) is not None
