"""Reading user images: every Pillow mode converted right, and no file, however damaged, raises
anything but the one-line DataError the CLI reports."""

from __future__ import annotations

import io
import os
import random
import threading
import time

import numpy as np
import pytest
from PIL import Image

from imagegen.errors import DataError
from imagegen.imageio import read_image

GRADIENT = np.arange(72).reshape(8, 9)  # 72 grey levels


def read(path, channels=1, size=(8, 9)):
    return read_image(path, channels, size).numpy()


def test_16_bit_grey_keeps_its_levels(tmp_path):
    Image.fromarray((GRADIENT * 900).astype(np.uint16)).save(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode.startswith("I;16")
    x = read(tmp_path / "g.png")[0]
    assert len(np.unique(x)) == 72  # Pillow's own conversion clips to 255: 2 levels
    np.testing.assert_array_equal(x, np.rint(GRADIENT * 900 / 257))


def test_32_bit_integer_grey_is_read_as_16_bit(tmp_path):
    Image.fromarray((GRADIENT * 900).astype(np.int32)).save(tmp_path / "i.tif")
    with Image.open(tmp_path / "i.tif") as im:
        assert im.mode == "I"
    np.testing.assert_array_equal(read(tmp_path / "i.tif")[0], np.rint(GRADIENT * 900 / 257))


def test_float_grey_is_read_as_0_to_1(tmp_path):
    values = (GRADIENT / 71).astype(np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    with Image.open(tmp_path / "f.tif") as im:
        assert im.mode == "F"
    np.testing.assert_array_equal(read(tmp_path / "f.tif")[0], np.rint(values.astype(np.float64) * 255))


def test_float_grey_with_nan_is_refused(tmp_path):
    values = np.zeros((8, 9), np.float32)
    values[3, 3] = np.nan
    Image.fromarray(values).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match="NaN"):
        read(tmp_path / "f.tif")


def test_palette_with_a_transparent_colour(tmp_path):
    im = Image.new("P", (4, 2))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)  # 0 red (transparent), 1 green
    im.paste(1, (0, 0, 2, 2))
    im.save(tmp_path / "p.png", transparency=0)
    x = read(tmp_path / "p.png", channels=3, size=(2, 4))
    np.testing.assert_array_equal(x[:, 0], [[0, 0, 0, 0], [255, 255, 0, 0], [0, 0, 0, 0]])


