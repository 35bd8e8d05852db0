"""Models trained elsewhere: the ``checkpoint`` model kind reads a network from a file, adapts its
declared conventions to fmbench's, and is scored like a trained model (no training, no model
cache).

Formats (``[model] format``):

- ``torchscript``: a scripted or traced module (``torch.jit.save``) computing the velocity or the
  noise from ``(x, t)`` (``arguments = "t, x"`` for the other order). A TorchScript archive holds
  TorchScript code, which runs (it cannot run Python); load only archives you would run.
- ``torchcfm``: TorchCFM's CIFAR-10 checkpoints (``{"net_model", "ema_model", ...}`` written by its
  ``train_cifar10.py``) into TorchCFM's ``UNetModelWrapper`` (the ``torchcfm-unet`` model kind,
  settings in ``[model.network]``, TorchCFM's CIFAR-10 defaults); ``key`` picks the weights
  (default ``ema_model``). Needs ``pip install torchcfm``.
- ``state-dict``: a state dict for a network of any model kind (``[model.network] kind = …`` and
  its settings: fmbench's ``mlp``/``unet``, a plug-in's), the file being the state dict or a dict
  holding it under ``key`` (fmbench's own cached models: ``key = "state_dict"``).

``torchcfm`` and ``state-dict`` files are read with ``torch.load(weights_only=True)``: tensors and
plain containers only, never arbitrary pickled objects. A ``module.`` (DataParallel) or
``_orig_mod.`` (torch.compile) prefix on every key is removed. (torch.export archives are not
read: ``torch.export.load`` falls back to unrestricted unpickling.)

Conventions: fmbench's time runs from the source (t = 0) to the data (t = 1), as in Lipman et al.
and TorchCFM; ``time = "data-at-0"`` declares the diffusion convention (τ = 1 − t, the velocity's
sign flipped); ``time_scale`` multiplies the time the network receives (e.g. 999 for networks
trained on integer timesteps); ``prediction = "noise"`` declares an ε-predicting network (the
suite's path must then say ``objective = "noise"`` so that the path turns ε into a velocity).
The file's sha256 is checked against ``sha256`` when given (a pin), and recorded: in the
resolved suite, in the model key (another file is another model) and in every result row.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmbench.storage import file_digest
from fmbench.validation import FieldError

FORMATS = ("torchscript", "torchcfm", "state-dict")
TIMES = ("data-at-1", "data-at-0")
PREDICTIONS = ("velocity", "noise")
ARGUMENTS = ("x, t", "t, x")
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as declared (its message names the file)."""


@dataclass(frozen=True)
class CheckpointConfig:
    """``[model]`` with ``kind = "checkpoint"`` (see the module docstring)."""

    file: str = ""
    format: str = "torchscript"
    sha256: str = ""  # given: the file must have it; empty: filled in when the suite is read
    key: str = ""  # the entry holding the weights ("" = torchcfm: ema_model; state-dict: file)
    # the network (torchcfm, state-dict): a [model.network] table bound as a [model] table
    network: Any = field(default=None, metadata={"model": True})
    time: str = "data-at-1"
    time_scale: float = 1.0
    prediction: str = "velocity"
    arguments: str = "x, t"  # torchscript: the order of the module's arguments

    def __post_init__(self) -> None:
        for name, allowed in (("format", FORMATS), ("time", TIMES),
                              ("prediction", PREDICTIONS), ("arguments", ARGUMENTS)):
            if getattr(self, name) not in allowed:
                raise FieldError(name, f"must be one of {', '.join(map(repr, allowed))}, got "
                                       f"{getattr(self, name)!r}")
        if not self.file:
            raise FieldError("file", "is required: the checkpoint file to evaluate")
        if not self.time_scale > 0:
            raise FieldError("time_scale", f"must be > 0, got {self.time_scale!r}")
        if self.sha256 and (len(self.sha256) != 64
                            or any(c not in "0123456789abcdef" for c in self.sha256)):
            raise FieldError("sha256", "must be 64 lowercase hexadecimal digits")
        if self.format == "state-dict" and self.network is None:
            raise FieldError("network", "is required with format = \"state-dict\": a table "
                                        "[model.network] with the network's kind and settings")
        if self.format == "torchscript" and self.network is not None:
            raise FieldError("network", "a TorchScript file holds its network: leave "
                                        "[model.network] out")
        if self.network is not None:
            from fmbench.models import MODELS

            if MODELS.get(self.network.kind).load is not None:
                raise FieldError(("network", "kind"), f"must be a network's kind (mlp, unet, "
                                                      f"torchcfm-unet, a plug-in's), not "
                                                      f"{self.network.kind!r}")
        if self.format != "torchscript" and self.arguments != "x, t":
            raise FieldError("arguments", "applies to format = \"torchscript\" only")

    def with_defaults(self) -> CheckpointConfig:
        """The torchcfm format's network (TorchCFM's CIFAR-10 U-Net) when none is given."""
        if self.format == "torchcfm" and self.network is None:
            from fmbench.models import ModelConfig

            return replace(self, network=ModelConfig("torchcfm-unet"))
        return self


