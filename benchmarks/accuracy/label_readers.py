"""Exports read back by the labelling tools' own readers (issue #26): every `csc-data export` format opened by the
real tool's code, cell for cell and pixel for pixel against the dataset it came from.

The readers are the issue's judges — LabelMe 6.3 (`LabelFile`, then `labelme.utils.shapes_to_label`, the drawing
labelme2coco and labelme2voc use), Datumaro 1.13 (its `cvat` and `coco_instances` importers) and pycocotools
(`COCO.annToMask`) — installed in a separate virtual environment (they pull in Qt, ONNX Runtime and pandas, none
of them the project's dependencies) and run there as a subprocess that writes each image's cells as it read them.
Make that environment once:

    python3 -m venv /tmp/judge && /tmp/judge/bin/pip install 'datumaro==1.13.*' 'labelme==6.3.*'

The datasets: the simulated microscope's mixed smear (two classes, touching cells), the auto-labeller on six
Chula RBC smears (../shared/real), StarDist's 125 touching nuclei and LabelMe's own instance example, both imported
from ../shared/labels-real. Per dataset, format and reader: cells written and read, pixels whose class differs,
cells not read back as exactly their pixels, and any error the reader raised (recorded, not hidden).

Also recorded: CVAT ellipses, which the project reads but never writes. CVAT's own mask export of an ellipse
(`EllipsesToMasks`, run literally in the judge environment with the OpenCV and pycocotools CVAT installs) against
the project's drawing before and after it followed that rule, and whether Datumaro reads CVAT ellipses at all.

Run: python -m benchmarks.accuracy.label_readers [--judge /tmp/judge/bin/python] [--out benchmarks/results/label_readers.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.publish import machine, publish
from runtime.data.annotations import export_dataset, read_annotations
from runtime.data.annotations.cells import exported_images
from runtime.data.annotations.classmap import ClassMap
from runtime.data.annotations.cvat import CvatEllipse
from runtime.data.annotations.model import Ellipse
from runtime.data.annotations.writer import import_annotations
from runtime.data.dataset import open_dataset

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
JUDGE = Path(os.environ.get("CSC_JUDGE_PYTHON", "/tmp/judge/bin/python"))  # .ci/run makes it
INSTALL = "python3 -m venv /tmp/judge && /tmp/judge/bin/pip install 'datumaro==1.13.*' 'labelme==6.3.*'"

# Runs in the judge environment: python - READER SRC OUT. Writes OUT/<n>.npz (ins: instance ids, cls: index into
# that image's class names, 0 none) and OUT/read.json (per image: file, class names, cells, overlapping pixels).
JUDGE_CODE = r'''
import glob, importlib.metadata, json, os, sys
import numpy as np

reader, src, out = sys.argv[1:4]
os.makedirs(out, exist_ok=True)
images, versions = [], {}


def put(name, shape, cells):
    """cells: (bool mask, class name) in drawing order, later over earlier, as the reader stacks them."""
    ins, cls, names, overlap = np.zeros(shape, np.int32), np.zeros(shape, np.int32), [""], 0
    for k, (mask, label) in enumerate(cells, start=1):
        mask = np.asarray(mask, bool)
        overlap += int((ins[mask] > 0).sum())
        if label not in names:
            names.append(label)
        ins[mask], cls[mask] = k, names.index(label)
    np.savez_compressed(os.path.join(out, f"{len(images)}.npz"), ins=ins, cls=cls)
    images.append({"name": name, "classes": names, "cells": len(cells), "overlap_px": overlap})


if reader == "labelme":
    import labelme
    from labelme import LabelFile
    from labelme.utils import img_data_to_arr, shapes_to_label

    versions["labelme"] = labelme.__version__
    for path in sorted(glob.glob(os.path.join(src, "*.json"))):
        lf = LabelFile(path)
        shape = img_data_to_arr(lf.image_data).shape[:2]
        names = ["_background_"] + sorted({s["label"] for s in lf.shapes})
        cls, ins = shapes_to_label(shape, lf.shapes, {n: i for i, n in enumerate(names)})
        np.savez_compressed(os.path.join(out, f"{len(images)}.npz"), ins=ins, cls=cls)
        names[0] = ""
        images.append({"name": os.path.basename(lf.image_path), "classes": names, "cells": int(len(np.unique(ins)) - 1),
                       "overlap_px": None, "shapes": len(lf.shapes)})
elif reader == "pycocotools":
    from pycocotools.coco import COCO

    versions["pycocotools"] = importlib.metadata.version("pycocotools")
    coco = COCO(src)
    for img in coco.loadImgs(sorted(coco.getImgIds())):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"], iscrowd=None))
        put(img["file_name"], (img["height"], img["width"]),
            [(coco.annToMask(a), coco.loadCats(a["category_id"])[0]["name"]) for a in anns])
elif reader in ("datumaro-cvat", "datumaro-coco_instances"):
    import datumaro
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset

    versions["datumaro"] = datumaro.__version__
    dataset = Dataset.import_from(src, reader.split("-", 1)[1])
    labels = dataset.categories()[AnnotationType.label]
    for item in sorted(dataset, key=lambda i: i.id):
        h, w = item.media.size
        cells, other = [], {}
        for ann in sorted(item.annotations, key=lambda a: getattr(a, "z_order", 0)):
            if ann.type == AnnotationType.mask:
                cells.append((ann.image, labels[ann.label].name))
            else:
                other[ann.type.name] = other.get(ann.type.name, 0) + 1
        put(item.id, (h, w), cells)
        images[-1]["other_annotations"] = other
elif reader == "cvat-ellipses":
    # CVAT's load_anno (formats/cvat.py) then EllipsesToMasks.convert_ellipse (formats/transformations.py), as in
    # cvat-ai/cvat @ a01a8a8f / 03501ddb; SRC is a JSON list of [cx, cy, rx, ry, rotation, h, w] XML strings.
    import cv2
    from pycocotools import mask as mask_utils

    versions.update(opencv=cv2.__version__, pycocotools=importlib.metadata.version("pycocotools"))
    for k, (cx, cy, rx, ry, rotation, h, w) in enumerate(json.load(open(src))):
        points = [float(cx), float(cy), float("{:.2f}".format(float(cx) + float(rx))),
                  float("{:.2f}".format(float(cy) - float(ry)))]
        cx, cy, rightX, topY = points
        rx = rightX - cx
        ry = cy - topY
        center = (round(cx), round(cy))
        axis = (round(rx), round(ry))
        mat = np.zeros((h, w), dtype=np.uint8)
        cv2.ellipse(mat, center, axis, float(rotation), 0, 360, 255, thickness=-1)
        rle = mask_utils.encode(np.asfortranarray(mat))
        put(str(k), (h, w), [(mask_utils.decode(rle), "ellipse")])
elif reader == "datumaro-ellipse-polygon":
    # The polygon path issue #26 assumed: Datumaro's Ellipse.as_polygon (720 points) filled by pycocotools.
    # Datumaro's Ellipse has no rotation: rotated cases are left empty.
    import datumaro
    from datumaro.components.annotation import Ellipse
    from pycocotools import mask as mask_utils

    versions["datumaro"] = datumaro.__version__
    for k, (cx, cy, rx, ry, rotation, h, w) in enumerate(json.load(open(src))):
        cx, cy, rx, ry = map(float, (cx, cy, rx, ry))
        cells = []
        if float(rotation) == 0:
            polygon = Ellipse(cx - rx, cy - ry, cx + rx, cy + ry).as_polygon()
            cells = [(mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], h, w))), "ellipse")]
        put(str(k), (h, w), cells)
elif reader == "datumaro-cvat-ellipse":
    import datumaro
    from datumaro.components.dataset import Dataset

    versions["datumaro"] = datumaro.__version__
    dataset = Dataset.import_from(src, "cvat")
    for item in dataset:
        images.append({"name": item.id, "annotations": [a.type.name for a in item.annotations]})
json.dump({"versions": versions, "images": images}, open(os.path.join(out, "read.json"), "w"))
'''


def judge(python: Path, reader: str, src: Path, out: Path) -> dict:
    """Run one reader in the judge environment; its read.json, or {"error": its last lines}."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(python), "-", reader, str(src), str(out)], input=JUDGE_CODE, text=True,
                          capture_output=True, env=env, cwd=tempfile.gettempdir(), timeout=1800)
    if done.returncode:
        return {"error": " | ".join(done.stderr.strip().splitlines()[-3:])}
    return json.loads((out / "read.json").read_text())


