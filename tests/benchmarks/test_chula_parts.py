"""The Chula parts the real-image benchmarks score: the blind part's file and the ``--part`` option."""
from pathlib import Path

import pytest

from benchmarks.real.real_counts import CHULA_PARTS, chula_part, real_sets
from benchmarks.real.real_model import Recipe, keep_part, main
from runtime.errors import CscError

REAL = Path(__file__).resolve().parents[3] / "shared" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real images not present at {REAL} (see its README)")


def _stems(part: str) -> list[str]:
    return [image["stem"] for image in chula_part(part)["images"]]


def test_the_blind_part_loads_and_shares_no_image_with_anything_referenced_before():
    blind, development = chula_part("blind"), chula_part("development")
    stems = _stems("blind")
    assert stems and len(set(stems)) == len(stems)
    looked_at = set(_stems("development")) | {image["stem"] for image in development["rejected"]}
    assert not set(stems) & looked_at, "the blind part holds an image the development subset's choice looked at"
    assert looked_at <= set(blind["excluded"]["stems"])
    assert not set(stems) & set(blind["excluded"]["stems"])
    rejected = [image["stem"] for image in blind["rejected"]]
    assert not set(rejected) & set(stems) and not set(rejected) & set(blind["excluded"]["stems"])
    assert blind["counts"]["kept"] == len(stems) and blind["counts"]["rejected"] == len(rejected)
    assert all(image["reason"] for image in blind["rejected"]), "every rejected image says why"
    assert blind["draw"]["seed"] == 25 and blind["caveats"]


def test_an_unknown_part_is_refused():
    with pytest.raises(CscError, match="no Chula part"):
        chula_part("tuning")


@needs_real
@pytest.mark.parametrize("part", sorted(CHULA_PARTS))
def test_the_part_option_scores_exactly_that_parts_images(tmp_path, part):
    sets = real_sets(REAL, tmp_path, part)
    assert sets.chula_stems == _stems(part)
    scored = [s.stem for s in sets.chula.samples if s.stem in sets.chula_stems]
    assert sorted(scored) == sorted(_stems(part)), "a part image has no points file in the imported dataset"


@needs_real
def test_the_blind_images_have_points_and_images():
    chula = REAL / "chula-rbc12"
    for stem in _stems("blind"):
        assert (chula / "images" / f"{stem}.jpg").is_file() and (chula / "points" / f"{stem}.txt").is_file()


def test_a_work_folder_keeps_the_part_its_training_images_leave_out(tmp_path):
    keep_part(tmp_path / "new", "blind")
    keep_part(tmp_path / "new", "blind")
    with pytest.raises(CscError, match="leave out the 'blind' Chula part"):
        keep_part(tmp_path / "new", "development")
    (tmp_path / "old").mkdir()  # a folder from before the marker: the development part
    with pytest.raises(CscError, match="'development'"):
        keep_part(tmp_path / "old", "blind")


def test_no_model_is_bundled_from_the_blind_part(tmp_path):
    with pytest.raises(CscError, match="blind part"):
        main(tmp_path, tmp_path / "work", Recipe(), bundle=True, part="blind")
