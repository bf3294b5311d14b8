import numpy as np
import pytest

from runtime.classes import MACROPHAGE, RBC
from runtime.data.simulator import SimConfig, SimulatedMicroscope, make_microscope


def _class_counts_from_instances(frame):
    counts = {}
    for label in np.unique(frame.instances):
        if label == 0:
            continue
        classes = np.unique(frame.semantic[frame.instances == label])
        assert len(classes) == 1, "an instance must belong to exactly one class"
        counts[int(classes[0])] = counts.get(int(classes[0]), 0) + 1
    return counts


def test_same_seed_same_frame_other_seed_other_frame():
    a, b = make_microscope("mixed", size=128, seed=4), make_microscope("mixed", size=128, seed=4)
    fa, fb = a.frame(3), b.frame(3)
    assert np.array_equal(fa.image, fb.image)
    assert np.array_equal(fa.instances, fb.instances)
    assert fa.counts == fb.counts
    assert not np.array_equal(fa.image, make_microscope("mixed", size=128, seed=5).frame(3).image)
    assert not np.array_equal(fa.image, a.frame(4).image)


@pytest.mark.parametrize("kind", ["rbc", "macrophage", "mixed"])
def test_counts_match_instance_and_class_maps_exactly(kind):
    microscope = make_microscope(kind, size=256, seed=1)
    totals = {"rbc": 0, "macrophage": 0}
    for i in range(4):
        frame = microscope.frame(i)
        assert frame.image.dtype == np.uint8 and frame.image.shape == (256, 256, 3)
        assert frame.semantic.dtype == np.uint8 and frame.instances.dtype == np.uint16
        assert np.array_equal(frame.semantic > 0, frame.instances > 0)
        by_class = _class_counts_from_instances(frame)
        assert frame.counts == {"rbc": by_class.get(RBC, 0), "macrophage": by_class.get(MACROPHAGE, 0)}
        # labels are dense 1..N, as in a hand-made instance mask
        assert frame.instances.max() == sum(frame.counts.values())
        totals = {k: totals[k] + v for k, v in frame.counts.items()}
    if kind == "rbc":
        assert totals["macrophage"] == 0 and totals["rbc"] > 0
    if kind == "macrophage":
        assert totals["rbc"] == 0 and totals["macrophage"] > 0


def test_cells_cut_by_the_border_are_counted_once():
    microscope = make_microscope("rbc", size=128, seed=2)
    found_border_cell = False
    for i in range(10):
        frame = microscope.frame(i)
        edge_labels = set(np.unique(np.concatenate([frame.instances[0], frame.instances[-1],
                                                    frame.instances[:, 0], frame.instances[:, -1]]))) - {0}
        found_border_cell |= bool(edge_labels)
        assert sum(frame.counts.values()) == len(np.unique(frame.instances)) - 1
    assert found_border_cell, "the generator should produce cells cut by the frame border"


def test_density_and_class_ratio_parameters_take_effect():
    sparse = SimulatedMicroscope(SimConfig(mode="mixed", height=256, width=256, density=10, macrophage_fraction=0.0), seed=0)
    dense = SimulatedMicroscope(SimConfig(mode="mixed", height=256, width=256, density=120, macrophage_fraction=0.5), seed=0)
    n_sparse = sum(sum(sparse.frame(i).counts.values()) for i in range(3))
    dense_counts = [dense.frame(i).counts for i in range(3)]
    assert sum(sum(c.values()) for c in dense_counts) > 3 * n_sparse
    assert all(sparse.frame(i).counts["macrophage"] == 0 for i in range(3))
    assert sum(c["macrophage"] for c in dense_counts) > 0


def test_some_cells_touch():
    frame = make_microscope("macrophage", size=512, seed=0).frame(0)
    import cv2

    n_blobs = cv2.connectedComponents((frame.semantic > 0).astype(np.uint8), connectivity=8)[0] - 1
    assert n_blobs < frame.counts["macrophage"], "touching macrophages should merge in the semantic mask"


def test_stream_drifts_slowly_and_stays_consistent():
    microscope = make_microscope("mixed", size=128, seed=3)
    frames = list(microscope.stream(n_frames=5, drift_px=2.0))
    assert len(frames) == 5
    for frame in frames:
        assert sum(frame.counts.values()) == int(frame.instances.max())
    # consecutive frames show nearly the same field of view
    diff = np.abs(frames[0].semantic.astype(int) - frames[1].semantic.astype(int)).mean()
    assert diff < 0.2
    again = list(make_microscope("mixed", size=128, seed=3).stream(n_frames=2, drift_px=2.0))
    assert np.array_equal(again[1].image, frames[1].image)
    # The demo camera's stream, without maps: the same frames and counts, no class or instance map.
    bare = list(make_microscope("mixed", size=128, seed=3).stream(n_frames=5, drift_px=2.0, maps=False))
    assert all(np.array_equal(b.image, f.image) and b.counts == f.counts for b, f in zip(bare, frames))
    assert all(b.semantic is None and b.instances is None for b in bare)
    # One slide, rendered once (the demo camera renders it when opened), gives the stream's frames on every pass.
    slide = make_microscope("mixed", size=128, seed=3).slide()
    for _ in range(2):
        again = list(slide.frames(5, drift_px=2.0))
        assert len(again) == len(frames) == 5
        assert all(np.array_equal(s.image, f.image) and s.counts == f.counts for s, f in zip(again, frames))


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="mode must be one of"):
        SimConfig(mode="platelets")
    with pytest.raises(ValueError, match="pixel size"):
        SimConfig(pixel_size_um=0)
