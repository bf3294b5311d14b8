"""A simulated brightfield microscope with exact ground truth.

The paper's images are private, so training data, tests and the live demo camera all come from here. Cells are
drawn as optical absorption profiles on a patch around each cell (cheap: no full-frame work per cell), then the
whole frame gets uneven illumination, defocus blur and sensor noise. The instance map is the geometric outline
of each cell with later cells on top, so the class map, the instance map and the counts agree exactly.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from runtime.classes import CELL_SIZES, CLASS_NAMES, DEFAULT_PIXEL_SIZE_UM, MACROPHAGE, RBC

MODES = ("rbc", "macrophage", "mixed")

# Absorption per BGR channel: RBCs absorb green and blue (they look red), macrophages are nearly grey.
_TINT = {RBC: np.array([0.95, 1.0, 0.45], np.float32), MACROPHAGE: np.array([0.85, 0.95, 0.8], np.float32)}
_BACKGROUND_BGR = np.array([205.0, 212.0, 218.0], np.float32)


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes a simulated frame. Defaults follow the paper's data (§2.3, Table 3)."""

    mode: str = "mixed"
    height: int = 512
    width: int = 512
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM
    rbc_diameter_um: tuple[float, float] = (CELL_SIZES[RBC].min_um, CELL_SIZES[RBC].max_um)
    macrophage_diameter_um: tuple[float, float] = (CELL_SIZES[MACROPHAGE].min_um, CELL_SIZES[MACROPHAGE].max_um)
    # Mean cells per 512×512 frame; the paper's test set had 3130 RBCs and 405 macrophages in 75 frames.
    density: float | None = None
    macrophage_fraction: float = 0.115
    touching_prob: float = 0.25
    macrophage_touching_prob: float = 0.45
    max_overlap: float = 0.25
    illumination: float = 0.25
    defocus_sigma: tuple[float, float] = (0.3, 1.0)
    noise_sigma: float = 5.0
    debris_per_frame: float = 12.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.height < 32 or self.width < 32:
            raise ValueError(f"frame size must be at least 32×32 px, got {self.height}×{self.width}")
        if self.pixel_size_um <= 0:
            raise ValueError(f"pixel size must be positive, got {self.pixel_size_um} µm/px")
        if not 0.0 <= self.macrophage_fraction <= 1.0:
            raise ValueError(f"macrophage_fraction must lie in [0, 1], got {self.macrophage_fraction}")

    @property
    def mean_cells(self) -> float:
        """Mean cell count of one frame, scaled from the per-512² density to this frame's area."""
        default = {"rbc": 55.0, "macrophage": 12.0, "mixed": 47.0}[self.mode]
        per_512 = default if self.density is None else self.density
        return per_512 * self.height * self.width / 512.0**2

    @property
    def macrophage_share(self) -> float:
        return {"rbc": 0.0, "macrophage": 1.0, "mixed": self.macrophage_fraction}[self.mode]


@dataclass
class SimFrame:
    """One frame and its exact ground truth."""

    image: np.ndarray  # uint8 BGR, H×W×3
    semantic: np.ndarray  # uint8 class map, 0 background, 1 RBC, 2 macrophage
    instances: np.ndarray  # uint16 labels, 0 background
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Sprite:
    """One pre-rendered cell: absorption inside its outline, the halo around it, and the outline itself."""

    absorption: np.ndarray  # float32 h×w×3, zero outside the cell
    halo: np.ndarray  # float32 h×w×3, negative (brighter) just outside the cell, zero elsewhere
    inside: np.ndarray  # uint8 h×w (1 inside), the geometric outline: this is the ground truth
    radius: float

    def flipped(self, flip_y: bool, flip_x: bool) -> _Sprite:
        sy, sx = (-1 if flip_y else 1), (-1 if flip_x else 1)
        return _Sprite(*(np.ascontiguousarray(a[::sy, ::sx]) for a in (self.absorption, self.halo, self.inside)),
                       self.radius)


@dataclass
class _Field:
    """A rendered but not yet photographed scene: absorption per channel, instances and their classes."""

    absorption: np.ndarray  # float32 H×W×3
    instances: np.ndarray  # uint16 H×W
    instance_class: np.ndarray  # uint8, class of instance id i at index i