def prepare(cfg: CheckpointConfig, base_dir: Path) -> CheckpointConfig:
    """At suite load: the file resolved against the suite's folder, present, its sha256 (checked
    against the pin); the torchcfm format's default network. FieldError otherwise."""
    file = Path(cfg.file).expanduser()
    file = file if file.is_absolute() else base_dir / file
    if not file.is_file():
        raise FieldError("file", f"no such file: {file}")
    try:
        sha = file_digest(file, 64)
    except OSError as e:
        raise FieldError("file", f"cannot be read: {e.strerror or e}") from None
    if cfg.sha256 and cfg.sha256 != sha:
        raise FieldError("sha256", f"{file} has sha256 {sha}, not the {cfg.sha256} the suite "
                                   "pins: another file than the one meant")
    return replace(cfg.with_defaults(), file=str(file.resolve()), sha256=sha)


class Adapted(nn.Module):
    """A foreign network as fmbench's v(x, t): time direction and scale, argument order."""

    def __init__(self, net: nn.Module, cfg: CheckpointConfig):
        super().__init__()
        self.net = net
        self.reverse = cfg.time == "data-at-0"
        self.scale = float(cfg.time_scale)
        self.t_first = cfg.arguments == "t, x"
        # a velocity along the network's reversed time points the other way; ε does not
        self.sign = -1.0 if self.reverse and cfg.prediction == "velocity" else 1.0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        tau = (1 - t if self.reverse else t) * self.scale
        out = self.net(tau, x) if self.t_first else self.net(x, tau)
        return out if self.sign == 1.0 else -out


def _state_dict(obj, key: str, file: Path) -> dict:
    if key:
        if not isinstance(obj, dict) or key not in obj:
            keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{file}: no entry {key!r} (it has: {keys})")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{file}: {'entry ' + repr(key) if key else 'the file'} is not a "
                              "state dict (names → tensors); set key = the entry that holds one")
    for prefix in _PREFIXES:
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def _read(cfg: CheckpointConfig, shape: tuple[int, ...], device: torch.device) -> nn.Module:
    from fmbench.models import build_model

    file = Path(cfg.file)
    if cfg.format == "torchscript":
        try:
            with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript, still reads it
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(file), map_location=device)
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"{file}: not a TorchScript archive ({str(e)[:200]})") from None
    try:
        obj = torch.load(file, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any refusal: pickled objects, a truncated file
        raise CheckpointError(f"{file}: not readable as weights only "
                              f"({type(e).__name__}: {str(e)[:200]})") from None
    key = cfg.key or ("ema_model" if cfg.format == "torchcfm" else "")
    state = _state_dict(obj, key, file)
    net = build_model(cfg.network, shape)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensors of other shapes
        raise CheckpointError(f"{file}: the weights do not fit a {cfg.network.kind} network "
                              f"with these settings ({' '.join(str(e).split())[:300]}): check "
                              "[model.network]") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{file}: the weights do not fit a {cfg.network.kind} network with these settings "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. "
            f"{unexpected[:3]}): check [model.network]")
    return net.to(device)


def load(cfg: CheckpointConfig, shape: tuple[int, ...], device: torch.device) -> nn.Module:
    """The checkpoint as fmbench's v(x, t) in eval mode, checked on a probe batch."""
    if not Path(cfg.file).is_file():
        raise CheckpointError(f"{cfg.file} is gone since the suite was read")
    if file_digest(cfg.file, 64) != cfg.sha256:
        raise CheckpointError(f"{cfg.file} changed since the suite was read (sha256)")
    model = Adapted(_read(cfg, shape, device), cfg).eval()
    check_network(model, shape, device, cfg.file)
    return model


def check_network(model: nn.Module, shape: tuple[int, ...], device, what: str) -> None:
    """CheckpointError unless v(x, t) on a probe batch works, is shaped like x and is finite."""
    probe = torch.zeros(2, *shape, device=device)
    with torch.no_grad():
        try:
            out = model(probe, torch.full((2,), 0.5, device=device))
        except Exception as e:  # noqa: BLE001 - the declared call does not work
            raise CheckpointError(f"{what}: calling the network as v(x, t) on a batch of "
                                  f"shape {tuple(probe.shape)} failed: {type(e).__name__}: "
                                  f"{str(e)[:200]}") from None
    if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(f"{what}: the network maps a batch of shape "
                              f"{tuple(probe.shape)} to {got}, not to the data's shape")
    if not torch.isfinite(out).all():
        raise CheckpointError(f"{what}: the network's output is not finite at t = 0.5")


