"""Torch threads for a 2D training step (MLP 3x64, batch 512): median step time with 1 and 2
threads, twice interleaved. Run it alone and beside busy processes (e.g. two
`python3 -c "while True: pass"`) to see why fmbench gives workers only the free cores (README
"Running at scale")."""

import time

import torch

from fmbench.models import MLP


def step_ms(threads: int, n: int = 300) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = MLP(2, 64, 3)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x, t, u = torch.randn(512, 2), torch.rand(512), torch.randn(512, 2)

    def step() -> None:
        loss = (net(x, t) - u).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(30):
        step()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[n // 2]


if __name__ == "__main__":
    for _round in range(2):
        for k in (1, 2):
            print(f"threads {k}: median step {step_ms(k):.2f} ms", flush=True)
