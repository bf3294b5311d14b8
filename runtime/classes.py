"""The class ids of the paper's class map and the physical cell sizes that other defaults derive from."""
from __future__ import annotations

from dataclasses import dataclass

RBC, MACROPHAGE = 1, 2  # 0 is the background
CLASS_NAMES: tuple[str, ...] = ("background", "rbc", "macrophage")

# Default pixel size of the simulated microscope: at 0.4 µm/px an RBC (5–7 µm) spans 12–18 px and a
# macrophage (13–20 µm) 32–50 px on a 512×512 crop, close to the paper's crops of a 4000×3000 frame.
DEFAULT_PIXEL_SIZE_UM = 0.4


@dataclass(frozen=True)
class CellSize:
    """Diameter range of one cell kind in µm (paper §2.3)."""

    min_um: float
    max_um: float

    @property
    def typical_um(self) -> float:
        """The middle of the range: the size an estimated diameter in px is taken to be (runtime/counting/scale.py)."""
        return (self.min_um + self.max_um) / 2.0

    def diameter_px(self, pixel_size_um: float) -> float:
        """A typical cell's diameter in px at this pixel size."""
        return self.typical_um / pixel_size_um

    def pixel_size_um(self, diameter_px: float) -> float:
        """The pixel size at which a typical cell spans ``diameter_px`` (a scale given, or estimated, as a
        diameter)."""
        return self.typical_um / diameter_px

    def min_radius_px(self, pixel_size_um: float) -> float:
        """The smallest cell's radius in px: the splitter's yardstick."""
        return self.min_um / pixel_size_um / 2.0

    def min_area_px(self, pixel_size_um: float, fraction: float = 0.25) -> int:
        """Smallest plausible visible area in px: a fraction of the smallest cell's disc.

        A fraction rather than the whole disc because cells cut by the frame border or partly hidden under
        another cell are still cells; anything below it is debris or a broken-cell fragment.
        """
        radius_px = self.min_radius_px(pixel_size_um)
        return max(1, int(round(3.141592653589793 * radius_px**2 * fraction)))

    def min_area(self, pixel_size_um: float, px: float | None = None, um2: float | None = None) -> int:
        """The smallest kept object in px: ``px`` where given, else ``um2`` at this pixel size, else
        `min_area_px`. The labeller's (`trainer.autolabel.Scaled`) and the counter's (`CountingConfig`) rule."""
        if px is not None:
            return int(px)
        if um2 is not None:
            return int(round(um2 / pixel_size_um**2))
        return self.min_area_px(pixel_size_um)

    def one_cell_safe(self, factor: float) -> bool:
        """Whether "two parts together no larger than ``factor`` × a typical cell are one cell" holds for this kind:
        two of its smallest cells are larger than that (RBCs, 5–7 µm), so two small cells touching are never taken
        for one. Not where the sizes span too much (macrophages, 13–20 µm: two small ones are one large one)."""
        return 2 * self.min_um**2 > factor * self.typical_um**2


CELL_SIZES: dict[int, CellSize] = {RBC: CellSize(5.0, 7.0), MACROPHAGE: CellSize(13.0, 20.0)}

# Sizes by class name, for datasets whose classes are not the paper's (imported labels, e.g. rbc and wbc on blood
# smears). Leukocytes span 7 µm (small lymphocytes) to 20 µm (monocytes); platelets 1.5–3 µm.
CELL_SIZES_BY_NAME: dict[str, CellSize] = {"rbc": CELL_SIZES[RBC], "macrophage": CELL_SIZES[MACROPHAGE],
                                           "wbc": CellSize(7.0, 20.0), "platelet": CellSize(1.5, 3.0)}
# A class of unknown size is taken to be no smaller than an RBC, the smallest cell the project counts: minimum
# areas and split spacing then never cut a cell of the paper's kinds, and debris below an RBC's quarter is dropped.
UNKNOWN_CELL_SIZE = CellSize(5.0, 20.0)


def cell_size(name: str) -> CellSize:
    """The size range of a class by name (case-insensitive); `UNKNOWN_CELL_SIZE` for names without one."""
    return CELL_SIZES_BY_NAME.get(name.lower(), UNKNOWN_CELL_SIZE)


def class_id(name: str) -> int:
    """Class id for a name such as ``rbc``; the error lists the valid names."""
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; valid classes: {', '.join(CLASS_NAMES[1:])}") from None
