"""PixelRNN: Row LSTM and Diagonal BiLSTM (van den Oord et al. 2016, "Pixel Recurrent Neural
Networks", section 3).

Both models share the paper's frame (figure 2 and table 1), with n = ``hidden`` (the paper's h): a
7x7 mask-A convolution to 2n features, ``num_layers`` residual LSTM layers (2n in; the
input-to-state convolution gives n features per gate; the LSTM's n-feature output goes back to 2n
through a 1x1 mask-B convolution and is added to the layer's input, section 3.3), then ReLU, a 1x1
mask-B convolution, ReLU, and the shared 256-way head (per colour).

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
``masked.py``); each gate's n features are split the same way, and gate group ``g`` is computed
from input groups ``<= g`` at the current pixel (mask B; mask A in the first layer sees ``< g``).
The cell and hidden state updates are elementwise, so state group ``g`` at a pixel depends on
input sub-pixels of colours ``< g`` there and never on later ones: G at ``(i, j)`` sees R at
``(i, j)`` and R never sees G. ``K_ss`` needs no colour mask: it reads only states of pixels that
come entirely before the current one (the row above; for the Diagonal BiLSTM also the pixel to the
left), and every colour of those is already known. The gradient causality tests check this for
3 channels.

Class conditioning adds a learned bias per label to every LSTM layer's input (``V y``, y one-hot).

Cached decoding (``RasterModel``) runs every layer at one pixel per step: each LSTM layer keeps the
states of the row above and of the current row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .base import RasterModel, check_ints, check_kernels
from .decoding import DecodingState
from .head import CategoricalHead
from .masked import MaskedConv2d, causal_mask

Bias = torch.Tensor | float  # a layer's input bias: (B, 2n, 1, 1) of the labels, or 0


class GateConv(MaskedConv2d):
    """Input-to-state convolution ``K_is``: 2n features -> four gates of n features each.

    The output is laid out gate-major, ``[o | f | i | g]``, and each gate's n features carry the
    colour groups of an n-feature map, so output feature ``q * n + k`` is masked like feature ``k``
    of an n-output ``MaskedConv2d`` (any n >= channels works, not just multiples of 3).
    """

    def __init__(self, in_features: int, hidden: int, kernel: tuple[int, int], channels: int,
                 center: tuple[int, int] | None = None):
        super().__init__(in_features, 4 * hidden, kernel, "B", channels, center=center)
        self.mask = causal_mask(hidden, in_features, kernel, self.center, "B", channels).repeat(4, 1, 1, 1)


def lstm_cell(gates: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Equation 3 from the summed gate pre-activations, features last: ``gates (..., 4n)`` laid out
    ``[o | f | i | g]`` and the previous cell ``(..., n)`` -> the hidden state and cell, ``(..., n)``."""
    o, f, i, g = gates.unflatten(-1, (4, -1)).unbind(-2)
    c = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
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
    """One Row LSTM (section 3.1): ``(B, 2n, H, W)`` -> hidden states ``(B, n, H, W)``.
    ``K_ss``, the width-3 convolution over the previous row, maps ``[left, centre, right]`` 3n -> 4n."""

    def __init__(self, hidden: int, kernel_size: int, channels: int):
        super().__init__()
        self.hidden = hidden
        self.input_to_state = GateConv(2 * hidden, hidden, (1, kernel_size), channels,
                                       center=(0, kernel_size // 2))
        self.state_to_state = nn.Linear(3 * hidden, 4 * hidden, bias=False)

    def forward(self, x: torch.Tensor, state: DecodingState | None = None) -> torch.Tensor:
        """``(B, 2n, H, W) -> (B, n, H, W)``, one batched step per row; with a decoding ``state``, one
        step at its pixel (``step``)."""
        if state is not None:
            return self.step(x, state)
        B, _, H, W = x.shape
        gates_is = self.input_to_state(x).permute(0, 2, 3, 1)  # (B, H, W, 4n): the whole map at once
        out = cell = gates_is.new_zeros(B, W, self.hidden)  # row -1
        rows = []
        for row in gates_is.unbind(1):  # (B, W, 4n)
            padded = F.pad(out, (0, 0, 1, 1))  # (B, W+2, n)
            window = torch.cat([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], -1)  # (B, W, 3n)
            out, cell = lstm_cell(row + self.state_to_state(window), cell)
            rows.append(out)
        return torch.stack(rows, 1).permute(0, 3, 1, 2)

    def step(self, x: torch.Tensor, state: DecodingState) -> torch.Tensor:
        """Input ``(B, 2n, 1, 1)`` at pixel ``(i, j)`` -> hidden state ``(B, n, 1, 1)`` there: one
        input-to-state window, one width-3 window of the row above, one cell update. Keeps the hidden
        states ``(B, W + 2, n)`` (a zero column each side) and cells ``(B, W, n)`` of two rows: the row
        above and row ``i``, in turn in each buffer."""
        B, W, n, (i, j) = state.batch_size, state.shape[2], self.hidden, (state.i, state.j)
        hidden, cells = state.cache(self, lambda: (state.zeros(2, B, W + 2, n), state.zeros(2, B, W, n)))
        above, row = (i + 1) % 2, i % 2
        window = hidden[above, :, j : j + 3].flatten(1)  # (B, 3n): left, centre, right of the row above
        gates = self.input_to_state(x, state)[:, :, 0, 0] + self.state_to_state(window)
        out, cell = lstm_cell(gates, cells[above, :, j])
        hidden[row, :, j + 1], cells[row, :, j] = out, cell
        return out[:, :, None, None]


class DiagonalLSTM(nn.Module):
    """One direction of the Diagonal BiLSTM (section 3.2), left to right over the skewed map:
    ``(B, 2n, H, W)`` -> hidden states ``(B, n, H, W)``. The state at ``(i, j)`` comes from the
    states at ``(i - 1, j)`` and ``(i, j - 1)`` (the 2x1 ``K_ss`` over skewed column ``i + j - 1``)
    and the cell at ``(i, j - 1)``."""

    def __init__(self, hidden: int, channels: int):
        super().__init__()
        self.hidden = hidden
        self.input_to_state = GateConv(2 * hidden, hidden, (1, 1), channels)
        # K_ss, the 2x1 column convolution: [above, left] 2n -> 4n.
        self.state_to_state = nn.Linear(2 * hidden, 4 * hidden, bias=False)

    def cell(self, gates_is: torch.Tensor, above: torch.Tensor, left: torch.Tensor, cell: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """One LSTM step from the input-to-state gates ``(..., 4n)``, the hidden states above and to the
        left ``(..., n)`` and the cell to the left -> the hidden state and cell ``(..., n)``."""
        return lstm_cell(gates_is + self.state_to_state(torch.cat([above, left], -1)), cell)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        gates_is = skew(self.input_to_state(x)).permute(0, 3, 2, 1)  # (B, H+W-1, H, 4n); 1x1 commutes
        rows, cols = torch.arange(H, device=x.device)[:, None], torch.arange(H + W - 1, device=x.device)
        inside = ((cols >= rows) & (cols < rows + W)).T[..., None].to(gates_is.dtype)  # (H+W-1, H, 1)
        out = cell = gates_is.new_zeros(B, H, self.hidden)  # column -1
        columns = []
        for k, column in enumerate(gates_is.unbind(1)):  # (B, H, 4n)
            # Row i of column k: the states of row i-1 (the pixel above) and row i (the pixel to
            # the left) in column k-1.
            above = F.pad(out, (0, 0, 1, 0))[:, :H]
            out, cell = self.cell(column, above, out, cell)
            out, cell = out * inside[k], cell * inside[k]  # outside the image: zero, like padding
            columns.append(out)
        return unskew(torch.stack(columns, 1).permute(0, 3, 2, 1))

    def row_right_to_left(self, inputs: torch.Tensor, above: torch.Tensor) -> torch.Tensor:
        """This direction run right to left over one complete row of the unmirrored map: the layer's
        inputs on it ``(B, 2n, W)`` and the hidden states of the row above ``(B, n, W)`` -> the row's
        hidden states ``(B, n, W)``."""
        gates_is = self.input_to_state(inputs[:, :, None, :])[:, :, 0]  # (B, 4n, W)
        out = cell = torch.zeros_like(above[:, :, 0])  # right of the row: outside the image
        row = torch.zeros_like(above)
        for j in reversed(range(inputs.shape[2])):
            out, cell = self.cell(gates_is[:, :, j], above[:, :, j], out, cell)
            row[:, :, j] = out
        return row


class RowLSTMLayer(nn.Module):
    """Residual Row LSTM layer: ``x + 1x1_B(RowLSTM(x + bias))``, ``(B, 2n, H, W)`` in and out (one pixel
    ``(B, 2n, 1, 1)`` with a decoding state)."""

    def __init__(self, hidden: int, kernel_size: int, channels: int):
        super().__init__()
        self.lstm = RowLSTM(hidden, kernel_size, channels)
        self.up = MaskedConv2d(hidden, 2 * hidden, 1, "B", channels)

    def forward(self, x: torch.Tensor, bias: Bias = 0.0, state: DecodingState | None = None) -> torch.Tensor:
        return x + self.up(self.lstm(x + bias, state))


class DiagonalBiLSTMLayer(nn.Module):
    """Residual Diagonal BiLSTM layer: both directions, the right-to-left one mirrored back and
    shifted down one row, summed, ``1x1_B`` to 2n and added to the input. ``(B, 2n, H, W)``."""

    def __init__(self, hidden: int, channels: int):
        super().__init__()
        self.left_to_right = DiagonalLSTM(hidden, channels)
        self.right_to_left = DiagonalLSTM(hidden, channels)
        self.up = MaskedConv2d(hidden, 2 * hidden, 1, "B", channels)

    def forward(self, x: torch.Tensor, bias: Bias = 0.0, state: DecodingState | None = None) -> torch.Tensor:
        """``(B, 2n, H, W)`` in and out; with a decoding ``state``, one step at its pixel (``step``)."""
        if state is not None:
            return self.step(x, bias, state)
        u = x + bias
        r2l = self.right_to_left(u.flip(3)).flip(3)
        r2l = F.pad(r2l, (0, 0, 1, 0))[:, :, : x.shape[2]]  # row i gets row i-1: only complete rows
        return x + self.up(self.left_to_right(u) + r2l)

    def step(self, x: torch.Tensor, bias: Bias, state: DecodingState) -> torch.Tensor:
        """One pixel ``(B, 2n, 1, 1)`` at ``(i, j)``: one left-to-right LSTM step from the states above and
        to the left, plus the right-to-left state of the pixel above (the shift by one row). On a row's
        first step the row above is complete, and the right-to-left pass runs over it, right to left,
        from the layer's inputs on it: W steps once per row."""
        B, W, n, (i, j) = state.batch_size, state.shape[2], self.left_to_right.hidden, (state.i, state.j)
        # Left-to-right hidden states of the row above and of row i (in turn in each buffer), the cells and
        # the layer's inputs on row i, and the right-to-left hidden states of the row above.
        hidden, cells, inputs, right_to_left = state.cache(self, lambda: (
            state.zeros(2, B, n, W), state.zeros(B, n, W), state.zeros(B, 2 * n, W), state.zeros(B, n, W)))
        if state.new_row and i:
            right_to_left.copy_(self.right_to_left.row_right_to_left(inputs, right_to_left))
        above, row = hidden[(i + 1) % 2], hidden[i % 2]
        u = (x + bias)[:, :, 0, 0]
        left = row[:, :, j - 1] if j else state.zeros(B, n)
        cell_left = cells[:, :, j - 1] if j else state.zeros(B, n)
        gates_is = self.left_to_right.input_to_state(u[:, :, None, None])[:, :, 0, 0]
        out, cell = self.left_to_right.cell(gates_is, above[:, :, j], left, cell_left)
        row[:, :, j], cells[:, :, j], inputs[:, :, j] = out, cell, u
        return x + self.up((out + right_to_left[:, :, j])[:, :, None, None])


class PixelRNN(RasterModel):
    """The frame both PixelRNNs share: mask-A input convolution, ``num_layers`` LSTM layers made by
    ``layer(hidden, channels)``, output layers. ``hidden`` is n (layers carry 2n features);
    ``out_hidden`` is the per-colour width of the output layer."""

    def __init__(self, *, layer: Callable[[int, int], nn.Module], hidden: int = 8, num_layers: int = 2,
                 first_kernel_size: int = 7, out_hidden: int = 16, **image):
        super().__init__(**image)
        check_ints(1, hidden=hidden, num_layers=num_layers, out_hidden=out_hidden)
        check_kernels(first_kernel_size=first_kernel_size)
        C = self.channels
        if hidden < C:
            raise ValueError(f"hidden={hidden} must be at least channels={C} (one group per colour)")
        self.hidden = hidden
        self.conv_in = MaskedConv2d(C, 2 * hidden, first_kernel_size, "A", C)
        self.label = nn.Embedding(self.num_classes, num_layers * 2 * hidden) if self.num_classes else None
        self.out = MaskedConv2d(2 * hidden, C * out_hidden, 1, "B", C)
        self.head = CategoricalHead(out_hidden, C, self.levels)
        self.layers = nn.ModuleList(layer(hidden, C) for _ in range(num_layers))

    def label_biases(self, cond: torch.Tensor | None) -> list[Bias]:
        """Per layer, the input bias ``(B, 2n, 1, 1)`` of labels ``cond (B,)`` (0.0 if unconditional)."""
        if self.label is None:
            return [0.0] * len(self.layers)
        b = self.label(cond).view(len(cond), len(self.layers), 2 * self.hidden, 1, 1)
        return list(b.unbind(1))

    def features(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                 state: DecodingState | None = None) -> torch.Tensor:
        """Scaled images ``(B, C, H, W)`` -> output features ``(B, C*out_hidden, H, W)``; with a
        decoding ``state``, one pixel (``RasterModel``); the label biases are made once per decoding."""
        biases = state.cache(self, lambda: self.label_biases(cond)) if state else self.label_biases(cond)
        out = self.conv_in(x, state)
        for layer, bias in zip(self.layers, biases, strict=True):
            out = layer(out, bias, state)
        return F.relu(self.out(F.relu(out)))


class RowLSTMModel(PixelRNN):
    """Row LSTM PixelRNN (``row_lstm``). ``kernel_size`` is the input-to-state width k."""

    name = "row_lstm"

    def __init__(self, *, kernel_size: int = 3, **frame):
        check_kernels(kernel_size=kernel_size)
        super().__init__(layer=lambda hidden, channels: RowLSTMLayer(hidden, kernel_size, channels), **frame)


class DiagonalBiLSTMModel(PixelRNN):
    """Diagonal BiLSTM PixelRNN (``diagonal_bilstm``)."""

    name = "diagonal_bilstm"

    def __init__(self, **frame):
        super().__init__(layer=DiagonalBiLSTMLayer, **frame)
