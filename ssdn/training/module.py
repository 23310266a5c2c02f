"""The one LightningModule behind every training method of the paper.

It never looks at the noise type: noise synthesis, likelihood and posterior come from the ``NoiseModel``, and
everything method-specific from the ``Method``. It does branch on what a batch holds: without ``"clean"`` the
noisy crops are the observations themselves (``data.add_noise=false``), and validation without clean images
scores the self-supervised loss (``val/nll``) instead of PSNR. Optimisation is manual so that a step with
non-finite gradients can be skipped outright (the authors' optimiser does the same) rather than fed to Adam's
moment estimates.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from ssdn.config.run import method_section, section
from ssdn.config.schema import (
    MethodConfig,
    ModelConfig,
    NoiseConfig,
    NoiseParamsConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
)
from ssdn.data.curriculum import CropSchedule
from ssdn.eval.metrics import psnr, quantize
from ssdn.methods import Method, StepBatch, build_method
from ssdn.methods.levels import GlobalLevel
from ssdn.methods.schedule import learning_rate
from ssdn.nets import CompiledForward, UNet, UNet3D
from ssdn.nets.pixel_shuffle import PixelShuffleNet
from ssdn.nets.unet import SIDE_MULTIPLE
from ssdn.noise import NoiseModel, build_noise
from ssdn.training.divergence import TrainingDiverged
from ssdn.training.precision import resolve_precision
from ssdn.training.progress import TrainingProgress
from ssdn.utils import atomic_write_png


class DenoiserModule(L.LightningModule):
    """A denoiser network, its noise model and its training method, built from the resolved run config.

    ``config`` needs the keys ``noise``, ``method``, ``noise_params``, ``optim``, ``schedule``, ``channels`` and
    ``seed`` (see ``ssdn/conf/``); the whole config is stored in every checkpoint so a checkpoint rebuilds itself.
    """

    #: Input side requirement for the evaluator: padded to squares of this multiple, the authors' protocol (the
    #: networks themselves take any H×W of multiples of 32).
    requires_square_multiple = SIDE_MULTIPLE

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        # The whole config is the checkpoint's record: a checkpoint rebuilds its module from it. The module
        # reads only its sections, typed.
        self.save_hyperparameters({"config": dict(config)})
        cfg = self.hparams["config"]
        method = method_section(cfg["method"])
        if not isinstance(method, MethodConfig):
            raise ValueError(f"method={method.name} is evaluation-only: there is no network to build")
        noise = section(NoiseConfig, cfg["noise"], "noise")
        self.channels = int(cfg["channels"])
        self.noise: NoiseModel = build_noise(noise.name, noise.plain_value)
        self.method: Method = build_method(
            method,
            self.noise,
            self.channels,
            section(NoiseParamsConfig, cfg["noise_params"], "noise_params").source,
        )
        #: the ``model`` section; ``dims``: 2 images or planes, 3 volumes (N, C, D, H, W)
        self.net_config = section(ModelConfig, cfg.get("model") or {}, "model")
        self.dims = self.net_config.dims
        #: pixel-shuffle strides (``method.pd_stride``, ``method.pd_stride_infer``): 1 is the paper's net, unwrapped
        self.train_stride = method.pd_stride
        self.infer_stride = method.pd_stride_infer or method.pd_stride
        #: the blind square's side at inference (``method.blind_hole_infer``, null: ``method.blind_hole``)
        self.infer_hole = method.blind_hole_infer or method.blind_hole
        self.net: torch.nn.Module
        if self.dims == 3:
            self.net = UNet3D(
                self.channels,
                self.method.out_channels(self.channels),
                self.method.blindspot,
                levels=self.net_config.levels,
                pool_z=self.net_config.pool_z,
                enc_channels=self.net_config.enc_channels,
                dec_channels=self.net_config.dec_channels,
            )
        else:
            unet = UNet(
                in_channels=self.channels,
                out_channels=self.method.out_channels(self.channels),
                blindspot=self.method.blindspot,
                blind_hole=method.blind_hole,
            )
            self.net = (
                PixelShuffleNet(unet, self.train_stride)
                if max(self.train_stride, self.infer_stride) > 1
                else unet
            )
        self.optim = section(OptimConfig, cfg["optim"], "optim")
        self.lr_schedule = section(ScheduleConfig, cfg["schedule"], "schedule")
        self.seed = int(cfg["seed"])
        self.channels_last = bool(cfg.get("channels_last", True))
        #: the network's memory format (``channels_last``): channels_last in 2-D, channels_last_3d for a 3-D net
        #: in fp32; None (torch's default) for a 3-D net trained in bf16, whose conv3d backward in
        #: channels_last_3d gave NaN gradients on AVX-512-BF16 CPUs (oneDNN; tests/test_nets3d.py)
        self.memory_format: torch.memory_format | None = None
        if self.channels_last and self.dims == 2:
            self.memory_format = torch.channels_last
        elif self.channels_last:
            trainer = cfg.get("trainer") or {}
            precision = resolve_precision(
                str(trainer.get("precision", "bf16-mixed")), str(trainer.get("accelerator", "auto"))
            )
            self.memory_format = None if "bf16" in precision else torch.channels_last_3d
        if self.memory_format is not None:
            # torch's stubs lack Module.to(memory_format=...), which exists at runtime
            self.net = self.net.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        #: compile=true: the network's forward through torch.compile (training and evaluation), eager on failure
        self.compiled = CompiledForward(self.net) if cfg.get("compile", False) else None
        self.name = f"{self.method.name}/{self.noise.name}"
        self.automatic_optimization = False
        train = section(TrainConfig, cfg.get("train") or {}, "train")
        #: the run's bookkeeping (images seen, planned length, time budget, random stream), saved in checkpoints
        self.progress = TrainingProgress(self.seed, train.minutes)
        #: ``train.images``: the planned length of a crop-size curriculum's run
        self.planned_images = train.images
        #: ``train.stop_on_divergence``: stop a run whose smoothed loss climbs back above its start (not for an
        #: annealed loss, whose values at different steps do not compare)
        self.stop_on_divergence = train.stop_on_divergence and self.method.objective.stationary_loss
        self.eval_bf16 = False  #: network precision of ``denoise`` when not given: fp32 unless asked
        self._val_psnr: dict[str, list[Tensor]] = {}
        self._val_panel: dict[str, Tensor] = {}
        self._val_nll: list[Tensor] = []
        self._val_level: list[Tensor] = []
        self.val_noise_level: dict[str, float] = {}
        #: the training images' noise as ``ssdn.training.noise_check`` measured it (noisy-only runs), kept in
        #: checkpoints so that denoising can say when the posterior std rests on a broken assumption
        self.training_noise: dict[str, float] | None = None

    @property
    def images_seen(self) -> int:
        return self.progress.images_seen

    @property
    def batches_seen(self) -> int:
        """Read by the data module: the stream of a resumed run starts after them."""
        return self.progress.batches_seen

    @property
    def skipped_steps(self) -> int:
        return self.progress.skipped_steps

    @property
    def total_images(self) -> int:
        return self.progress.total_images

    # ------------------------------------------------------------------ inference
    def forward(self, noisy: Tensor) -> Tensor:
        """Raw network output for a noisy batch (N, C, H, W), or (N, C, D, H, W) for a 3-D net."""
        if self.memory_format is not None:
            noisy = noisy.contiguous(memory_format=self.memory_format)
        return self.compiled(noisy) if self.compiled is not None else self.net(noisy)

    def denoise(
        self,
        noisy: Tensor,
        params: Tensor,
        bf16: bool | None = None,
        uncertainty: bool = False,
        stride: int | None = None,
    ) -> dict[str, Tensor]:
        """Denoised outputs of a noisy batch (N,C,H,W), H and W multiples of 32 (square or not: no padding to a
        square), or for a 3-D model (N,C,D,H,W) of its side multiples; the network may run in bf16, the posterior
        in float64.

        ``bf16=None`` follows ``eval_bf16``, which is False (fp32, the authors' protocol) on every device unless
        a caller asks for the faster bf16 autocast (``python -m ssdn.evaluate --bf16``). ``uncertainty`` adds
        ``"posterior_std"`` (N,C,H,W), the per-pixel posterior std in pixel units (a UserError for a method
        without a posterior). ``stride`` is the pixel-shuffle stride (None: ``method.pd_stride_infer``); the
        blind square is ``method.blind_hole_infer``'s.
        """
        noisy = noisy.to(self.device, torch.float32)
        params = params.to(self.device, torch.float64)
        use_bf16 = self.eval_bf16 if bf16 is None else bf16
        with (
            torch.no_grad(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16),
            self.pd_stride(self.infer_stride if stride is None else stride),
            self.blind_hole(self.infer_hole),
        ):
            return self.method.denoise(self, self.noise, noisy, params, uncertainty)

    @property
    def unet(self) -> UNet | None:
        """The 2-D U-Net, inside a pixel-shuffle wrapper or not (None for a 3-D model)."""
        net = self.net.net if isinstance(self.net, PixelShuffleNet) else self.net
        return net if isinstance(net, UNet) else None

    @contextmanager
    def blind_hole(self, hole: int) -> Iterator[None]:
        """Run the blind-spot net with a blind square of side ``hole`` inside the block (the training one
        outside): the hole is a shift, not a weight. Any other net takes only 1."""
        unet = self.unet
        if unet is None or not unet.blindspot:
            if hole != 1:
                raise ValueError(f"this model has no blind-spot net: blind square {hole} is not available")
            yield
            return
        before = unet.blind_hole
        unet.blind_hole = hole
        try:
            yield
        finally:
            unet.blind_hole = before

    @contextmanager
    def pd_stride(self, stride: int) -> Iterator[None]:
        """Run the network at pixel-shuffle ``stride`` inside the block (the training stride outside it); a
        net without pixel shuffle takes only 1."""
        if not isinstance(self.net, PixelShuffleNet):
            if stride != 1:
                raise ValueError(f"this model has no pixel-shuffle wrapper: stride {stride} is not available")
            yield
            return
        before = self.net.stride
        self.net.stride = stride
        try:
            yield
        finally:
            self.net.stride = before

    # ------------------------------------------------------------------ training
    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.optim
        beta1, beta2 = o.betas
        return torch.optim.Adam(self.parameters(), lr=o.lr, betas=(beta1, beta2), eps=o.eps)

    def on_fit_start(self) -> None:
        self.progress.start(
            self.global_batch_size, self.crop_schedule, self.planned_images, self.trainer.max_steps
        )

    @property
    def global_batch_size(self) -> int:
        """The global batch (all ranks): the data module's ``batch_size``."""
        # Lightning sets Trainer.datamodule at fit time but does not declare it on the class
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            raise RuntimeError("DenoiserModule trains from a data module: pass datamodule=... to Trainer.fit")
        return int(datamodule.batch_size)

    @property
    def crop_schedule(self) -> CropSchedule | None:
        """The data module's crop-size curriculum, whose stages end at fractions of ``total_images``."""
        return getattr(getattr(self._trainer, "datamodule", None), "crop_schedule", None)

    def generator(self) -> torch.Generator:
        """The step's random stream (``TrainingProgress.generator``) on this device and rank."""
        return self.progress.generator(self.device, self.global_rank)

    def _config_params(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Params from the configured value, for noisy data whose true level is not known per file: the one
        known value (a range with a known level is refused by validate_config), or unused by a learned level."""
        return self.noise.sample_params(n, generator, device=self.device)

    def _training_inputs(self, batch: Mapping[str, Tensor]) -> StepBatch:
        gen = self.generator()
        progress = self.progress.fraction
        if "clean" not in batch:  # the crops are the noisy observations (data.add_noise=false)
            noisy = batch["noisy"].float()
            params = self._config_params(noisy.shape[0], gen)
            return StepBatch(clean=None, noisy=noisy, params=params, generator=gen, progress=progress)
        clean = batch["clean"]
        clean = clean.float() / 255.0 if clean.dtype == torch.uint8 else clean.float()
        if "noisy" in batch:
            noisy, params = batch["noisy"].float(), batch["params"].to(torch.float64)
        else:
            params = self.noise.sample_params(clean.shape[0], gen, device=clean.device)
            noisy = self.noise.corrupt(clean, params, gen)
        return StepBatch(clean=clean, noisy=noisy, params=params, generator=gen, progress=progress)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        opt = self.optimizers()
        assert not isinstance(opt, list), "configure_optimizers returns a single optimizer"
        lr = learning_rate(
            self.images_seen,
            self.total_images,
            self.optim.lr,
            rampup=self.lr_schedule.rampup,
            rampdown=self.lr_schedule.rampdown,
        )
        for group in opt.param_groups:
            group["lr"] = lr
        inputs = self._training_inputs(batch)
        loss, logs = self.method.training_loss(self, self.noise, inputs)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
        # DDP ranks must take the same decision, or their weights silently drift apart.
        finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            opt.step()
        n = inputs.noisy.shape[0]
        # the batch's own size: a crop-size curriculum changes it between stages
        self.progress.step_done(n * self.trainer.world_size, finite)
        if self.stop_on_divergence:
            diverged = finite and self.progress.divergence.update(float(loss.detach()))
            if self.trainer.strategy.reduce_boolean_decision(diverged, all=False):
                self._stop_diverged(diverged)

        # Each DDP rank holds part of the global batch: log the mean over ranks (the single-process value).
        self.log("train/loss", loss.detach().float(), prog_bar=True, batch_size=n, sync_dist=True)
        self.log("train/lr", lr, batch_size=n)
        self.log("train/images_seen", float(self.images_seen), batch_size=n)
        self.log("train/skipped_steps", float(self.skipped_steps), batch_size=n)
        for key, value in logs.items():
            self.log(
                f"train/{key}", value.float(), prog_bar=key == "noise_level", batch_size=n, sync_dist=True
            )
        return loss.detach()

    def _stop_diverged(self, here: bool) -> None:
        """One line for a run wrecked by its learning rate (``here``: on this rank, else on another); the
        checkpoints saved before it are kept as they are."""
        watch, lr = self.progress.divergence, self.optim.lr
        what = watch.describe() if here else "another rank's smoothed train/loss rose above its start"
        lower = float(f"{lr / 3:.1g}")
        raise TrainingDiverged(
            f"training diverged after {self.images_seen} images: {what}. optim.lr={lr:g} is too high for "
            f"this data and net: train again in a new folder with a lower rate (e.g. optim.lr={lower:g}), "
            "or set train.stop_on_divergence=false to train on regardless"
        )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (rate := self.progress.batch_end()) is not None:
            self.log("train/images_per_sec", rate)
        if self.progress.budget is None:
            return

        def agree(plan: int) -> int:
            """Every rank must plan the same length, or DDP ranks stop at different steps."""
            planned = torch.tensor(plan, dtype=torch.int64, device=self.device)
            return int(self.trainer.strategy.reduce(planned, reduce_op="min"))

        done = self.progress.replan(agree, self.crop_schedule)
        self.log("train/total_images", float(self.total_images))
        if done:
            self.trainer.should_stop = True  # Lightning then validates and checkpoints once more

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self.progress.validation_started()
        self._val_psnr = {}
        self._val_panel = {}
        self._val_nll = []
        self._val_level = []

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        if "clean" not in batch:
            self._noisy_validation_step(batch["noisy"].float(), batch_idx)
            return
        clean, noisy = batch["clean"].float(), batch["noisy"].float()
        # Real noisy/clean pairs (ssdn.data.pairs) carry no drawn params: the configured or learned level.
        params = batch["params"] if "params" in batch else self._config_params(noisy.shape[0])
        outs = self.denoise(noisy, params, bf16=False)
        scores = {"noisy": psnr(noisy, clean)} | {k: psnr(v, clean) for k, v in outs.items()}
        for key, value in scores.items():
            self._val_psnr.setdefault(key, []).append(value.to(self.device, torch.float64))
        if batch_idx == 0:
            self._val_panel = {"noisy": noisy[0]} | {k: v[0] for k, v in outs.items()} | {"clean": clean[0]}

    @torch.no_grad()
    def _noisy_validation_step(self, noisy: Tensor, batch_idx: int) -> None:
        """Score held-out noisy crops by the training loss without the level regulariser: the mean NLL of the
        noisy pixels under the prior and level (prior objectives), or the regression loss against the noisy
        crops (mean objectives; masked pixels only for masking methods, with a fixed mask per batch)."""
        method, n = self.method, noisy.shape[0]
        params = self._config_params(n, torch.Generator(self.device).manual_seed(self.seed))
        level = method.level(noisy, params, self.noise)
        mask_gen = torch.Generator(self.device).manual_seed(self.seed + batch_idx)
        losses = method.pixel_losses(
            self, self.noise, noisy, noisy, level, mask_gen, regularise=False, progress=1.0
        )
        per_image = losses.flatten(1).mean(1)
        self._val_nll.append(per_image.to(torch.float64))
        if level is not None and method.learned_level:
            self._val_level.append(self.noise.to_params(level.detach()).reshape(n, -1))

    def _log_noisy_validation(self) -> None:
        self.log("val/nll", torch.cat(self._val_nll).mean(), prog_bar=True, sync_dist=True)
        if self._val_level:
            means = torch.cat(self._val_level).mean(0)
            self.val_noise_level = dict(zip(self.noise.param_names, means.tolist(), strict=True))
            for name, value in self.val_noise_level.items():
                key = "val/noise_level" if len(means) == 1 else f"val/noise_level_{name}"
                self.log(key, value, prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.progress.validation_ended()
        if self._val_nll:
            self._log_noisy_validation()
        if not self._val_psnr:
            return
        means = {k: torch.cat(v).mean() for k, v in self._val_psnr.items()}
        reported = next(k for k in means if k != "noisy")
        for key, value in means.items():
            self.log(f"val/psnr_{key}", value, sync_dist=True)
        self.log("val/psnr", means[reported], prog_bar=True, sync_dist=True)
        if self._val_panel and not self.trainer.sanity_checking:
            self._log_panel()

    def _log_panel(self) -> None:
        """Noisy | outputs | clean for the first validation image: a PNG in the run dir and, with W&B, an image."""
        if self.global_rank != 0:
            return
        tiles = [quantize(t.float().cpu()).permute(1, 2, 0).numpy() for t in self._val_panel.values()]
        panel = np.concatenate(tiles, axis=1)
        caption = " | ".join(self._val_panel)
        log_dir = self.trainer.default_root_dir
        atomic_write_png(Path(log_dir) / "val_panel.png", panel)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/panel", images=[panel], caption=[caption], step=self.global_step)

    # ------------------------------------------------------------------ learned level
    def learned_level(self) -> dict[str, float]:
        """The learned level in paper units, ``{param name: value}``: the global value, or for a per-image
        estimator the mean over the last validation's images; empty when the level is known or not learned."""
        source = self.method.level_source
        if source is None or not self.method.learned_level:
            return {}
        if isinstance(source, GlobalLevel):
            return source.params(self.noise)
        return dict(self.val_noise_level)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ssdn_progress"] = self.progress.state_dict(self.crop_schedule)
        checkpoint["ssdn_config"] = copy.deepcopy(self.hparams["config"])
        checkpoint["ssdn_level"] = self.learned_level()
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "pixel_scale"):
            checkpoint["ssdn_pixel_scale"] = datamodule.pixel_scale()
        if self.training_noise is not None:
            checkpoint["ssdn_training_noise"] = dict(self.training_noise)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.progress.load_state_dict(checkpoint.get("ssdn_progress", {}))
        self.training_noise = checkpoint.get("ssdn_training_noise")
