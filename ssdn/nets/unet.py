"""The five-level U-Net of Laine et al. 2019 (Table 4): baseline and convolutional blind-spot variants."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SIDE_MULTIPLE = 32  # five 2×2 poolings
MAX_BLIND_HOLE = 11
"""Largest `UNet.blind_hole` offered: up to it, every pixel farther than the hole's ring (Chebyshev distance
k = (hole + 1) / 2) was read wherever tested (tests/test_blind_region.py); at 13, pixels beyond the ring went
unread at some positions, so the blind region would no longer be the square and its ring's corners."""
_SLOPE = 0.1
_ENC = 48
_DEC = 96


def _act(x: torch.Tensor) -> torch.Tensor:
    # In place: callers pass fresh conv outputs, and leaky ReLU's backward only needs the result's sign.
    return F.leaky_relu_(x, _SLOPE)


def _half_plane_pad(x: torch.Tensor) -> torch.Tensor:
    """Zero padding after which a valid 3×3 conv's output row i sees input rows i-2..i only.

    Same result as the paper's "zero row on top, SAME conv, drop the bottom row", with one copy and no crop.
    """
    return F.pad(x, (1, 1, 2, 0))


def _shift_down(x: torch.Tensor, rows: int) -> torch.Tensor:
    """SHIFT: ``rows`` zero rows on top, as many dropped at the bottom, so a branch output at row i sees only
    rows <= i - rows (``rows`` = 1: strictly above it, the paper's SHIFT)."""
    return F.pad(x, (0, 0, rows, -rows))


