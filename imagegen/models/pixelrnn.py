"""PixelRNN: Row LSTM and Diagonal BiLSTM (van den Oord et al. 2016, "Pixel Recurrent Neural
Networks", section 3), each with an exact cached decoder.

Both models share the paper's frame (figure 2 and table 1): a 7x7 mask-A convolution to 2h
features, ``num_layers`` residual LSTM layers (2h in; the input-to-state convolution gives h
features per gate; the LSTM's h-feature output goes back to 2h through a 1x1 mask-B convolution
and is added to the layer's input, section 3.3), then ReLU, a 1x1 mask-B convolution, ReLU, and the
shared 256-way head (per colour).

An LSTM layer (equation 3) computes its four gates from a state-to-state and an input-to-state
convolution::

    [o, f, i, g] = sigma(K_ss (*) h_prev + K_is (*) x)     sigma: sigmoid for o, f, i; tanh for g
    c = f . c_prev + i . g
    h = o . tanh(c)

* Row LSTM (section 3.1): the map is processed row by row, top to bottom. ``K_is`` is a 1 x k
  (the paper's "k x 1") mask-B convolution along the row, computed for the whole map at once;
  ``K_ss`` is an unmasked 1-D convolution of width 3 over the previous row's hidden state; ``c_prev``
  is the previous row's cell state at the same column. One batched step per row.
* Diagonal BiLSTM (section 3.2): each direction skews its input so that diagonals become columns
  (row ``i`` shifted right by ``i``), computes ``K_is`` as a 1x1 mask-B convolution, and runs over
  the skewed columns with a 2x1 column convolution ``K_ss`` (the pixel above and the pixel to the
  left); ``c_prev`` is the left neighbour's cell. The right-to-left direction runs on the
  mirrored map; its output is mirrored back and shifted down one row before the two are added, so
  pixel ``(i, j)`` sees the left-to-right state of every pixel up and to its left and the
  right-to-left state of every pixel of the rows above. One batched step per skewed column. States
  outside the image (the zeros the skew adds) are held at zero, like a convolution's zero padding.
  One exception to "every earlier pixel" follows from the masks: no state at a pixel sees that
  pixel's own value, so the last pixel of row i-1 reaches the right-to-left pass only on row i,
  which is shifted to row i+1; pixel (i, j) sees it only through the first layer's window (when
  ``j + first_kernel_size // 2 >= W - 1``). The tests show both.

``K_ss`` is stored as the linear map of the neighbouring states concatenated (``[left, centre,
right]`` of the row above, or ``[above, left]``): the same weights as the paper's convolution,
one matmul per step (tiny convolutions are slow on CPU, in backward especially).

Colour masking (section 3.4): every map is split into ``channels`` colour groups (``group_of`` in
``masked.py``); each gate's h features are split the same way, and gate group ``g`` is computed
from input groups ``<= g`` at the current pixel (mask B; mask A in the first layer sees ``< g``).
The cell and hidden state updates are elementwise, so state group ``g`` at a pixel depends on
input sub-pixels of colours ``< g`` there and never on later ones: G at ``(i, j)`` sees R at
``(i, j)`` and R never sees G. ``K_ss`` needs no colour mask: it reads only states of pixels that
come entirely before the current one (the row above; for the Diagonal BiLSTM also the pixel to the
left), and every colour of those is already known. The gradient causality tests check this for
3 channels.

Class conditioning adds a learned bias per label to every LSTM layer's input (``V h``, h one-hot).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import AutoregressiveModel, check_ints, check_kernels
from .head import CategoricalHead
from .masked import ConvCache, MaskedConv2d, causal_mask
from .pixelcnn import _PixelDecoder, subpixels


class GateConv(MaskedConv2d):
    """Input-to-state convolution ``K_is``: 2h features -> four gates of h features each.

    The output is laid out gate-major, ``[o | f | i | g]``, and each gate's h features carry the
    colour groups of an h-feature map, so output feature ``q * h + k`` is masked like feature ``k``
    of an h-output ``MaskedConv2d`` (any h >= channels works, not just multiples of 3).
    """

    def __init__(self, in_features: int, hidden: int, kernel: tuple[int, int], channels: int,
                 center: tuple[int, int] | None = None):
        super().__init__(in_features, 4 * hidden, kernel, "B", channels, center=center)
        self.mask = causal_mask(hidden, in_features, kernel, self.center, "B", channels).repeat(4, 1, 1, 1)


def lstm_cell(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Equation 3 from the summed gate pre-activations, features last: ``gates (..., 4h)`` laid out
    ``[o | f | i | g]`` and ``c_prev (..., h)`` -> ``(h, c)``, each ``(..., h)``."""
    o, f, i, g = gates.unflatten(-1, (4, -1)).unbind(-2)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def skew(x: torch.Tensor) -> torch.Tensor:
    """``(B, F, H, W) -> (B, F, H, H + W - 1)``: row ``i`` shifted right by ``i``, zeros elsewhere,
    so pixel ``(i, j)`` lands in column ``i + j`` and each diagonal becomes a column."""
    B, Fe, H, W = x.shape
    return F.pad(x, (0, H)).flatten(2)[:, :, : H * (H + W - 1)].view(B, Fe, H, H + W - 1)