def layout(fmt: str, exported: Path, images: Path, where: Path) -> dict[str, Path]:
    """The exported file(s) where each reader looks for them, with the dataset's images linked in beside."""
    def link_images(folder: Path) -> None:  # copies: Datumaro refuses a link that resolves outside its folder
        folder.mkdir(parents=True, exist_ok=True)
        for image in images.iterdir():
            shutil.copyfile(image, folder / image.name)

    if fmt == "labelme":
        return {"labelme": exported}
    if fmt == "coco":
        root = where / "coco_instances"
        (root / "annotations").mkdir(parents=True)
        (root / "annotations" / "instances_default.json").symlink_to(exported)
        link_images(root / "images" / "default")
        return {"pycocotools": exported, "datumaro-coco_instances": root}
    root = where / "cvat"
    root.mkdir(parents=True)
    (root / "annotations.xml").symlink_to(exported)
    link_images(root / "images")
    return {"datumaro-cvat": root}


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two label maps split the pixels the same way (ids may differ)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def compare(dataset_root: Path, read: dict, out: Path) -> dict:
    """Cells and pixels of a reader's view against the dataset's own masks."""
    if "error" in read:
        return read
    dataset = open_dataset(dataset_root)
    by_name = {s.image.name: i for i, s in enumerate(dataset.samples)}
    by_stem = {s.image.stem: i for i, s in enumerate(dataset.samples)}
    cells = list(exported_images(dataset))  # the dataset's cells as the exporters see them (instances/ or components)
    cells_ours = cells_read = pixels = cells_differing = overlap = 0
    unmatched, examples = [], []
    for n, image in enumerate(read["images"]):
        index = by_name.get(image["name"], by_stem.get(image["name"]))
        if index is None:
            unmatched.append(image["name"])
            continue
        labels, theirs = dataset.load(index), np.load(out / f"{n}.npz")
        ids = {name: dataset.classes.index(name) if name in dataset.classes else -1 for name in image["classes"]}
        their_cls = np.array([ids[name] if name else 0 for name in image["classes"]])[theirs["cls"]]
        pixels += int((their_cls != labels.mask).sum())
        ours = np.zeros(labels.mask.shape, np.int64)
        for k, cell in enumerate(cells[index].cells, start=1):
            ours[cell.top : cell.top + cell.mask.shape[0], cell.left : cell.left + cell.mask.shape[1]][cell.mask] = k
        ours_ids, their_ids = np.unique(ours[ours > 0]), np.unique(theirs["ins"][theirs["ins"] > 0])
        cells_ours += len(ours_ids)
        cells_read += len(their_ids)
        overlap += image.get("overlap_px") or 0
        # a cell is read back when the reader has exactly its pixels as one cell
        pairs, shared = np.unique(np.stack([ours.ravel(), theirs["ins"].ravel().astype(np.int64)]), axis=1,
                                  return_counts=True)
        size_ours = dict(zip(*np.unique(ours, return_counts=True)))
        size_theirs = dict(zip(*np.unique(theirs["ins"], return_counts=True)))
        exact = {a for (a, b), n in zip(pairs.T, shared) if a > 0 and b > 0 and size_ours[a] == size_theirs[b] == n}
        cells_differing += len(ours_ids) - len(exact)
        for a in ours_ids:
            if a not in exact and len(examples) < 10:
                examples.append(_what_differs(image["name"], cells[index].cells[a - 1], a, pairs, shared,
                                              size_ours, size_theirs))
    return {"images": len(read["images"]) - len(unmatched), "images_unmatched": unmatched,
            "cells_in_dataset": cells_ours, "cells_read": cells_read, "cells_not_read_exactly": cells_differing,
            "pixels_class_differs": pixels, "overlapping_pixels_read": overlap,
            "exact": not unmatched and pixels == 0 and cells_differing == 0 and cells_ours == cells_read,
            "cells_not_read_exactly_examples": examples, "versions": read.get("versions", {})}


