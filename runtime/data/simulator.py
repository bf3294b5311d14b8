"""A simulated microscope with exact ground truth, in each optics of ``runtime.data.modality.MODALITIES``.

The paper's images are private, so training data, tests and the live demo camera all come from here. It is a test
fixture and a training source, not evidence: its physics is a cheap imitation, and a number measured on it says
nothing about real images.

Each cell is an object with an absorption profile (its stain) and an optical path (its phase: an RBC a biconcave
disc, a macrophage a dome, thickest over the nucleus, with granules, ruffles and optional thin pseudopods), drawn on
a patch around the cell (cheap: no full-frame work per cell). The same scene is then photographed in one optics:
stained brightfield (absorption), unstained brightfield (weak absorption plus the transport-of-intensity term of a
small defocus), Zernike phase contrast (the optical path minus its low-pass: dark cells, bright halos, shade-off),
DIC (the optical path's difference across a small shear: a relief) or fluorescence (stain density on a dark
background). The whole frame then gets uneven illumination, defocus blur and sensor noise. The instance map is the
geometric outline of each cell with later cells on top, so the class map, the instance map and the counts agree
exactly, and they are the same in every optics.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from runtime.classes import CELL_SIZES, CLASS_NAMES, DEFAULT_PIXEL_SIZE_UM, MACROPHAGE, RBC
from runtime.data.modality import MODALITIES

MODES = ("rbc", "macrophage", "mixed")

# Absorption per BGR channel: RBCs absorb green and blue (they look red), macrophages are nearly grey.
_TINT = {RBC: np.array([0.95, 1.0, 0.45], np.float32), MACROPHAGE: np.array([0.85, 0.95, 0.8], np.float32)}
# The grey level a transmission (or, in fluorescence, an emission) of 1 reaches: the background of the label-free
# optics is a halogen lamp's near-grey, DIC's is biased to mid-grey, fluorescence's brightest stain nearly saturates.
_LIGHT_BGR = {
    "stained": np.array([205.0, 212.0, 218.0], np.float32),
    "brightfield": np.array([198.0, 200.0, 202.0], np.float32),
    "phase": np.array([169.0, 171.0, 172.0], np.float32),
    "dic": np.array([128.0, 130.0, 131.0], np.float32),
    "fluorescence": np.array([235.0, 235.0, 235.0], np.float32),
}
# Every draw the optics add comes from generators keyed with this, never from the stained scene's streams, so the
# stained frames stay what they were before the simulator learnt optics (committed results depend on them).
_OPTICS_SEED = 0x0971C5
# Unstained cells absorb a tenth of what stained ones do: a few per cent of the background.
_UNSTAINED_ABSORPTION = 0.1
# |Δz| of unstained brightfield's transport-of-intensity term, px² per rad: the slight defocus users focus at.
_TIE_DEFOCUS = (0.5, 1.2)
_TIE_SMOOTHING_PX = 1.0
# Zernike phase contrast I = b − c·(φ − G_σ∗φ): c per rad, and σ of the low-pass in macrophage radii.
_PHASE_CONTRAST = 0.7
_HALO_SIGMA_RADII = 0.5
# DIC: shear s along one of the prism's usual directions (image x right, y down), on a slightly smoothed φ.
_DIC_SHEAR_PX = 1.5
_DIC_SHEAR_DEG = (45.0, 225.0)
_DIC_SMOOTHING_PX = 0.8
_DIC_GAIN = 1.3
# Fluorescence: background (unbound dye, autofluorescence) and emission per unit of grey stain density.
_FLUORESCENCE_BACKGROUND = 0.08
_FLUORESCENCE_GAIN = 2.2
# Optical path of debris per unit of its absorption: fragments are dense, small phase specks.
_DEBRIS_PHASE = 2.0
# Pseudopods: thin lamellae, faint in absorption and low in phase (rad at their base).
_PSEUDOPOD_ABSORPTION = 0.06
_PSEUDOPOD_PHASE = (0.2, 0.4)
# Evans & Fung (1972) RBC thickness, T(ρ) = √(1 − ρ²)·(C0 + C1ρ² + C2ρ⁴), µm for a 3.91 µm radius.
_EVANS_FUNG = (0.81, 7.83, -4.39)


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
    # The contrast mechanism the scene is photographed in (runtime.data.modality.MODALITIES).
    optics: str = "stained"
    # Mean thin protrusions per macrophage (RAW 264.7 cells spread them on the dish); 0 keeps the paper's round cells.
    pseudopods: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.optics not in MODALITIES:
            raise ValueError(f"optics must be one of {', '.join(MODALITIES)}, got {self.optics!r}")
        if self.pseudopods < 0:
            raise ValueError(f"pseudopods (mean protrusions per macrophage) must be at least 0, got {self.pseudopods}")
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
    semantic: np.ndarray | None  # uint8 class map, 0 background, 1 RBC, 2 macrophage (None: a stream without maps)
    instances: np.ndarray | None  # uint16 labels, 0 background (likewise)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Sprite:
    """One pre-rendered cell: absorption and optical path inside its outline, the halo around it, the outline."""

    absorption: np.ndarray  # float32 h×w×3, zero outside the cell
    halo: np.ndarray  # float32 h×w×3, negative (brighter) just outside the cell, zero elsewhere
    inside: np.ndarray  # uint8 h×w (1 inside), the geometric outline: this is the ground truth
    phase: np.ndarray  # float32 h×w, optical path in rad, zero outside the cell
    radius: float

    def flipped(self, flip_y: bool, flip_x: bool) -> _Sprite:
        sy, sx = (-1 if flip_y else 1), (-1 if flip_x else 1)
        maps = (self.absorption, self.halo, self.inside, self.phase)
        return _Sprite(*(np.ascontiguousarray(a[::sy, ::sx]) for a in maps), self.radius)


@dataclass
class _Field:
    """A rendered but not yet photographed scene: absorption per channel, optical path, instances and classes."""

    absorption: np.ndarray  # float32 H×W×3
    phase: np.ndarray  # float32 H×W, rad
    instances: np.ndarray  # uint16 H×W
    instance_class: np.ndarray  # uint8, class of instance id i at index i


@dataclass(frozen=True)
class Optics:
    """The fixed parts of the microscope's optics, chosen once per microscope like a real one's phase ring and prism.

    ``transmission`` turns a scene's absorption and optical path into the image over the light; each optics is
    linear in them, so blurring the scene equals blurring the image (``stream()`` relies on it)."""

    name: str
    light_bgr: np.ndarray  # the grey level of a transmission of 1, per BGR channel
    halo_sigma_px: float  # phase: width of the low-pass the phase ring passes
    shear_deg: float  # dic: shear direction, degrees from image x (right) towards image y (down)
    tie_kernel: np.ndarray  # brightfield: Laplacian of a small Gaussian, the curvature of φ
    shear_kernel: np.ndarray  # dic: G(k − s/2·u) − G(k + s/2·u), the shear difference of the smoothed φ

    def transmission(self, absorption: np.ndarray, phase: np.ndarray, defocus_dz: float) -> np.ndarray:
        """H×W×3 for stained, H×W×1 (grey) otherwise; ``defocus_dz`` only matters to unstained brightfield."""
        return _TRANSMISSION[self.name](self, absorption, phase, defocus_dz)


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
        optics_rng = np.random.default_rng([self.seed, _OPTICS_SEED])
        pseudopod_rng = np.random.default_rng([self.seed, _OPTICS_SEED, 0xF1A6E2])
        # Cells are pasted from banks of pre-rendered sprites (random size, shape and contrast, each in its four
        # flips): rendering each cell from scratch costs more than a live camera frame may.
        bank = {
            RBC: [_render_rbc(noise_rng, optics_rng, self._radius_px(noise_rng, RBC)) for _ in range(160)],
            MACROPHAGE: [
                _add_pseudopods(
                    _render_macrophage(noise_rng, optics_rng, self._radius_px(noise_rng, MACROPHAGE), self._texture),
                    pseudopod_rng,
                    self.config.pseudopods,
                )
                for _ in range(80)
            ],
        }
        self._sprites = {kind: [s.flipped(fy, fx) for s in sprites for fy in (False, True) for fx in (False, True)]
                         for kind, sprites in bank.items()}
        macrophage_radius = sum(self.config.macrophage_diameter_um) / 4.0 / self.config.pixel_size_um
        self.optics = _make_optics(self.config.optics, optics_rng, macrophage_radius)

    def _radius_px(self, rng: np.random.Generator, kind: int) -> float:
        lo, hi = self.config.rbc_diameter_um if kind == RBC else self.config.macrophage_diameter_um
        return float(rng.uniform(lo, hi)) / self.config.pixel_size_um / 2.0

    # -- public API -------------------------------------------------------------------------------------------
    def frame(self, index: int) -> SimFrame:
        """The frame with this index: a fresh random field of view."""
        rng = np.random.default_rng([self.seed, int(index)])
        cfg = self.config
        scene = self._render_field(rng, cfg.height, cfg.width)
        defocus_dz = _draw_defocus_dz(np.random.default_rng([self.seed, _OPTICS_SEED, 0xF4A3E, int(index)]))
        signal = self.optics.transmission(scene.absorption, scene.phase, defocus_dz)
        return self._photograph(rng, signal, scene.instances, scene.instance_class)

    def stream(self, n_frames: int | None = None, drift_px: float = 0.8, world_scale: int = 3,
               maps: bool = True) -> Iterator[SimFrame]:
        """A live-camera imitation: one large slide whose field of view drifts slowly, fresh noise per frame (the
        slide is rendered by this call, the frames as they are taken: `slide`, then `Slide.frames`)."""
        return self.slide(world_scale).frames(n_frames, drift_px, maps)

    def slide(self, world_scale: int = 3) -> Slide:
        """The slide a stream drifts over, ``world_scale`` frames wide and high, rendered now: a third of a second
        at 512×512, which `runtime.io.sources.DemoSource` spends when it is opened, as a camera opens in its
        constructor, rather than inside the run it feeds."""
        cfg = self.config
        rng = np.random.default_rng([self.seed, 0xCA3E7A])
        world = self._render_field(rng, cfg.height * world_scale, cfg.width * world_scale)
        # A real camera keeps its focus and illumination: both are fixed for the stream (no flicker), and the
        # defocus and the optics are applied to the slide once (each optics is linear in the scene and the
        # illumination is smooth, so blurring the scene equals blurring the image), so each frame only crops,
        # lights and adds fresh sensor noise.
        sigma = float(rng.uniform(*cfg.defocus_sigma))
        if sigma > 0.05:
            for plane in (world.absorption, world.phase):
                cv2.GaussianBlur(plane, (0, 0), sigma, dst=plane)
        light = self._illumination(rng, cfg.height, cfg.width)
        defocus_dz = _draw_defocus_dz(np.random.default_rng([self.seed, _OPTICS_SEED, 0xCA3E7A]))
        signal = self.optics.transmission(world.absorption, world.phase, defocus_dz)
        return Slide(self, signal, world.instances, world.instance_class, light)

    # -- scene ------------------------------------------------------------------------------------------------
    def _render_field(self, rng: np.random.Generator, height: int, width: int) -> _Field:
        cfg = self.config
        area_scale = height * width / (cfg.height * cfg.width)
        n_cells = int(rng.poisson(cfg.mean_cells * area_scale))
        n_macro = int(rng.binomial(n_cells, cfg.macrophage_share))
        absorption = np.zeros((height, width, 3), np.float32)
        phase = np.zeros((height, width), np.float32)
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
            self._paint_cell(absorption, phase, instances, len(classes) - 1, centre, sprite)

        for _ in range(int(rng.poisson(cfg.debris_per_frame * area_scale))):
            self._paint_debris(rng, absorption, phase)
        return _Field(absorption, phase, instances, np.asarray(classes, np.uint8))

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

    def _paint_cell(self, absorption, phase, instances, label, centre, sprite: _Sprite) -> None:
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
        cv2.copyTo(sprite.phase[cut], inside, phase[y0:y1, x0:x1])
        instances[y0:y1, x0:x1][inside.view(bool)] = label

    def _paint_debris(self, rng, absorption, phase) -> None:
        """Impurities and broken-cell fragments: small dark specks that are not cells (paper §2.1.3)."""
        height, width = phase.shape
        radius = rng.uniform(1.0, 3.5)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        dy, dx = _offsets(radius, 1.5)
        half = dy.shape[0] // 2
        y0, y1, x0, x1 = max(0, cy - half), min(height, cy + half + 1), max(0, cx - half), min(width, cx + half + 1)
        blob = np.exp(-(dy * dy + dx * dx) / radius**2) * rng.uniform(0.25, 0.6)
        blob = blob[y0 - cy + half : y1 - cy + half, x0 - cx + half : x1 - cx + half]
        absorption[y0:y1, x0:x1] += blob[..., None]
        phase[y0:y1, x0:x1] += _DEBRIS_PHASE * blob

    # -- camera -----------------------------------------------------------------------------------------------
    def _photograph(self, rng, signal, instances, instance_class, sigma: float | None = None,
                    light: np.ndarray | None = None, maps: bool = True) -> SimFrame:
        """Illumination, defocus and noise over a scene's transmission (``Optics.transmission``); ground truth
        comes from the untouched instance map.

        ``sigma`` and ``light`` default to a random defocus and illumination for this frame; ``maps`` False leaves
        the class and instance maps out (the counts only)."""
        cfg = self.config
        h, w = instances.shape
        image = signal * (self._illumination(rng, h, w) if light is None else light)
        sigma = float(rng.uniform(*cfg.defocus_sigma)) if sigma is None else sigma
        if sigma > 0.05:
            cv2.GaussianBlur(image, (0, 0), sigma, dst=image)
        oy, ox = rng.integers(0, 64, size=2)
        image += self._noise[oy : oy + h, ox : ox + w, : signal.shape[2]]  # a grey signal: a monochrome camera
        np.clip(image, 0, 255, out=image)
        image = image.astype(np.uint8)

        instances = np.ascontiguousarray(instances)
        present = np.bincount(instances.ravel(), minlength=len(instance_class)) > 0
        present[0] = False
        counts = np.bincount(instance_class[present], minlength=len(CLASS_NAMES))
        return SimFrame(
            image=image,
            semantic=instance_class[instances] if maps else None,
            instances=_relabel_sequential(instances, present) if maps else None,
            counts={name: int(counts[i]) for i, name in enumerate(CLASS_NAMES) if i},
        )

    def _illumination(self, rng, h, w) -> np.ndarray:
        """Uneven Köhler illumination (or, in fluorescence, excitation) in BGR: a tilt plus vignetting, built small
        and upscaled (it is smooth)."""
        strength = self.config.illumination
        ys = np.linspace(-1, 1, 16, dtype=np.float32)[:, None]
        xs = np.linspace(-1, 1, 16, dtype=np.float32)[None, :]
        gy, gx, vig = rng.uniform(-1, 1, size=3) * strength * np.array([0.5, 0.5, 0.6], np.float32)
        small = 1.0 + gy * ys + gx * xs - abs(vig) * (ys * ys + xs * xs) / 2
        small = (small[..., None] * self.optics.light_bgr).astype(np.float32)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True, eq=False)
class Slide:
    """A rendered slide (`SimulatedMicroscope.slide`): its signal under the optics, its cells, and the light."""

    microscope: SimulatedMicroscope
    signal: np.ndarray
    instances: np.ndarray
    instance_class: np.ndarray
    light: np.ndarray

    def frames(self, n_frames: int | None = None, drift_px: float = 0.8, maps: bool = True) -> Iterator[SimFrame]:
        """Its fields of view, drifting ``drift_px`` a frame; the same frames on every call.

        ``maps`` False: frames carry the counts but no class or instance map (None), a third of a frame's cost —
        the demo camera needs only the counts, and its thread shares the cores with the pipeline it feeds."""
        microscope, (height, width) = self.microscope, self.light.shape[:2]
        span_y, span_x = self.signal.shape[0] - height, self.signal.shape[1] - width
        t = 0
        while n_frames is None or t < n_frames:
            # A slow Lissajous path keeps the view inside the slide without ever jumping.
            phase = t * drift_px / max(span_x, span_y)
            y = int(round(span_y * (0.5 + 0.5 * math.sin(phase * 1.3))))
            x = int(round(span_x * (0.5 + 0.5 * math.sin(phase + 0.7))))
            window = (slice(y, y + height), slice(x, x + width))
            yield microscope._photograph(np.random.default_rng([microscope.seed, 0xCA3E7A, t]), self.signal[window],
                                         self.instances[window], self.instance_class, sigma=0.0, light=self.light,
                                         maps=maps)
            t += 1


def _offsets(radius: float, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets from the centre pixel of an odd-sized square patch that holds ``reach`` × radius."""
    half = int(math.ceil(radius * reach)) + 1
    d = np.arange(-half, half + 1, dtype=np.float32)
    return d[:, None], d[None, :]


