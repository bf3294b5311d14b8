"""The splitter and the scale estimate on hand-made shapes with known answers (issue: a splitter that keeps cells
whole — two touching discs are two cells, a ring or an ellipse is one, and no part of a cell is lost as debris)."""
import cv2
import numpy as np
import pytest

from runtime.counting.counter import CellCounter, CountingConfig
from runtime.counting.instances import MIN_SINGLES, divide_large, find_instances
from runtime.counting.scale import estimate_diameter


def count(mask, radius, min_area=0):
    found = find_instances(mask, radius, min_area)
    return len(found.ids)


def disc(mask, centre, radius):
    cv2.circle(mask, centre, radius, 1, -1)


@pytest.mark.parametrize("gap", [0, 6])  # tangent, and overlapping by 6 px: one blob in the mask either way
def test_two_touching_discs_are_two_cells(gap):
    mask = np.zeros((80, 120), np.uint8)
    disc(mask, (40, 40), 16)
    disc(mask, (40 + 32 - gap, 40), 16)
    assert cv2.connectedComponents(mask)[0] - 1 == 1
    assert count(mask, radius=13) == 2


@pytest.mark.parametrize(("apart", "cells"), [(16, 1), (24, 2)])
def test_a_shallow_waist_is_one_cell_and_a_deeper_neck_two(apart, cells):
    """Two distance maxima stay apart only when each rises COUNTER_SPLIT.dynamics × r above the saddle (1.6 px
    for r = 20): a lobed cell whose waist dips under a pixel in the distance map is one cell, two overlapping ones
    whose neck dips 3 px are two."""
    mask = np.zeros((80, 120), np.uint8)
    disc(mask, (50, 40), 24)
    disc(mask, (50 + apart, 40), 24)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    depth = dist[40, 50] - dist[40, 50 + apart // 2]
    assert (depth < 1) if cells == 1 else (2.5 < depth < 3.5)
    assert count(mask, radius=20) == cells


def test_a_ring_is_one_cell_and_is_not_lost_to_the_minimum_area():
    """An RBC whose pale centre the threshold missed: the old nearest-marker split cut the ring into arcs, each
    below the minimum area, so the cell counted 0."""
    mask = np.zeros((80, 80), np.uint8)
    cv2.circle(mask, (40, 40), 16, 1, 5)
    area = int(mask.sum())
    assert count(mask, radius=13, min_area=area // 4) == 1
    result = CellCounter(CountingConfig(class_names=("background", "rbc"), pixel_size_um=5.0 / 26,
                                        min_area_px={"rbc": area // 4})).count(mask)
    assert result.counts == {"rbc": 1}


@pytest.mark.parametrize("pixel_size", [0.2, 0.4])
def test_an_elongated_cell_stays_whole(pixel_size):
    """An ovalocyte of 8.8 × 4.8 µm (the issue's example that the old splitter bisected) at two magnifications."""
    axes = (int(round(4.4 / pixel_size)), int(round(2.4 / pixel_size)))
    mask = np.zeros((60, 80), np.uint8)
    cv2.ellipse(mask, (40, 30), axes, 20, 0, 360, 1, -1)
    counter = CellCounter(CountingConfig(class_names=("background", "rbc"), pixel_size_um=pixel_size))
    assert counter.count(mask).counts == {"rbc": 1}


@pytest.mark.parametrize("edge", ["left", "right", "top", "bottom"])
@pytest.mark.parametrize("cut_x", [2, 9])
def test_a_cell_cut_by_the_frame_edge_stays_apart_from_the_cell_it_touches(cut_x, edge):
    """The piece of a cell that the frame edge cuts is below the minimum area, but a quarter of it is enough for a
    cut cell standing alone (`large_enough`); inside a clump the same rule holds (before, the piece was merged into
    its neighbour: simulated macrophage singles counted 0.983 of their cells, now 0.986). The same piece away from
    the edge is a lobe and joins its neighbour."""
    mask = np.zeros((100, 140), np.uint8)  # not square: the frame's width and height must not be swapped
    disc(mask, (34, 50), 18)
    disc(mask, (cut_x, 50), 14)
    mask = {"left": mask, "right": mask[:, ::-1], "top": mask.T, "bottom": mask.T[::-1]}[edge].copy()
    assert cv2.connectedComponents(mask)[0] - 1 == 1
    assert len(find_instances(mask, 12, min_area=600).ids) == 2
    assert len(find_instances(mask, 12, min_area=600, cut_fraction=1.0).ids) == 1
    counter = CellCounter(CountingConfig(class_names=("background", "rbc"), pixel_size_um=0.2,
                                         min_area_px={"rbc": 600}))
    assert counter.count(mask).counts == {"rbc": 2}
    inside = np.pad(mask, 20)
    assert len(find_instances(inside, 12, min_area=600).ids) == 1


def test_split_parts_below_the_minimum_area_join_their_neighbour_instead_of_vanishing():
    mask = np.zeros((80, 120), np.uint8)
    disc(mask, (40, 40), 16)
    disc(mask, (66, 40), 9)  # a small lobe on a cell: its own distance maximum, but a part below the minimum area
    found = find_instances(mask, 6, min_area=300)
    assert int(found.stats[:, cv2.CC_STAT_AREA].sum()) == int(mask.sum()), "no pixel of the clump is dropped"
    assert len(found.ids) == 1


def singles_and_blobs(overlap_pairs=((60, 130),), triple=None):
    """Six single discs (r 16) and blobs of two discs 24 px apart (no neck a splitter could use), optionally a row
    of three."""
    mask = np.zeros((200, 260), np.uint8)
    for x in (30, 80, 130, 180, 230):
        disc(mask, (x, 30), 16)
    disc(mask, (230, 90), 16)
    for x, y in overlap_pairs:
        disc(mask, (x, y), 16), disc(mask, (x + 24, y), 16)
    if triple is not None:
        for i in range(3):
            disc(mask, (triple[0] + 24 * i, triple[1]), 16)
    return mask


def test_a_blob_of_overlapping_cells_is_divided_by_its_area():
    mask = singles_and_blobs(triple=(140, 160))
    found = divide_large(find_instances(mask), 1.8, 100, mask.shape)
    assert len(found.ids) == 6 + 2 + 3
    assert int(found.stats[:, cv2.CC_STAT_AREA].sum()) == int(mask.sum()), "no pixel lost"
    pair = found.centroids[(found.centroids[:, 1] > 110) & (found.centroids[:, 1] < 150)]
    assert np.abs(np.sort(pair[:, 0]) - [60, 84]).max() < 8, "each part's centroid near its disc's centre"
    for row, i in enumerate(found.ids):  # labels agree with the statistics
        assert int((found.labels == i).sum()) == found.stats[row, cv2.CC_STAT_AREA]


def test_no_division_without_enough_single_cells_to_know_a_cells_area():
    mask = np.zeros((100, 260), np.uint8)
    for x in range(30, 30 + 50 * (MIN_SINGLES - 2), 50):
        disc(mask, (x, 30), 16)
    disc(mask, (60, 75), 16), disc(mask, (84, 75), 16)  # and a two-cell blob: one instance too few for a median
    found = divide_large(find_instances(mask), 1.8, 100, mask.shape)
    assert len(found.ids) == MIN_SINGLES - 1


def test_a_given_cell_area_joins_the_halves_of_cells_where_no_single_cell_gives_a_median():
    """Cells whose masks all have a waist (a DIC relief's faint sides at high magnification): none is a single cell,
    so without ``cell_area`` the one-cell rule has no median and every cell stays cut in two."""
    mask = np.zeros((100, 400), np.uint8)
    for x in (40, 130, 220, 310):
        disc(mask, (x, 50), 16), disc(mask, (x + 22, 50), 16)  # a waisted cell, two distance maxima
    cut = find_instances(mask, 16.0, 100, one_cell=1.25, dynamics=0.02)
    joined = find_instances(mask, 16.0, 100, one_cell=1.25, dynamics=0.02, cell_area=float(cut.stats[:, 4].sum()) / 4)
    assert len(cut.ids) == 8 and len(joined.ids) == 4
    assert len(find_instances(mask, 16.0, 100, one_cell=0.0, dynamics=0.02, cell_area=1e9).ids) == 8, \
        "only with the one-cell rule on"


def test_a_blob_far_larger_than_a_clump_is_left_whole():
    """A thick patch of smear or an artefact is no clump of a dozen cells: not cut into hundreds of "cells"."""
    mask = singles_and_blobs(overlap_pairs=())
    mask[120:200, 20:250] = 1  # ≈ 23 cells' area
    found = divide_large(find_instances(mask), 1.8, 100, mask.shape)
    assert len(found.ids) == 6 + 1


def test_parts_cut_by_the_frame_edge_are_kept_smaller():
    mask = np.zeros((60, 60), np.uint8)
    mask[20:30, 0:6] = 1  # 60 px at the left edge
    mask[20:30, 30:36] = 1  # 60 px inside
    found = find_instances(mask)
    kept = found.large_enough(100, mask.shape)
    at_edge = found.stats[:, 0] == 0
    assert at_edge.sum() == 1 and kept.tolist() == at_edge.tolist()


def test_a_thin_fibre_makes_no_markers():
    mask = np.zeros((80, 200), np.uint8)
    cv2.line(mask, (5, 40), (195, 45), 1, 3)
    assert count(mask, radius=13) == 1  # one connected thing, never a chain of "cells"


@pytest.mark.parametrize("radius", [7, 18, 40])
def test_diameter_estimate_of_touching_discs(radius):
    rng = np.random.default_rng(radius)
    size = radius * 16
    mask = np.zeros((size, size), np.uint8)
    for _ in range(30):
        x, y = (int(v) for v in rng.integers(radius, size - radius, 2))
        disc(mask, (x, y), int(rng.integers(int(0.9 * radius), int(1.1 * radius) + 1)))
    assert estimate_diameter(mask) == pytest.approx(2 * radius, rel=0.12)
    assert estimate_diameter(np.zeros((50, 50), np.uint8)) is None


def field(zoom: int) -> np.ndarray:
    """25 single cells, 5 touching pairs and 8 specks of debris (35 cells), drawn at a magnification."""
    class_map = np.zeros((300 * zoom, 300 * zoom), np.uint8)
    for y in range(30, 300, 60):
        for x in range(30, 300, 60):
            cv2.circle(class_map, (x * zoom, y * zoom), 8 * zoom, 1, -1)
    for y in range(60, 300, 60):
        cv2.circle(class_map, (52 * zoom, y * zoom), 8 * zoom, 1, -1)
        cv2.circle(class_map, (67 * zoom, y * zoom), 8 * zoom, 1, -1)
    cv2.circle(class_map, (250 * zoom, 250 * zoom), 8 * zoom, 1, -1)
    cv2.circle(class_map, (265 * zoom, 250 * zoom), 8 * zoom, 1, -1)
    for x in range(20, 300, 36):
        cv2.circle(class_map, (x * zoom, 285 * zoom), zoom, 1, -1)
    return class_map


def test_counter_with_an_estimated_scale_counts_the_same_at_two_magnifications():
    """The same field drawn at two magnifications: with no pixel size the counter reads the scale off each frame,
    so minimum areas and splitting follow and both counts are right."""
    low, high = field(1), field(2)
    estimated = CellCounter(CountingConfig(class_names=("background", "rbc"), pixel_size_um=None))
    a, b = estimated.count(low), estimated.count(high)
    assert a.counts == b.counts == {"rbc": 35} and a.scale == b.scale == "estimated"
    assert b.pixel_size_um == pytest.approx(a.pixel_size_um / 2, rel=0.1)



def test_a_clump_of_thousands_of_cells_splits_in_memory_linear_in_its_border():
    """6 400 touching discs in one clump: a k × k saddle table took 164 MB here (292 MB in the issue's frame); the
    saddles now come from the clump's border pixels."""
    import tracemalloc

    n, step = 80, 11
    mask = np.zeros((n * step + 8, n * step + 8), np.uint8)
    for row in range(n):
        for col in range(n):
            disc(mask, (4 + step // 2 + col * step, 4 + step // 2 + row * step), 6)
    assert cv2.connectedComponents(mask)[0] - 1 == 1, "one clump"
    tracemalloc.start()
    try:
        found = find_instances(mask, 4.5, min_area=40)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(found.ids) == n * n
    assert peak < 120e6, f"{peak / 1e6:.0f} MB"


def random_blobs(seed, shape=(160, 200)):
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    for _ in range(60):  # discs of two cell sizes: many touch, some overlap the frame edge
        disc(mask, (int(rng.integers(-4, shape[1] + 4)), int(rng.integers(-4, shape[0] + 4))), int(rng.integers(4, 15)))
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_the_packed_distance_map_is_the_frames_own(seed):
    """Distances and splits are computed on components packed side by side: every component's distances must equal
    those of cv2 on the whole frame, cells cut by the frame edge included (OpenCV puts no background beyond an
    image's edge), and every packed pixel must be one of its component's."""
    from runtime.counting.instances import _components, _Packed

    mask = random_blobs(seed)
    comp, points, stats, _ = _components(mask, None)
    packed = _Packed.of(points, stats, gap=2)
    dist = packed.distances(comp)
    at = packed.index_of(points)
    assert np.count_nonzero(packed.rows) == len(at) == int(mask.sum())
    np.testing.assert_array_equal(packed.rows.ravel()[at], comp[points.y, points.x])
    np.testing.assert_array_equal(dist.ravel()[at], cv2.distanceTransform(mask, cv2.DIST_L2, 5)[points.y, points.x])


@pytest.mark.parametrize("seed", range(4))
def test_the_packed_distance_map_of_the_seeds_is_the_frames_own(seed):
    """The seeds' distance map (`find_instances`' ``seeds``) is packed in the mask's layout: at every seeded pixel
    it must equal cv2's on the seeded mask, components cut by the frame edge included."""
    from runtime.counting.instances import _components, _Packed, _seeded_distances

    mask = random_blobs(seed)
    seeds = mask.copy()
    rng = np.random.default_rng(seed)
    for _ in range(12):  # lines across cells, as the bright halo between touching cells leaves
        cv2.line(seeds, (int(rng.integers(0, 200)), 0), (int(rng.integers(0, 200)), 159), 0, 2)
    comp, points, stats, _ = _components(mask, None)
    packed = _Packed.of(points, stats, gap=2)
    seeded = points.where(seeds[points.y, points.x] > 0)
    assert np.count_nonzero(seeded.y == 0) and np.count_nonzero(seeded.x == mask.shape[1] - 1), "cut by the edge"
    want = cv2.distanceTransform(np.where(seeds > 0, mask, 0).astype(np.uint8), cv2.DIST_L2, 5)
    np.testing.assert_array_equal(_seeded_distances(packed, points, seeds).ravel()[packed.index_of(seeded)],
                                  want[seeded.y, seeded.x])


# A block with a cut across it and a notched corner: at a radius of 1–2 px one of its markers keeps no pixel.
EMPTY_PART_MASK = (65, 20), [(27, 10), (28, 10), (28, 11), (29, 12), (30, 13), (30, 14), (31, 14), (31, 15), (31, 16),
                             (32, 15), (32, 16), (32, 17), (32, 18), (33, 16), (33, 18), (33, 19), (59, 0), (59, 1),
                             (60, 0), (60, 1), (61, 0), (61, 1), (61, 2), (62, 0), (62, 1), (62, 2), (62, 7), (63, 1),
                             (63, 2), (64, 1), (64, 2), (64, 3)]


@pytest.mark.parametrize("radius", [1.0, 2.0])
def test_every_instance_has_pixels(radius):
    """A marker whose pixels all drain to another marker's end keeps no pixel: it must not come out as an instance
    of no pixels and no centroid (it did, and counted as a cell where the minimum area was 0)."""
    shape, holes = EMPTY_PART_MASK
    mask = np.ones(shape, np.uint8)
    mask[tuple(np.array(holes).T)] = 0
    found = find_instances(mask, radius)
    assert len(found.ids) > 1, "split"
    assert (found.stats[:, cv2.CC_STAT_AREA] > 0).all() and np.isfinite(found.centroids).all()
    assert set(found.ids.tolist()) == set(np.unique(found.labels).tolist()) - {0}


def test_flat_indices_do_not_wrap_past_int32():
    """Pixel coordinates are kept int32, as OpenCV lists them; their flat index y·width + x is taken in intp, or a
    frame of more than 2³¹ pixels would index the wrong ones."""
    from runtime.counting.instances import _flat

    y, x = np.array([50_000], np.int32), np.array([7], np.int32)
    assert _flat(y, x, 50_000).tolist() == [2_500_000_007]


def test_statistics_of_runs_are_those_of_their_pixels():
    """`pixel_statistics` from runs (the counter's components) equals it from the same runs' single pixels (the
    splitter's parts, an instance image's cells): boxes, areas and coordinate sums."""
    from runtime.counting.instances import pixel_statistics

    rng = np.random.default_rng(0)
    label, y, x = rng.integers(0, 5, 40), rng.integers(0, 30, 40), rng.integers(0, 50, 40)
    length = rng.integers(1, 9, 40)
    runs = pixel_statistics(label, y, x, 5, length)
    pixels = pixel_statistics(np.repeat(label, length), np.repeat(y, length),
                              np.concatenate([np.arange(a, a + n) for a, n in zip(x, length)]), 5)
    np.testing.assert_array_equal(runs[0], pixels[0])
    np.testing.assert_array_equal(runs[1], pixels[1])


def component_masks():
    """Masks whose components are easy to get wrong from runs of pixels: diagonal chains (8-connected across runs),
    runs ending at the right edge next to runs starting at the left edge of the next row, single pixels, a full
    frame, an empty one, random blobs."""
    diagonal = np.eye(40, 50, dtype=np.uint8)
    wrap = np.zeros((6, 8), np.uint8)
    wrap[0, 5:] = wrap[1, :3] = wrap[3, 7] = wrap[4, 0] = 1
    rng = np.random.default_rng(0)
    return [diagonal, diagonal[:, ::-1].copy(), wrap, (rng.random((64, 80)) > 0.6).astype(np.uint8),
            np.ones((7, 9), np.uint8), np.zeros((7, 9), np.uint8), random_blobs(1), random_blobs(2) * 255]


@pytest.mark.parametrize("mask", component_masks())
def test_components_are_opencvs_with_its_statistics(mask):
    """The statistics are computed from the foreground's runs, not by OpenCV's own pass over the frame: labels,
    boxes, areas and centroids must be cv2.connectedComponentsWithStats's, and the pixel list the foreground in
    raster order with each pixel's component."""
    from runtime.counting.instances import _components

    comp, points, stats, centroids = _components(mask, None)
    n, want, want_stats, want_centroids = cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S,
                                                                                       cv2.CCL_GRANA)
    np.testing.assert_array_equal(comp, want)
    np.testing.assert_array_equal(stats, want_stats[1:])
    np.testing.assert_array_equal(centroids, want_centroids[1:])
    ys, xs = np.nonzero(mask)
    np.testing.assert_array_equal(points.y, ys)
    np.testing.assert_array_equal(points.x, xs)
    np.testing.assert_array_equal(points.row, want[ys, xs] - 1)


@pytest.mark.parametrize("seed", range(6))
def test_a_components_split_does_not_depend_on_the_other_components(seed):
    """Each component splits as it would alone in the frame: the packing keeps a window's width between them."""
    mask = random_blobs(seed)
    whole = find_instances(mask, 10.0, 30, one_cell=0.0)
    n, comp = cv2.connectedComponents(mask, connectivity=8)
    for c in range(1, n):
        alone = find_instances((comp == c).astype(np.uint8), 10.0, 30, one_cell=0.0)
        inside = whole.labels[comp == c]
        np.testing.assert_array_equal(np.unique(inside), np.sort(whole.ids[np.isin(whole.ids, inside)]))
        assert len(np.unique(inside)) == len(alone.ids), f"component {c}"
        assert sorted(whole.stats[np.isin(whole.ids, inside), 4]) == sorted(alone.stats[:, 4])


@pytest.mark.parametrize("seed", range(4))
def test_classes_split_in_one_pass_give_each_class_its_own_split(seed, monkeypatch):
    """`split_classes`: the classes of a frame packed and split in one pass (each at its own window, heights,
    dynamics, areas and one-cell rule, a class without a radius only labelled) give every class the labels, ids,
    statistics and centroids it gets alone, with seeds and in runs on threads too."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from runtime.counting import instances as splitting
    from runtime.counting.instances import COUNTER_SPLIT, LABELLER_SPLIT, ClassSplit, split_classes

    small = random_blobs(seed, shape=(240, 300))
    rng = np.random.default_rng(seed + 10)
    large = np.zeros_like(small)
    for _ in range(14):  # large cells, many touching each other and the small ones
        disc(large, (int(rng.integers(-10, 310)), int(rng.integers(-10, 250))), int(rng.integers(16, 24)))
    large[small > 0] = 0
    plain = ((rng.random(small.shape) > 0.995) & (small == 0) & (large == 0)).astype(np.uint8)
    seeds = ((small | large) & (rng.random(small.shape) > 0.05)).astype(np.uint8)
    classes = [ClassSplit(small, 6.0, 40, replace(LABELLER_SPLIT, divide_large=None)),  # dynamics 0.5 px
               ClassSplit(large, 16.0, 700, replace(COUNTER_SPLIT, cut_fraction=1.0), cell_area=1100.0),  # 1.28
               ClassSplit(plain, None, 0, COUNTER_SPLIT)]
    with ThreadPoolExecutor(3) as pool:
        for kwargs in ({}, {"seeds": seeds}, {"pool": pool, "groups": 3}):
            if "groups" in kwargs:
                monkeypatch.setattr(splitting, "GROUP_PIXELS", 500)
            together = split_classes(classes, **kwargs)
            for c, got in zip(classes, together):
                alone = split_classes([c], **kwargs)[0]
                np.testing.assert_array_equal(got.labels, alone.labels)
                np.testing.assert_array_equal(got.ids, alone.ids)
                np.testing.assert_array_equal(got.stats, alone.stats)
                np.testing.assert_array_equal(got.centroids, alone.centroids)
            for c, got in zip(classes[:2], together):
                assert got.ids.max() > cv2.connectedComponents(c.mask)[0] - 1, "each class has clumps split"
            assert len(together[2].ids) == cv2.connectedComponents(plain)[0] - 1 > 0


def test_a_class_absent_from_the_frame_gets_no_instance_and_a_cleared_label_image():
    """`split_classes` on a frame where a class has no pixel: no instance, and the label buffer it was given (the
    counter's, kept from the frame before) all zeros; no class at all: no result."""
    from runtime.counting.instances import COUNTER_SPLIT, ClassSplit, split_classes

    mask = random_blobs(1)
    stale = np.full(mask.shape, 7, np.int32)
    present, absent = split_classes([ClassSplit(mask, 6.0, 40, COUNTER_SPLIT),
                                     ClassSplit(np.zeros_like(mask), 6.0, 40, COUNTER_SPLIT, labels=stale)])
    assert len(present.ids) > 0 and len(absent.ids) == 0 and absent.labels is stale and not stale.any()
    assert split_classes([]) == []


def test_a_drop_of_exactly_the_dynamics_keeps_two_parts_apart():
    """`_merge` compares a peak's drop to the saddle in the distance map's float32, as the rule always has (the
    dynamics came as a Python float): a drop of exactly the dynamics (2.8 − 1.0 against 1.8, which float64 holds
    as a hair more than float32's 2.8 − 1.0) is not less than it, so the two parts stay apart; a drop below it
    merges them."""
    from runtime.counting.instances import _merge

    width = 6
    flat = np.zeros(3 * width, np.float32)
    pixels = np.arange(width + 1, width + 5)  # the middle row, x = 1..4: parts 1, 1, 2, 2
    flat[pixels] = [2.8, 1.0, 1.0, 2.8]
    position = np.full(len(flat), -1)
    position[pixels] = np.arange(4)
    parts = np.array([1, 1, 2, 2])
    peak = np.array([0.0, 2.8, 2.8], np.float32)
    for dynamics, merged in ((1.8, False), (1.9, True)):  # per part, as `_split_clumps` gives them: float64
        root = _merge(parts, pixels, position, flat, width, peak.copy(), np.array([0.0, 2.0, 2.0]), np.zeros(3),
                      np.full(3, dynamics), np.zeros(3))
        assert (root[1] == root[2]) == merged, dynamics


def test_the_two_splitting_presets_are_named_and_each_used_by_its_own_side():
    """One module owns splitting; the counter and the labeller each take their own preset of it, so a change to
    one (the counter's dynamics, say) leaves the other's cells alone."""
    from dataclasses import replace

    from runtime.classes import CELL_SIZES, MACROPHAGE, RBC
    from runtime.counting.instances import COUNTER_SPLIT, LABELLER_SPLIT

    assert COUNTER_SPLIT.divide_large is None and LABELLER_SPLIT.divide_large == 1.8
    assert LABELLER_SPLIT.dynamics == 0.02 and LABELLER_SPLIT.one_cell == 1.25
    config = CountingConfig()
    assert config.split_settings(RBC) == COUNTER_SPLIT
    assert (config.one_cell, config.cut_cell_fraction) == (COUNTER_SPLIT.one_cell, COUNTER_SPLIT.cut_fraction)
    # Macrophages' sizes span too much for the one-cell rule: both presets fall back to the distance map alone.
    for preset in (COUNTER_SPLIT, LABELLER_SPLIT):
        wide = preset.for_size(CELL_SIZES[MACROPHAGE])
        assert (wide.one_cell, wide.divide_large, wide.dynamics) == (0.0, None, preset.wide_size_dynamics)
        assert preset.for_size(CELL_SIZES[RBC]) == preset
    # `split` is find_instances at the preset's settings, then divide_large where the preset divides.
    mask = np.zeros((120, 260), np.uint8)
    for x in range(20, 240, 40):
        disc(mask, (x, 30), 12)  # singles, for the median
    disc(mask, (70, 85), 18)  # one round blob of two cells' area (overlapping cells): no neck, one maximum
    plain = find_instances(mask, 10, 50, 1.25, 0.02, 0.25)
    assert len(replace(LABELLER_SPLIT, divide_large=None).split(mask, 10, 50).ids) == len(plain.ids)
    divided = divide_large(find_instances(mask, 10, 50, 1.25, 0.02, 0.25), 1.8, 50, mask.shape)
    assert len(LABELLER_SPLIT.split(mask, 10, 50).ids) == len(divided.ids) > len(plain.ids)


def test_the_labeller_takes_no_counter_constant():
    from pathlib import Path

    import trainer.autolabel
    from runtime.counting.instances import LABELLER_SPLIT

    config = trainer.autolabel.AutoLabelConfig()
    assert (config.split_dynamics, config.overlap) == (LABELLER_SPLIT.dynamics, LABELLER_SPLIT.divide_large)
    assert "runtime.counting.counter" not in Path(trainer.autolabel.__file__).read_text()


@pytest.mark.parametrize("edge", [False, True])  # inside the frame, and cut by its edge (measured apart)
def test_seeds_split_a_blob_at_a_line_the_mask_closed_over_and_keep_every_pixel(edge):
    """Two cells welded into one round blob (no neck, one distance maximum) with a line between them in the image:
    split from the seeds (the mask without the line), every mask pixel in one of the two; without seeds, one."""
    mask = np.zeros((90, 120), np.uint8)
    centre = (30 if edge else 60, 45)
    cv2.ellipse(mask, centre, (34, 30), 0, 0, 360, 1, -1)
    assert count(mask, radius=13) == 1  # with edge, the blob runs off the frame's left edge
    seeds = mask.copy()
    seeds[:, centre[0] - 1:centre[0] + 2] = 0  # a 3-px line across the blob
    found = find_instances(mask, 13, 0, seeds=seeds)
    assert len(found.ids) == 2
    assert np.array_equal(found.labels > 0, mask > 0) and found.stats[:, 4].sum() == np.count_nonzero(mask)
    left, right = (found.labels[45, centre[0] - x] for x in (20, -20))
    assert left != right and left in found.ids and right in found.ids


def test_seeds_that_lose_a_cell_leave_the_split_to_the_mask():
    """Seeds that lose all of one of two touching cells (bright all over) hold one marker: the blob is split as
    without seeds, not kept whole; and seeds of another shape than the mask are refused."""
    mask = np.zeros((80, 120), np.uint8)
    disc(mask, (37, 40), 25)
    disc(mask, (82, 40), 25)
    seeds = mask.copy()
    seeds[:, 60:] = 0
    assert len(find_instances(mask, 13, 0, seeds=seeds).ids) == count(mask, radius=13) == 2
    with pytest.raises(ValueError, match="seeds are"):
        find_instances(mask, 13, 0, seeds=seeds[:, :100])


def test_a_drainage_end_off_the_markers_goes_to_the_nearest_marker_of_its_own_clump():
    """Ends of the drainage that are no marker take the part of the nearest marker pixel in their own clump, even
    where a marker of the clump packed beside it is nearer (the label OpenCV gives a marker pixel is its rank in
    the box's raster order: a wrong rank gives another marker's part)."""
    from runtime.counting.instances import _nearest_sites, _Packed

    rows = np.zeros((14, 40), np.int32)
    ax, ay = np.array([2, 20]), np.array([2, 2])
    box = np.array([[0, 0, 15, 10], [50, 0, 15, 10]])
    rows[2:12, 2:17], rows[2:12, 20:35] = 1, 2
    pixels = np.flatnonzero(rows)
    row = rows.ravel()[pixels] - 1
    part_of = np.zeros(len(pixels), np.int32)
    at = {(y, x): i for i, (y, x) in enumerate(zip(*np.divmod(pixels, rows.shape[1])))}
    for (y, x), part in {(2, 2): 1, (11, 2): 2, (7, 21): 3, (7, 22): 3}.items():  # markers, packed coordinates
        part_of[at[y, x]] = part
    lost = [at[10, 16], at[3, 7], at[7, 33]]  # nearest: part 2 (part 3's marker nearer, next box), 1, 3
    ends = np.array([at[2, 2], *lost])
    _nearest_sites(part_of, ends, pixels, row, _Packed(rows, ax, ay, box))
    assert part_of[lost].tolist() == [2, 1, 3]


def test_markers_are_plateaus_numbered_by_their_first_pixel_in_raster_order():
    """`_markers`: 8-connected peak pixels are one marker (a plateau, diagonal steps included), and markers are
    numbered by their first pixel in raster order, the order parts and their ids follow. A block-based labelling
    (OpenCV's default, Grana's) numbers the marker whose first pixel is on the second row of a 2×2 block row but
    further left first."""
    from runtime.counting.instances import _markers, _Packed

    peaks = np.zeros((6, 60), np.uint8)
    peaks[1, 10] = peaks[2, 11] = 255  # one plateau (a diagonal step), first pixel on row 1
    peaks[0, 50] = 255  # alone, first in raster order
    peaks[4, 30] = 255  # a third marker, in the second component
    rows = np.zeros(peaks.shape, np.int32)
    rows[:3], rows[3:] = 1, 2
    box = np.array([[0, 0, 60, 3], [0, 3, 60, 3]])
    px, py, marker, row, n_markers = _markers(_Packed(rows, np.array([0, 0]), np.array([0, 3]), box), peaks)
    assert list(zip(py.tolist(), px.tolist(), marker.tolist(), row.tolist())) == [
        (0, 50, 1, 0), (1, 10, 2, 0), (2, 11, 2, 0), (4, 30, 3, 1)]
    assert n_markers.tolist() == [2, 1]


def test_drainage_goes_to_the_highest_neighbour_and_stays_on_a_plateau():
    """`_steepest`: a pixel drains to its highest neighbour; of equal ones, the first in `_NEIGHBOURS` order (up-left
    before up before right…); a pixel with no higher neighbour (a plateau, a peak) drains to itself, so that drainage
    ends there instead of cycling between equal pixels."""
    from runtime.counting.instances import _steepest

    heights = np.array([[1, 3, 3, 0],
                        [2, 2, 2, 0],
                        [3, 1, 3, 3]], np.float32)
    padded = np.pad(heights, 1, constant_values=-1)  # a ring of background, as around every packed box
    at = lambda y, x: (y + 1) * padded.shape[1] + x + 1  # noqa: E731
    got = _steepest(padded.ravel(), np.array([at(1, 1), at(1, 2), at(0, 1), at(2, 3)]), padded.shape[1])
    # (1, 1): 3s up, up-right, down-left: up-left is 1, up comes first; (1, 2): 3s up-left, up, down-right: up-left;
    # (0, 1): a 3 beside a 3 stays; (2, 3): a 3 beside a 3 stays
    assert got.tolist() == [at(0, 1), at(0, 1), at(0, 1), at(2, 3)]


@pytest.mark.parametrize("seed", range(4))
def test_components_split_in_runs_on_threads_give_the_single_pass(seed, monkeypatch):
    """`find_instances`' ``groups``: runs of consecutive components packed and split on a pool's threads give the
    labels, ids, statistics and centroids of one pass (the one-cell rule's median taken over all of them), with
    seeds too; runs are at least GROUP_PIXELS (made small here, so that a small mask has several)."""
    from concurrent.futures import ThreadPoolExecutor

    from runtime.counting import instances as splitting

    mask = random_blobs(seed, shape=(240, 300))
    seeds = mask & (np.random.default_rng(seed).random(mask.shape) > 0.05).astype(np.uint8)
    with ThreadPoolExecutor(3) as pool:
        for kwargs in ({}, {"seeds": seeds}):
            whole = find_instances(mask, 6.0, 40, one_cell=1.25, **kwargs)
            assert len(whole.ids) > cv2.connectedComponents(mask)[0] - 1, "the mask has clumps to split"
            monkeypatch.setattr(splitting, "GROUP_PIXELS", 500)
            for groups in (2, 3, 5):
                runs = find_instances(mask, 6.0, 40, one_cell=1.25, pool=pool, groups=groups, **kwargs)
                np.testing.assert_array_equal(runs.labels, whole.labels)
                np.testing.assert_array_equal(runs.ids, whole.ids)
                np.testing.assert_array_equal(runs.stats, whole.stats)
                np.testing.assert_array_equal(runs.centroids, whole.centroids)
            monkeypatch.setattr(splitting, "GROUP_PIXELS", 100_000)


def test_components_are_grouped_in_runs_of_about_equal_pixels():
    """`_Group.of`: consecutive rows, every component in exactly one run, each run's rows counted from its first,
    fewer runs than asked where the components are too few."""
    from runtime.counting.instances import _components, _Group

    mask = random_blobs(3)
    _, points, stats, _ = _components(mask, None)
    groups = _Group.of(points, stats, gap=2, count=3)
    assert len(groups) == 3
    np.testing.assert_array_equal(np.concatenate([g.stats for g in groups]), stats)  # consecutive, each row once
    assert sum(len(g.points.x) for g in groups) == len(points.x)
    areas = [int(g.stats[:, cv2.CC_STAT_AREA].sum()) for g in groups]
    assert max(areas) < 0.6 * sum(areas), areas
    for g in groups:
        assert g.points.row.min() == 0 and g.points.row.max() == len(g.stats) - 1
        np.testing.assert_array_equal(g.stats[g.points.row, 0] <= g.points.x, True)
        np.testing.assert_array_equal(g.stats[g.points.row, 1] <= g.points.y, True)
    one = np.zeros((40, 40), np.uint8)
    disc(one, (20, 20), 8)
    _, points, stats, _ = _components(one, None)
    assert len(_Group.of(points, stats, gap=2, count=4)) == 1, "one component: one run"
