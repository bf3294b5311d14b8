"""Images sent to `POST /api/count`: the body read under a size cap, the header's dimensions checked before any
pixel is decoded, then decoded as `csc-run --images` decodes files.

A hostile body must cost a 4xx, never memory: a 1 MB PNG can declare 100 000 × 100 000 pixels (30 GB decoded),
and `cv2.imdecode` has no pixel limit but a process-wide environment variable. Pillow reads only the header when it
opens an image, so the size is known (and refused) first; OpenCV then decodes, so that an upload and a file on disk
give the same pixels (EXIF orientation, 16-bit scaling: runtime/io/imageio.py).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.errors import CscError
from runtime.io.imageio import AS_SHOWN, to_bgr8

MB = 1024 * 1024
# Pillow's format names for what `csc-run --images` reads (runtime/io/imageio.py IMAGE_SUFFIXES); MPO is a phone's
# JPEG with a second picture attached.
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "TIFF": "TIFF", "BMP": "BMP"}

SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
              (b"BM", "BMP"))


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may cost. 40 MP holds a 20 MP microscope camera's frame twice over; a side of 16 384 px holds
    any camera's, and keeps a strip of 100 000 × 1 px (200 tiles of inference for nothing) out."""

    max_bytes: int = 50 * MB
    max_pixels: int = 40_000_000
    max_side: int = 16_384
    max_pending: int = 8  # uploads read or waiting to be counted at once; more get 503 (bodies held in memory)
    # s for a body to arrive: a sender that trickles bytes holds an upload slot while it does, and eight of them
    # held every slot (503 for everyone else). 60 s carries the largest body at 0.9 MB/s, a slow lab network's rate.
    read_seconds: float = 60.0


class UploadRejected(Exception):
    """A body the API refuses: the HTTP status and the reason sent back as JSON."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_declared_length(content_length: str | None, limits: UploadLimits) -> None:
    """Refuse a body by its Content-Length before reading it."""
    if content_length is None:
        return
    try:
        length = int(content_length)
    except ValueError:
        raise UploadRejected(400, f"bad Content-Length {content_length!r}") from None
    if length > limits.max_bytes:
        raise UploadRejected(413, f"body of {length / MB:.1f} MB is over the {limits.max_bytes / MB:g} MB limit")


def add_chunk(chunks: list[bytes], chunk: bytes, received: int, limits: UploadLimits) -> int:
    """Keep one more chunk of a body being read; a body that grows past the limit (a chunked upload declares no
    length) is refused as soon as it does. Returns the bytes received so far."""
    received += len(chunk)
    if received > limits.max_bytes:
        raise UploadRejected(413, f"body over the {limits.max_bytes / MB:g} MB limit")
    chunks.append(chunk)
    return received


def image_header(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header alone; UploadRejected for what is not a supported image."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise UploadRejected(400, "empty body: send a PNG, JPEG, TIFF or BMP image (raw bytes or multipart)")
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, past its own bomb size; ours (UploadLimits) is applied below either way.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt, (width, height) = probe.format, probe.size
    except Image.DecompressionBombError as err:
        raise UploadRejected(413, f"image too large to decode: {err}") from None
    except UnidentifiedImageError:
        known = next((name for magic, name in SIGNATURES if data.startswith(magic)), None)
        if known == "TIFF":  # Pillow also gives up on pixel types it does not read, which csc-run refuses too
            raise UploadRejected(400, "unreadable TIFF: a damaged header, or a pixel type neither this check nor "
                                      "csc-run reads (floating point, more than four channels): send 8- or 16-bit "
                                      "integer pixels") from None
        if known:  # Pillow gives up on a cut header as on a stranger's: say which it is
            raise UploadRejected(400, f"truncated or damaged {known} header") from None
        raise UploadRejected(415, "not an image: send a PNG, JPEG, TIFF or BMP image") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as err:
        # Pillow reports a damaged header as any of these, depending on the format and the damage
        raise UploadRejected(400, f"unreadable image header ({type(err).__name__}: {err})") from None
    if fmt not in FORMATS:
        raise UploadRejected(415, f"unsupported image format {fmt}: send a PNG, JPEG, TIFF or BMP image")
    return FORMATS[fmt], width, height


def check_dimensions(width: int, height: int, limits: UploadLimits, zoom: float = 1.0) -> None:
    """Refuse an image past the limits, as uploaded or, with ``zoom`` (its µm per pixel over the model's), as
    enlarged to the model's pixel size, where it is segmented: a ``?pixel_size_um=`` far above the model's makes a
    small upload a huge one (×100 on each side is 10 000 times the pixels)."""
    scaled_width, scaled_height = width * zoom, height * zoom  # an infinite zoom fails both tests below
    size = f"image of {width} × {height} px" + ("" if zoom == 1 else
                                                 f" enlarged ×{zoom:.3g} to the model's pixel size "
                                                 f"({scaled_width:.4g} × {scaled_height:.4g} px; is ?pixel_size_um= "
                                                 "in µm per pixel?)")
    if not max(scaled_width, scaled_height) <= limits.max_side:
        raise UploadRejected(413, f"{size}: a side over the {limits.max_side} px limit")
    if not scaled_width * scaled_height <= limits.max_pixels:
        raise UploadRejected(413, f"{size}: {scaled_width * scaled_height / 1e6:.1f} MP, over the "
                                  f"{limits.max_pixels / 1e6:g} MP limit")


def decode_upload(data: bytes, limits: UploadLimits = UploadLimits()) -> np.ndarray:
    """An uploaded image as uint8 BGR, after its header's dimensions passed the limits; UploadRejected otherwise
    (an unreadable, truncated or oversized image), never another exception."""
    fmt, width, height = image_header(data)
    check_dimensions(width, height, limits)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), AS_SHOWN)
    if image is None:
        raise UploadRejected(400, f"the {fmt} image is truncated or damaged: its pixels do not decode")
    check_dimensions(image.shape[1], image.shape[0], limits)  # what was decoded, should a header have lied
    try:
        return to_bgr8(image)
    except CscError as err:
        raise UploadRejected(415, err.reason) from None
