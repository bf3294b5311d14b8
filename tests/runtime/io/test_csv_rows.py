"""The one CSV reader behind annotation files, class tables and count-only datasets."""
import pytest

from runtime.io.csv_rows import csv_rows
from runtime.errors import CscError


def test_header_case_padding_and_bom_read_alike(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("\ufeffImage, X ,y\n a.png , 3,4\n", encoding="utf-8")
    assert list(csv_rows(path, ("image", "x", "y"))) == [(2, {"image": "a.png", "x": "3", "y": "4"})]


@pytest.mark.parametrize("text, message", [("image,x\na,1\n", "header lacks y"),
                                           ("image,x,y\na,1,2,3\n", "line 2 has more fields")])
def test_bad_tables_name_the_problem(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(CscError, match=message):
        list(csv_rows(path, ("image", "x", "y")))


def test_a_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(CscError, match="file not found") as err:
        list(csv_rows(tmp_path / "none.csv", ("image",), absent_fix="pass the class table"))
    assert "pass the class table" in str(err.value)
