"""A hand-written plain-PyTorch Bayesian Compression (Louizos, Ullrich & Welling 2017): the structured bar.

No Pyro, no pyrocompress model or guide: a LeNet-300-100 of three ``LinearGroupNJ`` layers, the
paper's normal-Jeffreys group prior as its authors' tutorial writes it (one multiplicative scale
z_i per *input* neuron of every layer, q(z_i) = N(mu_i, sigma_i^2) with sparse variational
dropout's KL approximation; weights w_ij | z_i ~ N(0, z_i^2) non-centred, q(v_ij) = N(mu_ij,
sigma_ij^2), KL from N(0, 1); local reparameterization; z_mu started at 1, log-variances at -9).
Trained with Adam at lr 1e-3 decayed linearly to 0, batch 100, the KL warmed up linearly over
``--kl-warmup`` epochs, on the same data bundle as pyrocompress (``pyrocompress.load_dataset``).

A group is deleted when its log alpha = log sigma_i^2 - log mu_i^2 exceeds the threshold (3, the
rule of pyrocompress's ``group_log_uniform``; the tutorial's stricter -3 is reported beside it). A
hidden unit stays when the next layer keeps its input group; the kept architecture and the test
accuracy of the posterior-mean network (z = its mean, deleted groups zero) are written for each
threshold, with the dense posterior-mean accuracy.

    python benchmarks/handwritten_bc.py --dataset fashion-mnist --epochs 60 --out results/hw_bc60.json
"""
from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F
from torch import nn

import pyrocompress as pc
from pyrocompress.runs import write_json
from handwritten_sparse_vd import train_elbo  # the same ELBO loop as the sparse-VD reference

K1, K2, K3 = 0.63576, 1.87320, 1.48695


class LinearGroupNJ(nn.Module):
    """Linear layer with a normal-Jeffreys scale per input neuron (the tutorial's parametrisation)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.z_mu = nn.Parameter(1.0 + 1e-2 * torch.randn(d_in))
        self.z_logvar = nn.Parameter(-9.0 + 1e-2 * torch.randn(d_in))
        self.weight_mu = nn.Parameter(torch.randn(d_out, d_in) / math.sqrt(d_in))
        self.weight_logvar = nn.Parameter(-9.0 + 1e-2 * torch.randn(d_out, d_in))
        self.bias_mu = nn.Parameter(torch.zeros(d_out))
        self.bias_logvar = nn.Parameter(-9.0 + 1e-2 * torch.randn(d_out))

    def log_alpha(self) -> torch.Tensor:
        return (self.z_logvar - torch.log(self.z_mu ** 2 + 1e-8)).clamp(-10, 10)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            z = self.z_mu + (0.5 * self.z_logvar).exp() * torch.randn_like(x)  # one z per example and input
            xz = x * z
            mean = F.linear(xz, self.weight_mu, self.bias_mu)
            var = F.linear(xz * xz, self.weight_logvar.exp(), self.bias_logvar.exp())
            return mean + var.sqrt() * torch.randn_like(mean)
        z = self.z_mu if keep is None else self.z_mu * keep
        return F.linear(x * z, self.weight_mu, self.bias_mu)

    def kl(self) -> torch.Tensor:
        la = self.log_alpha()
        kl_z = -(K1 * torch.sigmoid(K2 + K3 * la) - 0.5 * F.softplus(-la) - K1).sum()
        kl_w = 0.5 * (self.weight_logvar.exp() + self.weight_mu ** 2 - 1.0 - self.weight_logvar).sum()
        kl_b = 0.5 * (self.bias_logvar.exp() + self.bias_mu ** 2 - 1.0 - self.bias_logvar).sum()
        return kl_z + kl_w + kl_b


class LeNet300NJ(nn.Module):
    def __init__(self, d_in: int, classes: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([LinearGroupNJ(d_in, 300), LinearGroupNJ(300, 100), LinearGroupNJ(100, classes)])

    def forward(self, x, keeps=None):
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            x = layer(x, None if keeps is None else keeps[i])
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x

    def kl(self):
        return sum(layer.kl() for layer in self.layers)


def _structure(net: LeNet300NJ, threshold: float, x: torch.Tensor, y: torch.Tensor) -> dict:
    keeps = [(layer.log_alpha() < threshold).float() for layer in net.layers]
    kept_in = [int(k.sum()) for k in keeps]  # inputs of fc1, hidden units of fc1 and fc2 the next layer keeps
    arch = kept_in + [net.layers[-1].weight_mu.shape[0]]
    weights = sum(a * b for a, b in zip(arch[:-1], arch[1:]))
    dense = sum(layer.weight_mu.numel() for layer in net.layers)
    with torch.no_grad():
        acc = float((net(x, keeps).argmax(1) == y).float().mean())
    return {"threshold": threshold, "architecture": arch, "accuracy": acc, "kept_weights": weights,
            "compression_weights": dense / max(weights, 1)}


def run(dataset: str, epochs: int, seed: int, kl_warmup: int, val_fraction: float, batch: int = 100) -> dict:
    data = pc.load_dataset(dataset, seed=seed, val_fraction=val_fraction)
    torch.manual_seed(seed)
    net = LeNet300NJ(math.prod(data.input_shape), data.num_classes)
    seconds = train_elbo(net, data, epochs, seed, kl_warmup, batch)
    net.eval()
    x, y = data.test.x, data.test.y
    with torch.no_grad():
        dense_acc = float((net(x).argmax(1) == y).float().mean())
        sigma_w = [float((0.5 * layer.weight_logvar).exp().median()) for layer in net.layers]
    return {"dataset": dataset, "epochs": epochs, "seed": seed, "kl_warmup": kl_warmup, "val_fraction": val_fraction,
            "dense_accuracy": dense_acc, "median_weight_sigma": sigma_w,
            "pruned": [_structure(net, t, x, y) for t in (3.0, -3.0)], "train_seconds": seconds}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kl-warmup", type=int, default=5)
    p.add_argument("--val-fraction", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args.dataset, args.epochs, args.seed, args.kl_warmup, args.val_fraction)
    print(json.dumps(result))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