def _what_differs(image: str, cell, a: int, pairs: np.ndarray, shared: np.ndarray, size_ours: dict,
                  size_theirs: dict) -> dict:
    """One cell the reader did not read back exactly: its shape (holes, pieces) and the pixels it lost or gained
    against the reader's cell that overlaps it most."""
    import cv2

    crop = cell.mask.astype(np.uint8)
    _, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    holes = 0 if hierarchy is None else int((hierarchy[0][:, 3] >= 0).sum())
    pieces = cv2.connectedComponents(crop, connectivity=8)[0] - 1
    mine = [(int(n), int(b)) for (x, b), n in zip(pairs.T, shared) if x == a and b > 0]
    n, b = max(mine) if mine else (0, 0)
    differing = int(size_ours[a]) + (int(size_theirs[b]) if b else 0) - 2 * n
    return {"image": image, "label": cell.label, "area_px": int(size_ours[a]), "holes": holes, "pieces": pieces,
            "pixels_differing": differing}


def make_datasets(where: Path, real: bool = True) -> dict[str, dict]:
    """The datasets exported: name -> {"root": folder, "what": description}; a source absent here is skipped, and
    without ``real`` only the simulated one and the tools' own files are made (no auto-labelling: quicker)."""
    from runtime.data.synthesize import synthesize_dataset

    made = {"simulated-mixed": {"root": synthesize_dataset("mixed", 4, where / "simulated", seed=26, size=256),
                                "what": "simulated microscope, mode mixed (rbc and macrophage), 4 frames of 256 px"}}
    chula = SHARED / "real" / "chula-rbc12" / "images"
    if real and chula.is_dir():
        picked = where / "chula-picked"
        picked.mkdir()
        for image in sorted(chula.iterdir())[:6]:
            (picked / image.name).symlink_to(image)
        label = [sys.executable, "-c", "from trainer.cli.label import main; main()"]  # csc-label
        done = subprocess.run([*label, "auto", str(picked), "--kind", "rbc", "--out", str(where / "chula")],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise RuntimeError(f"csc-label auto failed on {picked}: {done.stderr.strip()[-500:]}")
        made["chula-rbc-autolabel"] = {"root": where / "chula", "what": "csc-label auto --kind rbc on the first "
                                       "6 Chula RBC-12 smears (640 x 480)"}
    stardist = SHARED / "labels-real" / "masks-stardist" / "layout"
    if stardist.is_dir():
        import_annotations(read_annotations("masks", stardist / "labels"), stardist / "images", where / "stardist",
                           ClassMap.parse("*=nucleus"), origin="import:masks")
        made["stardist-mask2d"] = {"root": where / "stardist", "what": "StarDist's mask2d.tif imported (125 "
                                   "touching nuclei, 512 x 512)"}
    labelme = SHARED / "labels-real" / "labelme" / "instance_segmentation" / "data_annotated"
    if labelme.is_dir():
        import_annotations(read_annotations("labelme", labelme), labelme, where / "labelme",
                           ClassMap.parse(None), origin="import:labelme")
        made["labelme-instance-example"] = {"root": where / "labelme", "what": "LabelMe's instance_segmentation "
                                            "example imported (3 VOC photos, 12 objects, 5 classes)"}
    return made


def cvat_ellipses(python: Path, where: Path) -> dict:
    """CVAT's mask of a CVAT ellipse (its own code, in the judge environment) against the project's drawing of
    it before (the geometric ellipse about the centre taken half a pixel up-left, OpenCV's sub-pixel fill) and
    after (`CvatEllipse`); and what Datumaro's CVAT importer makes of an ellipse."""
    rng = np.random.default_rng(26)
    radii = [4, 5, 6, 8, 10, 12, 15, 20]
    cases = []
    for r in radii:
        for k in range(25):
            cx, cy = rng.uniform(30, 34, 2)
            ry = r if k % 2 == 0 else r * rng.uniform(0.6, 1.0)
            rotation = 0.0 if k % 2 == 0 else rng.uniform(0, 180)
            cases.append([f"{cx:.2f}", f"{cy:.2f}", f"{r:.2f}", f"{ry:.2f}", f"{rotation:.2f}", 64, 64])
    (where / "ellipses.json").write_text(json.dumps(cases))
    read = judge(python, "cvat-ellipses", where / "ellipses.json", where / "ellipses")
    if "error" in read:
        return read
    polygons = judge(python, "datumaro-ellipse-polygon", where / "ellipses.json", where / "polygons")

    def full(patch, h, w):
        m = np.zeros((h, w), bool)
        if patch is not None:
            top, left, crop = patch
            m[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
        return m

    per_radius = []
    for r in radii:
        rows = [(k, c) for k, c in enumerate(cases) if float(c[2]) == r]
        before, after, area_tool, area_before, area_geo, polygon_vs_tool = [], [], [], [], [], []
        for k, (cx, cy, rx, ry, rotation, h, w) in rows:
            tool = np.load(where / "ellipses" / f"{k}.npz")["ins"] > 0
            cx, cy, rx, ry, rotation = map(float, (cx, cy, rx, ry, rotation))
            old = full(Ellipse("e", cx - 0.5, cy - 0.5, rx, ry, rotation).rasterise(h, w), h, w)
            new = full(CvatEllipse.from_xml("e", cx, cy, rx, ry, rotation).rasterise(h, w), h, w)
            before.append(int((old ^ tool).sum()))
            after.append(int((new ^ tool).sum()))
            area_tool.append(int(tool.sum()))
            area_before.append(int(old.sum()))
            area_geo.append(np.pi * rx * ry)
            if "error" not in polygons and rotation == 0:
                polygon = np.load(where / "polygons" / f"{k}.npz")["ins"] > 0
                polygon_vs_tool.append(polygon.sum() / tool.sum() - 1)
        per_radius.append({"radius": r, "ellipses": len(rows), "tool_area_px": round(float(np.mean(area_tool)), 1),
                           "geometric_area_px": round(float(np.mean(area_geo)), 1),
                           "before_area_vs_tool": round(float(np.mean(area_before) / np.mean(area_tool) - 1), 4),
                           "before_pixels_differing_mean": round(float(np.mean(before)), 1),
                           "before_pixels_differing_max": max(before),
                           "after_pixels_differing_max": max(after),
                           "datumaro_polygon_area_vs_tool": round(float(np.mean(polygon_vs_tool)), 4)
                           if polygon_vs_tool else None})
    xml = where / "ellipse-task"
    (xml / "images").mkdir(parents=True)
    import cv2

    cv2.imwrite(str(xml / "images" / "a.png"), np.zeros((40, 40, 3), np.uint8))
    (xml / "annotations.xml").write_text("""<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version><meta><task><name>t</name><labels><label><name>rbc</name></label></labels></task>
</meta><image id="0" name="a.png" width="40" height="40">
<ellipse label="rbc" occluded="0" cx="20" cy="20" rx="6" ry="5" rotation="0" z_order="0"/>
<polygon label="rbc" occluded="0" points="1,1;8,1;8,8" z_order="0"/></image></annotations>
""")
    datumaro = judge(python, "datumaro-cvat-ellipse", xml, where / "ellipse-read")
    return {"tool": "CVAT's EllipsesToMasks.convert_ellipse after load_anno, run in the judge environment",
            "cases": "per radius 25 ellipses on a 64 px frame, centres at random in 30-34: 13 circles, 12 with ry "
                     "0.6-1 of rx at a random rotation; areas are means, before = the drawing before this rule",
            "versions": read["versions"], "per_radius": per_radius,
            "datumaro_polygon": polygons.get("error", "Datumaro's Ellipse.as_polygon filled by pycocotools, "
                                                      "circles only (its Ellipse has no rotation)"),
            "datumaro_cvat_importer_on_one_ellipse_and_one_polygon": datumaro.get("images", datumaro)}


def read_back(python: Path, datasets: dict[str, dict], where: Path) -> list[dict]:
    """Each dataset exported in every format and read by every reader of that format: one row per (dataset,
    format, reader), with ``exact`` true when every cell came back as exactly its pixels with its class."""
    checks = []
    for name, info in datasets.items():
        for fmt in ("labelme", "coco", "cvat"):
            out = where / "export" / name / fmt
            out.parent.mkdir(parents=True, exist_ok=True)
            exported = out if fmt == "labelme" else out.with_suffix(".json" if fmt == "coco" else ".xml")
            written = export_dataset(info["root"], fmt, exported)
            for reader, src in layout(fmt, exported, info["root"] / "images", where / "layout" / name).items():
                read_at = where / "read" / name / reader
                row = compare(info["root"], judge(python, reader, src, read_at), read_at)
                checks.append({"dataset": name, "format": fmt, "reader": reader, "cells_written": written, **row})
                print(f"{name:26} {fmt:8} {reader:24} {'exact' if row.get('exact') else row}", file=sys.stderr)
    return checks


def main(python: Path) -> dict:
    start = time.perf_counter()
    result = {"what": "csc-data export read back by the tools' own readers; exact = every cell read back as "
                      "exactly its pixels, with its class", "machine": machine(), "judge_python": str(python),
              "judge_install": INSTALL}
    if not python.exists():
        result["error"] = (f"no judge environment at {python}: make it with {INSTALL} (a failed install is "
                           "recorded here with pip's error)")
        return result
    with tempfile.TemporaryDirectory(prefix="csc-readers-") as tmp:
        where = Path(tmp)
        datasets = make_datasets(where / "datasets")
        checks = read_back(python, datasets, where)
        for info in datasets.values():
            meta = json.loads((info["root"] / "dataset.json").read_text())
            info["classes"], info["counts"] = meta["classes"], meta.get("counts")
        result["datasets"] = {k: {"what": v["what"], "classes": v["classes"], "counts": v["counts"]}
                              for k, v in datasets.items()}
        result["checks"] = checks
        result["all_exact"] = all(c.get("exact") for c in checks)
        result["cvat_ellipses"] = cvat_ellipses(python, where)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", type=Path, default=JUDGE, help="python of the environment holding the readers")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(main(args.judge), args.out)
