"""Reading microscope images of any common depth and layout, and writing files atomically."""
from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import CscError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def is_image_name(path: Path) -> bool:
    """An image by its suffix, and not hidden: a dot-name is a temporary file of ours left by a killed run, or
    macOS metadata (``._x.png``) copied along on a shared drive, never a picture."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder, sorted by name; an error when the folder is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CscError("not a folder", path=folder, fix="pass a folder of .png/.tif/.jpg images")
    files = sorted(p for p in folder.iterdir() if is_image_name(p) and p.is_file())
    if not files:
        raise CscError("no images found", path=folder, fix=f"put images with one of {', '.join(IMAGE_SUFFIXES)} there")
    return files


def stem_of(name: str) -> str:
    """The stem of an image as a file or an annotation names it: without its extension only where that is an image
    extension, so ``slide1.x40.png`` and ``slide1.x40`` are both ``slide1.x40`` (Path.stem would make the second
    ``slide1``)."""
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name


def check_unique_stems(files: list[Path]) -> list[Path]:
    """``files``, or an error naming every clash where two share a stem (``a.png`` and ``a.jpg``): a dataset keys
    its masks by stem, so one would overwrite the other's and the dataset would later refuse to open."""
    by_stem: dict[str, list[str]] = {}
    for f in files:
        by_stem.setdefault(f.stem, []).append(f.name)
    clashes = [" and ".join(names) for names in by_stem.values() if len(names) > 1]
    if clashes:
        shown = "; ".join(clashes[:5]) + (f"; and {len(clashes) - 5} more" if len(clashes) > 5 else "")
        raise CscError(f"{len(clashes)} file names differ only by their extension: {shown}",
                       path=files[0].parent, fix="rename them, or move one of each pair elsewhere")
    return files


# One rule for pictures: as a viewer shows them — EXIF orientation applied (a phone or camera JPEG stored sideways
# is turned upright), depth and colour kept. IMREAD_UNCHANGED would ignore the orientation while IMREAD_GRAYSCALE
# applies it, and a labeller reading both ways wrote masks of the wrong shape for rotated JPEGs.
AS_SHOWN = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def read_raw(path: str | Path, flags: int = AS_SHOWN) -> np.ndarray:
    """The file's pixels as shown (any depth; grey or BGR, alpha dropped), or as ``flags`` asks."""
    path = Path(path)
    if not path.is_file():
        raise CscError("file not found", path=path, fix="check the path")
    data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode also handles non-ASCII paths
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise CscError("unreadable or empty image file", path=path, fix="re-export it as PNG, TIFF or JPEG")
    return image


def read_label_map(path: str | Path) -> np.ndarray:
    """A mask or instance label image exactly as stored: label maps are PNGs we wrote, never rotated."""
    return read_raw(path, cv2.IMREAD_UNCHANGED)


def read_grey(path: str | Path) -> np.ndarray:
    """An image file as uint8 grey. Decoding straight to grey is cheaper than to colour (one plane to write out),
    and decoding is what bounds folder-wide auto-labelling; 16-bit files keep their depth until `to_uint8` scales
    them."""
    return to_uint8(read_raw(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH), path)


def to_bgr8(image: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """uint8 BGR from 8- or 16-bit, grey, grey+alpha, BGR or BGRA pixels.

    16-bit microscope cameras often fill only 10–14 bits, so the image is shifted by its own bit depth (the
    smallest that holds its maximum) rather than by 8: a 12-bit image keeps its full contrast.
    """
    image = to_uint8(image, path)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
    if channels == 2:  # grey + alpha
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if channels == 3:
        return image
    raise CscError(f"unsupported channel count {channels}", path=path, fix="use grey, BGR or BGRA images")


def to_uint8(image: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """8-bit pixels from 8- or 16-bit ones (16-bit shifted by the image's own bit depth, see `to_bgr8`)."""
    if image.dtype == np.uint16:
        bits = max(8, int(image.max()).bit_length())
        return (image >> (bits - 8)).astype(np.uint8)
    if image.dtype != np.uint8:
        raise CscError(f"unsupported pixel type {image.dtype}", path=path, fix="use 8- or 16-bit images")
    return image


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 BGR, whatever its depth and channels."""
    return to_bgr8(read_raw(path), path)


_temporary_names = itertools.count()


def prepare_target(target: Path) -> None:
    """Make ``target``'s folder, or say why a file cannot be written at ``target``: a folder this user cannot write
    in, or a folder of that name (which os.replace, or open, found only at the write, from a name the user never
    gave)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CscError(f"cannot write here ({err.strerror})", path=target, fix="choose a writable location") from None
    if not os.access(target.parent, os.W_OK):
        raise CscError("cannot write here (permission denied)", path=target, fix="choose a writable location")
    if target.is_dir():
        raise CscError("cannot write here (a folder of that name exists)", path=target,
                       fix="name a file, e.g. inside that folder")


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """A temporary path beside ``target`` that replaces it only when the block succeeds.

    A crash or Ctrl-C mid-write leaves the old file (or none) rather than a truncated one. The temporary name
    keeps the suffix, because OpenCV picks the encoder from it. The block creates the file: the name is unique
    to this process and call (no mkstemp), which saves a file creation per write — on the dev VM's disk as
    costly as encoding a mask — and gives the file the user's usual permissions rather than mkstemp's 0600.
    """
    target = Path(target)
    prepare_target(target)
    tmp_path = target.with_name(f".{target.stem}.{os.getpid()}-{next(_temporary_names)}.tmp{target.suffix}")
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


# Label maps are flat runs of a few values: PNG's per-row filters only slow them down (encode and decode) and
# make the file larger; unfiltered run-length deflate suits them.
LABEL_MAP_PNG = (cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)


def write_image(path: str | Path, image: np.ndarray, params: tuple[int, ...] = ()) -> None:
    """Write an image (PNG keeps uint16 instance labels) atomically; ``params`` are cv2.imwrite's flags."""
    with atomic_path(path) as tmp:
        try:
            ok = cv2.imwrite(str(tmp), image, list(params))
        except cv2.error as err:
            raise CscError(f"could not encode a {image.dtype} image of shape {image.shape}: {err.err}", path=path) from None
        if not ok:
            raise CscError("could not encode image", path=path, fix="use a .png, .tif or .jpg file name")


def check_image_target(path: Path, option: str) -> None:
    """An error where ``path`` cannot take an image (a folder; a name without an extension OpenCV encodes, such as
    none or ``.txt``): checked before the work that makes the image, which `write_image` finds out only at its end."""
    if path.is_dir():
        raise CscError(f"{option} names a folder", path=path, fix="name an image file, e.g. preview.png inside it")
    if not cv2.haveImageWriter(str(path)):
        raise CscError(f"{option} is not an image file name", path=path, fix="end it in .png, .jpg or .tif")


def place_file(source: str | Path, target: str | Path, link: bool = True) -> None:
    """Put ``source``'s bytes at ``target`` atomically: a hard link when ``link`` and the file system allows it
    (no bytes copied, and the target survives the source's deletion), else a copy.

    A symbolic link is followed to its file: Linux's link(2) links the symlink itself, and a relative one then
    points nowhere from the target's folder."""
    source = Path(source).resolve()
    with atomic_path(target) as tmp:
        if link:
            try:
                os.link(source, tmp)
                return
            except OSError:
                pass  # another file system, or links not allowed there: copy instead
        shutil.copyfile(source, tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
