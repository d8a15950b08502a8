"""The images a user hands to ``predict``, turned into the network's input.

:func:`read_images` takes one path and returns an :class:`ImageBatch` of
float32 rows of 784 pixels in [0, 1], scaled as in training (white digit on
black, bytes divided by 256, see :func:`bnn.data.dataset.scale_pixels`). What the
path may be, chosen by its extension (case-insensitive):

* **IDX**, as MNIST ships it: ``*-ubyte``, ``*.ubyte`` or ``*.idx``, raw or
  gzip-compressed; any ``*.gz`` is read as gzip IDX. Shape (N, 28, 28), bytes.
* **NumPy** ``.npy`` or ``.npz``: shape (N, 28, 28) or (N, 784), or a single
  image (28, 28) or (784,). Integer arrays must hold 0-255 and are scaled like
  bytes; float arrays must lie in [0, 1] and are kept as they are. From an
  ``.npz`` the array named ``images`` is used, else its only array.
* **PNG**: one ``.png`` file, or a folder holding them. In a folder, every
  ``*.png`` directly inside it is read (not sub-folders), sorted by file name
  as plain strings (so ``10.png`` sorts before ``2.png``; number them ``00.png``,
  ``01.png``, ... to keep an order). Other files in the folder are ignored. A
  PNG that cannot be read is skipped and reported in
  :attr:`ImageBatch.problems`; only a folder with no good PNG is an error.

How a PNG becomes a 28 × 28 MNIST-like digit
--------------------------------------------
A grayscale PNG (1-, 8- or 16-bit, no transparency) that is 28 × 28 is taken
to be MNIST-like already and used **unchanged**: no inversion, no resizing.
16-bit values are reduced to bytes as ``round(v / 257)``. Every other PNG goes
through these steps, in order:

1. *Gray.* Colour and palette images are converted to 8-bit gray with PIL's
   ``"L"`` mode, the ITU-R 601-2 luma ``L = 0.299 R + 0.587 G + 0.114 B``.
2. *Transparency.* An image with an alpha channel (or a transparent palette
   entry) is composited onto a background that contrasts with its ink: onto
   white if its opaque pixels are dark on average (alpha-weighted mean luma
   below 128), else onto black. A digit drawn in black or in white on a
   transparent canvas thus stays visible either way. A fully transparent
   image becomes blank.
3. *Polarity.* If the outermost ring of pixels is mostly light (mean above
   127), the image is inverted (``255 - v``), so the digit is light on dark
   like MNIST's.
4. *Crop.* The digit's bounding box is the smallest box holding every pixel
   at least half as bright as the brightest one; the image is cropped to it.
   An image with no bright pixel at all becomes blank.
5. *Size.* The crop is resized with Lanczos resampling so that its longer side
   is 20 pixels, keeping its aspect ratio (small digits are enlarged).
6. *Centre.* It is pasted into a black 28 × 28 frame, shifted by whole pixels
   so that its centre of mass (intensity-weighted) lands as near the frame's
   centre as possible without cutting the digit off.

Steps 4 to 6 are MNIST's own normalisation (LeCun et al.: digits size-
normalised to a 20 × 20 box, then centred by centre of mass in 28 × 28).
Nothing else is done: no thresholding, denoising or deskewing, so photos
with uneven lighting or a textured background should be cleaned first.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bnn.core.errors import DataError
from bnn.core.mnist import IMAGE_SHAPE, N_PIXELS
from bnn.data.dataset import npy_header, scale_pixels
from bnn.data.idx import read_idx

DIGIT_BOX = 20  # MNIST fits each digit's longer side into 20 pixels
# Bounds on work, checked from headers before anything is decoded: a 25-megapixel
# PNG (a phone photo is 12) and 1 GiB of array data (340,000 float32 images).
MAX_PNG_PIXELS = 25_000_000
MAX_ARRAY_BYTES = 1 << 30
IDX_ENDINGS = ("-ubyte", ".ubyte", ".idx")
ACCEPTED_FILES = (
    ".png, a folder of .png files, .npy, .npz, or IDX (*-ubyte, *.ubyte, *.idx, raw or .gz)"
)
ACCEPTED_SHAPES = "(N, 28, 28), (N, 784), (28, 28) or (784,)"
NPZ_KEY = "images"

_GRAY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
# bnn.data.idx words its errors for the MNIST download; here the file is the user's own.
_FETCH_HINT = "; delete it and run the fetch stage again"
# What a damaged image or array file can raise, from PIL, numpy's loader and zipfile.
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


@dataclass
class ImageBatch:
    """Images ready for the network, with where each came from.

    Attributes
    ----------
    images : numpy.ndarray
        float32, shape (N, 784), values in [0, 1], white digit on black.
    sources : list of str
        One label per image: ``"digits.npz[3]"``, ``"t10k-images-idx3-ubyte.gz[0]"``
        or ``"seven.png"``.
    problems : list of str
        One line per file of a folder that was skipped, such as
        ``"bad.png: not a readable PNG (...)"``. Empty when nothing was skipped.
    """

    images: np.ndarray
    sources: list[str]
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)


class _Unreadable(Exception):
    """A PNG that cannot be used; the message is the reason, without the file name."""


def read_images(path: str | os.PathLike) -> ImageBatch:
    """Read images for prediction from a file or a folder of PNGs.

    See the module docstring for the formats accepted and how PNGs are
    converted.

    Parameters
    ----------
    path : str or os.PathLike
        An IDX, ``.npy``, ``.npz`` or ``.png`` file, or a folder of ``.png`` files.

    Returns
    -------
    ImageBatch
        At least one image. ``problems`` is non-empty only for a folder in
        which some, but not all, PNGs were unreadable.

    Raises
    ------
    DataError
        If the path is missing, of an unknown type, unreadable, of the wrong
        shape or value range, or holds no image. The message is one line that
        names the file and the fix.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder; check the path given to --images")
    kind = _file_kind(path)
    if kind == "png":
        try:
            frame = _png_frame(path)
        except _Unreadable as reason:
            raise DataError(f"{path}: {reason}; re-save it as a PNG image") from None
        return ImageBatch(scale_pixels(frame).reshape(1, N_PIXELS), [path.name])
    if kind == "idx":
        images = _read_idx_images(path)
    elif kind == "numpy":
        images = _read_numpy(path)
    else:
        raise DataError(
            f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
            f"--images accepts {ACCEPTED_FILES}"
        )
    return ImageBatch(images, [f"{path.name}[{i}]" for i in range(len(images))])