def _render_rbc(rng: np.random.Generator, optics_rng: np.random.Generator, radius: float) -> _Sprite:
    """Biconcave disc: dark rim, brighter centre, a faint bright halo outside (paper Fig. 7a); its optical path
    follows the disc's thickness, thicker at the rim than at the centre."""
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
    r2 = np.minimum(rho * rho, 1.0)
    c0, c1, c2 = _EVANS_FUNG
    thickness = np.sqrt(1.0 - r2) * (c0 + c1 * r2 + c2 * r2 * r2)
    return _sprite(profile, halo, rho <= 1.0, RBC, radius, thickness, optics_rng.uniform(0.5, 1.0))


def _render_macrophage(rng: np.random.Generator, optics_rng: np.random.Generator, radius: float,
                       texture: np.ndarray) -> _Sprite:
    """Irregular round body, granular texture, a darker nucleus and a bright phase halo (paper Fig. 7b); its
    optical path is a dome, thickest over the nucleus, with granules and ruffles at the edge."""
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
    dome = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
    ruffles = np.exp(-(((rho - 0.88) / 0.1) ** 2)) * np.maximum(grain, 0.0)
    thickness = np.maximum(0.55 * dome + 0.45 * nucleus + 0.08 * grain * dome + 0.12 * ruffles, 0.0)
    return _sprite(profile, halo, rho <= 1.0, MACROPHAGE, radius, thickness, optics_rng.uniform(1.0, 2.5))