# --- in-memory: a module handed to fmbench.evaluate ---------------------------------------------

_MODULES: dict[str, nn.Module] = {}  # weights digest → module, in this process


def weights_digest(module: nn.Module) -> str:
    """sha256 of the module's class and state dict (names, dtypes, shapes, bytes). Plain
    attributes (a constant set in ``__init__``) are not part of it: give such modules
    different names in ``fmbench.evaluate(..., name=…)`` or make the constant a buffer."""
    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def keep_module(module: nn.Module) -> str:
    """Hold ``module`` for the in-memory kind; its weights digest names it."""
    digest = weights_digest(module)
    _MODULES[digest] = module
    return digest


@dataclass(frozen=True)
class InMemoryConfig:
    """``kind = "in-memory"``: a module handed to fmbench.evaluate (Python API only)."""

    weights: str = ""  # digest of the module's class and state dict: its identity in model keys

    def __post_init__(self) -> None:
        if not self.weights:
            raise FieldError("weights", "in-memory models come from fmbench.evaluate(module, "
                                        "...) only; a suite file names a checkpoint instead")


def _prepare_in_memory(cfg: InMemoryConfig, base_dir: Path) -> InMemoryConfig:
    if cfg.weights not in _MODULES:
        raise FieldError("weights", "no module with these weights was given to "
                                    "fmbench.evaluate in this process")
    return cfg


def release_module(digest: str) -> None:
    _MODULES.pop(digest, None)


def _load_in_memory(cfg: InMemoryConfig, shape: tuple[int, ...], device) -> nn.Module:
    """A copy of the module (the caller's keeps its mode and device), in eval mode."""
    model = copy.deepcopy(_MODULES[cfg.weights]).to(device).eval()
    check_network(model, shape, device, "the module given to fmbench.evaluate")
    return model


@dataclass(frozen=True)
class TorchCFMUNetConfig:
    """TorchCFM's ``UNetModelWrapper``; defaults: its CIFAR-10 network (train_cifar10.py)."""

    num_channel: int = 128
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    attention_resolutions: str = "16"
    num_heads: int = 4
    num_head_channels: int = 64
    dropout: float = 0.1
    use_scale_shift_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("num_channel", "num_res_blocks"):
            if not getattr(self, name) >= 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)!r}")


def _torchcfm_unet(cfg: TorchCFMUNetConfig, shape: tuple[int, ...]) -> nn.Module:
    try:
        from torchcfm.models.unet.unet import UNetModelWrapper
    except ImportError:
        raise CheckpointError("the torchcfm-unet network needs TorchCFM: pip install torchcfm "
                              "(or the extra fmbench[bench])") from None

    class TorchCFMUNet(UNetModelWrapper):
        """TorchCFM's U-Net called as v(x, t) (it takes (t, x)); its state-dict keys as is."""

        def forward(self, x, t):
            return super().forward(t, x)

    return TorchCFMUNet(dim=tuple(shape), num_channels=cfg.num_channel,
                        num_res_blocks=cfg.num_res_blocks, channel_mult=list(cfg.channel_mult),
                        attention_resolutions=cfg.attention_resolutions,
                        num_heads=cfg.num_heads, num_head_channels=cfg.num_head_channels,
                        dropout=cfg.dropout, use_scale_shift_norm=cfg.use_scale_shift_norm)


def _not_trained(cfg: CheckpointConfig, shape: tuple[int, ...]) -> nn.Module:
    raise CheckpointError("a checkpoint model is read from its file, not built to be trained")


def _register() -> None:
    from fmbench.models import MODELS, ModelKind

    MODELS.register("torchcfm-unet")(ModelKind(
        TorchCFMUNetConfig, _torchcfm_unet, data=("image",),
        description="TorchCFM's UNetModelWrapper (needs torchcfm); the torchcfm format's network"))
    MODELS.register("in-memory")(ModelKind(
        InMemoryConfig, _not_trained, data=("points", "image"), load=_load_in_memory,
        prepare=_prepare_in_memory,
        description="a torch module given to fmbench.evaluate (Python API only)"))
    MODELS.register("checkpoint")(ModelKind(
        CheckpointConfig, _not_trained, data=("points", "image"), load=load, prepare=prepare,
        description="a model trained elsewhere, read from a file (torchscript, torchcfm, "
                    "state-dict)"))


_register()
