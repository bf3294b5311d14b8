"""The grey-smear benchmark's own parts: what its methods are given, and a clear skip without the real images."""
import numpy as np

from benchmarks.real.grey_smears import in_grey, measure


def test_methods_see_one_channel_as_a_monochrome_camera_gives_it():
    seen = []
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 2] = 90  # red only: grey is 0.299 × 90 ≈ 27
    labels = in_grey(lambda grey, pixel_size: seen.append((grey, pixel_size)) or np.zeros(grey.shape, np.int32))(image, 0.2)
    (grey, pixel_size), = seen
    assert grey.shape == (4, 6) and int(grey[0, 0]) == 27 and pixel_size == 0.2 and labels.shape == (4, 6)


def test_without_the_real_images_the_result_says_why(tmp_path):
    result = measure(tmp_path / "nowhere")
    assert "real images are not here" in result["skipped"] and "chula" not in result


def test_docs_table_names_how_the_grey_images_were_taken():
    from benchmarks.real.grey_smears import render_markdown

    row = {"ratio": 1.02, "f1": 0.81}
    entry = {"images": 3, "modality_detected": {"stained": 2, "dic": 1},
             "methods": {"grey: csc-label auto --split-touching (nothing given)": row, "colour: x": row}}
    lines = render_markdown({"chula": entry, "bccd": entry}).splitlines()
    assert lines[2] == "| Chula (3) | grey: csc-label auto --split-touching (nothing given) | 1.020 | 0.810 | stained 2, dic 1 |"
    assert lines[3].endswith("| 1.020 | 0.810 | — |") and lines[4].startswith("| BCCD (3) |")