def unskew(y: torch.Tensor) -> torch.Tensor:
    """Inverse of ``skew``: ``(B, F, H, H + W - 1) -> (B, F, H, W)``, ``out[i, j] = y[i, i + j]``."""
    B, Fe, H, D = y.shape
    W = D - H + 1
    flat = F.pad(F.pad(y, (0, 1)).flatten(2), (0, H))  # row i of width D+2 starts at i*(D+2)
    return flat.view(B, Fe, H, D + 2)[:, :, :, :W]


class RowLSTM(nn.Module):
    """One Row LSTM (section 3.1): ``(B, 2h, H, W)`` -> hidden states ``(B, h, H, W)``.
    ``K_ss``, the width-3 convolution over the previous row, maps ``[left, centre, right]`` 3h -> 4h."""

    def __init__(self, hidden: int, kernel_size: int, channels: int):
        super().__init__()
        self.hidden = hidden
        self.input_to_state = GateConv(2 * hidden, hidden, (1, kernel_size), channels,
                                       center=(0, kernel_size // 2))
        self.state_to_state = nn.Linear(3 * hidden, 4 * hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        gates_is = self.input_to_state(x).permute(0, 2, 3, 1)  # (B, H, W, 4h): the whole map at once
        h = c = gates_is.new_zeros(B, W, self.hidden)  # row -1
        rows = []
        for row in gates_is.unbind(1):  # (B, W, 4h)
            padded = F.pad(h, (0, 0, 1, 1))  # (B, W+2, h)
            window = torch.cat([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], -1)  # (B, W, 3h)
            h, c = lstm_cell(row + self.state_to_state(window), c)
            rows.append(h)
        return torch.stack(rows, 1).permute(0, 3, 1, 2)


class DiagonalLSTM(nn.Module):
    """One direction of the Diagonal BiLSTM (section 3.2), left to right over the skewed map:
    ``(B, 2h, H, W)`` -> hidden states ``(B, h, H, W)``. The state at ``(i, j)`` comes from the
    states at ``(i - 1, j)`` and ``(i, j - 1)`` (the 2x1 ``K_ss`` over skewed column ``i + j - 1``)
    and the cell at ``(i, j - 1)``."""

    def __init__(self, hidden: int, channels: int):
        super().__init__()
        self.hidden = hidden
        self.input_to_state = GateConv(2 * hidden, hidden, (1, 1), channels)
        # K_ss, the 2x1 column convolution: [above, left] 2h -> 4h.
        self.state_to_state = nn.Linear(2 * hidden, 4 * hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        gates_is = skew(self.input_to_state(x)).permute(0, 3, 2, 1)  # (B, H+W-1, H, 4h); 1x1 commutes
        rows, cols = torch.arange(H, device=x.device)[:, None], torch.arange(H + W - 1, device=x.device)
        inside = ((cols >= rows) & (cols < rows + W)).T[..., None].to(gates_is.dtype)  # (H+W-1, H, 1)
        h = c = gates_is.new_zeros(B, H, self.hidden)  # column -1
        columns = []
        for k, column in enumerate(gates_is.unbind(1)):  # (B, H, 4h)
            # Row i of column k: the states of row i-1 (the pixel above) and row i (the pixel to
            # the left) in column k-1.
            above = F.pad(h, (0, 0, 1, 0))[:, :H]
            h, c = lstm_cell(column + self.state_to_state(torch.cat([above, h], -1)), c)
            h, c = h * inside[k], c * inside[k]  # outside the image: zero, like padding
            columns.append(h)
        return unskew(torch.stack(columns, 1).permute(0, 3, 2, 1))


class RowLSTMLayer(nn.Module):
    """Residual Row LSTM layer: ``x + 1x1_B(RowLSTM(x + bias))``, ``(B, 2h, H, W)`` in and out."""

    def __init__(self, hidden: int, kernel_size: int, channels: int):
        super().__init__()
        self.lstm = RowLSTM(hidden, kernel_size, channels)
        self.up = MaskedConv2d(hidden, 2 * hidden, 1, "B", channels)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | float = 0.0) -> torch.Tensor:
        return x + self.up(self.lstm(x + bias))


class DiagonalBiLSTMLayer(nn.Module):
    """Residual Diagonal BiLSTM layer: both directions, the right-to-left one mirrored back and
    shifted down one row, summed, ``1x1_B`` to 2h and added to the input. ``(B, 2h, H, W)``."""

    def __init__(self, hidden: int, channels: int):
        super().__init__()
        self.left_to_right = DiagonalLSTM(hidden, channels)
        self.right_to_left = DiagonalLSTM(hidden, channels)
        self.up = MaskedConv2d(hidden, 2 * hidden, 1, "B", channels)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | float = 0.0) -> torch.Tensor:
        u = x + bias
        r2l = self.right_to_left(u.flip(3)).flip(3)
        r2l = F.pad(r2l, (0, 0, 1, 0))[:, :, : x.shape[2]]  # row i gets row i-1: only complete rows
        return x + self.up(self.left_to_right(u) + r2l)


class PixelRNN(AutoregressiveModel):
    """The frame both PixelRNNs share: mask-A input convolution, LSTM layers, output layers.

    ``hidden`` is h (layers carry 2h features); ``out_hidden`` is the per-colour width of the
    output layer. Subclasses make ``self.layers``.
    """

    def __init__(self, channels: int, image_size: int | tuple[int, int], levels: int, num_classes: int | None,
                 hidden: int, num_layers: int, first_kernel_size: int, out_hidden: int):
        super().__init__(channels, image_size, levels, num_classes)
        check_ints(1, hidden=hidden, num_layers=num_layers, out_hidden=out_hidden)
        check_kernels(first_kernel_size=first_kernel_size)
        if hidden < channels:
            raise ValueError(f"hidden={hidden} must be at least channels={channels} (one group per colour)")
        self.hidden = hidden
        self.conv_in = MaskedConv2d(channels, 2 * hidden, first_kernel_size, "A", channels)
        self.label = nn.Embedding(num_classes, num_layers * 2 * hidden) if num_classes else None
        self.layers: nn.ModuleList
        self.out = MaskedConv2d(2 * hidden, channels * out_hidden, 1, "B", channels)
        self.head = CategoricalHead(out_hidden, channels, levels)

    def label_biases(self, cond: torch.Tensor | None) -> list[torch.Tensor | float]:
        """Per layer, the input bias ``(B, 2h, 1, 1)`` of labels ``cond (B,)`` (0.0 if unconditional)."""
        if self.label is None:
            return [0.0] * len(self.layers)
        b = self.label(cond).view(len(cond), len(self.layers), 2 * self.hidden, 1, 1)
        return list(b.unbind(1))

    def output_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last layer's map ``(B, 2h, H, W)`` -> output features ``(B, C*out_hidden, H, W)``."""
        return F.relu(self.out(F.relu(x)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in ``[0, K)`` -> logits ``(B, C, H, W, K)``."""
        h = self.conv_in(self.scale(x))
        for layer, bias in zip(self.layers, self.label_biases(cond), strict=True):
            h = layer(h, bias)
        return self.head(subpixels(self.output_features(h), self.channels))


class RowLSTMModel(PixelRNN):
    """Row LSTM PixelRNN (``row_lstm``). ``kernel_size`` is the input-to-state width k."""

    def __init__(self, channels: int, image_size: int | tuple[int, int], levels: int = 256,
                 num_classes: int | None = None, hidden: int = 8, num_layers: int = 2, kernel_size: int = 3,
                 first_kernel_size: int = 7, out_hidden: int = 16):
        check_kernels(kernel_size=kernel_size)
        super().__init__(channels, image_size, levels, num_classes, hidden, num_layers, first_kernel_size,
                         out_hidden)
        self.layers = nn.ModuleList(RowLSTMLayer(hidden, kernel_size, channels) for _ in range(num_layers))

    def decoder(self, batch_size, shape=None, cond=None):
        """Cached decoder: per layer the previous row's states; one LSTM step per position."""
        return RowLSTMDecoder(self, batch_size, shape or (self.channels, *self.image_size), cond)


class DiagonalBiLSTMModel(PixelRNN):
    """Diagonal BiLSTM PixelRNN (``diagonal_bilstm``)."""

    def __init__(self, channels: int, image_size: int | tuple[int, int], levels: int = 256,
                 num_classes: int | None = None, hidden: int = 8, num_layers: int = 2,
                 first_kernel_size: int = 7, out_hidden: int = 16):
        super().__init__(channels, image_size, levels, num_classes, hidden, num_layers, first_kernel_size,
                         out_hidden)
        self.layers = nn.ModuleList(DiagonalBiLSTMLayer(hidden, channels) for _ in range(num_layers))

    def decoder(self, batch_size, shape=None, cond=None):
        """Cached decoder: left-to-right steps per position, the right-to-left pass per finished row."""
        return DiagonalBiLSTMDecoder(self, batch_size, shape or (self.channels, *self.image_size), cond)


class _PixelRNNDecoder(_PixelDecoder):
    """Shared by both PixelRNN decoders: a ``ConvCache`` for the 7x7 input convolution, and a step
    that runs every layer at one position.

    Every state at pixel ``(i, j)`` depends only on sub-pixels before ``(i, j, C-1)`` (mask A, then
    mask B), so the states computed for the pixel's last colour are final: ``pixel_done`` commits
    those (``self.pending``) and only the input convolution needs the complete pixel.
    """

    def __init__(self, model: PixelRNN, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None):
        super().__init__(model, batch_size, shape)
        self.biases = model.label_biases(cond)
        self.input_cache = ConvCache(model.conv_in, batch_size, self.H, self.W, self.device, self.dtype)
        self.pending: list = []

    def zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(*shape, device=self.device, dtype=self.dtype)

    def next_logits(self) -> torch.Tensor:
        i, j, c = self.position()
        self.input_cache.i, self.input_cache.j = i, j
        x = self.model.conv_in(self.pixel.to(self.dtype)[:, :, None, None], self.input_cache)[:, :, 0, 0]
        self.pending = []
        for l, (layer, bias) in enumerate(zip(self.model.layers, self.biases, strict=True)):
            u = x + (bias[:, :, 0, 0] if torch.is_tensor(bias) else bias)
            out, state = self.layer_step(l, layer, u, i, j)
            self.pending.append(state)
            x = x + layer.up(out[:, :, None, None])[:, :, 0, 0]
        return self.logits_from(self.model.output_features(x[:, :, None, None]), c)

    def layer_step(self, l: int, layer: nn.Module, u: torch.Tensor, i: int, j: int):
        """Layer ``l``'s LSTM output ``(B, h)`` at ``(i, j)`` from its input ``u (B, 2h)``, and the
        state to commit when the pixel is done."""
        raise NotImplementedError

    def pixel_done(self, i, j, pixel):
        self.input_cache.write(pixel, i, j)
        self.commit(i, j)

    def commit(self, i: int, j: int) -> None:
        raise NotImplementedError


class RowLSTMDecoder(_PixelRNNDecoder):
    """Cached decoding of ``RowLSTMModel``. Per layer it keeps a ``ConvCache`` of the input map (for
    the 1 x k input-to-state), the previous row's hidden state (zero-padded by one column each side)
    and cell state, and the current row's as its pixels are completed. A step runs, per layer, one
    input-to-state window, one width-3 state-to-state window and one cell update."""

    def __init__(self, model: RowLSTMModel, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None):
        super().__init__(model, batch_size, shape, cond)
        h, B, W = model.hidden, batch_size, self.W
        self.caches = [ConvCache(layer.lstm.input_to_state, B, self.H, W, self.device, self.dtype)
                       for layer in model.layers]
        self.h_prev = [self.zeros(B, W + 2, h) for _ in model.layers]  # row i-1, padded
        self.c_prev = [self.zeros(B, W, h) for _ in model.layers]
        self.h_row = [self.zeros(B, W + 2, h) for _ in model.layers]  # row i
        self.c_row = [self.zeros(B, W, h) for _ in model.layers]

    def layer_step(self, l, layer, u, i, j):
        cache = self.caches[l]
        cache.i, cache.j = i, j
        gates = (layer.lstm.input_to_state(u[:, :, None, None], cache)[:, :, 0, 0]
                 + layer.lstm.state_to_state(self.h_prev[l][:, j : j + 3].flatten(1)))
        h, c = lstm_cell(gates, self.c_prev[l][:, j])
        return h, (h, c)

    def commit(self, i, j):
        for l, (h, c) in enumerate(self.pending):
            self.h_row[l][:, j + 1] = h
            self.c_row[l][:, j] = c
        if j == self.W - 1:  # the row is complete: it becomes the previous row
            self.h_prev, self.h_row = self.h_row, self.h_prev
            self.c_prev, self.c_row = self.c_row, self.c_prev


class DiagonalBiLSTMDecoder(_PixelRNNDecoder):
    """Cached decoding of ``DiagonalBiLSTMModel``.

    Per layer it keeps the left-to-right hidden states of the previous and the current row, the
    cell state of the pixel to the left, the layer's inputs along the current row, and the
    right-to-left hidden states of the previous row. A step runs, per layer, one left-to-right LSTM
    step (1x1 input-to-state, 2x1 state-to-state over the pixels above and to the left) and adds the
    right-to-left state of the pixel above (the shift by one row). When a row is complete, every
    layer's inputs on it are final, and the right-to-left pass runs over it, right to left, from
    those inputs and the right-to-left states of the row above: W steps once per row.
    """

    def __init__(self, model: DiagonalBiLSTMModel, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None):
        super().__init__(model, batch_size, shape, cond)
        h, B, W = model.hidden, batch_size, self.W
        self.h_prev = [self.zeros(B, h, W) for _ in model.layers]  # left-to-right, row i-1
        self.h_row = [self.zeros(B, h, W) for _ in model.layers]  # left-to-right, row i
        self.c_left = [self.zeros(B, h) for _ in model.layers]  # left-to-right cell at (i, j-1)
        self.u_row = [self.zeros(B, 2 * h, W) for _ in model.layers]  # layer inputs on row i
        self.r2l_prev = [self.zeros(B, h, W) for _ in model.layers]  # right-to-left, row i-1

    def layer_step(self, l, layer, u, i, j):
        lstm = layer.left_to_right
        left = self.h_row[l][:, :, j - 1] if j > 0 else self.zeros(len(u), self.model.hidden)
        c_left = self.c_left[l] if j > 0 else torch.zeros_like(self.c_left[l])
        gates = (lstm.input_to_state(u[:, :, None, None])[:, :, 0, 0]
                 + lstm.state_to_state(torch.cat([self.h_prev[l][:, :, j], left], -1)))
        h, c = lstm_cell(gates, c_left)
        return h + self.r2l_prev[l][:, :, j], (h, c, u)

    def commit(self, i, j):
        for l, (h, c, u) in enumerate(self.pending):
            self.h_row[l][:, :, j] = h
            self.c_left[l] = c
            self.u_row[l][:, :, j] = u
        if j == self.W - 1:
            rows = zip(self.model.layers, self.u_row, self.r2l_prev, strict=True)
            self.r2l_prev = [self.right_to_left_row(layer.right_to_left, u, up) for layer, u, up in rows]
            self.h_prev, self.h_row = self.h_row, self.h_prev

    def right_to_left_row(self, lstm: DiagonalLSTM, u_row: torch.Tensor, above: torch.Tensor) -> torch.Tensor:
        """The right-to-left hidden states ``(B, h, W)`` of a complete row from the layer's inputs on
        it ``u_row (B, 2h, W)`` and the right-to-left states of the row above ``(B, h, W)``."""
        gates_is = lstm.input_to_state(u_row[:, :, None, :])[:, :, 0]  # (B, 4h, W)
        h = c = torch.zeros_like(above[:, :, 0])  # right of the row: outside the image
        out = torch.zeros_like(above)
        for j in reversed(range(self.W)):
            gates = gates_is[:, :, j] + lstm.state_to_state(torch.cat([above[:, :, j], h], -1))
            h, c = lstm_cell(gates, c)
            out[:, :, j] = h
        return out
