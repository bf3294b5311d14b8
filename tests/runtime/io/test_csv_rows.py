"""The one CSV reader behind annotation files, class tables and count-only datasets."""
import pytest

from runtime.io.csv_rows import csv_rows
from runtime.errors import CscError


def test_header_case_padding_and_bom_read_alike(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("\ufeffImage, X ,y\n a.png , 3,4\n", encoding="utf-8")
    assert list(csv_rows(path, ("image", "x", "y"))) == [(2, {"image": "a.png", "x": "3", "y": "4"})]


def test_excel_semicolon_csv_with_decimal_commas(tmp_path):
    """Excel's "CSV" where the comma is the decimal mark: 'the CSV header lacks image, x, y (found: image;x;y)'."""
    path = tmp_path / "t.csv"
    path.write_text("Image;X;Y;class\r\na.png;10,5;-3,25;RBC\r\nb.png;7;1,5e2;red, round\r\n", encoding="utf-8-sig")
    assert list(csv_rows(path, ("image", "x", "y"))) == [
        (2, {"image": "a.png", "x": "10.5", "y": "-3.25", "class": "RBC"}),
        (3, {"image": "b.png", "x": "7", "y": "1.5e2", "class": "red, round"})]


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
