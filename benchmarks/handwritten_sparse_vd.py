"""A hand-written plain-PyTorch sparse variational dropout (Molchanov et al. 2017): the bar to clear.

No Pyro, no pyrocompress model or guide: a LeNet-300-100 of three ``LinearSVDO`` layers
(theta, log sigma^2, local reparameterization, the paper's KL approximation, log alpha > 3
deleted at test time), trained with Adam at lr 1e-3 decayed linearly to 0, batch 100, the KL
weight warmed up linearly over ``--kl-warmup`` epochs, on the same data bundle as
pyrocompress (``pyrocompress.load_dataset``). It is the reference that
``experiments/bayesian_compression`` compares pyrocompress's Pyro models against, trained in
the same process on the same data.

    python benchmarks/handwritten_sparse_vd.py --dataset fashion-mnist --epochs 60 --out results/hw_svd60.json
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

import pyrocompress as pc
from pyrocompress.runs import write_json

K1, K2, K3 = 0.63576, 1.87320, 1.48695


class LinearSVDO(nn.Module):
    def __init__(self, d_in: int, d_out: int, threshold: float = 3.0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.log_sigma2 = nn.Parameter(torch.full((d_out, d_in), -10.0))
        self.threshold = threshold
        ref = nn.Linear(d_in, d_out)
        with torch.no_grad():
            self.theta.copy_(ref.weight)
            self.bias.copy_(ref.bias)

    def log_alpha(self) -> torch.Tensor:
        return (self.log_sigma2 - torch.log(self.theta ** 2 + 1e-16)).clamp(-10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = F.linear(x, self.theta, self.bias)
            var = F.linear(x * x, torch.exp(self.log_sigma2)) + 1e-8
            return mean + var.sqrt() * torch.randn_like(mean)
        return F.linear(x, self.theta * (self.log_alpha() < self.threshold), self.bias)

    def kl(self) -> torch.Tensor:
        la = self.log_alpha()
        return -(K1 * torch.sigmoid(K2 + K3 * la) - 0.5 * F.softplus(-la) - K1).sum()


class LeNet300SVDO(nn.Module):
    def __init__(self, d_in: int, classes: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = LinearSVDO(d_in, 300), LinearSVDO(300, 100), LinearSVDO(100, classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    def kl(self):
        return self.fc1.kl() + self.fc2.kl() + self.fc3.kl()


def train_elbo(net: nn.Module, data, epochs: int, seed: int, kl_warmup: int, batch: int = 100) -> float:
    """Minimise the minibatch ELBO (NLL scaled to the data set + KL warmed up linearly over ``kl_warmup``
    epochs) with Adam at lr 1e-3 decayed linearly to 0; ``net`` has a ``kl()``. Returns the seconds taken.
    (The hand-written Bayesian Compression reference trains by the same loop.)"""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: max(0.0, 1.0 - e / epochs))
    n = len(data.train)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        beta = min(1.0, (epoch + 1) / kl_warmup) if kl_warmup else 1.0
        for idx in torch.randperm(n, generator=gen).split(batch):
            x, y = data.train.x[idx], data.train.y[idx]
            loss = F.cross_entropy(net(x), y, reduction="sum") * (n / len(idx)) + beta * net.kl()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return time.perf_counter() - t0


def run(dataset: str, epochs: int, seed: int, kl_warmup: int, val_fraction: float, batch: int = 100) -> dict:
    data = pc.load_dataset(dataset, seed=seed, val_fraction=val_fraction)
    torch.manual_seed(seed)
    net = LeNet300SVDO(math.prod(data.input_shape), data.num_classes)
    seconds = train_elbo(net, data, epochs, seed, kl_warmup, batch)
    net.eval()
    with torch.no_grad():
        acc = float((net(data.test.x).argmax(1) == data.test.y).float().mean())
        layers = {name: [int((m.log_alpha() < m.threshold).sum()), m.theta.numel()]
                  for name, m in (("fc1", net.fc1), ("fc2", net.fc2), ("fc3", net.fc3))}
    kept = sum(k for k, _ in layers.values())
    total = sum(t for _, t in layers.values())
    return {"dataset": dataset, "epochs": epochs, "seed": seed, "kl_warmup": kl_warmup, "val_fraction": val_fraction,
            "accuracy": acc, "compression_weights": total / kept, "layers": layers, "train_seconds": seconds}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kl-warmup", type=int, default=5)
    p.add_argument("--val-fraction", type=float, default=0.0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    result = run(args.dataset, args.epochs, args.seed, args.kl_warmup, args.val_fraction)
    print(json.dumps(result))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
