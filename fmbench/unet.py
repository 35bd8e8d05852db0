"""U-Net v_θ(x, t) for images, the ADM / improved-diffusion layout that Tong et al. (TorchCFM) use.

Structure: sinusoidal time embedding (dim = channels) → MLP to 4·channels; per resolution level
``num_res_blocks`` residual blocks (GroupNorm(32) → SiLU → 3×3 conv, time embedding added, GroupNorm
→ SiLU → dropout → zero-initialised 3×3 conv; 1×1 conv skip when channels change), self-attention
blocks at the resolutions listed in ``attention_resolutions``, strided-conv downsampling and
nearest+conv upsampling; a middle ResBlock–Attention–ResBlock; decoder blocks taking skip
connections; GroupNorm → SiLU → zero-initialised 3×3 conv out.

``UNetConfig()`` defaults reproduce Tong's CIFAR-10 recipe: 128 channels, mult (1, 2, 2, 2), 2 res
blocks, attention at 16×16 with 64 channels per head (4 heads at 256 channels), dropout 0.1:
35,746,307 parameters for 3×32×32 input. Presets: :data:`PRESETS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fmbench.validation import FieldError, Range, check_ranges, short_repr

# the allowed values of UNetConfig's numbers other than channels (checked by UNetConfig)
UNET_RANGES = {"num_res_blocks": Range(0), "num_head_channels": Range(1),
               "dropout": Range(0, 1, hi_open=True)}


@dataclass(frozen=True)
class UNetConfig:
    """The U-Net's settings (``[model]`` with ``kind = "unet"``, over a preset); checked when made
    (FieldError naming the setting)."""

    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    num_head_channels: int = 64
    dropout: float = 0.1

    def __post_init__(self) -> None:
        c = self.channels
        if isinstance(c, bool) or not isinstance(c, int) or c < 32 or c % 32:
            raise FieldError("channels", f"must be a positive multiple of 32 (GroupNorm), got "
                                         f"{short_repr(c)}")
        check_ranges(self, UNET_RANGES)
        if not self.channel_mult:
            raise FieldError("channel_mult", "must not be empty (one multiplier per resolution "
                                             "level)")
        for k in ("channel_mult", "attention_resolutions"):
            if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                       for x in getattr(self, k)):
                raise FieldError(k, f"must be integers >= 1, got "
                                    f"{short_repr(list(getattr(self, k)))}")

    def check(self, image_size: int) -> None:
        """The configuration fits square images of side ``image_size``."""
        if image_size % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(f"image size {image_size} is not divisible by "
                             f"2^{len(self.channel_mult) - 1} (channel_mult {self.channel_mult})")


PRESETS = {
    "cifar-tong": UNetConfig(),  # ≈35.7M parameters
    "small": UNetConfig(channels=64, channel_mult=(1, 2, 2), num_res_blocks=1,
                        attention_resolutions=(8,), num_head_channels=64, dropout=0.1),
    "tiny": UNetConfig(channels=32, channel_mult=(1, 2), num_res_blocks=1,
                       attention_resolutions=(), num_head_channels=32, dropout=0.0),
}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (n,) times in [0, 1] (scaled by 1000 as in ADM's integer steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32 if ch % 32 == 0 else math.gcd(ch, 32), ch)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, ch: int, emb_ch: int, out_ch: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, out_ch))
        self.out_layers = nn.Sequential(_norm(out_ch), nn.SiLU(), nn.Dropout(dropout),
                                        _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1)))
        self.skip = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    def __init__(self, ch: int, head_channels: int):
        super().__init__()
        if ch % head_channels:
            raise ValueError(f"{ch} channels are not divisible into heads of {head_channels}")
        self.heads = ch // head_channels
        self.norm = _norm(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = _zero(nn.Conv1d(ch, ch, 1))

    def forward(self, x, emb=None):
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))  # (b, 3c, L)
        q, k, v = qkv.reshape(b * self.heads, 3 * c // self.heads, h * w).chunk(3, dim=1)
        out = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        return x + self.proj_out(out.reshape(b, c, h * w)).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


class _Seq(nn.ModuleList):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock | AttentionBlock | Downsample |
                                            Upsample) else layer(x)
        return x


class UNet(nn.Module):
    """v(x, t) for x of shape (n, C, H, W) and t of shape (n,) or a scalar."""

    def __init__(self, in_channels: int = 3, image_size: int | tuple[int, int] = 32,
                 config: UNetConfig = UNetConfig()):
        super().__init__()
        if isinstance(image_size, tuple):
            if image_size[0] != image_size[1]:
                raise ValueError(f"the U-Net needs square images, got {image_size[0]}x"
                                 f"{image_size[1]}")
            image_size = image_size[0]
        config.check(image_size)
        self.config = config
        ch = config.channels
        emb = 4 * ch
        self.time_embed = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        attn_ds = {image_size // r for r in config.attention_resolutions}

        self.input_blocks = nn.ModuleList([_Seq([nn.Conv2d(in_channels, ch, 3, padding=1)])])
        skips, cur, ds = [ch], ch, 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers = [ResBlock(cur, emb, mult * ch, config.dropout)]
                cur = mult * ch
                if ds in attn_ds:
                    layers.append(AttentionBlock(cur, config.num_head_channels))
                self.input_blocks.append(_Seq(layers))
                skips.append(cur)
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(_Seq([Downsample(cur)]))
                skips.append(cur)
                ds *= 2
        self.middle = _Seq([ResBlock(cur, emb, cur, config.dropout),
                            AttentionBlock(cur, config.num_head_channels),
                            ResBlock(cur, emb, cur, config.dropout)])
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [ResBlock(cur + skips.pop(), emb, mult * ch, config.dropout)]
                cur = mult * ch
                if ds in attn_ds:
                    layers.append(AttentionBlock(cur, config.num_head_channels))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(cur))
                    ds //= 2
                self.output_blocks.append(_Seq(layers))
        self.out = nn.Sequential(_norm(cur), nn.SiLU(),
                                 _zero(nn.Conv2d(cur, in_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.config.channels).to(x.dtype))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
