"""What image work costs here: U-Net training steps, FLOPs per image, Inception throughput.

    python benchmarks/image_costs.py [--batch 16] [--repeats 3] [--inception-n 64]

Measures, in this process on this machine:
- ms per training step (forward + backward + Adam) and images/s of each U-Net preset at --batch;
- forward+backward FLOPs per 32x32 image (torch.utils.flop_counter), the basis of the GPU-hour
  estimates in suites/cifar.toml;
- Inception (torch-fidelity, 2048-d pool3) images/s on --inception-n 32x32 images, if the weights
  are available (fmbench fid-weights builds them offline).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from fmbench import fid
from fmbench.unet import PRESETS, UNet, count_parameters


def step_ms(model, batch, repeats):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 32, 32)
    t = torch.rand(batch)

    def step():
        loss = (model(x, t) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(repeats):
        s = time.perf_counter()
        step()
        times.append((time.perf_counter() - s) * 1e3)
    return statistics.median(times)


def flops_per_image(model):
    x = torch.randn(2, 3, 32, 32)
    with FlopCounterMode(display=False) as fc:
        (model(x, torch.rand(2)) - x).pow(2).mean().backward()
    return fc.get_total_flops() / 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--inception-n", type=int, default=64)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in ("cifar-tong", "small", "tiny"):
        torch.manual_seed(0)
        m = UNet(3, 32, PRESETS[name])
        ms = step_ms(m, args.batch, args.repeats)
        fl = flops_per_image(m)
        print(f"U-Net {name:10s} {count_parameters(m) / 1e6:6.2f}M params: {ms:8.1f} ms/step at "
              f"batch {args.batch} = {args.batch / ms * 1e3:7.1f} images/s; "
              f"{fl / 1e9:6.2f} GFLOP per image (fwd+bwd)")
    try:
        ext = fid.make_extractor()
    except fid.InceptionWeightsError as e:
        print(f"Inception: skipped ({e})")
        return
    imgs = torch.randint(0, 256, (args.inception_n, 3, 32, 32), dtype=torch.uint8)
    fid.extract_features(ext, imgs[:8])
    s = time.perf_counter()
    fid.extract_features(ext, imgs, batch_size=32)
    dt = time.perf_counter() - s
    print(f"Inception (299 px, pool3): {args.inception_n / dt:.1f} images/s")


if __name__ == "__main__":
    main()