def _sprite(profile: np.ndarray, halo: np.ndarray, inside: np.ndarray, kind: int, radius: float,
            thickness: np.ndarray, peak_phase: float) -> _Sprite:
    """The sprite of a cell from its absorption profile and its thickness, scaled to ``peak_phase`` rad."""
    tint = _TINT[kind]
    absorption = np.where(inside[..., None], profile[..., None] * tint, 0.0).astype(np.float32)
    halo3 = np.repeat(halo[..., None], 3, axis=2).astype(np.float32)
    thickness = np.where(inside, thickness, 0.0)
    phase = (thickness * (peak_phase / max(float(thickness.max()), 1e-6))).astype(np.float32)
    return _Sprite(absorption, halo3, inside.astype(np.uint8), phase, radius)


def _add_pseudopods(sprite: _Sprite, rng: np.random.Generator, mean: float) -> _Sprite:
    """A Poisson number of thin tapering protrusions, part of the cell: RAW 264.7 macrophages spread them on the
    dish, and a segmenter that cuts them off is wrong about the cell. The patch grows to hold them, centred as
    before."""
    n = int(rng.poisson(mean))
    if n == 0:
        return sprite
    pad = int(math.ceil(0.5 * sprite.radius)) + 2  # the body's patch reaches 1.45 radii, a pseudopod 1.9 and its width
    absorption, halo, inside, phase = (np.pad(a, ((pad, pad), (pad, pad)) + ((0, 0),) * (a.ndim - 2))
                                       for a in (sprite.absorption, sprite.halo, sprite.inside, sprite.phase))
    half = inside.shape[0] // 2
    d = np.arange(-half, half + 1, dtype=np.float32)
    fingers = np.zeros_like(phase)
    for _ in range(n):
        np.maximum(fingers, _pseudopod(rng, d[:, None], d[None, :], sprite.radius), out=fingers)
    new = (fingers > 0) & (inside == 0)
    inside[new] = 1
    phase[new] = fingers[new]
    absorption[new] = _PSEUDOPOD_ABSORPTION * _TINT[MACROPHAGE]
    halo[new] = 0.0
    return _Sprite(absorption, halo, inside, phase, sprite.radius)


