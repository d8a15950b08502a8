"""Reading user images for predict: every format, the PNG conversion rule, and each bad input."""

import gzip

import numpy as np
import pytest
from PIL import Image

from bnn.core.errors import DataError
from bnn.data.idx import idx_bytes, write_idx
from bnn.serving.image_input import ImageBatch, frame_digit, read_images


def random_bytes(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save_png(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path, format="PNG")
    return path


def dark_digit_on_white(height=40, width=56):
    """A black "7" (a bar and a stroke) on white, RGB, off-centre to the left."""
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    canvas[8:12, 10:30] = 0  # top bar
    canvas[12:34, 24:28] = 0  # downstroke
    return canvas


def assert_framed_digit(frame):
    """Light digit on black, longer side 20 pixels, centred: what MNIST looks like."""
    assert frame.shape == (784,)
    frame = frame.reshape(28, 28)
    assert frame.dtype == np.float32
    ring = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
    np.testing.assert_array_equal(ring, 0)
    bright = frame > 0.5
    bright_rows, bright_cols = (
        np.flatnonzero(bright.any(axis=1)),
        np.flatnonzero(bright.any(axis=0)),
    )
    # The 26 x 20 "7" scaled so its height is 20: width 20 * 20 / 26, about 15.
    assert bright_rows[-1] - bright_rows[0] + 1 == 20
    assert bright_cols[-1] - bright_cols[0] + 1 in (15, 16)
    assert frame.max() > 0.9
    # Still a 7: its widest bright row (the bar) is in the top half.
    assert np.argmax(bright.sum(axis=1)) < 14
    rows, cols = np.indices(frame.shape)
    centre = (np.average(rows, weights=frame), np.average(cols, weights=frame))
    np.testing.assert_allclose(centre, (13.5, 13.5), atol=0.5)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_raw_and_gzip_read_back_as_bytes_over_256(tmp_path, compress):
    images = random_bytes(0, (3, 28, 28))
    if compress:
        path = tmp_path / "t10k-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(idx_bytes(images)))
    else:
        path = tmp_path / "t10k-images-idx3-ubyte"
        write_idx(path, images)
    batch = read_images(path)
    assert isinstance(batch, ImageBatch)
    assert batch.images.dtype == np.float32 and batch.images.shape == (3, 784)
    np.testing.assert_array_equal(batch.images, images.reshape(3, 784) / np.float32(256))
    assert batch.sources == [f"{path.name}[0]", f"{path.name}[1]", f"{path.name}[2]"]
    assert batch.problems == []


def test_npy_uint8_stack(tmp_path):
    images = random_bytes(1, (4, 28, 28))
    np.save(tmp_path / "digits.npy", images)
    batch = read_images(tmp_path / "digits.npy")
    np.testing.assert_array_equal(batch.images, images.reshape(4, 784).astype(np.float32) / 256)
    assert batch.images.max() == 255 / 256
    assert batch.sources[3] == "digits.npy[3]"


def test_npy_float_rows_are_kept_as_float32(tmp_path):
    images = np.random.default_rng(2).uniform(0, 1, (5, 784))
    images[0, :2] = [0.0, 1.0]  # both ends of [0, 1] are allowed
    np.save(tmp_path / "digits.npy", images)
    batch = read_images(tmp_path / "digits.npy")
    assert batch.images.dtype == np.float32
    np.testing.assert_array_equal(batch.images, images.astype(np.float32))
    assert batch.images[0, 1] == 1.0


def test_npz_uses_the_array_named_images(tmp_path):
    images = random_bytes(3, (2, 784))
    labels = np.array([3, 7], dtype=np.uint8)
    np.savez(tmp_path / "digits.npz", labels=labels, images=images)
    batch = read_images(tmp_path / "digits.npz")
    np.testing.assert_array_equal(batch.images, images / np.float32(256))
    assert batch.sources == ["digits.npz[0]", "digits.npz[1]"]


def test_npz_with_one_unnamed_array(tmp_path):
    images = np.random.default_rng(4).uniform(0, 1, (3, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "digits.npz", images)  # stored as arr_0
    batch = read_images(tmp_path / "digits.npz")
    np.testing.assert_array_equal(batch.images, images.reshape(3, 784))


@pytest.mark.parametrize("shape", [(28, 28), (784,)])
def test_a_single_image_is_a_batch_of_one(tmp_path, shape):
    image = random_bytes(5, shape)
    np.save(tmp_path / "one.npy", image)
    batch = read_images(tmp_path / "one.npy")
    assert batch.images.shape == (1, 784)
    np.testing.assert_array_equal(batch.images[0], image.reshape(784) / np.float32(256))
    assert batch.sources == ["one.npy[0]"]


def test_other_integer_dtypes_in_byte_range_count_as_bytes(tmp_path):
    images = random_bytes(6, (2, 28, 28)).astype(np.int64)
    np.save(tmp_path / "wide.npy", images)
    batch = read_images(tmp_path / "wide.npy")
    np.testing.assert_array_equal(batch.images, images.reshape(2, 784) / np.float32(256))


def test_gray_28x28_png_is_used_unchanged(tmp_path):
    # A light border would be inverted under the conversion rule; here it must not be.
    image = random_bytes(7, (28, 28))
    image[0] = 255
    path = save_png(tmp_path / "seven.png", image)
    batch = read_images(path)
    np.testing.assert_array_equal(batch.images, image.reshape(1, 784) / np.float32(256))
    assert batch.sources == ["seven.png"]


def test_16bit_gray_28x28_png_is_reduced_to_bytes(tmp_path):
    image = random_bytes(8, (28, 28)).astype(np.uint16) * 257
    path = tmp_path / "deep.png"
    Image.fromarray(image).save(path)
    with Image.open(path) as written:
        assert written.mode == "I;16"
    batch = read_images(path)
    np.testing.assert_array_equal(batch.images, (image // 257).reshape(1, 784) / np.float32(256))


def test_rgb_dark_digit_on_white_is_inverted_resized_and_centred(tmp_path):
    path = save_png(tmp_path / "photo.png", dark_digit_on_white())
    batch = read_images(path)
    assert batch.images.shape == (1, 784) and batch.sources == ["photo.png"]
    assert_framed_digit(batch.images[0])


@pytest.mark.parametrize("ink", [0, 255])
def test_ink_on_a_transparent_canvas_stays_visible(tmp_path, ink):
    # Black or white strokes on a fully transparent canvas, as drawing apps export them.
    canvas = np.zeros((40, 56, 4), dtype=np.uint8)
    canvas[..., :3] = 255 - ink  # colour under transparent pixels is irrelevant
    strokes = dark_digit_on_white()[..., 0] == 0
    canvas[strokes, :3] = ink
    canvas[strokes, 3] = 255
    path = save_png(tmp_path / "drawn.png", canvas)
    assert_framed_digit(read_images(path).images[0])


def test_palette_png_is_converted_like_rgb(tmp_path):
    rgb = dark_digit_on_white()
    path = tmp_path / "palette.png"
    Image.fromarray(rgb).convert("P").save(path)
    with Image.open(path) as written:
        assert written.mode == "P"
    np.testing.assert_array_equal(
        read_images(path).images, read_images(save_png(tmp_path / "rgb.png", rgb)).images
    )


def test_frame_digit_centres_by_centre_of_mass_not_bounding_box():
    # An "L" already 20 tall, so no resampling: the result is the crop, shifted.
    digit = np.zeros((20, 10), dtype=np.uint8)
    digit[:, :2] = 255
    digit[18:, :] = 255
    gray = np.zeros((60, 60), dtype=np.uint8)
    gray[7:27, 40:50] = digit
    rows, cols = np.indices(digit.shape)
    row_mass, col_mass = np.average(rows, weights=digit), np.average(cols, weights=digit)
    top, left = (int(np.floor(13.5 - mass + 0.5)) for mass in (row_mass, col_mass))
    assert (top, left) != (4, 9)  # where centring the bounding box would put it
    expected = np.zeros((28, 28), dtype=np.uint8)
    expected[top : top + 20, left : left + 10] = digit
    np.testing.assert_array_equal(frame_digit(gray), expected)


def test_frame_digit_keeps_an_off_balance_digit_inside_the_frame():
    # Nearly all mass on the left: centring it would push the digit past the right edge.
    digit = np.zeros((20, 20), dtype=np.uint8)
    digit[:, :3] = 255
    digit[19, :] = 255
    gray = np.zeros((40, 40), dtype=np.uint8)
    gray[10:30, 5:25] = digit
    rows, cols = np.indices(digit.shape)
    col_mass = np.average(cols, weights=digit)
    assert 13.5 - col_mass > 8.5  # unclipped, the shift would be 9 or more
    top = int(np.floor(13.5 - np.average(rows, weights=digit) + 0.5))
    expected = np.zeros((28, 28), dtype=np.uint8)
    expected[top : top + 20, 8:28] = digit  # clipped to the last column that fits
    np.testing.assert_array_equal(frame_digit(gray), expected)


def test_frame_digit_of_a_blank_image_is_blank():
    np.testing.assert_array_equal(frame_digit(np.full((30, 30), 255, np.uint8)), 0)


def test_folder_reads_pngs_sorted_by_name_and_ignores_other_files(tmp_path):
    images = {name: random_bytes(seed, (28, 28)) for seed, name in enumerate(["b", "a", "c"])}
    save_png(tmp_path / "b.png", images["b"])
    save_png(tmp_path / "a.PNG", images["a"])
    save_png(tmp_path / "c.png", images["c"])
    (tmp_path / "notes.txt").write_text("not an image")
    np.save(tmp_path / "extra.npy", random_bytes(9, (1, 28, 28)))
    (tmp_path / "nested.png").mkdir()
    save_png(tmp_path / "nested.png" / "deep.png", random_bytes(10, (28, 28)))
    batch = read_images(tmp_path)
    assert batch.sources == ["a.PNG", "b.png", "c.png"]
    expected = np.stack([images["a"], images["b"], images["c"]]).reshape(3, 784) / np.float32(256)
    np.testing.assert_array_equal(batch.images, expected)
    assert batch.problems == []


def test_folder_with_one_corrupt_png_returns_the_good_ones(tmp_path):
    first, second = random_bytes(11, (28, 28)), random_bytes(12, (28, 28))
    save_png(tmp_path / "1.png", first)
    (tmp_path / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    save_png(tmp_path / "3.png", second)
    batch = read_images(tmp_path)
    assert batch.sources == ["1.png", "3.png"]
    np.testing.assert_array_equal(batch.images[1], second.reshape(784) / np.float32(256))
    assert len(batch.problems) == 1
    assert batch.problems[0].startswith("2.png: not a readable PNG (")


def _npy(array):
    def make(tmp_path):
        np.save(tmp_path / "bad.npy", array)
        return tmp_path / "bad.npy"

    return make


def _bytes(name, payload):
    def make(tmp_path):
        (tmp_path / name).write_bytes(payload)
        return tmp_path / name

    return make


def _npz_several(tmp_path):
    np.savez(tmp_path / "bad.npz", a=np.zeros((1, 784)), b=np.zeros(1))
    return tmp_path / "bad.npz"


def _labels_idx(tmp_path):
    write_idx(tmp_path / "bad-labels-idx1-ubyte", np.arange(10, dtype=np.uint8))
    return tmp_path / "bad-labels-idx1-ubyte"


def _empty_folder(tmp_path):
    folder = tmp_path / "badfolder"
    folder.mkdir()
    (folder / "readme.txt").write_text("no pngs")
    return folder


def _all_bad_folder(tmp_path):
    folder = tmp_path / "badfolder"
    folder.mkdir()
    for name in ("x.png", "y.png", "z.png"):
        (folder / name).write_bytes(b"garbage")
    return folder


def _jpeg_named_png(tmp_path):
    Image.fromarray(random_bytes(13, (28, 28))).save(tmp_path / "bad.png", format="JPEG")
    return tmp_path / "bad.png"


NAN = np.zeros((2, 784))
NAN[1, 5] = np.nan
INF = np.zeros((2, 28, 28), dtype=np.float32)
INF[0, 0, 0] = np.inf


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda tmp_path: tmp_path / "bad.npy", "no such file or folder"),
        (
            _bytes("bad.jpg", b"\xff\xd8"),
            "unknown file type '.jpg'; --images accepts .png, a folder",
        ),
        (_bytes("bad", b"\x00"), "unknown file type '(no extension)'"),
        (_bytes("bad.npy", b"not numpy at all"), "not a readable NumPy file"),
        (_bytes("bad.npz", b"PK\x03\x04 broken zip"), "not a readable NumPy file"),
        (_bytes("bad.png", b"garbage"), "not a readable PNG"),
        (_jpeg_named_png, "not a PNG but JPEG data"),
        (_bytes("bad-images-idx3-ubyte", b"\x00\x00\x08\x03\x00"), "not a readable IDX image"),
        (_bytes("bad-images-idx3-ubyte.gz", b"\x1f\x8bnot gzip"), "corrupt gzip data"),
        (_labels_idx, "IDX array of shape (10,), but image files hold (N, 28, 28)"),
        (_npy(np.zeros((3, 10, 10))), "shape (3, 10, 10); accepted shapes are (N, 28, 28)"),
        (_npy(np.zeros((2, 28, 28, 1))), "shape (2, 28, 28, 1)"),
        (_npy(NAN), "1 NaN or infinite values (first in image 1)"),
        (_npy(INF), "1 NaN or infinite values (first in image 0)"),
        (
            _npy(np.full((1, 784), 255.0)),
            "float pixels range over [255, 255] but must lie in [0, 1]",
        ),
        (_npy(np.full((1, 784), -0.5)), "range over [-0.5, -0.5]"),
        (_npy(np.full((1, 784), 256, np.int32)), "integer pixels range over [256, 256]"),
        (_npy(np.full((1, 784), -1, np.int8)), "range over [-1, -1]"),
        (_npy(np.zeros((1, 784), dtype=bool)), "dtype bool"),
        (_npy(np.zeros((0, 28, 28), dtype=np.uint8)), "holds no images"),
        (_npz_several, "several arrays (a, b) and none named 'images'"),
        (_empty_folder, "no .png files in this folder"),
        (_all_bad_folder, "none of its 3 PNG files could be read: x.png: not a readable PNG"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(DataError) as caught:
        read_images(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "\n" not in message


def test_all_bad_folder_counts_the_rest(tmp_path):
    with pytest.raises(DataError, match=r"x\.png: .*; and 2 more; re-save them as PNG images"):
        read_images(_all_bad_folder(tmp_path))
