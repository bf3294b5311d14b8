"""Result files a person or a script reads: per-frame counts CSV, per-cell CSV, JSON summary.

CSV rows are flushed as each frame is written, so a crash (or Ctrl-C, or a lost camera) loses at most the frame
being written; whole-file results (the JSON summary) are written under a temporary name and renamed.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from runtime.classes import CLASS_NAMES
from runtime.counting.counter import FrameCounts
from runtime.errors import CscError
from runtime.io.imageio import prepare_target, write_text


class _CsvWriter:
    """A CSV with a header, flushed per write. With ``max_bytes`` it keeps only its newest rows: past that size it is
    replaced (atomically: a reader holding it keeps the old file) by the header and its newest half — for files
    nobody asked to keep whole, such as the web view's CSVs of a run that lasts weeks.

    The file is created (or replaced) by the first write, not before: a run that fails before its first frame (a
    camera unplugged, a folder of unreadable images) used to leave an earlier run's CSV of the same name holding its
    header alone. Where it could not be written is still said at once."""

    def __init__(self, path: str | Path, header: list[str], max_bytes: int | None = None):
        self.path = Path(path)
        self.header = header
        self.max_bytes = max_bytes
        self._file: TextIO | None = None
        prepare_target(self.path)  # as every result file, though this one is made by its first row
        if self.path.exists() and not os.access(self.path, os.W_OK):  # an earlier one is rewritten in place
            raise CscError("cannot write here (permission denied)", path=self.path, fix="choose a writable location")

    def _open(self) -> TextIO:
        """The file, opened with its header written at the first call."""
        if self._file is None:
            try:
                self._file = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as err:
                raise CscError(f"cannot write here ({err.strerror})", path=self.path,
                               fix="choose a writable location") from None
            self._csv = csv.writer(self._file)
            self._csv.writerow(self.header)
        return self._file

    def _write(self, rows: list[list[Any]]) -> None:
        file = self._open()
        self._csv.writerows(rows)
        file.flush()
        if self.max_bytes and file.tell() > self.max_bytes:
            self._keep_newest()

    def _keep_newest(self) -> None:
        self._file.close()
        with open(self.path, "rb") as old:
            old.seek(-(self.max_bytes // 2), os.SEEK_END)
            tail = old.read()
        tail = tail[tail.index(b"\n") + 1:]  # from the first whole row
        part = self.path.with_name(self.path.name + ".part")
        with open(part, "w", newline="", encoding="utf-8") as new:
            csv.writer(new).writerow(self.header)
            new.write(tail.decode("utf-8"))
        os.replace(part, self.path)
        self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._csv = csv.writer(self._file)

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CountsCsvWriter(_CsvWriter):
    """`frame, source, <one column per class name>, fps, pixel_size_um` — one row per frame (the `csc-run`
    contract; the pixel size the frame was counted at, given or calibrated, last)."""

    def __init__(self, path: str | Path, class_names: tuple[str, ...] = CLASS_NAMES, max_bytes: int | None = None):
        self.class_names = class_names[1:]
        super().__init__(path, ["frame", "source", *self.class_names, "fps", "pixel_size_um"], max_bytes)

    def write(self, frame: int, source: str, counts: dict[str, float], fps: float | None,
              pixel_size_um: float | None = None) -> None:
        row = [frame, source, *(counts.get(n, 0) for n in self.class_names), "" if fps is None else f"{fps:.2f}",
               "" if pixel_size_um is None else f"{pixel_size_um:.4g}"]
        self._write([row])


CELL_COLUMNS = ["frame", "source", "id", "class", "cx", "cy", "area_px", "area_um2", "x", "y", "w", "h",
                "eq_diameter_px", "eq_diameter_um", "touches_border"]


class CellsCsvWriter(_CsvWriter):
    """One row per counted cell per frame: id, class, centroid, area (px, µm²), bbox, diameter, border flag."""

    def __init__(self, path: str | Path, class_names: tuple[str, ...] = CLASS_NAMES, max_bytes: int | None = None):
        self.class_names = class_names
        super().__init__(path, CELL_COLUMNS, max_bytes)

    def write(self, frame: int, source: str, result: FrameCounts) -> None:
        self._write(cell_rows(frame, source, result, self.class_names))


def cell_rows(frame: int, source: str, result: FrameCounts, class_names: tuple[str, ...]) -> list[list[Any]]:
    """The cells CSV's rows of one frame (CELL_COLUMNS), as written: the HTTP API's cell table is the same rows."""
    c = result.cells
    return [
        [frame, source, int(c["id"][i]), class_names[c["class_id"][i]], f"{c['cx'][i]:.1f}", f"{c['cy'][i]:.1f}",
         int(c["area_px"][i]), f"{c['area_um2'][i]:.2f}", int(c["x"][i]), int(c["y"][i]), int(c["w"][i]),
         int(c["h"][i]), f"{c['eq_diameter_px'][i]:.2f}", f"{c['eq_diameter_um'][i]:.2f}", int(c["touches_border"][i])]
        for i in range(len(c))
    ]


def write_json(path: str | Path, data: dict) -> None:
    """A JSON file written atomically (numpy scalars converted)."""
    write_text(path, json.dumps(data, indent=2, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
