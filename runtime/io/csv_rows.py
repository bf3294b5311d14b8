"""CSV tables with a header row, as annotation files, class tables and count-only datasets use them."""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

from runtime.errors import CscError

_DECIMAL_COMMA = re.compile(r"[-+]?\d*,\d+(?:[eE][-+]?\d+)?")


def csv_rows(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = (),
             absent_fix: str = "check the path") -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) per data row, column names lower-cased and values stripped, so that a spreadsheet's
    "Image, X" header or a padded cell reads the same; a missing file or column, an unreadable file and a row
    longer than the header are errors naming the file (a BOM is skipped). A header with semicolons and no comma is
    Excel's CSV where the comma is the decimal mark (most of Europe): its fields are split at ';' and a number's
    decimal comma read as a point ("10,5" is 10.5)."""
    if not path.is_file():
        raise CscError("file not found", path=path, fix=absent_fix)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CscError(f"cannot read ({err})", path=path) from None
    first = text.split("\n", 1)[0]
    semicolons = ";" in first and "," not in first
    reader = csv.DictReader(io.StringIO(text), delimiter=";" if semicolons else ",")
    header = [c.strip().lower() for c in reader.fieldnames or []]
    missing = [c for c in required if c not in header]
    if missing:
        raise CscError(f"the CSV header lacks {', '.join(missing)} (found: {','.join(header) or 'nothing'})", path=path,
                       fix=f"the first line must name the columns, e.g. {','.join(required + optional)}")
    reader.fieldnames = header
    for row in reader:
        if None in row:
            raise CscError(f"line {reader.line_num} has more fields than the header", path=path)
        values = {k: (v or "").strip() for k, v in row.items()}
        if semicolons:
            values = {k: v.replace(",", ".") if _DECIMAL_COMMA.fullmatch(v) else v for k, v in values.items()}
        yield reader.line_num, values
