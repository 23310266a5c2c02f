"""The noise-model contract: corruption of clean images plus the Bayesian maths of paper §3–4.

Two unit systems (docs/api-contract.md): ``params`` per image in the paper's units (σ in 8-bit units, λ, α);
``level`` the same in the model's float64 units (σ/255, 1/λ, α), also what an estimator network predicts.
With P > 1 parameters (Poisson–Gaussian: a, b) both have a trailing dim P. Maths is float64 on channel-last
pixels (``y``, ``mu`` (..., C), ``cov`` (..., C, C)); ``level`` is 0-d or has one dim per leading dim
(``pixel_level``), which catches passing (N,) for (N, H, W), which would silently broadcast against W.
``nll`` is exactly −log N(y; μ_y, Σ_y) − (C/2)·log 2π; the authors' mono and impulse losses omit the ½, a
global scale Adam nearly ignores, and where it matters ``regulariser``'s weight gives the authors' optimum.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from ssdn.errors import UserError
from ssdn.noise.linalg import det, inv, matvec, quad_form

__all__ = [
    "MIN_STD",
    "PME_EPS",
    "AdditiveGaussianNoise",
    "NoiseModel",
    "NoiseParamError",
    "ParamValue",
    "as_images",
]

ParamValue = float | Sequence[float] | Mapping[str, float | Sequence[float]]

MIN_STD = 1e-3
"""Lower clamp of a noise std (Gaussian σ) and of μ_x in the Poisson variance, as the authors."""

PME_EPS = 1e-6
"""Ridge the authors add to Σ_x (and Σ_n, and the precision sum) before inverting in the posterior mean."""


class NoiseParamError(UserError, ValueError):
    """A noise parameter given by a user (e.g. ``--param``) is outside its noise model's domain."""


def _regulariser_weight(channels: int) -> float:
    """0.1 for RGB; 0.05 for mono: the authors' mono loss 2·NLL − 0.1σ has the optimum of NLL − 0.05σ."""
    return 0.05 if channels == 1 else 0.1


def _f64(value: Tensor | float, device: torch.device | None = None) -> Tensor:
    """float64 tensor without a float32 detour (torch.as_tensor(0.3) would round 0.3 to float32)."""
    return torch.as_tensor(value, dtype=torch.float64, device=device)


def _eye(c: int, like: Tensor) -> Tensor:
    return torch.eye(c, dtype=like.dtype, device=like.device)


def as_images(noisy: Sequence[Tensor]) -> list[Tensor]:
    """(C, H, W) images from a sequence of images and/or (N, C, H, W) batches, for the classical estimators."""
    images = [img for t in noisy for img in (t if t.ndim == 4 else [t])]
    if not images or any(img.ndim != 3 for img in images):
        raise ValueError("need at least one noisy image, each (C, H, W) or in an (N, C, H, W) batch")
    return images


def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the tensor is on {device}; "
            "create the generator on the same device (torch.Generator(device=...))"
        )