def _like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` in channels_last memory format if ``ref`` is unambiguously in it, else unchanged."""
    if ref.is_contiguous(memory_format=torch.channels_last) and not ref.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _upsample_kernel(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Per axis, nearest 2× upsampling followed by the 3 taps w0..w2 is a stride-2 transposed conv with
    the 4 taps [w2, w1+w2, w0+w1, w0] (each output pixel then reads 2 low-res pixels instead of 3 copies)."""
    w0, w1, w2 = w.unbind(dim)
    return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)


def authors_init(net: nn.Module, last: nn.Module, zero_last: bool = False) -> None:
    """The authors' init of a U-Net (2D or 3D): conv weights N(0, gain²/fan_in), gain √2, zero biases; the last
    1×1 conv ``last`` with gain 1, or zeros."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    assert isinstance(last.weight, torch.Tensor)
    if zero_last:
        nn.init.zeros_(last.weight)
    else:
        nn.init.normal_(last.weight, std=1.0 / math.sqrt(last.weight[0].numel()))


class UNet(nn.Module):
    """Table 4 U-Net: 48-channel encoder, 96-channel decoder, three 1×1 layers at the end.

    ``blindspot=True`` builds the convolutional blind-spot net: the output at a pixel never depends on the
    input at that pixel (any channel) but does on all 8 neighbours. Four rotations of the input run through
    one trunk (`trunk`) whose 3×3 convs and poolings only look upwards and whose output is shifted down one
    row; the rotations are then undone and concatenated (4×96 channels) before the 1×1 layers. A square input
    stacks the four rotations on the batch axis (one pass, as the paper); an H×W one with H ≠ W cannot (90°
    turns it W×H), so it runs the trunk twice, on [x, rot180 x] and on [rot90 x, rot270 x] (`two_pass`):
    same function, no padding to a square. Input: H and W positive multiples of 32, for both variants.

    ``blind_hole`` (odd, default 1: the paper's net) widens the blind spot to a square, for noise that is
    correlated between neighbouring pixels (camera processing), where a one-pixel hole lets the net read the
    noise from its neighbours: each branch is shifted down k = (hole + 1) / 2 rows instead of one, so output
    (i, j) never reads an input pixel with |di| < k and |dj| < k (exact, by construction). It reads every
    pixel of the ring just outside that lies within 2 of an axis (min(|di|, |dj|) <= 2), since each branch's
    apex row is read ±2 columns wide by the two full-resolution convs: the whole ring for holes 1 and 3. A
    ring pixel with |di|, |dj| >= 3 (holes >= 5) is read only where the 32-pixel pooling grid lets a deeper
    layer reach it, so for those holes the blind region is the square plus, at some pixels, the ring's
    corners (tests/test_blind_region.py checks every place in the grid); everything beyond the ring is read.
    Settable after construction (a shift has no weights), so one trained net can run with another hole at
    inference (``method.blind_hole_infer``).
    Padding to those sizes is the caller's job (`ssdn.nets.padding`).

    Layer names are the authors' (``enc_conv0`` … ``dec_conv1b``, ``nin_a`` … ``nin_c``) and decoder convs
    keep their concat([upsampled, skip]) input layout, so converting their weights is a renaming. The
    decoder computes conv(concat(upsample(low), skip)) without building the upsampled map, as a stride-2
    transposed conv of ``low`` plus a conv of ``skip`` (`_up_conv`): same function, 23% fewer multiply-adds
    in the trunk. To read the network as the paper describes it, see `ssdn.nets.reference.table4_forward`
    (Table 4 row by row, on this net's weights); tests/test_nets.py pins this fast net against it.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 9,
        blindspot: bool = True,
        zero_last: bool = False,
        blind_hole: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.blindspot = blindspot
        self.blind_hole = blind_hole
        #: Blind spot: square inputs take the two-pass path of non-square ones too (same output); traced exports
        #: set it, so that one graph, free of the shape test, takes any H×W.
        self.two_pass = False
        self.enc_conv0 = nn.Conv2d(in_channels, _ENC, 3)
        self.enc_conv1 = nn.Conv2d(_ENC, _ENC, 3)
        self.enc_conv2 = nn.Conv2d(_ENC, _ENC, 3)
        self.enc_conv3 = nn.Conv2d(_ENC, _ENC, 3)
        self.enc_conv4 = nn.Conv2d(_ENC, _ENC, 3)
        self.enc_conv5 = nn.Conv2d(_ENC, _ENC, 3)
        self.enc_conv6 = nn.Conv2d(_ENC, _ENC, 3)
        self.dec_conv5a = nn.Conv2d(_ENC + _ENC, _DEC, 3)
        self.dec_conv5b = nn.Conv2d(_DEC, _DEC, 3)
        self.dec_conv4a = nn.Conv2d(_DEC + _ENC, _DEC, 3)
        self.dec_conv4b = nn.Conv2d(_DEC, _DEC, 3)
        self.dec_conv3a = nn.Conv2d(_DEC + _ENC, _DEC, 3)
        self.dec_conv3b = nn.Conv2d(_DEC, _DEC, 3)
        self.dec_conv2a = nn.Conv2d(_DEC + _ENC, _DEC, 3)
        self.dec_conv2b = nn.Conv2d(_DEC, _DEC, 3)
        self.dec_conv1a = nn.Conv2d(_DEC + in_channels, _DEC, 3)
        self.dec_conv1b = nn.Conv2d(_DEC, _DEC, 3)
        head = 4 * _DEC if blindspot else _DEC
        self.nin_a = nn.Conv2d(head, head, 1)
        self.nin_b = nn.Conv2d(head, _DEC, 1)
        self.nin_c = nn.Conv2d(_DEC, out_channels, 1)
        self.reset_parameters(zero_last)

    @property
    def blind_hole(self) -> int:
        """Side of the square blind region (odd; 1 is the paper's single pixel). Settable at any time: the
        hole is a shift of the trunk's output, not a weight, so one trained net runs with any hole."""
        return self._blind_hole

    @blind_hole.setter
    def blind_hole(self, hole: int) -> None:
        if isinstance(hole, bool) or not isinstance(hole, int) or hole < 1 or hole % 2 == 0:
            raise ValueError(f"blind_hole must be an odd integer >= 1 (1, 3, 5, ...), got {hole!r}")
        if hole > MAX_BLIND_HOLE:
            raise ValueError(
                f"blind_hole must be at most {MAX_BLIND_HOLE}, got {hole}: beyond that the trunk's field of view "
                "leaves pixels outside the hole's ring unseen (see ssdn.nets.unet.blind_region)"
            )
        if hole != 1 and not self.blindspot:
            raise ValueError(
                f"blind_hole={hole} needs the blind-spot net (blindspot=True); the baseline has no hole"
            )
        self._blind_hole = hole

    @property
    def blind_shift(self) -> int:
        """Rows each branch is shifted down: k = (hole + 1) / 2 hides the (2k - 1)² square around a pixel."""
        return (self._blind_hole + 1) // 2

    def reset_parameters(self, zero_last: bool = False) -> None:
        authors_init(self, self.nin_c, zero_last)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects (N, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = SIDE_MULTIPLE
        if h % m or w % m or h == 0 or w == 0:
            kind = "blind-spot UNet" if self.blindspot else "UNet"
            raise ValueError(
                f"the {kind} needs H and W to be positive multiples of {m} (it pools 5 times), got {h}×{w}; "
                "padding is the caller's job: see ssdn.nets.padding (pad_to_multiple, then crop)"
            )

    def _conv_input(self, x: torch.Tensor) -> torch.Tensor:
        """What a 3×3 conv reads: blind-spot, the half-plane zero padding; baseline, ``x`` (conv pads)."""
        return _half_plane_pad(x) if self.blindspot else x

    def _conv(self, layer: nn.Conv2d, x_in: torch.Tensor) -> torch.Tensor:
        """3×3 conv + leaky ReLU of a `_conv_input` tensor."""
        return _act(F.conv2d(x_in, layer.weight, layer.bias, padding=0 if self.blindspot else 1))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """2×2 max pool; blind-spot: offset down one row (zero row on top; floor mode drops the last row)."""
        if self.blindspot:
            x = F.pad(x, (0, 0, 1, 0))
        return F.max_pool2d(x, 2)

    def _up_conv(self, layer: nn.Conv2d, low: torch.Tensor, skip_in: torch.Tensor) -> torch.Tensor:
        """act(conv3×3(concat(upsample2×(low), skip))) with ``skip_in`` = `_conv_input` (skip).

        The upsampled part is a stride-2 transposed conv of ``low`` whose 4×4 kernel folds the 3×3 one
        (`_upsample_kernel`): padding 1 gives the baseline's SAME conv; the blind-spot conv's taps sit one
        row higher (rows i-2..i), which one zero row on top of ``low`` and a row padding of 2 give.
        """
        n_low = low.shape[1]
        w_up = _upsample_kernel(_upsample_kernel(layer.weight[:, :n_low], 2), 3).transpose(0, 1)
        w_skip = layer.weight[:, n_low:]
        if self.blindspot:
            up = F.conv_transpose2d(F.pad(low, (0, 0, 1, 0)), w_up, stride=2, padding=(2, 1))
            out = F.conv2d(skip_in, w_skip, layer.bias)
        else:
            up = F.conv_transpose2d(low, w_up, stride=2, padding=1)
            out = F.conv2d(skip_in, w_skip, layer.bias, padding=1)
        return _act(out.add_(up))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder and decoder up to ``dec_conv1b`` (96 channels), the branch shared by the four rotations.

        Blind-spot: every layer looks upwards only and the output is shifted down one row (SHIFT), so
        output row i depends on input rows < i only.
        """
        x_in = self._conv_input(x)
        skips = [x_in]  # kept as the convs read them: decoder convs reuse the encoder's padding
        h = self._conv(self.enc_conv1, self._conv_input(self._conv(self.enc_conv0, x_in)))
        for conv in (self.enc_conv2, self.enc_conv3, self.enc_conv4, self.enc_conv5):
            h_in = self._conv_input(self._pool(h))
            skips.append(h_in)
            h = self._conv(conv, h_in)
        h = self._conv(self.enc_conv6, self._conv_input(self._pool(h)))
        for a, b in (
            (self.dec_conv5a, self.dec_conv5b),
            (self.dec_conv4a, self.dec_conv4b),
            (self.dec_conv3a, self.dec_conv3b),
            (self.dec_conv2a, self.dec_conv2b),
            (self.dec_conv1a, self.dec_conv1b),
        ):
            h = self._conv(b, self._conv_input(self._up_conv(a, h, skips.pop())))
        return _shift_down(h, self.blind_shift) if self.blindspot else h

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Input of ``nin_a``: the trunk output (baseline) or ROTATE → trunk → UNROTATE (blind spot).

        Rotation k's branch is channels 96k..96k+95 on either path: a square input runs the four rotations
        as one 4N batch; otherwise (or with `two_pass`) [0°, 180°] (H×W) and [90°, 270°] (W×H) are two 2N
        batches (each pass holds half the trunk's activations).
        """
        if not self.blindspot:
            return self.trunk(x)

        # torch.rot90 returns plain strides; restoring channels_last (when in use) keeps convs and cat fast.
        def rotated(turns: tuple[int, ...]) -> torch.Tensor:
            return _like(torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in turns]), x)

        if not self.two_pass and x.shape[-2] == x.shape[-1]:
            branches = self.trunk(rotated((0, 1, 2, 3))).chunk(4)
        else:
            upright = self.trunk(rotated((0, 2))).chunk(2)
            sideways = self.trunk(rotated((1, 3))).chunk(2)
            branches = (upright[0], sideways[0], upright[1], sideways[1])
        unrotated = [branches[0]] + [
            _like(torch.rot90(b, -k, dims=(2, 3)), b) for k, b in enumerate(branches) if k
        ]
        return torch.cat(unrotated, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, K, H, W); see the class docstring for the size rules."""
        self._check_input(x)
        h = _act(self.nin_a(self.features(x)))
        h = _act(self.nin_b(h))
        return self.nin_c(h)
