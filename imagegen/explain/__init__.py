"""Looking inside a model: per-sub-pixel likelihood maps (``nll``), attention maps of the Image
Transformer (``attention``), gradient receptive fields (``receptive_field``), generation as it
happens (``animate``), and the pictures of them (``plotting``, needs ``imagegen[viz]``).

Every map is of one image ``(C, H, W)`` and laid out like it; a sub-pixel is named
``(channel, row, col)`` and has the flat index ``(row * W + col) * C + channel``.
"""

from .animate import Animation, watch
from .attention import AttentionMap, attention_map
from .nll import nll_map
from .receptive_field import future, receptive_field

__all__ = ["Animation", "AttentionMap", "attention_map", "future", "nll_map", "receptive_field", "watch"]