class NoiseModel(nn.Module, ABC):
    """Pixel-wise i.i.d. noise: how to corrupt images and how it enters the prior/likelihood/posterior maths.

    The parameter is a fixed value or a [low, high] range (variable noise, drawn uniformly per image), stored
    as float64 buffers ``low``/``high``. The buffers are not persistent: the noise model is fully defined by
    its config, so checkpoints carry only learned weights and cannot silently override the configured noise.

    A model with several parameters (``param_names`` longer than one) takes a mapping ``{name: value}`` with
    each entry fixed or its own range; ``low``/``high`` are then (P,) and params/levels carry a trailing P dim.
    """

    name: ClassVar[str]
    param_name: ClassVar[str]
    """Name used in messages; for scalar models the one entry of ``param_names``."""
    param_names: ClassVar[tuple[str, ...]]
    domain: ClassVar[str]
    zero_mean: ClassVar[bool]
    """Whether E[y | x] = x, i.e. an L2 fit to noisy targets learns the clean mean (N2N / μ-only losses)."""
    det_floor: ClassVar[float] = 0.0
    """Clamp of det Σ_y before the log in ``nll``; 0 lets log 0 = −inf happen, as the authors."""

    low: Tensor
    high: Tensor

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "param_names" not in cls.__dict__ and "param_name" in cls.__dict__:
            cls.param_names = (cls.param_name,)

    def __init__(self, value: ParamValue) -> None:
        super().__init__()
        low, high = self._parse(value) if self.num_params == 1 else self._parse_mapping(value)
        self.register_buffer("low", torch.tensor(low, dtype=torch.float64), persistent=False)
        self.register_buffer("high", torch.tensor(high, dtype=torch.float64), persistent=False)

    @property
    def num_params(self) -> int:
        """P: 1 for the paper's models, whose params and levels have no trailing parameter dim."""
        return len(self.param_names)

    # ------------------------------------------------------------------ parameters

    @classmethod
    def channels_error(cls, channels: int) -> str | None:  # noqa: ARG003 -- the NoiseModel interface
        """One line naming the remedy when the model cannot describe images of ``channels`` channels; None when
        it can (every model but the channel-correlated one, which needs RGB)."""
        return None

    @staticmethod
    @abstractmethod
    def _in_domain(v: float) -> bool:
        """Whether v is a valid parameter value in the paper's units."""

    def check_params(self, values: Sequence[float], setting: str = "--param") -> None:
        """Raise ``NoiseParamError`` naming ``setting`` unless ``values`` are one value per ``param_names``
        entry, each in the domain (finite; σ ≥ 0, λ > 0, 0 ≤ α ≤ 1, a, b ≥ 0): a NaN or negative level would
        otherwise reach the posterior and silently give a black or unchanged image."""
        names = ",".join(self.param_names)
        if len(values) != self.num_params:
            raise NoiseParamError(
                f"{setting} needs {self.num_params} value(s) for {self.name} noise ({names}), got {len(values)}"
            )
        for p, v in zip(self.param_names, values, strict=True):
            if not self._in_domain(float(v)):
                raise NoiseParamError(
                    f"{setting}: {self.name} noise needs {p} to satisfy {self.domain}, got {v!r}"
                )

    def _parse_mapping(self, value: ParamValue) -> tuple[list[float], list[float]]:
        """``{a: 0.01, b: [lo, hi]}`` -> per-parameter (low, high) lists in ``param_names`` order."""
        names = ", ".join(self.param_names)
        if isinstance(value, Tensor) or not isinstance(value, Mapping):
            raise ValueError(
                f"{self.name} noise: the value must be a mapping {{{names}}} (each a number or a [low, high] "
                f"pair), got {value!r}"
            )
        if set(value) != set(self.param_names):
            raise ValueError(
                f"{self.name} noise: the value needs exactly the keys {{{names}}}, got {sorted(map(str, value))}"
            )
        pairs = [self._parse(value[p], p) for p in self.param_names]
        return [lo for lo, _ in pairs], [hi for _, hi in pairs]

    def _parse(self, value: object, p: str | None = None) -> tuple[float, float]:
        p = p or self.param_name
        if isinstance(value, Tensor):
            value = value.tolist()
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            pair = [value, value]
        elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
            pair = list(value)  # also accepts OmegaConf ListConfig and tuples
            if len(pair) != 2:
                raise ValueError(f"{p} range must be a [low, high] pair, got {len(pair)} values: {value!r}")
        else:
            raise ValueError(f"{p} must be a number or a [low, high] pair, got {value!r}")
        for v in pair:
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or not self._in_domain(float(v)):
                raise ValueError(f"{self.name} noise: {p} must satisfy {self.domain}, got {v!r}")
        low, high = float(pair[0]), float(pair[1])
        if low > high:
            raise ValueError(f"{self.name} noise: {p} range needs low <= high, got [{low:g}, {high:g}]")
        return low, high

    @property
    def variable(self) -> bool:
        """True when any parameter is drawn per image from a range rather than fixed."""
        return bool((self.low != self.high).any())

    def extra_repr(self) -> str:
        parts = []
        for name, lo, hi in zip(
            self.param_names, self.low.view(-1).tolist(), self.high.view(-1).tolist(), strict=True
        ):
            parts.append(f"{name}=[{lo:g}, {hi:g}]" if lo != hi else f"{name}={lo:g}")
        return ", ".join(parts)

    def params_dict(self, params: Tensor) -> dict[str, Tensor]:
        """Per-name views of params (paper units): {"sigma": (N,)} or {"a": (N,), "b": (N,)}."""
        params = _f64(params)
        if self.num_params == 1:
            return {self.param_name: params}
        return {name: params[..., i] for i, name in enumerate(self.param_names)}

    def format_params(self, params: Tensor | float) -> str:
        """One image's params as text for logs and result files, e.g. "sigma=25" or "a=0.01 b=0.000384"."""
        row = _f64(params).reshape(-1).tolist()
        if len(row) != self.num_params:
            raise ValueError(f"expected {self.num_params} value(s) ({self.param_name}), got {len(row)}")
        return " ".join(f"{name}={v:.6g}" for name, v in zip(self.param_names, row, strict=True))

    def pixel_level(self, level: Tensor, spatial_dims: int = 2) -> Tensor:
        """Per-image level (N,) or (N, P) -> float64 (N, 1, 1) or (N, 1, 1, P) for channel-last pixel batches
        (N, H, W, C); ``spatial_dims=3``: (N, 1, 1, 1[, P]) for voxel batches (N, D, H, W, C)."""
        return level.to(torch.float64).view(-1, *(1,) * spatial_dims, *self.low.shape)

    def sample_params(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """Per-image parameters (n,) (or (n, P)) float64, uniform in [low, high], independently per parameter.

        A fixed value draws no random numbers, so the generator stream (and hence all later noise) does not
        depend on whether the noise is variable. With P > 1 and any parameter variable, one (n, P) draw is
        made; fixed entries stay exactly ``low`` (their range is 0).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        device = torch.device(device) if device is not None else self.low.device
        low, high = self.low.to(device), self.high.to(device)
        if not self.variable:
            return low.expand(n, *low.shape).clone()
        _check_generator(generator, device)
        u = torch.rand((n, *low.shape), generator=generator, dtype=torch.float64, device=device)
        return low + (high - low) * u

    @abstractmethod
    def to_level(self, params: Tensor | float) -> Tensor:
        """Paper units -> internal float64 level."""

    @abstractmethod
    def to_params(self, level: Tensor | float) -> Tensor:
        """Internal float64 level -> paper units."""

    @abstractmethod
    def estimate_params(self, noisy: Sequence[Tensor]) -> Tensor:
        """One classical estimate (paper units, () or (P,) float64) for a collection of noisy (C, H, W) images.

        Used to start a learned level where the data says rather than at an arbitrary constant."""

    # ------------------------------------------------------------------ corruption

    def corrupt(self, x: Tensor, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noisy y from clean x (N, C, H, W) with per-image params (N,) or (N, P); never clipped or quantised.

        The output has x's dtype and device. All randomness comes from ``generator`` (default: torch's global
        one), which must live on x's device; a seeded CPU generator with CPU x makes evaluation noise
        device-independent."""
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"x must be a floating (N, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
        params = _f64(params, x.device)
        shape = (x.shape[0], *self.low.shape)
        if params.shape != shape:
            raise ValueError(f"params must have shape {shape} (one per image), got {tuple(params.shape)}")
        _check_generator(generator, x.device)
        return self._corrupt(x, params.view(-1, 1, 1, 1, *self.low.shape), generator)

    @abstractmethod
    def _corrupt(self, x: Tensor, params: Tensor, generator: torch.Generator | None) -> Tensor:
        """x (N, C, H, W), params (N, 1, 1, 1) (or (N, 1, 1, 1, P)) float64 in paper units."""

    # ------------------------------------------------------------------ Bayesian maths

    def _level(self, level: Tensor | float, mu: Tensor) -> Tensor:
        lv = _f64(level, mu.device)
        lead = mu.shape[:-1]
        p = self.low.shape  # () or (P,): the trailing parameter dim
        own = lv.shape[: lv.ndim - len(p)]
        try:
            ok = (
                lv.shape[lv.ndim - len(p) :] == p
                and len(own) in (0, len(lead))
                and torch.broadcast_shapes(own, lead) == lead
            )
        except RuntimeError:
            ok = False
        if not ok:
            trail = f", plus a trailing dim of {p[0]} ({self.param_name})" if p else ""
            raise ValueError(
                f"level must be 0-d or broadcastable to the leading dims {tuple(lead)} with the same number of "
                f"dims{trail} (e.g. noise.pixel_level(level) for (N, H, W, C)), got shape {tuple(lv.shape)}"
            )
        return lv

    def _prepare(self, mu: Tensor, cov: Tensor, level: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        if mu.ndim < 1 or cov.shape != (*mu.shape, mu.shape[-1]):
            raise ValueError(
                f"need mu (..., C) and cov (..., C, C), got {tuple(mu.shape)} and {tuple(cov.shape)}"
            )
        mu64 = mu.to(torch.float64)
        return mu64, _f64(cov, mu.device), self._level(level, mu64)

    @staticmethod
    def _prepare_y(y: Tensor, mu: Tensor) -> Tensor:
        if y.shape != mu.shape:
            raise ValueError(f"y and mu must have the same shape, got {tuple(y.shape)} and {tuple(mu.shape)}")
        return _f64(y, mu.device)

    def marginal(self, mu: Tensor, cov: Tensor, level: Tensor | float) -> tuple[Tensor, Tensor]:
        """Gaussian (approximation of the) marginal p(y | Ω) = ∫ p(y|x) N(x; μ_x, Σ_x) dx: (μ_y, Σ_y)."""
        mu, cov, lv = self._prepare(mu, cov, level)
        return self._marginal(mu, cov, lv)

    def nll(self, y: Tensor, mu: Tensor, cov: Tensor, level: Tensor | float) -> Tensor:
        """Per-pixel −log N(y; μ_y, Σ_y) − (C/2)·log 2π = ½·log max(det Σ_y, floor) + ½·dᵀΣ_y⁻¹d, d = y − μ_y.

        The ½ convention is used for every model and channel count (the authors' mono and impulse code uses
        2×NLL; see the module docstring). Returns the leading dims (...).
        """
        mu, cov, lv = self._prepare(mu, cov, level)
        y = self._prepare_y(y, mu)
        mu_y, cov_y = self._marginal(mu, cov, lv)
        d = y - mu_y
        logdet = torch.log(torch.clamp_min(det(cov_y), self.det_floor))
        return 0.5 * (logdet + quad_form(d, inv(cov_y)))

    def regulariser(self, mu: Tensor, level: Tensor | float) -> Tensor:
        """Term added to the per-pixel loss when the level is learned (unknown noise); shape (...)."""
        mu = mu.to(torch.float64)
        reg = self._regulariser(mu, self._level(level, mu))
        return torch.broadcast_to(reg, mu.shape[:-1])

    def posterior_mean(self, y: Tensor, mu: Tensor, cov: Tensor, level: Tensor | float) -> Tensor:
        """E[x | y, Ω] under the prior N(μ_x, Σ_x) and this noise model; shape (..., C)."""
        mu, cov, lv = self._prepare(mu, cov, level)
        y = self._prepare_y(y, mu)
        return self._posterior_mean(y, mu, cov, lv)

    def posterior_std(self, y: Tensor, mu: Tensor, cov: Tensor, level: Tensor | float) -> Tensor:
        """Per-channel posterior std √Var[x_c | y, Ω] (√ of the posterior covariance's diagonal), float64 in
        the units of y; shape (..., C). The uncertainty that comes with ``posterior_mean``, in its contract."""
        mu, cov, lv = self._prepare(mu, cov, level)
        y = self._prepare_y(y, mu)
        return self._posterior_std(y, mu, cov, lv)

    @abstractmethod
    def _marginal(self, mu: Tensor, cov: Tensor, lv: Tensor) -> tuple[Tensor, Tensor]: ...

    @abstractmethod
    def _regulariser(self, mu: Tensor, lv: Tensor) -> Tensor: ...

    @abstractmethod
    def _posterior_mean(self, y: Tensor, mu: Tensor, cov: Tensor, lv: Tensor) -> Tensor: ...

    @abstractmethod
    def _posterior_std(self, y: Tensor, mu: Tensor, cov: Tensor, lv: Tensor) -> Tensor: ...


class AdditiveGaussianNoise(NoiseModel):
    """Noise treated as additive zero-mean Gaussian N(0, Σ_n) (exact for Gaussian, approximate for Poisson).

    Subclasses only define Σ_n; the marginal is Σ_y = Σ_x + Σ_n (Eqs. 3, 7) and the posterior mean is the
    product of two Gaussians (Eq. 6)."""

    @abstractmethod
    def _noise_cov(self, mu: Tensor, lv: Tensor) -> Tensor:
        """Σ_n (..., C, C) broadcastable against Σ_x, from the predicted mean μ_x and the level."""

    def _marginal(self, mu: Tensor, cov: Tensor, lv: Tensor) -> tuple[Tensor, Tensor]:
        return mu, cov + self._noise_cov(mu, lv)

    def _posterior(self, mu: Tensor, cov: Tensor, lv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(Σ_post, P_x, P_n) with the authors' ε = 1e-6 ridge on all three inverses, which keeps a singular
        Σ_x = A·Aᵀ finite: P = inv(Σ + εI), Σ_post = inv(P_x + P_n + εI)."""
        ridge = PME_EPS * _eye(mu.shape[-1], mu)
        prec_x = inv(cov + ridge)
        prec_n = inv(self._noise_cov(mu, lv) + ridge)
        return inv(prec_x + prec_n + ridge), prec_x, prec_n

    def _posterior_mean(self, y: Tensor, mu: Tensor, cov: Tensor, lv: Tensor) -> Tensor:
        """Eq. 6, the product of two Gaussians: Σ_post · (P_x·μ_x + P_n·y)."""
        post, prec_x, prec_n = self._posterior(mu, cov, lv)
        return matvec(post, matvec(prec_x, mu) + matvec(prec_n, y))

    def _posterior_std(self, y: Tensor, mu: Tensor, cov: Tensor, lv: Tensor) -> Tensor:  # noqa: ARG002 -- the NoiseModel interface
        """√diag Σ_post: a Gaussian posterior's covariance does not depend on y (for Poisson it depends on the
        *predicted* mean through Σ_n, as the likelihood approximation does)."""
        post, _, _ = self._posterior(mu, cov, lv)
        return torch.diagonal(post, dim1=-2, dim2=-1).sqrt()