def test_grey_with_alpha_is_composited_onto_black(tmp_path):
    la = np.stack([np.full((2, 2), 200, np.uint8), np.full((2, 2), 128, np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert (read(tmp_path / "la.png", size=(2, 2)) == round(200 * 128 / 255)).all()


def test_rgba_is_composited_onto_black(tmp_path):
    Image.new("RGBA", (2, 2), (255, 255, 255, 0)).save(tmp_path / "a.png")
    Image.new("RGBA", (2, 2), (10, 20, 30, 255)).save(tmp_path / "b.png")
    assert (read(tmp_path / "a.png", 3, (2, 2)) == 0).all()
    np.testing.assert_array_equal(read(tmp_path / "b.png", 3, (2, 2))[:, 0, 0], [10, 20, 30])


def test_cmyk(tmp_path):
    Image.new("CMYK", (2, 2), (0, 255, 255, 0)).save(tmp_path / "red.tif")
    Image.new("CMYK", (2, 2), (0, 0, 0, 128)).save(tmp_path / "grey.tif")
    np.testing.assert_array_equal(read(tmp_path / "red.tif", 3, (2, 2))[:, 0, 0], [255, 0, 0])
    np.testing.assert_array_equal(read(tmp_path / "grey.tif", 3, (2, 2))[:, 0, 0], [127, 127, 127])


def test_one_bit(tmp_path):
    im = Image.new("1", (2, 2), 0)
    im.putpixel((1, 1), 1)
    im.save(tmp_path / "b.png")
    np.testing.assert_array_equal(read(tmp_path / "b.png", size=(2, 2))[0], [[0, 0], [0, 255]])


def test_rgb_to_grey_and_grey_to_rgb(tmp_path):
    Image.new("RGB", (2, 2), (255, 0, 0)).save(tmp_path / "red.png")
    Image.new("L", (2, 2), 90).save(tmp_path / "grey.png")
    assert (read(tmp_path / "red.png", size=(2, 2)) == 76).all()  # ITU-R 601-2 luma of pure red
    assert (read(tmp_path / "grey.png", 3, (2, 2)) == 90).all()


@pytest.mark.parametrize("make, says", [("missing", "no such image file"),
                                        ("directory", "is not a regular file"),
                                        ("fifo", "is not a regular file"),
                                        ("empty", "cannot read this image"),
                                        ("bomb", "DecompressionBomb")])
def test_what_is_not_an_image_is_one_data_error(tmp_path, make, says):
    path = tmp_path / "x.png"
    if make == "directory":
        path.mkdir()
    elif make == "fifo":  # opening it would block until a writer comes: this one comes and goes
        os.mkfifo(path)
        threading.Thread(target=lambda: time.sleep(0.5) or open(path, "wb").close(), daemon=True).start()
    elif make == "empty":
        path.write_bytes(b"")
    elif make == "bomb":
        Image.new("L", (9500, 9500)).save(path)  # 90 Mpx: past Pillow's warning limit (89 Mpx)
    with pytest.raises(DataError) as e:
        read_image(path, 1, (9500, 9500))
    assert "\n" not in str(e.value) and str(path) in str(e.value) and says in str(e.value)


def _seed_images() -> list[bytes]:
    """Small valid files of several formats and modes, for mutation."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    grey, rgb = Image.fromarray(pixels[..., 0]), Image.fromarray(pixels[..., :3])
    images = [(grey, "PNG"), (rgb, "PNG"), (Image.fromarray(pixels, "RGBA"), "PNG"), (rgb, "JPEG"),
              (grey, "JPEG"), (rgb.convert("P"), "GIF"), (rgb, "BMP"), (rgb, "WEBP"),
              (Image.fromarray(pixels[..., 0].astype(np.uint16) * 257), "PNG"),
              (Image.fromarray(pixels[..., 0].astype(np.float32) / 255), "TIFF")]
    out = []
    for im, fmt in images:
        buf = io.BytesIO()
        im.save(buf, fmt)
        out.append(buf.getvalue())
    return out


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """Flip bytes (mostly in the header), cut the tail or insert junk, a few times."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if op < 0.6:
            i = rng.randrange(min(len(b), 64)) if rng.random() < 0.7 else rng.randrange(len(b))
            b[i] = rng.randrange(256)
        elif op < 0.8:
            del b[rng.randrange(1, max(2, len(b))):]
        else:
            i = rng.randrange(max(1, len(b)))
            b[i:i] = rng.randbytes(rng.randint(1, 16))
    return bytes(b)


def test_fuzz_random_and_mutated_files_raise_only_data_error(tmp_path):
    """300 seeded cases: random bytes, and PNG/JPEG/GIF/BMP/TIFF/WebP files with damaged headers
    or bodies. Each either reads as uint8 of the asked shape or raises DataError (one line)."""
    rng = random.Random(0)
    seeds = _seed_images()
    path = tmp_path / "fuzz.png"
    outcomes = {"read": 0, "refused": 0}
    for _ in range(300):
        if rng.random() < 0.15:
            data = rng.randbytes(rng.randrange(300))
        else:
            data = _mutate(rng, rng.choice(seeds))
        path.write_bytes(data)
        channels = rng.choice([1, 3])
        try:
            x = read_image(path, channels, (6, 7), resize=True)
        except DataError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
        else:
            assert x.shape == (channels, 6, 7) and str(x.dtype) == "torch.uint8"
            outcomes["read"] += 1
    assert outcomes["refused"] > 100 and outcomes["read"] > 10, outcomes  # both paths exercised
