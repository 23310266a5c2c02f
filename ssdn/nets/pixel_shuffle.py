"""Pixel-shuffle downsampling (PD; Lee et al., AP-BSN, CVPR 2022): a blind-spot net run on the s×s sub-images.

Camera processing (demosaicking, in-camera denoising, sharpening) correlates the noise of neighbouring pixels,
and a one-pixel blind spot then reads the noise at a pixel off its neighbours and reproduces it. `pd_down`
splits an image into the s² sub-images x[..., a::s, b::s] as separate batch items, so the net's receptive
field cannot cross between them: with stride s larger than the noise's correlation range, the pixels the net
sees for an output pixel are s apart, their noise nearly independent of the noise at the output pixel, and the
per-pixel noise model and posterior mean apply at the sub-image scale unchanged. The price is that the net
sees the image at 1/s of its resolution (fine detail aliases), which `ssdn.inference.refine` partly recovers.
"""

from __future__ import annotations

import torch
from torch import nn

from ssdn.nets.padding import crop, mirror_pad
from ssdn.nets.unet import SIDE_MULTIPLE


def _check_stride(stride: int) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")


def pd_down(x: torch.Tensor, stride: int) -> torch.Tensor:
    """(N, C, H, W) → (N·s², C, H/s, W/s): batch item n·s² + a·s + b is the sub-image x[n, :, a::s, b::s]."""
    _check_stride(stride)
    if x.ndim != 4 or x.shape[-2] % stride or x.shape[-1] % stride:
        raise ValueError(
            f"pd_down needs (N, C, H, W) with H and W multiples of stride {stride}, got {tuple(x.shape)}"
        )
    n, c, h, w = x.shape
    s = stride
    return (
        x.reshape(n, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4).reshape(n * s * s, c, h // s, w // s)
    )


def pd_up(y: torch.Tensor, stride: int) -> torch.Tensor:
    """The exact inverse of `pd_down`: (N·s², C, h, w) → (N, C, h·s, w·s), for any channel count C."""
    _check_stride(stride)
    s = stride
    if y.ndim != 4 or y.shape[0] % (s * s):
        raise ValueError(f"pd_up needs (N·{s * s}, C, h, w) for stride {s}, got {tuple(y.shape)}")
    nss, c, h, w = y.shape
    n = nss // (s * s)
    return y.reshape(n, s, s, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, h * s, w * s)


def _padded_sub_images(x: torch.Tensor, stride: int) -> torch.Tensor:
    """`pd_down` of ``x`` with every sub-image mirror-padded on its own (bottom/right) to a multiple of 32.

    Mirroring each sub-image rather than the whole image keeps a sub-image's padding made of its own lattice's
    pixels only: mirroring the full image would bring pixels of other lattices, whose noise correlates with
    their neighbours', into it. Mirror rather than zeros so the border looks like image content to the net.
    Caveat shared with ``ssdn.nets.padding``, and wider here since sub-images are small: a pixel within the
    padding's width of the bottom/right edge of its sub-image has a mirrored copy in the padding, which the
    blind-spot net can read (the pixel's own noise, seen from up to the padding's width away). Inputs whose
    sides are multiples of 32·stride need no padding and have no such copies.
    """
    s = stride
    h, w = x.shape[-2:]
    side = s * SIDE_MULTIPLE
    rows, cols = -(-h // side) * SIDE_MULTIPLE, -(-w // side) * SIDE_MULTIPLE
    subs = [x[:, :, a::s, b::s] for a in range(s) for b in range(s)]
    subs = [mirror_pad(t, rows - t.shape[-2], cols - t.shape[-1]) for t in subs]
    return torch.stack(subs, dim=1).flatten(0, 1)


class PixelShuffleNet(nn.Module):
    """Runs ``net`` on the stride² sub-images of its input and reassembles the full-resolution output.

    Any H×W with H, W >= stride: each sub-image is mirror-padded to a multiple of 32 on each side (the U-Net
    pools 5 times), and the output is cropped back to H×W. Every output channel (prior mean and covariance
    terms) is reassembled by the same permutation. ``stride`` is settable (no weights depend on it), so a net
    trained at one stride can denoise at another; stride 1 is ``net`` itself (after padding to 32).
    """

    def __init__(self, net: nn.Module, stride: int = 1) -> None:
        super().__init__()
        self.net = net
        self.stride = stride

    @property
    def stride(self) -> int:
        """Sub-sampling step s: the net sees pixels s apart."""
        return self._stride

    @stride.setter
    def stride(self, stride: int) -> None:
        _check_stride(stride)
        self._stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, K, H, W), K the wrapped net's output channels."""
        s = self.stride
        if x.ndim != 4 or x.shape[-2] < s or x.shape[-1] < s:
            raise ValueError(
                f"PixelShuffleNet needs (N, C, H, W) with H, W >= stride {s}, got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        return crop(pd_up(self.net(_padded_sub_images(x, s)), s), h, w)
