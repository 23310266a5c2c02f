"""The network of the paper's Table 4, written as the table reads: the readable reference for `UNet`.

Why a second implementation: the production `UNet` is fast rather than literal (it folds each UPSAMPLE +
convolution into a stride-2 transposed convolution and pads the blind-spot convolutions in one step). This
module is the paper's description taken literally, row by row of Table 4 with Section 2's blind-spot rules,
and runs on a `UNet`'s own weights; tests/test_nets.py pins the fast net to it (outputs and weight gradients
equal to 1e-10 in float64). It is slow (it builds every upsampled map) and is not used for training.

Blind-spot rules (Section 2): every 3×3 convolution and 2×2 max pooling may look only upwards (a zero row
on top, a SAME convolution, the bottom row cropped; SHIFT before pooling), four rotations of the input run
through the same trunk, and SHIFT moves the trunk's output down one row, so that after UNROTATE the output
at a pixel has seen all its neighbours but never the pixel itself. A blind hole of side 2k - 1 (`UNet.blind_hole`)
is SHIFT by k rows instead of one, here one zero row at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssdn.nets.unet import UNet

#: Leaky ReLU slope of every layer but the last (Appendix A).
SLOPE = 0.1


def shift(h: torch.Tensor) -> torch.Tensor:
    """SHIFT: one zero row on top, the last row dropped."""
    return F.pad(h, (0, 0, 1, 0))[:, :, :-1]


def shift_hole(hole: int, h: torch.Tensor) -> torch.Tensor:
    """SHIFT (hole + 1) / 2 times: the branch output at row i sees rows <= i - (hole + 1) / 2."""
    for _ in range((hole + 1) // 2):
        h = shift(h)
    return h


def table4_forward(net: UNet, x: torch.Tensor, blind_hole: int | None = None) -> torch.Tensor:
    """Table 4 applied to ``x`` (N, C, H, W) with ``net``'s weights; the blind-spot variant when
    ``net.blindspot``, with a blind hole of side ``blind_hole`` (default ``net.blind_hole``). Same output as
    ``net(x)`` with that hole (to rounding)."""
    blindspot = net.blindspot
    hole = net.blind_hole if blind_hole is None else blind_hole
    if hole < 1 or hole % 2 == 0:
        raise ValueError(f"blind_hole must be an odd integer >= 1, got {hole}")

    def conv3x3(layer: nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
        """Convolution 3×3 + leaky ReLU; in the blind-spot net its receptive field extends upwards only."""
        if blindspot:
            h = F.conv2d(F.pad(h, (0, 0, 1, 0)), layer.weight, layer.bias, padding=1)[:, :, :-1]
        else:
            h = F.conv2d(h, layer.weight, layer.bias, padding=1)
        return F.leaky_relu(h, SLOPE)

    def conv1x1(layer: nn.Conv2d, h: torch.Tensor, linear: bool = False) -> torch.Tensor:
        h = F.conv2d(h, layer.weight, layer.bias)
        return h if linear else F.leaky_relu(h, SLOPE)

    def pool(h: torch.Tensor) -> torch.Tensor:
        """Maxpool 2×2; shifted first in the blind-spot net so that it too looks only upwards."""
        return F.max_pool2d(shift(h) if blindspot else h, 2)

    def upsample(h: torch.Tensor) -> torch.Tensor:
        """Upsample 2×2 (nearest neighbour)."""
        return h.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)

    def branch(inp: torch.Tensor) -> torch.Tensor:
        """Encoder and decoder: everything from the input to the last 3×3 convolution."""
        pool1 = pool(conv3x3(net.enc_conv1, conv3x3(net.enc_conv0, inp)))
        pool2 = pool(conv3x3(net.enc_conv2, pool1))
        pool3 = pool(conv3x3(net.enc_conv3, pool2))
        pool4 = pool(conv3x3(net.enc_conv4, pool3))
        pool5 = pool(conv3x3(net.enc_conv5, pool4))
        h = conv3x3(net.enc_conv6, pool5)
        for level, skip in ((5, pool4), (4, pool3), (3, pool2), (2, pool1), (1, inp)):
            h = torch.cat([upsample(h), skip], dim=1)  # UPSAMPLE, CONCAT
            h = conv3x3(getattr(net, f"dec_conv{level}a"), h)
            h = conv3x3(getattr(net, f"dec_conv{level}b"), h)
        return h

    if blindspot:
        # ROTATE by 0°, 90°, 180°, 270°, the shared branch on each, SHIFT, then UNROTATE and stack the four on
        # the channel axis. The paper stacks the rotations on the minibatch axis, which needs a square input;
        # one branch call per rotation is the same function and takes any H×W.
        turns = [
            torch.rot90(shift_hole(hole, branch(torch.rot90(x, k, dims=(2, 3)))), -k, dims=(2, 3))
            for k in range(4)
        ]
        h = torch.cat(turns, dim=1)
    else:
        h = branch(x)
    h = conv1x1(net.nin_a, h)
    h = conv1x1(net.nin_b, h)
    return conv1x1(net.nin_c, h, linear=True)