def _file_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".png"):
        return "png"
    if name.endswith((".npy", ".npz")):
        return "numpy"
    if name.endswith(".gz") or name.endswith(IDX_ENDINGS):
        return "idx"
    return None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _read_idx_images(path: Path) -> np.ndarray:
    try:
        array = read_idx(path)
    except DataError as error:
        reason = str(error).removeprefix(f"{path}: ").removesuffix(_FETCH_HINT)
        raise DataError(
            f"{path}: not a readable IDX image file ({reason}); pass an IDX file of "
            "shape (N, 28, 28), raw or gzip, such as MNIST's t10k-images-idx3-ubyte.gz"
        ) from None
    if array.ndim != 3 or array.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{path}: IDX array of shape {array.shape}, but image files hold (N, 28, 28); "
            "is this a labels file? Pass the images file"
        )
    return _validated(array, path)


def _read_numpy(path: Path) -> np.ndarray:
    try:
        # Our own handle: np.load leaves its file open when a zip archive is corrupt.
        with open(path, "rb") as handle:
            if handle.read(len(NPY_MAGIC)) == NPY_MAGIC:
                handle.seek(0)
                _check_npy_size(handle, os.fstat(handle.fileno()).st_size, path)
            handle.seek(0)
            loaded = np.load(handle, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                array = _npz_images(loaded, path)
            else:
                array = loaded
    except DataError:
        raise  # already worded (an .npz with no usable array); DataError is a ValueError
    except _READ_ERRORS as error:
        raise DataError(
            f"{path}: not a readable NumPy file ({_one_line(error)}); save the images "
            "with numpy.save or numpy.savez (numeric arrays, no pickled objects)"
        ) from None
    return _validated(array, path)


NPY_MAGIC = b"\x93NUMPY"


def _check_npy_size(handle, file_size: int, path: Path) -> None:
    """Refuse an .npy whose header claims more data than the file holds or than we read."""
    shape, dtype = npy_header(handle)
    claimed = math.prod(shape) * dtype.itemsize
    _check_array_bytes(claimed, path)
    if dtype.hasobject:
        return  # np.load refuses it with its own message (no pickles)
    if handle.tell() + claimed > file_size:
        raise DataError(
            f"{path}: truncated .npy file: its header claims an array of shape {shape} "
            f"({claimed:,} bytes), the file holds {file_size - handle.tell():,}; save it again"
        )


def _check_array_bytes(claimed: int, path: Path) -> None:
    if claimed > MAX_ARRAY_BYTES:
        raise DataError(
            f"{path}: an array of {claimed:,} bytes, more than the {MAX_ARRAY_BYTES:,} predict "
            "reads at once; split the images into several files"
        )


def _npz_images(archive: np.lib.npyio.NpzFile, path: Path) -> np.ndarray:
    keys = archive.files
    chosen = NPZ_KEY if NPZ_KEY in keys else keys[0] if len(keys) == 1 else None
    if chosen is not None:
        # The zip directory's uncompressed size bounds what reading the member may return.
        member = archive.zip.getinfo(f"{chosen}.npy")
        _check_array_bytes(member.file_size, path)
        return archive[chosen]
    if not keys:
        raise DataError(f"{path}: the .npz archive holds no arrays; save the images in it")
    raise DataError(
        f"{path}: the .npz archive holds several arrays ({', '.join(keys)}) and none "
        f"named {NPZ_KEY!r}; save the images as numpy.savez(..., {NPZ_KEY}=array)"
    )


def _validated(array: np.ndarray, path: Path) -> np.ndarray:
    """Check an array's shape, dtype and values; return float32 (N, 784) in [0, 1]."""
    if array.dtype.kind not in "uif":
        raise DataError(
            f"{path}: array of dtype {array.dtype}; save the images as bytes 0-255 "
            "(uint8) or floats 0-1"
        )
    if array.shape in (IMAGE_SHAPE, (N_PIXELS,)):
        array = array[np.newaxis]
    if not (
        (array.ndim == 3 and array.shape[1:] == IMAGE_SHAPE)
        or (array.ndim == 2 and array.shape[1] == N_PIXELS)
    ):
        raise DataError(
            f"{path}: array of shape {array.shape}; accepted shapes are {ACCEPTED_SHAPES}"
        )
    if len(array) == 0:
        raise DataError(f"{path}: the array holds no images (shape {array.shape}); add some")
    array = array.reshape(len(array), N_PIXELS)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            first = int(np.argmin(finite.all(axis=1)))
            raise DataError(
                f"{path}: {int((~finite).sum())} NaN or infinite values (first in image "
                f"{first}); pixels must be floats in [0, 1]"
            )
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise DataError(
                f"{path}: float pixels range over [{low:g}, {high:g}] but must lie in [0, 1]; "
                "divide bytes by 256, or save them as uint8 0-255"
            )
        return array.astype(np.float32)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        raise DataError(
            f"{path}: integer pixels range over [{low}, {high}] but must lie in 0-255; "
            "save bytes 0-255, or floats in [0, 1]"
        )
    return scale_pixels(array.astype(np.uint8))


def _read_folder(folder: Path) -> ImageBatch:
    try:
        pngs = sorted(
            (entry for entry in folder.iterdir() if entry.name.lower().endswith(".png")),
            key=lambda entry: entry.name,
        )
    except OSError as error:
        raise DataError(f"{folder}: cannot list the folder ({_one_line(error)})") from None
    pngs = [entry for entry in pngs if entry.is_file()]
    if not pngs:
        raise DataError(
            f"{folder}: no .png files in this folder (other files are ignored); put "
            "digit PNGs there, or pass a .npy, .npz or IDX file"
        )
    frames, sources, problems = [], [], []
    for png in pngs:
        try:
            frames.append(_png_frame(png))
        except _Unreadable as reason:
            problems.append(f"{png.name}: {reason}")
        else:
            sources.append(png.name)
    if not frames:
        more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise DataError(
            f"{folder}: none of its {len(pngs)} PNG files could be read: {problems[0]}{more}; "
            "re-save them as PNG images"
        )
    images = scale_pixels(np.stack(frames)).reshape(len(frames), N_PIXELS)
    return ImageBatch(images, sources, problems)


def _png_frame(path: Path) -> np.ndarray:
    """One PNG as a uint8 28 × 28 MNIST-like frame; raise :class:`_Unreadable` if it can't."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between its own limit and twice it; here that is an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format != "PNG":
                    raise _Unreadable(f"not a PNG but {image.format} data under a .png name")
                width, height = image.size
                if width * height > MAX_PNG_PIXELS:
                    # Refused from the header, before a byte of pixel data is decoded.
                    raise _Unreadable(
                        f"{width} x {height} pixels, more than the {MAX_PNG_PIXELS:,} read "
                        "here; scale it down"
                    )
                image.load()
                return _to_frame(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # PIL refuses far larger claims itself, at open, before we see the size.
        raise _Unreadable(
            f"more than the {MAX_PNG_PIXELS:,} pixels read here ({_one_line(error)}); scale it down"
        ) from None
    except _READ_ERRORS as error:
        raise _Unreadable(f"not a readable PNG ({_one_line(error)})") from None


def _to_frame(image: Image.Image) -> np.ndarray:
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    if image.mode in _GRAY_MODES and not has_alpha:
        gray = _gray_bytes(image)
        if gray.shape == IMAGE_SHAPE:
            return gray
        return frame_digit(gray)
    if has_alpha:
        return frame_digit(_composite(image))
    return frame_digit(np.asarray(image.convert("L")))


def _gray_bytes(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I"):
        # 16-bit PNGs: PIL's own "L" conversion clips at 255 instead of scaling.
        wide = np.asarray(image, dtype=np.float64)
        return np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"))


def _composite(image: Image.Image) -> np.ndarray:
    rgba = image.convert("RGBA")
    if image.mode in _GRAY_MODES:
        luma = _gray_bytes(image).astype(np.float64)  # keeps 16-bit gray scaled, not clipped
    else:
        luma = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float64)
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / 255
    opacity = alpha.sum()
    ink = (alpha * luma).sum() / opacity if opacity else 255.0
    background = 255.0 if ink < 128 else 0.0
    return np.rint(alpha * luma + (1 - alpha) * background).astype(np.uint8)


def frame_digit(gray: np.ndarray) -> np.ndarray:
    """Invert, crop, resize and centre a grayscale digit as MNIST did (steps 3-6 above).

    Parameters
    ----------
    gray : numpy.ndarray
        uint8, shape (height, width), any polarity.

    Returns
    -------
    numpy.ndarray
        uint8, shape (28, 28): the digit light on black, its longer side 20
        pixels, its centre of mass as near the centre as fits. All zeros when
        the image holds no light pixel after inversion.
    """
    gray = np.asarray(gray, dtype=np.uint8)
    ring = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    if ring.mean() > 127:
        gray = 255 - gray
    frame = np.zeros(IMAGE_SHAPE, dtype=np.uint8)
    if gray.max() == 0:
        return frame
    ink = gray >= gray.max() / 2
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    digit = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = digit.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.LANCZOS))
    top = _offset(digit.sum(axis=1), IMAGE_SHAPE[0])
    left = _offset(digit.sum(axis=0), IMAGE_SHAPE[1])
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return frame


def _offset(profile: np.ndarray, side: int) -> int:
    """Whole-pixel shift putting the profile's centre of mass nearest the middle of ``side``."""
    length = len(profile)
    total = profile.sum(dtype=np.float64)
    centre = (profile * np.arange(length)).sum() / total if total else (length - 1) / 2
    shift = int(np.floor((side - 1) / 2 - centre + 0.5))
    return min(max(shift, 0), side - length)
