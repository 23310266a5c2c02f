"""The U-Net of Laine et al. 2019 (Table 4) carried to volumes: baseline and six-branch blind-spot 3D nets.

For microscopy stacks (ZYX), the paper's construction one dimension up: six rotations of the volume, one per
half-space (±Z, ±Y, ±X), run through one trunk whose convs and poolings read only their own slab and the
slabs above it, then a one-voxel shift, so after rotating back the output at a voxel never depends on that
voxel (any channel) and depends on all 26 neighbours. The noise models and the posterior mean act on each
pixel's channel vector and apply to voxels unchanged (tests/test_nets3d.py shows it). Anisotropic voxels
and the cost on CPUs (``pool_z``, ``levels``, widths) are in `UNet3D`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ssdn.nets.unet import authors_init

__all__ = ["UNet3D", "padded_shape3d"]

_SLOPE = 0.1

Pools = tuple[tuple[int, int, int], ...]
"""Per pooling level, the window along the trunk's three axes (2: halve, 1: keep)."""


def _act(x: torch.Tensor) -> torch.Tensor:
    # In place: callers pass fresh conv outputs, and leaky ReLU's backward only needs the result's sign.
    return F.leaky_relu_(x, _SLOPE)


def _shift_down(x: torch.Tensor) -> torch.Tensor:
    """SHIFT: one zero slab on top, the last one dropped: a branch output sees only slabs strictly above it."""
    return F.pad(x, (0, 0, 0, 0, 1, -1))


def _upsample(x: torch.Tensor, window: tuple[int, int, int]) -> torch.Tensor:
    """Nearest-neighbour upsampling that undoes a pooling with ``window``."""
    for axis, k in enumerate(window, start=2):
        if k > 1:
            x = x.repeat_interleave(k, dim=axis)
    return x


