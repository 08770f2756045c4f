"""The lottery ticket's rounds on disk: each trained once, shared by every call that walks the same trajectory.

A call is identified by its init, trained state, rewind weights, seed and options; a round
is reused only when its stored plan equals the caller's plan up to that round, so a changed
schedule never reads a stale round. Files are written atomically (safetensors, no pickle).
A lock file per round keeps two processes from training the same round: the second waits
for the first one's file (or takes over when the owner died).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn

from ...runs import RunError, load_checkpoint, save_checkpoint
from ..masks import Masks
from .budget import Budget

__all__ = ["RoundCache", "tensor_digest"]

#: what a cached round is: (trained state, masks, cumulative budget, history rows so far)
Round = tuple[dict, Masks, dict, list]


def tensor_digest(state: Optional[Mapping[str, torch.Tensor]]) -> str:
    """A short SHA-256 of a state dict's names, shapes and values."""
    h = hashlib.sha256()
    for k in sorted(state or {}):
        t = state[k].detach().to("cpu").contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


class RoundCache:
    """The trained network and masks after each lottery round of one identity, in ``root/<hash>/``."""

    def __init__(self, root: Path, identity: dict) -> None:
        self.identity = identity
        key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = Path(root) / key

    def _file(self, r: int) -> Path:
        return self.dir / f"round{r}.safetensors"

    def load(self, r: int, plan: list) -> Optional[Round]:
        """Round ``r`` if it is cached under the same plan up to ``r`` (an unreadable file warns and misses)."""
        path = self._file(r)
        if not path.is_file():
            return None
        try:
            tensors, meta = load_checkpoint(path)
        except RunError as exc:
            warnings.warn(f"ignoring the unreadable lottery round cache {path}: {exc}")
            return None
        stored = meta.get("plan") or []
        if len(stored) != r or any(abs(a - b) > 1e-12 for x, y in zip(stored, plan[:r]) for a, b in zip(x, y)):
            return None
        state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
        masks = Masks.from_tensors({k[len("mask."):]: v for k, v in tensors.items() if k.startswith("mask.")})
        return state, masks, dict(meta.get("budget") or {}), list(meta.get("history") or [])

    def save(self, r: int, plan: list, net: nn.Module, masks: Masks, budget: Budget, history: list) -> None:
        tensors = {f"state.{k}": v for k, v in net.state_dict().items()}
        tensors.update({f"mask.{k}": v for k, v in masks.to_tensors().items()})
        save_checkpoint(self._file(r), tensors, {"plan": [list(x) for x in plan[:r]], "budget": asdict(budget),
                                                 "history": history, "identity": self.identity})

    def claim(self, r: int, plan: list, timeout: float = 24 * 3600.0) -> Optional[Round]:
        """Wait until round ``r`` is cached (returns it) or this process owns its lock (returns None)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = self.dir / f"round{r}.lock"
        t0 = time.monotonic()
        while True:
            hit = self.load(r, plan)
            if hit is not None:
                return hit
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                with os.fdopen(fd, "w") as fh:
                    fh.write(str(os.getpid()))
                return None
            except FileExistsError:
                try:
                    owner = int(lock.read_text() or "0")
                    os.kill(owner, 0)  # raises if the owner is gone
                except (ValueError, ProcessLookupError, FileNotFoundError):
                    lock.unlink(missing_ok=True)  # stale: its owner died
                    continue
                except PermissionError:
                    pass
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"waited {timeout:.0f} s for lottery round {r} in {self.dir}")
                time.sleep(1.0)

    def release(self, r: int) -> None:
        (self.dir / f"round{r}.lock").unlink(missing_ok=True)
