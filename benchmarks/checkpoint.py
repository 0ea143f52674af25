"""Cost of a crash-consistent checkpoint against the old in-place one, in the same run.

Both write the benchmark MLP VAE (784-512-256, k=16) and its Adam state (about 13 MB). The old way
overwrote model.safetensors and optim.safetensors by atomic rename and then state.json, with no
fsync: a kill between the two left a run that could never resume. The new way writes the weights
under new names, fsyncs them, commits state.json with one fsynced rename, then removes the old
files. Reported: milliseconds per checkpoint of each, and the share of a 10-second checkpoint
interval the new one costs.

    python benchmarks/checkpoint.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vaelens._io import write_json
from vaelens._tensors import save_optimizer, save_tensors
from vaelens.models import MLPVAE
from vaelens.training._rundir import commit_checkpoint


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = MLPVAE(input_shape=(1, 28, 28), latent_dim=16)
    optimizer = torch.optim.Adam(model.parameters())
    loss = model.decode(model.encode(torch.rand(8, 1, 28, 28))[0]).sum()
    loss.backward()
    optimizer.step()  # so that the optimiser has its moment tensors
    return model, optimizer


def old_checkpoint(run: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    model_sha = save_tensors(run / "model.safetensors", model.state_dict())
    optim_sha, groups = save_optimizer(run / "optim.safetensors", optimizer)
    write_json(run / "state.json", {"epoch": epoch, "model_sha256": model_sha, "optim_sha256": optim_sha})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    model, optimizer = _model_and_optimizer()
    old, new = [], []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        a, b = Path(tmp) / "old", Path(tmp) / "new"
        a.mkdir()
        b.mkdir()
        for epoch in range(1, args.repeats + 1):  # alternate, so that drift hits both alike
            tic = time.perf_counter()
            old_checkpoint(a, model, optimizer, epoch)
            old.append(time.perf_counter() - tic)
            tic = time.perf_counter()
            commit_checkpoint(b, model, optimizer, epoch, {"loss": 0.0})
            new.append(time.perf_counter() - tic)
    o, n = statistics.median(old) * 1e3, statistics.median(new) * 1e3
    print(f"torch {torch.__version__}, {args.repeats} checkpoints each (medians)")
    print(f"old in-place checkpoint        {o:8.1f} ms")
    print(f"crash-consistent checkpoint    {n:8.1f} ms   ratio {n / o:.2f}")
    print(f"share of a 10 s interval       {n / 1e4:8.2%}   (old {o / 1e4:.2%})")


if __name__ == "__main__":
    main()