def _pseudopod(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    """One slightly bent finger from under the body to 0.3–0.9 radii beyond its edge, 3–5 px wide at the base and
    tapering, its optical path falling towards the tip; zero elsewhere."""
    theta = rng.uniform(0, 2 * math.pi)
    start, length = 0.7 * radius, (0.3 + rng.uniform(0.3, 0.9)) * radius
    half_width, bend = rng.uniform(1.0, 2.0), rng.uniform(-0.3, 0.3) / radius
    base_phase = rng.uniform(*_PSEUDOPOD_PHASE)
    c, s = math.cos(theta), math.sin(theta)
    along = dx * c + dy * s - start
    across = -dx * s + dy * c - bend * along * along
    taper = 1.0 - along / length
    finger = (along >= 0) & (taper >= 0) & (np.abs(across) <= half_width * taper + 0.5)
    return np.where(finger, base_phase * (0.4 + 0.6 * taper), 0.0).astype(np.float32)


def _draw_defocus_dz(rng: np.random.Generator) -> float:
    """Signed defocus of unstained brightfield: users focus slightly above or below, for bright or dark rims."""
    return float(rng.choice((-1.0, 1.0)) * rng.uniform(*_TIE_DEFOCUS))


def _make_optics(name: str, rng: np.random.Generator, macrophage_radius_px: float) -> Optics:
    """The optics of one microscope: the DIC prism's shear direction is drawn once, like a real one's setting."""
    shear_deg = float(rng.choice(_DIC_SHEAR_DEG))
    t = math.radians(shear_deg)
    ahead = (0.5 * _DIC_SHEAR_PX * math.cos(t), 0.5 * _DIC_SHEAR_PX * math.sin(t))
    behind = (-ahead[0], -ahead[1])
    shear_kernel = _gaussian_kernel(_DIC_SMOOTHING_PX, ahead) - _gaussian_kernel(_DIC_SMOOTHING_PX, behind)
    return Optics(name=name, light_bgr=_LIGHT_BGR[name], halo_sigma_px=_HALO_SIGMA_RADII * macrophage_radius_px,
                  shear_deg=shear_deg, tie_kernel=_laplacian_of_gaussian(_TIE_SMOOTHING_PX), shear_kernel=shear_kernel)


def _kernel_grid(sigma: float, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """x (right) and y (down) offsets of a square kernel that holds ±(3σ + reach)."""
    d = np.arange(-math.ceil(3 * sigma + reach), math.ceil(3 * sigma + reach) + 1, dtype=np.float32)
    return d[None, :], d[:, None]


def _gaussian_kernel(sigma: float, centre_xy: tuple[float, float]) -> np.ndarray:
    """A unit-sum Gaussian centred at a sub-pixel offset; as a cv2.filter2D (correlation) kernel it samples the
    smoothed image at x + offset."""
    x, y = _kernel_grid(sigma, max(abs(centre_xy[0]), abs(centre_xy[1])))
    g = np.exp(-((x - centre_xy[0]) ** 2 + (y - centre_xy[1]) ** 2) / (2 * sigma * sigma))
    return (g / (2 * math.pi * sigma * sigma)).astype(np.float32)


def _laplacian_of_gaussian(sigma: float) -> np.ndarray:
    """∇²G, its sum forced to zero so an even background gets no curvature."""
    x, y = _kernel_grid(sigma, 1.0)
    r2 = x * x + y * y
    log = (r2 - 2 * sigma * sigma) / sigma**4 * np.exp(-r2 / (2 * sigma * sigma)) / (2 * math.pi * sigma * sigma)
    return (log - log.mean()).astype(np.float32)


def _wide_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian low-pass of width ``sigma`` done on a shrunk copy: at full size it would cost more than the rest
    of the frame, and its result is smooth anyway."""
    h, w = image.shape
    shrink = max(1, int(sigma // 4))
    small = cv2.resize(image, (max(1, w // shrink), max(1, h // shrink)), interpolation=cv2.INTER_AREA)
    cv2.GaussianBlur(small, (0, 0), sigma / shrink, dst=small)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _stained(optics: Optics, absorption: np.ndarray, phase: np.ndarray, defocus_dz: float) -> np.ndarray:
    """Stained brightfield: the absorption, linearised, as the simulator always drew it."""
    return np.subtract(np.float32(1.0), absorption)


def _unstained_brightfield(optics: Optics, absorption: np.ndarray, phase: np.ndarray, defocus_dz: float) -> np.ndarray:
    """Weak absorption plus the transport-of-intensity term of a small defocus, I ≈ I₀·(1 − Δz·∇²φ) (Teague 1983):
    bright or dark rims and centres depending on the sign of Δz, a few per cent of the background."""
    curvature = cv2.filter2D(phase, -1, optics.tie_kernel)
    grey = cv2.cvtColor(absorption, cv2.COLOR_BGR2GRAY)
    return (1.0 - _UNSTAINED_ABSORPTION * grey - defocus_dz * curvature)[..., None]


def _phase_contrast(optics: Optics, absorption: np.ndarray, phase: np.ndarray, defocus_dz: float) -> np.ndarray:
    """Positive Zernike phase contrast, I ≈ b − c·(φ − G_σ∗φ): the phase ring shifts only the low-pass part of the
    light, so cells go dark, a bright halo surrounds them and large flat cells shade off towards their middle."""
    return (1.0 - _PHASE_CONTRAST * (phase - _wide_blur(phase, optics.halo_sigma_px)))[..., None]


def _dic(optics: Optics, absorption: np.ndarray, phase: np.ndarray, defocus_dz: float) -> np.ndarray:
    """Nomarski DIC, I ≈ b + c·(φ(x + s/2·u) − φ(x − s/2·u)) on a slightly smoothed φ: a relief, each cell lit on
    one side and shadowed on the other along the shear."""
    return (1.0 + _DIC_GAIN * cv2.filter2D(phase, -1, optics.shear_kernel))[..., None]


def _fluorescence(optics: Optics, absorption: np.ndarray, phase: np.ndarray, defocus_dz: float) -> np.ndarray:
    """Emission in proportion to the stain (the grey absorption profile, nuclei brighter) on a dark background;
    the stained sprites' halo is no dye, so negative density is none."""
    density = np.maximum(cv2.cvtColor(absorption, cv2.COLOR_BGR2GRAY), 0.0)
    return (_FLUORESCENCE_BACKGROUND + _FLUORESCENCE_GAIN * density)[..., None]


_TRANSMISSION = {
    "stained": _stained,
    "brightfield": _unstained_brightfield,
    "phase": _phase_contrast,
    "dic": _dic,
    "fluorescence": _fluorescence,
}


def _relabel_sequential(instances: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Instance ids 1..N for the cells in view, so a crop's labels are dense like a hand-made mask's."""
    lut = np.zeros(len(present), np.uint16)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.uint16)
    return lut[instances]


def make_microscope(kind: str, size: int = 512, seed: int = 0, **overrides) -> SimulatedMicroscope:
    """The microscope for a dataset kind (``rbc``, ``macrophage``, ``mixed``) at a square frame size."""
    config = replace(SimConfig(mode=kind, height=size, width=size), **overrides)
    return SimulatedMicroscope(config, seed=seed)
