"""Counting on the GPU with torch: `TorchCellCounter`, the same answers as `runtime.counting.counter.CellCounter`.

torch is an optional dependency, imported only when a `TorchCellCounter` is made (``import runtime.counting.gpu``
does not import it; `runtime` stays numpy + OpenCV). The class map may be a torch tensor already on the device
(the model's argmax) or a numpy array.

On the device, per class: connected components (8-connected; min-label propagation over the foreground pixels'
neighbour lists with hooking and pointer jumping, convergence checked every round), numbered in OpenCV's order
(GRANA labels components in the raster order of 2×2 blocks), and their areas, boxes and coordinate sums by
scatter-reduce. Only those statistics (7 integers per component) come to the host, where the minimum-area rule
(`Instances.large_enough`), the border policy and the table are `CellCounter`'s own code.

Splitting touching cells (``split_touching``) is hybrid. The device decides which components are clumps exactly
as `runtime.counting.instances.find_instances` does: the per-component distance map (OpenCV's 5×5 chamfer L2, by
relaxation to its fixed point in float32, which equals cv2.distanceTransform bit for bit on this build), the
window maxima of cell-like height and their 8-connected groups (markers); a component with more than one marker is
a clump. Only the clumps' pixels — plus, where the one-cell rule is on, the five or six single cells that carry
the frame's median single-cell area — go to the host, into a frame-sized mask on which the CPU splitter
(`find_instances`) runs: the split is the one implementation, on a sparse image. A frame without clumps sends
no pixels at all. If the host finds fewer clumps than the device sent (never seen in the tests), the class is
counted on the host from the whole class map instead, and ``host_fallbacks`` counts it. The other way round — a
component the device takes for one cell that the CPU would split — is not detected while counting: the marker
rule here mirrors `find_instances`'s (PEAK_HEIGHT, WINDOW, PEAK_MARGIN, the chamfer map), so a change there
must be made here too; the equality tests fail until it is.

Equal to `CellCounter` (tests/runtime/counting/test_gpu_counting.py, on torch's CPU): counts and whole cell tables, ids and
row order included, with and without splitting, every border policy. The per-frame scale estimate
(``pixel_size_um=None``) runs on the host (`CellCounter._scale`), as does ``return_labels``'s last step.

Speed: only measured on torch's CPU (benchmarks/speed/gpu_counting.py; benchmarks/results/gpu_counting_cpu.json), where
it is 7× (splitting off) to 67× (on) slower than the CPU counter on a 4000×3000 frame. **The GPU figure is
unmeasured**: no GPU was lent when this was written. Each propagation round synchronises once with the device and
clumps are split on the host, so the issue's ≤ 5 ms target is not to be taken for granted.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from runtime.counting.counter import CELL_DTYPE, CellCounter, CountingConfig, FrameCounts, _table
from runtime.errors import CscError
from runtime.counting.instances import MIN_SINGLES, PEAK_HEIGHT, WINDOW, Instances, on_border
from runtime.counting.scale import PEAK_MARGIN

DEVICES = ("cpu", "cuda", "auto")
# OpenCV's 5×5 chamfer for DIST_L2 (getDistanceTransformMask): horizontal/vertical, diagonal, knight's move.
_CHAMFER = ((1.0, [(0, 1), (0, -1), (1, 0), (-1, 0)]),
            (1.4, [(1, 1), (1, -1), (-1, 1), (-1, -1)]),
            (2.1969, [(dy, dx) for dy in (-2, -1, 1, 2) for dx in (-2, -1, 1, 2) if abs(dy) != abs(dx)]))
_CHECK_EVERY = 4  # propagation rounds between convergence checks (each check synchronises with the device)


def make_counter(config: CountingConfig | None = None, device: str = "cpu") -> CellCounter:
    """The counter for ``device``: "cpu" is `CellCounter` (OpenCV), "cuda" the torch counter on the GPU, "auto"
    the torch counter where torch sees a GPU, else `CellCounter`."""
    return TorchCellCounter(config, device="cuda") if counts_on_gpu(device) else CellCounter(config)


def counts_on_gpu(device: str) -> bool:
    """Whether ``device`` counts on the GPU here: "cuda" where torch sees one (an error that says why otherwise),
    "auto" where it can, "cpu" never. `csc-run` asks before it opens a camera."""
    if device not in DEVICES:
        raise CscError(f"counting device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return False
    try:
        import torch
    except ImportError:
        if device == "auto":
            return False
        raise CscError("counting on the GPU needs torch, which is not installed",
                       fix="pip install torch (a CUDA build), or count on the CPU") from None
    if not torch.cuda.is_available():
        if device == "auto":
            return False
        raise CscError("counting device 'cuda' asked for, but torch sees no GPU",
                       fix="use --counting-device auto or cpu, or install a CUDA build of torch")
    return True


class TorchCellCounter(CellCounter):
    """`CellCounter.count` with components, statistics and clump detection on a torch device (see the module).
    Reuse one per stream: per-shape index images and the host splitting mask are made once."""

    def __init__(self, config: CountingConfig | None = None, device: Any = "cuda"):
        super().__init__(config)
        import torch
        self._torch = torch
        self.device = torch.device(device)
        self.host_fallbacks = 0
        self._grid: dict[str, Any] | None = None
        self._host_mask: np.ndarray | None = None

    def count(self, class_map: Any, return_labels: bool = False) -> FrameCounts:
        torch = self._torch
        cfg = self.config
        on_host = isinstance(class_map, np.ndarray)
        if on_host:
            self._validate(class_map)
        else:
            self._validate_tensor(class_map)
        h, w = class_map.shape
        if h * w == 0:
            zero = {name: 0 for name in cfg.class_names[1:]}
            return FrameCounts(zero, np.zeros(0, CELL_DTYPE), np.zeros((h, w), np.int32) if return_labels else None)
        host_map = class_map if on_host else None
        if cfg.fixed_pixel_size_um is None:  # the scale estimate reads the class map on the host
            host_map = host_map if host_map is not None else class_map.cpu().numpy()
            pixel_size, scale = self._scale(host_map)
        else:
            pixel_size, scale = cfg.fixed_pixel_size_um, "given"
        cmap = (torch.from_numpy(class_map) if on_host else class_map).to(self.device, non_blocking=True)
        grid = self._grid_for(h, w)
        rows: list[np.ndarray] = []
        labels = torch.zeros(h * w, dtype=torch.int32, device=self.device) if return_labels else None
        host_parts: list[tuple[np.ndarray, np.ndarray]] = []  # (flat pixels, table ids) of split clumps
        next_id = 1
        for class_id in range(1, len(cfg.class_names)):
            fg = cmap == class_id
            min_area = cfg.min_area(class_id, pixel_size)
            found, source = self._instances(fg, class_id, min_area, pixel_size, grid, host_map, class_map)
            keep = np.flatnonzero(found.large_enough(min_area, (h, w), cfg.cut_cell_fraction))
            found = found.keep(keep)
            table = _table(found.stats, found.centroids, class_id, next_id, pixel_size, h, w)
            if labels is not None and len(table):
                self._label(labels, found.ids, keep, table["id"], source, host_parts)
            next_id += len(table)
            rows.append(table)
        cells = np.concatenate(rows) if rows else np.zeros(0, CELL_DTYPE)
        labels_out = None
        if labels is not None:
            labels_out = labels.view(h, w).cpu().numpy()
            for flat, ids in host_parts:  # the host mask's other pixels are single cells labelled on the device
                labels_out.ravel()[flat[ids > 0]] = ids[ids > 0]
        return self._frame_counts(cells, labels_out, pixel_size, scale)

    # -- one class --------------------------------------------------------------------------------------------
    def _instances(self, fg, class_id: int, min_area: int, pixel_size: float, grid: dict, host_map, class_map):
        """Instances of one class — whole components from the device, then clumps split on the host — and where
        their labels come from: (each foreground pixel's component row, the foreground pixels (device, flat),
        the number of leading rows that are whole components, the host's (flat pixels, labels) or None)."""
        torch = self._torch
        cfg = self.config
        h, w = fg.shape
        pixels = torch.nonzero(fg.view(-1)).squeeze(1)  # raster order
        root = _components(torch, pixels, h, w, grid)
        is_root = root == torch.arange(len(pixels), device=self.device)
        n = int(is_root.sum())
        if n == 0:
            empty = Instances(np.zeros((0, 0), np.int32), np.zeros(0, np.int32), np.zeros((0, 5), np.int32),
                              np.zeros((0, 2)))
            return empty, (None, pixels, 0, None)
        # Component rows in OpenCV's order: by the first 2×2 block (raster order of blocks) each one reaches.
        comp = (torch.cumsum(is_root, 0) - 1)[root]
        first_block = torch.full((n,), h * w, dtype=torch.int64, device=self.device)
        first_block.scatter_reduce_(0, comp, grid["block"][pixels], "amin")
        order = torch.argsort(first_block)
        row = torch.empty_like(order)
        row[order] = torch.arange(n, device=self.device)
        comp = row[comp]
        ys, xs = grid["y"][pixels], grid["x"][pixels]
        stats = torch.empty((7, n), dtype=torch.int64, device=self.device)
        stats[0].fill_(w).scatter_reduce_(0, comp, xs, "amin")
        stats[1].fill_(h).scatter_reduce_(0, comp, ys, "amin")
        stats[2].fill_(-1).scatter_reduce_(0, comp, xs, "amax")
        stats[3].fill_(-1).scatter_reduce_(0, comp, ys, "amax")
        stats[4] = torch.bincount(comp, minlength=n)
        stats[5].zero_().index_add_(0, comp, xs)
        stats[6].zero_().index_add_(0, comp, ys)
        markers = None
        if cfg.split_touching:
            markers = self._marker_counts(fg, pixels, comp, n, cfg.min_radius_px(class_id, pixel_size), grid)
        s = stats.cpu().numpy()
        box = np.stack([s[0], s[1], s[2] - s[0] + 1, s[3] - s[1] + 1, s[4]], 1).astype(np.int32)
        centroids = np.stack([s[5], s[6]], 1) / s[4][:, None].astype(np.float64)
        found = Instances(np.zeros((0, 0), np.int32), np.arange(1, n + 1, dtype=np.int32), box, centroids)
        if markers is None:
            return found, (comp, pixels, n, None)
        n_markers = markers.cpu().numpy()
        clumps = np.flatnonzero(n_markers > 1)
        if not len(clumps):
            return found, (comp, pixels, n, None)
        return self._split_on_host(found, n_markers, clumps, comp, pixels, class_id, min_area, pixel_size,
                                   host_map, class_map)

    def _marker_counts(self, fg, pixels, comp, n: int, radius: float, grid: dict):
        """Per component row: its number of markers, as `find_instances` finds them."""
        torch = self._torch
        h, w = fg.shape
        owner = torch.full((h * w,), -1, dtype=torch.int64, device=self.device)  # component row, -1 background
        owner[pixels] = comp
        dist = torch.zeros(h * w, dtype=torch.float32, device=self.device)
        dist[pixels] = _chamfer_distances(torch, pixels, comp, owner, h, w, grid)
        owner, dist = owner.view(h, w), dist.view(h, w)
        window = max(1, int(round(WINDOW * radius)))
        size = 2 * window + 1
        pool = torch.nn.functional.max_pool2d
        local_max = pool(dist[None, None], size, 1, window)[0, 0] - PEAK_MARGIN
        high = fg & (dist >= PEAK_HEIGHT * radius)
        peaks = high & (dist >= local_max)
        # find_instances sees each component alone in its box: where a window also reaches another component of
        # this class, its maximum is taken over the pixel's own component only.
        big = float(n)
        as_float = owner.to(torch.float32)
        near_max = pool(as_float[None, None], size, 1, window)[0, 0]
        near_min = -pool(torch.where(owner >= 0, -as_float, -big)[None, None], size, 1, window)[0, 0]
        shared = high & ~peaks & ((near_max != as_float) | (near_min != as_float))
        at = torch.nonzero(shared.view(-1)).squeeze(1)
        if len(at):
            peaks.view(-1)[at] = _own_window_peaks(torch, dist, owner, at, window)
        peak_pixels = torch.nonzero(peaks.view(-1)).squeeze(1)
        marker = _components(torch, peak_pixels, h, w, grid)
        first = peak_pixels[marker == torch.arange(len(peak_pixels), device=self.device)]
        return torch.bincount(owner.view(-1)[first], minlength=n)

    def _split_on_host(self, found: Instances, n_markers: np.ndarray, clumps: np.ndarray, comp, pixels,
                       class_id: int, min_area: int, pixel_size: float, host_map, class_map):
        """``found`` with its clumps replaced by their parts, split by `find_instances` on a host mask holding
        the clumps and the single cells that give it this frame's median single-cell area."""
        torch = self._torch
        cfg = self.config
        shape = self._shape_of(class_map)
        settings = cfg.split_settings(class_id)
        one_cell = settings.one_cell
        radius = cfg.min_radius_px(class_id, pixel_size)
        singles = _median_carriers(found.stats, n_markers, shape, min_area) if one_cell else np.zeros(0, np.int64)
        chosen = np.sort(np.concatenate([clumps, singles]))
        send = torch.zeros(len(n_markers), dtype=torch.bool, device=self.device)
        send[torch.from_numpy(chosen).to(self.device)] = True
        flat = pixels[send[comp]].cpu().numpy()
        if self._host_mask is None or self._host_mask.shape != shape:
            self._host_mask = np.zeros(shape, np.uint8)
        mask = self._host_mask.ravel()
        mask[flat] = 1
        try:
            split = settings.split(self._host_mask, radius, min_area)
        finally:
            mask[flat] = 0
        whole_on_host = split.ids <= len(chosen)
        if whole_on_host.sum() != len(singles):  # the device's and the host's clumps differ: count on the host
            self.host_fallbacks += 1
            host_map = host_map if host_map is not None else class_map.cpu().numpy()
            binary = (host_map == class_id).astype(np.uint8)
            whole = settings.split(binary, radius, min_area)
            ys, xs = np.nonzero(whole.labels)
            return whole, (None, pixels, 0, (ys * shape[1] + xs, whole.labels))
        parts = np.flatnonzero(~whole_on_host)
        kept = np.ones(len(n_markers), bool)
        kept[clumps] = False
        rows = np.flatnonzero(kept)
        result = Instances(found.labels, np.concatenate([found.ids[rows], split.ids[parts]]),
                           np.concatenate([found.stats[rows], split.stats[parts]]),
                           np.concatenate([found.centroids[rows], split.centroids[parts]]))
        return result, (comp, pixels, len(rows), (flat, split.labels))

    # -- labels -----------------------------------------------------------------------------------------------
    def _label(self, labels, ids: np.ndarray, keep: np.ndarray, table_ids: np.ndarray, source,
               host_parts: list) -> None:
        """Write this class's table ids into the frame's label image: whole components on the device (their
        ``ids`` are component row + 1), parts split on the host after the copy (their ``ids`` are the host's)."""
        torch = self._torch
        comp, pixels, n_whole, host = source
        whole = keep < n_whole
        if comp is not None and whole.any():
            lut = np.zeros(int(ids[whole].max()) + 1, np.int32)
            lut[ids[whole]] = table_ids[whole]
            lut = torch.from_numpy(lut).to(self.device)
            labels[pixels] = lut[(comp + 1).clamp(max=len(lut) - 1)] * ((comp + 1) < len(lut))
        if host is not None and (~whole).any():
            flat, host_labels = host
            lut = np.zeros(int(host_labels.max()) + 1, np.int32)
            lut[ids[~whole]] = table_ids[~whole]
            host_parts.append((flat, lut[host_labels.ravel()[flat]]))

    # -- helpers ----------------------------------------------------------------------------------------------
    def _grid_for(self, h: int, w: int) -> dict:
        if self._grid is None or self._grid["shape"] != (h, w):
            torch = self._torch
            index = torch.arange(h * w, device=self.device)
            y, x = index // w, index % w
            self._grid = {"shape": (h, w), "y": y, "x": x, "block": (y // 2) * ((w + 1) // 2) + x // 2}
        return self._grid

    @staticmethod
    def _shape_of(class_map) -> tuple[int, int]:
        return tuple(int(s) for s in class_map.shape)

    def _validate_tensor(self, class_map) -> None:
        torch = self._torch
        if not isinstance(class_map, torch.Tensor) or class_map.dim() != 2 or class_map.dtype != torch.uint8:
            got = (f"{class_map.dtype} {tuple(class_map.shape)}" if isinstance(class_map, torch.Tensor)
                   else type(class_map).__name__)
            raise CscError(f"a class map must be a 2-D uint8 array or tensor, got {got}",
                           fix="pass the model's argmax output (one class id per pixel) as uint8")
        self._check_contents(self._shape_of(class_map), int(class_map.max()) if class_map.numel() else 0)


def _neighbours(torch, pixels, h: int, w: int, grid: dict, offsets, key=None):
    """Per pixel of ``pixels`` (flat, sorted) and per offset: the neighbour's position in ``pixels`` when it is
    one of them (and, given ``key`` per pixel, has the same key), len(pixels) when it is another pixel of the
    frame, len(pixels) + 1 beyond the frame's edge."""
    n = len(pixels)
    position = torch.full((h * w,), n, dtype=torch.int64, device=pixels.device)
    position[pixels] = torch.arange(n, device=pixels.device)
    y, x = grid["y"][pixels], grid["x"][pixels]
    columns = []
    for dy, dx in offsets:
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        at = position[(ny.clamp(0, h - 1) * w + nx.clamp(0, w - 1))]
        if key is not None:
            at = torch.where(key[at.clamp(max=n - 1)] == key, at, n)
        columns.append(torch.where(inside, at, n + 1))
    return torch.stack(columns, 1)


_EIGHT = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def _components(torch, pixels, h: int, w: int, grid: dict):
    """Per pixel of ``pixels`` (flat, raster order): the position of its 8-connected component's first pixel.
    Min-label propagation with hooking (a label's root takes the smallest label next to it) and pointer jumping,
    a few rounds for any shape; convergence checked every round (one small synchronisation). The first pixel, as
    labels only ever point to a pixel of the same component with a label no larger."""
    n = len(pixels)
    if n == 0:
        return pixels.new_zeros(0)
    nbr = _neighbours(torch, pixels, h, w, grid, _EIGHT)
    own = torch.arange(n, device=pixels.device)
    nbr = torch.where(nbr >= n, own[:, None], nbr)
    label = own.clone()
    while True:
        low = label[nbr].amin(1)
        low = torch.minimum(low, label)
        changed = not torch.equal(low, label)
        label.scatter_reduce_(0, label.clone(), low, "amin")  # hook each root onto the smallest label beside its tree
        label = torch.minimum(label, low)
        for _ in range(3):
            label = label[label]
        if not changed:
            return label


def _chamfer_distances(torch, pixels, comp, owner, h: int, w: int, grid: dict):
    """cv2.distanceTransform(DIST_L2, 5) at ``pixels`` for every component alone, as find_instances measures it:
    other components and other classes are background, nothing lies beyond the frame's edge. The fixed point of
    d(p) = min over the 16 chamfer neighbours q of d(q) + step (q in p's component), step (q background), in
    float32 on the foreground pixels' list; it equals OpenCV's two-pass result bit for bit (tests)."""
    offsets = [o for _, group in _CHAMFER for o in group]
    steps = torch.tensor([step for step, group in _CHAMFER for _ in group], dtype=torch.float32,
                         device=pixels.device)
    nbr = _neighbours(torch, pixels, h, w, grid, offsets, key=comp)
    n = len(pixels)
    dist = torch.full((n + 2,), float("inf"), dtype=torch.float32, device=pixels.device)
    dist[n] = 0.0  # background
    rounds = 0
    while True:
        new = (dist[nbr] + steps).amin(1)
        rounds += 1
        if rounds % _CHECK_EVERY == 0 and torch.equal(new, dist[:n]):
            return new
        dist[:n] = new


def _own_window_peaks(torch, dist, owner, at, window: int):
    """Is each pixel ``at`` (flat) a window maximum over its own component's pixels only."""
    h, w = dist.shape
    span = torch.arange(-window, window + 1, device=dist.device)
    y = (at // w)[:, None, None] + span[None, :, None]
    x = (at % w)[:, None, None] + span[None, None, :]
    inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    flat = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).view(len(at), -1)
    own = (owner.view(-1)[flat] == owner.view(-1)[at][:, None]) & inside.view(len(at), -1)
    best = torch.where(own, dist.view(-1)[flat], 0.0).amax(1)
    return dist.view(-1)[at] >= best - PEAK_MARGIN


def _median_carriers(stats: np.ndarray, n_markers: np.ndarray, shape: tuple[int, int], min_area: int) -> np.ndarray:
    """Rows of five (odd count) or six (even count) single cells whose median area is the median of all the
    frame's single cells as `runtime.counting.instances` takes it (one marker, clear of the edge, at least ``min_area``);
    none where there are fewer than MIN_SINGLES (no median)."""
    area = stats[:, 4]
    rows = np.flatnonzero((n_markers == 1) & ~on_border(stats, shape) & (area >= min_area))
    if len(rows) < MIN_SINGLES:
        return np.zeros(0, np.int64)
    rows = rows[np.argsort(area[rows], kind="stable")]
    middle = len(rows) // 2
    lo = middle - 2 if len(rows) % 2 else middle - 3
    return rows[lo:middle + 3]