def _like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` in channels_last_3d memory format if ``ref`` is unambiguously in it, else unchanged."""
    if ref.is_contiguous(memory_format=torch.channels_last_3d) and not ref.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def padded_shape3d(d: int, h: int, w: int, multiple: Sequence[int]) -> tuple[int, int, int]:
    """(D, H, W) that holds a d×h×w volume, each side rounded up to its own ``multiple`` (e.g. a net's
    `UNet3D.side_multiple`)."""
    if len(multiple) != 3 or min(d, h, w, *multiple) < 1:
        raise ValueError(
            f"padded_shape3d needs positive d, h, w and three multiples, got {d, h, w}, {multiple}"
        )
    md, mh, mw = multiple
    return -(-d // md) * md, -(-h // mh) * mh, -(-w // mw) * mw


class UNet3D(nn.Module):
    """Table 4's U-Net with 3×3×3 convs; ``blindspot=True`` (default) builds the six-branch blind-spot net.

    Trunk: ``encoder[0]``, ``encoder[1]``, then per level a 2×2×2 max pooling and one conv (``encoder[2]`` …,
    the last one the bottleneck), then per level back up a nearest upsampling, concat with the skip and two
    convs (``decoder``, deepest level first) — for ``levels=5`` exactly Table 4's enc_conv0…6 and
    dec_conv5a…1b. Head: three 1×1×1 convs (``nin_a``, ``nin_b``, ``nin_c``), ``nin_a`` taking the six
    branches' 6·``dec_channels`` features (blind spot) or ``dec_channels`` (baseline).

    Blind spot: the six branches' features are stacked on the channel axis in this order of the open
    half-space the output at (z, y, x) reads: z' < z, z' > z, y' > y, x' < x, y' < y, x' > x. Branches whose
    rotated volumes have the same shape and pooling run as one batch through the trunk (all six for a cube
    with isotropic pooling); others run apart, as the 2D net's ``two_pass``.
    ``three_pass=True`` always runs the three pairs ±Z, ±Y, ±X apart (same function): a traced export then
    takes any D×H×W.

    Input: (N, C, D, H, W) with D, H, W positive multiples of `side_multiple`; padding is the caller's.

    Anisotropic voxels (Z steps coarser than Y/X, usual in light microscopy): ``pool_z=False`` pools only in
    Y/X, and ``pool_z=k`` lets only the k deepest poolings also halve Z (the first ones, at full resolution,
    pool Y/X alone until the voxels are about isotropic); Z then needs to be a multiple of 2**k only. The ±Y
    and ±X branches are the 2D net's four rotations of each Z plane, so Z keeps one trunk axis in all four. The
    trunk is shared by all six as in the paper, so with anisotropic voxels its kernels see Z-up and Z-lateral
    views of different spacings; each branch keeps its own channels in the head, which can weight them apart.

    Cost: the paper's widths (48-channel encoder, 96-channel decoder) and five poolings are the defaults:
    26 MFLOP per voxel for forward + backward (`torch.utils.flop_counter`), 4.4× the 2D net's per pixel, 3.4
    TFLOP for one 32×64×64 volume (31 MFLOP per voxel with ``pool_z=False``); the baseline costs 4 MFLOP per
    voxel. For CPU budgets ``levels``, ``enc_channels`` and ``dec_channels`` trade receptive field and capacity
    for time: ``levels=4, enc_channels=32, dec_channels=64`` is 12 MFLOP per voxel. On CPUs,
    ``net.to(memory_format=torch.channels_last_3d)`` (kept through the rotations) with bf16 autocast is the
    fast path, as channels_last is for the 2D net.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        blindspot: bool = True,
        *,
        levels: int = 5,
        pool_z: bool | int = True,
        enc_channels: int = 48,
        dec_channels: int = 96,
        zero_last: bool = False,
    ) -> None:
        super().__init__()
        if levels < 1 or enc_channels < 1 or dec_channels < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError(
                "UNet3D needs levels, channel counts and widths >= 1, got "
                f"levels={levels}, in={in_channels}, out={out_channels}, enc={enc_channels}, dec={dec_channels}"
            )
        z_pools = levels if pool_z is True else 0 if pool_z is False else pool_z
        if not 0 <= z_pools <= levels:
            raise ValueError(
                f"pool_z must be True, False or a count of poolings in 0..{levels}, got {pool_z!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.blindspot = blindspot
        self.levels = levels
        #: Per level (finest first), whether its pooling also halves Z: the deepest ``z_pools`` do.
        self.z_pooled = tuple(level >= levels - z_pools for level in range(levels))
        #: Blind spot: run ±Z, ±Y, ±X as three passes even where shapes would allow fewer (same output).
        self.three_pass = False
        enc, dec = enc_channels, dec_channels
        self.encoder = nn.ModuleList(
            [nn.Conv3d(in_channels, enc, 3)] + [nn.Conv3d(enc, enc, 3) for _ in range(levels + 1)]
        )
        decoder: list[nn.Module] = []
        for level in range(levels, 0, -1):  # deepest first; level 1 joins the raw input
            below = enc if level == levels else dec
            skip = in_channels if level == 1 else enc
            decoder += [nn.Conv3d(below + skip, dec, 3), nn.Conv3d(dec, dec, 3)]
        self.decoder = nn.ModuleList(decoder)
        head = 6 * dec if blindspot else dec
        self.nin_a = nn.Conv3d(head, head, 1)
        self.nin_b = nn.Conv3d(head, dec, 1)
        self.nin_c = nn.Conv3d(dec, out_channels, 1)
        self.reset_parameters(zero_last)

    @property
    def side_multiple(self) -> tuple[int, int, int]:
        """What D, H and W must be multiples of: 2**(poolings along that axis)."""
        return 2 ** sum(self.z_pooled), 2**self.levels, 2**self.levels

    def reset_parameters(self, zero_last: bool = False) -> None:
        authors_init(self, self.nin_c, zero_last)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet3D expects (N, {self.in_channels}, D, H, W) input, got shape {tuple(x.shape)}"
            )
        d, h, w = x.shape[2:]
        m = self.side_multiple
        if any(n == 0 or n % k for n, k in zip((d, h, w), m, strict=True)):
            kind = "blind-spot UNet3D" if self.blindspot else "UNet3D"
            want = "×".join(map(str, padded_shape3d(max(d, 1), max(h, 1), max(w, 1), m)))
            raise ValueError(
                f"the {kind} needs D, H, W to be positive multiples of {m[0]}, {m[1]}, {m[2]}, got "
                f"{d}×{h}×{w}; pad it to {want} (ssdn.nets.padded_shape3d) and crop the output"
            )

    def pools(self, z_axis: int) -> Pools:
        """Pooling windows along the trunk's axes when the volume's Z lies on trunk axis ``z_axis``."""
        windows = []
        for z in self.z_pooled:
            a, b, c = (2 if axis != z_axis or z else 1 for axis in range(3))
            windows.append((a, b, c))
        return tuple(windows)

    def _conv(self, layer: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        """3×3×3 conv + leaky ReLU; blind spot: reading the current slab and the ones above only.

        Blind spot: two zero slabs on top along axis 2 and a valid conv there give D output slabs, slab i reading
        input slabs i-2..i (the paper's "zero row on top, SAME conv, drop the bottom row"). Padding inside the
        conv and keeping a view of the first D slabs would save a copy, but the in-place activation on that view
        gave NaN gradients in bf16 channels_last_3d once other work had run (uninitialised memory read back).
        """
        if self.blindspot:
            return _act(F.conv3d(F.pad(x, (1, 1, 1, 1, 2, 0)), layer.weight, layer.bias))
        return _act(F.conv3d(x, layer.weight, layer.bias, padding=1))

    def _pool(self, x: torch.Tensor, window: tuple[int, int, int]) -> torch.Tensor:
        """Max pooling; blind spot and halving the up axis: offset down one slab first (zero slab on top,
        floor mode drops the last), so that the pooled slab i holds input slabs 2i-1 and 2i."""
        if self.blindspot and window[0] == 2:
            x = F.pad(x, (0, 0, 0, 0, 1, 0))
        return F.max_pool3d(x, window)

    def trunk(self, x: torch.Tensor, pools: Pools | None = None) -> torch.Tensor:
        """Encoder and decoder up to the last 3×3×3 conv (``dec_channels``), the branch the rotations share.

        ``pools`` defaults to the volume's own orientation (`pools` (0)). Blind spot: every layer looks up
        (towards lower indices of axis 2) only and the output is shifted by one slab, so output slab i depends
        on input slabs < i only.
        """
        pools = self.pools(0) if pools is None else pools
        enc = cast(list[nn.Conv3d], list(self.encoder))
        skips = [x]
        h = self._conv(enc[1], self._conv(enc[0], x))
        for conv, window in zip(enc[2:], pools, strict=True):
            h = self._pool(h, window)
            skips.append(h)
            h = self._conv(conv, h)
        skips.pop()  # the bottleneck's input is not a skip
        dec = cast(list[nn.Conv3d], list(self.decoder))
        for level in range(self.levels, 0, -1):
            a, b = dec[2 * (self.levels - level)], dec[2 * (self.levels - level) + 1]
            h = torch.cat([_upsample(h, pools[level - 1]), skips.pop()], dim=1)
            h = self._conv(b, self._conv(a, h))
        return _shift_down(h) if self.blindspot else h

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Input of ``nin_a``: the trunk output (baseline) or ROTATE → trunk → UNROTATE for the six branches.

        The z' < z branch sees the volume as it is, the z' > z one its half turn in the ZY plane; the four
        lateral ones the k = 0..3 quarter turns in the YX plane, each then turned a quarter in the ZY plane,
        which puts the turned Y or X axis up and Z on trunk axis 1 (the same, unflipped Z for the four). All
        six are rotations, none a mirror image.
        """
        if not self.blindspot:
            return self.trunk(x, self.pools(0))
        fmt = cast(nn.Conv3d, self.encoder[1]).weight
        views = [x, torch.rot90(x, 2, dims=(2, 3))]
        views += [torch.rot90(torch.rot90(x, k, dims=(3, 4)), 1, dims=(2, 3)) for k in range(4)]
        z_axes = (0, 0, 1, 1, 1, 1)
        pairs = ((0, 1), (2, 4), (3, 5))  # ±Z, ±Y, ±X: each pair has one shape and one pooling
        groups: dict[object, list[int]] = {}
        for i, pair in enumerate(pairs):
            key = i if self.three_pass else (views[pair[0]].shape, self.pools(z_axes[pair[0]]))
            groups.setdefault(key, []).extend(pair)
        branches: dict[int, torch.Tensor] = {}
        for members in groups.values():
            # torch.rot90 returns plain strides; restoring the weights' channels_last_3d (when in use) keeps the
            # convs fast. The weights decide: a one-channel volume is in both memory formats at once.
            batch = _like(torch.cat([views[i] for i in members]), fmt)
            out = self.trunk(batch, self.pools(z_axes[members[0]]))
            for i, b in zip(members, out.chunk(len(members)), strict=True):
                branches[i] = b
        unrotated = [branches[0], torch.rot90(branches[1], -2, dims=(2, 3))]
        unrotated += [
            torch.rot90(torch.rot90(branches[2 + k], -1, dims=(2, 3)), -k, dims=(3, 4)) for k in range(4)
        ]
        return torch.cat([_like(u, fmt) for u in unrotated], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) → (N, K, D, H, W); see the class docstring for the size rules."""
        self._check_input(x)
        h = _act(self.nin_a(self.features(x)))
        h = _act(self.nin_b(h))
        return self.nin_c(h)
