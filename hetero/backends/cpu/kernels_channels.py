"""numba channel moves on channels-last tensors, for the cpu device's compiled plans.

ShuffleNet's shuffle is Reshape (N, C, H, W) -> (N, A, B, H, W), Transpose (0, 2, 1, 3, 4) and
Reshape back. Channels-last, both reshapes keep the bytes (the 5-D tensor is stored as
(N, H, W, A, B)) and the transpose is one small (A, B) -> (B, A) transpose per pixel
(``kernels_shared.swap_part``). A channel concat writes each part into its columns of the output's
pixel rows through a 256-byte table (``kernels_tail.concat_part``: the identity, or the part's
requantization). ``word_view`` gives the widest word a row of given widths moves in (a 3x3
stride-2 input's rows of pixels, ``steps_conv``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["word_view", "PIXELS_PER_ITEM"]

PIXELS_PER_ITEM = 256  # pixels per work item of the channel-move loops (kernels_shared)


def word_view(widths: tuple[int, ...]) -> np.dtype:
    """The widest unsigned word (8, 4, 2 or 1 bytes) dividing every width: rows of 8-bit values
    of these widths viewed as words of it."""
    for size, dtype in ((8, np.uint64), (4, np.uint32), (2, np.uint16)):
        if all(w % size == 0 for w in widths):
            return np.dtype(dtype)
    return np.dtype(np.uint8)