class SimulatedMicroscope:
    """Deterministic frame generator: ``frame(i)`` is the same for the same config, seed and index."""

    def __init__(self, config: SimConfig | None = None, seed: int = 0):
        self.config = config or SimConfig()
        self.seed = int(seed)
        noise_rng = np.random.default_rng([self.seed, 0x5EED])
        # A bank of sensor noise drawn once; frames take shifted windows of it (drawing fresh normals for every
        # frame costs more than the rest of the frame together).
        h, w = self.config.height, self.config.width
        self._noise = noise_rng.standard_normal((h + 64, w + 64, 3), dtype=np.float32) * self.config.noise_sigma
        tex = max(256, int(self.config.macrophage_diameter_um[1] / self.config.pixel_size_um * 1.6) + 8)
        self._texture = cv2.GaussianBlur(noise_rng.standard_normal((tex, tex), dtype=np.float32), (0, 0), 1.2)
        self._texture /= float(self._texture.std()) + 1e-6
        # Cells are pasted from banks of pre-rendered sprites (random size, shape and contrast, each in its four
        # flips): rendering each cell from scratch costs more than a live camera frame may.
        bank = {
            RBC: [_render_rbc(noise_rng, self._radius_px(noise_rng, RBC)) for _ in range(160)],
            MACROPHAGE: [
                _render_macrophage(noise_rng, self._radius_px(noise_rng, MACROPHAGE), self._texture) for _ in range(80)
            ],
        }
        self._sprites = {kind: [s.flipped(fy, fx) for s in sprites for fy in (False, True) for fx in (False, True)]
                         for kind, sprites in bank.items()}

    def _radius_px(self, rng: np.random.Generator, kind: int) -> float:
        lo, hi = self.config.rbc_diameter_um if kind == RBC else self.config.macrophage_diameter_um
        return float(rng.uniform(lo, hi)) / self.config.pixel_size_um / 2.0

    # -- public API -------------------------------------------------------------------------------------------
    def frame(self, index: int) -> SimFrame:
        """The frame with this index: a fresh random field of view."""
        rng = np.random.default_rng([self.seed, int(index)])
        cfg = self.config
        scene = self._render_field(rng, cfg.height, cfg.width)
        return self._photograph(rng, scene.absorption, scene.instances, scene.instance_class)

    def stream(self, n_frames: int | None = None, drift_px: float = 0.8, world_scale: int = 3) -> Iterator[SimFrame]:
        """A live-camera imitation: one large slide whose field of view drifts slowly, fresh noise per frame."""
        cfg = self.config
        rng = np.random.default_rng([self.seed, 0xCA3E7A])
        wh, ww = cfg.height * world_scale, cfg.width * world_scale
        world = self._render_field(rng, wh, ww)
        # A real camera keeps its focus and illumination: both are fixed for the stream (no flicker), and the
        # defocus is applied to the slide once (blurring the absorption equals blurring the image, as the
        # illumination is smooth), so each frame only crops, lights and adds fresh sensor noise.
        sigma = float(rng.uniform(*cfg.defocus_sigma))
        if sigma > 0.05:
            cv2.GaussianBlur(world.absorption, (0, 0), sigma, dst=world.absorption)
        light = self._illumination(rng, cfg.height, cfg.width)
        span_y, span_x = wh - cfg.height, ww - cfg.width
        t = 0
        while n_frames is None or t < n_frames:
            # A slow Lissajous path keeps the view inside the slide without ever jumping.
            phase = t * drift_px / max(span_x, span_y)
            y = int(round(span_y * (0.5 + 0.5 * math.sin(phase * 1.3))))
            x = int(round(span_x * (0.5 + 0.5 * math.sin(phase + 0.7))))
            window = (slice(y, y + cfg.height), slice(x, x + cfg.width))
            yield self._photograph(
                np.random.default_rng([self.seed, 0xCA3E7A, t]),
                world.absorption[window],
                world.instances[window],
                world.instance_class,
                sigma=0.0,
                light=light,
            )
            t += 1

    # -- scene ------------------------------------------------------------------------------------------------
    def _render_field(self, rng: np.random.Generator, height: int, width: int) -> _Field:
        cfg = self.config
        area_scale = height * width / (cfg.height * cfg.width)
        n_cells = int(rng.poisson(cfg.mean_cells * area_scale))
        n_macro = int(rng.binomial(n_cells, cfg.macrophage_share))
        absorption = np.zeros((height, width, 3), np.float32)
        instances = np.zeros((height, width), np.uint16)
        classes = [0]
        placed: list[tuple[float, float, float, int]] = []  # (y, x, radius, class)

        # Macrophages first: RBCs settle on top of them in the paper's mixed images.
        kinds = [MACROPHAGE] * n_macro + [RBC] * (n_cells - n_macro)
        for kind in kinds:
            bank = self._sprites[kind]
            sprite = bank[int(rng.integers(len(bank)))]
            radius = sprite.radius
            centre = self._place(rng, kind, radius, placed, height, width)
            if centre is None:
                continue
            placed.append((centre[0], centre[1], radius, kind))
            classes.append(kind)
            self._paint_cell(rng, absorption, instances, len(classes) - 1, centre, sprite)

        for _ in range(int(rng.poisson(cfg.debris_per_frame * area_scale))):
            self._paint_debris(rng, absorption, height, width)
        return _Field(absorption, instances, np.asarray(classes, np.uint8))

    def _place(self, rng, kind, radius, placed, height, width) -> tuple[float, float] | None:
        """Rejection-sample a centre; some cells deliberately touch a neighbour of the same kind."""
        cfg = self.config
        touch_p = cfg.macrophage_touching_prob if kind == MACROPHAGE else cfg.touching_prob
        same = [p for p in placed if p[3] == kind]
        for _ in range(30):
            if same and rng.random() < touch_p:
                y0, x0, r0, _ = same[int(rng.integers(len(same)))]
                angle = rng.uniform(0, 2 * math.pi)
                dist = (r0 + radius) * rng.uniform(0.82, 1.0)
                y, x = y0 + dist * math.sin(angle), x0 + dist * math.cos(angle)
            else:
                # Centres may lie just outside the frame: cells cut by the border exist in real crops.
                y, x = rng.uniform(-0.5 * radius, height + 0.5 * radius), rng.uniform(-0.5 * radius, width + 0.5 * radius)
            if all(
                math.hypot(y - py, x - px) >= (radius + pr) * (1.0 - cfg.max_overlap) for py, px, pr, _ in placed
            ):
                return y, x
        return None

    def _paint_cell(self, rng, absorption, instances, label, centre, sprite: _Sprite) -> None:
        """Paste a sprite: inside pixels replace what is below (later cells lie on top), the halo adds."""
        h, w = instances.shape
        sh, sw = sprite.inside.shape
        top, left = int(round(centre[0])) - sh // 2, int(round(centre[1])) - sw // 2
        y0, y1, x0, x1 = max(0, top), min(h, top + sh), max(0, left), min(w, left + sw)
        if y0 >= y1 or x0 >= x1:
            return
        cut = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        inside = sprite.inside[cut]
        patch = absorption[y0:y1, x0:x1]
        cv2.copyTo(sprite.absorption[cut], inside, patch)  # writes into the view, like np.copyto(where=) but faster
        patch += sprite.halo[cut]
        instances[y0:y1, x0:x1][inside.view(bool)] = label

    def _paint_debris(self, rng, absorption, height, width) -> None:
        """Impurities and broken-cell fragments: small dark specks that are not cells (paper §2.1.3)."""
        radius = rng.uniform(1.0, 3.5)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        dy, dx = _offsets(radius, 1.5)
        half = dy.shape[0] // 2
        y0, y1, x0, x1 = max(0, cy - half), min(height, cy + half + 1), max(0, cx - half), min(width, cx + half + 1)
        blob = np.exp(-(dy * dy + dx * dx) / radius**2) * rng.uniform(0.25, 0.6)
        blob = blob[y0 - cy + half : y1 - cy + half, x0 - cx + half : x1 - cx + half]
        absorption[y0:y1, x0:x1] += blob[..., None]

    # -- camera -----------------------------------------------------------------------------------------------
    def _photograph(self, rng, absorption, instances, instance_class, sigma: float | None = None,
                    light: np.ndarray | None = None) -> SimFrame:
        """Illumination, defocus and noise over a scene; ground truth comes from the untouched instance map.

        ``sigma`` and ``light`` default to a random defocus and illumination for this frame."""
        cfg = self.config
        h, w = instances.shape
        image = np.subtract(np.float32(1.0), absorption)
        image *= self._illumination(rng, h, w) if light is None else light
        sigma = float(rng.uniform(*cfg.defocus_sigma)) if sigma is None else sigma
        if sigma > 0.05:
            cv2.GaussianBlur(image, (0, 0), sigma, dst=image)
        oy, ox = rng.integers(0, 64, size=2)
        image += self._noise[oy : oy + h, ox : ox + w]
        np.clip(image, 0, 255, out=image)
        image = image.astype(np.uint8)

        instances = np.ascontiguousarray(instances)
        present = np.bincount(instances.ravel(), minlength=len(instance_class)) > 0
        present[0] = False
        counts = np.bincount(instance_class[present], minlength=len(CLASS_NAMES))
        semantic = instance_class[instances]
        relabelled = _relabel_sequential(instances, present)
        return SimFrame(
            image=image,
            semantic=semantic,
            instances=relabelled,
            counts={name: int(counts[i]) for i, name in enumerate(CLASS_NAMES) if i},
        )

    def _illumination(self, rng, h, w) -> np.ndarray:
        """Uneven Köhler illumination in BGR: a tilt plus vignetting, built small and upscaled (it is smooth)."""
        strength = self.config.illumination
        ys = np.linspace(-1, 1, 16, dtype=np.float32)[:, None]
        xs = np.linspace(-1, 1, 16, dtype=np.float32)[None, :]
        gy, gx, vig = rng.uniform(-1, 1, size=3) * strength * np.array([0.5, 0.5, 0.6], np.float32)
        small = 1.0 + gy * ys + gx * xs - abs(vig) * (ys * ys + xs * xs) / 2
        small = (small[..., None] * _BACKGROUND_BGR).astype(np.float32)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _offsets(radius: float, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets from the centre pixel of an odd-sized square patch that holds ``reach`` × radius."""
    half = int(math.ceil(radius * reach)) + 1
    d = np.arange(-half, half + 1, dtype=np.float32)
    return d[:, None], d[None, :]


def _render_rbc(rng: np.random.Generator, radius: float) -> _Sprite:
    """Biconcave disc: dark rim, brighter centre, a faint bright halo outside (paper Fig. 7a)."""
    dy, dx = _offsets(radius, 1.3)
    ecc = rng.uniform(0.0, 0.12)
    theta = rng.uniform(0, math.pi)
    c, s = math.cos(theta), math.sin(theta)
    u = (dx * c + dy * s) / (radius * (1 + ecc))
    v = (-dx * s + dy * c) / (radius * (1 - ecc))
    rho = np.sqrt(u * u + v * v)
    strength = rng.uniform(0.8, 1.2)
    profile = strength * (0.16 + 0.34 * np.exp(-(((rho - 0.78) / 0.2) ** 2)) - 0.1 * np.exp(-((rho / 0.4) ** 2)))
    halo = np.where((rho > 1.0) & (rho < 1.3), -0.06 * strength * (1.3 - rho) / 0.3, 0.0)
    return _sprite(profile, halo, rho <= 1.0, RBC, radius)


def _render_macrophage(rng: np.random.Generator, radius: float, texture: np.ndarray) -> _Sprite:
    """Irregular round body, granular texture, a darker nucleus and a bright phase halo (paper Fig. 7b)."""
    dy, dx = _offsets(radius, 1.45)
    angle = np.arctan2(dy, dx)
    wobble = np.ones_like(angle)
    for k in (2, 3, 5):
        wobble += rng.uniform(0.0, 0.07) * np.cos(k * angle + rng.uniform(0, 2 * math.pi))
    rho = np.sqrt(dy * dy + dx * dx) / (radius * wobble)
    ny, nx = rng.uniform(-0.3, 0.3, size=2) * radius
    nucleus = np.exp(-(((dy - ny) ** 2 + (dx - nx) ** 2) / (0.45 * radius) ** 2))
    n = dy.shape[0]
    ty, tx = rng.integers(0, texture.shape[0] - n + 1, size=2)
    grain = texture[ty : ty + n, tx : tx + n]
    strength = rng.uniform(0.8, 1.2)
    profile = strength * (0.14 + 0.07 * grain + 0.12 * nucleus + 0.22 * np.exp(-(((rho - 0.94) / 0.08) ** 2)))
    halo = np.where((rho > 1.0) & (rho < 1.4), -0.12 * strength * (1.4 - rho) / 0.4, 0.0)
    return _sprite(profile, halo, rho <= 1.0, MACROPHAGE, radius)


def _sprite(profile: np.ndarray, halo: np.ndarray, inside: np.ndarray, kind: int, radius: float) -> _Sprite:
    tint = _TINT[kind]
    absorption = np.where(inside[..., None], profile[..., None] * tint, 0.0).astype(np.float32)
    halo3 = np.repeat(halo[..., None], 3, axis=2).astype(np.float32)
    return _Sprite(absorption, halo3, inside.astype(np.uint8), radius)


def _relabel_sequential(instances: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Instance ids 1..N for the cells in view, so a crop's labels are dense like a hand-made mask's."""
    lut = np.zeros(len(present), np.uint16)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.uint16)
    return lut[instances]


def make_microscope(kind: str, size: int = 512, seed: int = 0, **overrides) -> SimulatedMicroscope:
    """The microscope for a dataset kind (``rbc``, ``macrophage``, ``mixed``) at a square frame size."""
    config = replace(SimConfig(mode=kind, height=size, width=size), **overrides)
    return SimulatedMicroscope(config, seed=seed)
