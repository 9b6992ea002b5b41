"""Generation as it happens: the recorded canvases are the sampler's, and the last frame is the image."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from imagegen.explain import Animation, watch
from imagegen.explain.animate import GREY, UNSET
from imagegen.imageio import make_grid, to_uint8
from imagegen.sampling import sample
from tests.explain_helpers import H, K, W, tiny


@pytest.mark.parametrize("name", ["gated_pixelcnn", "transformer_2d"])
@pytest.mark.parametrize("decoder", ["cached", "reference"])
def test_canvases_grow_in_generation_order_and_end_as_the_sample(name, decoder):
    model = tiny(name, 3)
    canvases = []
    with watch(model, canvases.append, every=5):
        images = sample(model, 2, seed=4, decoder=decoder)
    N = 3 * H * W
    assert len(canvases) == -(-N // 5)
    order = model.generation_order(3, H, W)
    for k, canvas in enumerate(canvases):
        flat = canvas.permute(0, 2, 3, 1).reshape(2, -1)
        done = min(N, 5 * (k + 1))
        assert (flat[:, order[done:]] == UNSET).all() and (flat[:, order[:done]] >= 0).all()
    assert torch.equal(canvases[-1], images.long())
    assert "decoder" not in vars(model) and "reference_decoder" not in vars(model)  # the methods are back


def test_known_sub_pixels_of_a_completion_are_on_the_canvas():
    model = tiny("row_lstm")
    known = torch.randint(0, K, (1, 1, H, W))
    mask = torch.zeros(1, 1, H, W, dtype=torch.bool)
    mask[..., :2, :] = True
    canvases = []
    with watch(model, canvases.append):
        images = sample(model, 1, seed=0, known=known, known_mask=mask)
    assert len(canvases) == H  # one frame per image row by default
    assert torch.equal(canvases[1][mask], known[mask]) and torch.equal(canvases[-1], images.long())


def test_watch_restores_the_decoders_after_an_error():
    model = tiny("pixelcnn")
    with pytest.raises(RuntimeError), watch(model, lambda canvas: None):
        raise RuntimeError("interrupted")
    assert "decoder" not in vars(model)
    assert type(model.decoder(1)).__name__ != "Recorder"


def test_animation_frames_are_the_grid_with_grey_for_what_is_not_yet_drawn(tmp_path):
    model = tiny("gated_pixelcnn")
    film = Animation(2, 3, (1, H, W), K, nrow=3)
    before = torch.randint(0, K, (1, 1, H, W))
    film.set(0, before)
    with film.painting(model, 0, start=1):
        first = sample(model, 2, seed=0)
    with film.painting(model, 1):
        second = sample(model, 3, seed=1)
    assert len(film.frames) == 2 * H
    grey = torch.full((3, 1, H, W), GREY, dtype=torch.uint8)
    shown = lambda *images: make_grid(torch.cat(images), nrow=3).permute(1, 2, 0).numpy()  # noqa: E731
    first_row = to_uint8(torch.cat([before, first.long()]), K)
    assert (film.frames[H - 1] == shown(first_row, grey)).all()  # the first row done, the second grey
    assert (film.frames[-1] == shown(first_row, to_uint8(second.long(), K))).all()
    path = film.save(tmp_path / "film.gif")
    assert path.stat().st_size > 0


@pytest.mark.parametrize("suffix", [".png", ".webp", ".gif"])
def test_colour_animations_end_with_the_grid(tmp_path, suffix):
    """Animated PNG and WebP keep every colour; GIF holds 256 (these few colours fit)."""
    model = tiny("transformer_1d", 3)
    film = Animation(1, 2, (3, H, W), K)
    with film.painting(model, 0):
        drawn = sample(model, 2, seed=0)
    path = film.save(tmp_path / f"film{suffix}")
    with Image.open(path) as im:
        last = [np.array(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)][-1]
    expected = make_grid(to_uint8(drawn, K)).permute(1, 2, 0).numpy()
    zoom = 96 // W
    assert (last == np.repeat(np.repeat(expected, zoom, 0), zoom, 1)).all()
