"""Output paths are checked before any work, per-input names never collide, and images are written
in the format their extension names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from imagegen.errors import ImagegenError
from imagegen.imageio import save_image
from imagegen.outputs import check_output_dir, check_output_file, unique_stems


def test_unique_stems():
    paths = [Path("a/x.png"), Path("b/x.jpg"), Path("X.png"), Path("x-2.png"), Path("y.png")]
    assert unique_stems(paths) == ["x", "x-2", "X-3", "x-2-2", "y"]
    assert len({s.casefold() for s in unique_stems(paths)}) == len(paths)


@pytest.mark.parametrize("name, fmt", [("a.png", "PNG"), ("a.JPG", "JPEG"), ("a.jpeg", "JPEG"),
                                       ("a.bmp", "BMP"), ("a.tiff", "TIFF"), ("a.webp", "WEBP")])
def test_save_image_writes_the_format_of_the_extension(tmp_path, name, fmt):
    image = torch.arange(48, dtype=torch.uint8).view(3, 4, 4)
    save_image(image, tmp_path / name)
    with Image.open(tmp_path / name) as im:
        assert im.format == fmt and im.size == (4, 4)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_save_image_refuses_an_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match=r"\.png, \.jpg"):
        save_image(torch.zeros(1, 2, 2, dtype=torch.uint8), tmp_path / "a.gif")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name, says", [("x.gif", "name the image file"), ("x", "name the image file"),
                                        ("f/x.png", "is a file, not a directory"),
                                        ("d", "is a directory")])
def test_check_output_file(tmp_path, name, says):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d.png").mkdir()
    path = tmp_path / ("d.png" if name == "d" else name)
    with pytest.raises(ImagegenError, match=says):
        check_output_file(path, "--out")
    check_output_file(tmp_path / "new" / "deeper" / "x.png", "--out")  # folders to be made: fine
    assert not (tmp_path / "new").exists()  # the check creates nothing


def test_check_output_dir(tmp_path):
    (tmp_path / "f").write_text("x")
    for bad in (tmp_path / "f", tmp_path / "f" / "d", Path("/proc/imagegen-test")):
        with pytest.raises(ImagegenError, match="--out-dir"):
            check_output_dir(bad, "--out-dir")
    check_output_dir(tmp_path / "a" / "b", "--out-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
