"""Train U-Net candidates on top of a shipped pointwise branch, within one wall-clock budget (a GPU lease).

The cells are prepared once (``--workers`` processes), then each candidate trains for an equal
share of what is left (``train(..., prepared=...)``, ``TrainConfig.max_minutes``), starting from
``--init`` (:func:`elf_workflows.surrogate.train.init_from`: all weights where the architecture
matches, else the pointwise branch with the new U-Net's correction at zero; a candidate as wide as
``--init`` also starts its U-Net fresh unless ``--keep-unet``). Each candidate's best
weights (validation MAE) and metrics are copied to ``--out`` as soon as it finishes; the log goes
there as it is written. Last, the forward pass of every candidate is timed on the validation cells.

The choice between candidates is made on the validation MAE alone (docs/surrogate.md states the
rule); the test split is never read here.

Example (the session-6 GPU run, one H100; its 8-wide candidate continued the shipped U-Net, what ``--keep-unet`` asks for now)::

    python scripts/train_unet_candidates.py --data data/reference --init elf_workflows/data/surrogate.pt \\
        --out $OUT --device cuda --workers 15 --minutes 8.5 --candidates 8,16

A CPU dry run of the whole script (session 7, 2 cores: see docs/surrogate.md)::

    python scripts/train_unet_candidates.py --data data/reference --init elf_workflows/data/surrogate.pt \\
        --out /tmp/dry --device cpu --workers 1 --minutes 4 --candidates 8,16 --max-train-cells 40 \\
        --patches-per-epoch 16
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--init", required=True, help="weights whose pointwise branch every candidate starts from")
    ap.add_argument("--out", required=True, help="folder for the log, each candidate's weights and metrics")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=15)
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock budget of the whole script")
    ap.add_argument("--candidates", default="8,16", help="U-Net base channels, one candidate each")
    ap.add_argument("--patches-per-epoch", type=int, default=256)
    ap.add_argument("--val-every", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4,
                    help="2e-3 (the CPU recipe's) kills the U-Net within ~150 steps; 3e-4 keeps it alive (session 9)")
    ap.add_argument("--reserve", type=float, default=45.0, help="seconds kept for timing and copying at the end")
    ap.add_argument("--max-train-cells", type=int, default=0, help="use only this many training cells (dry runs)")
    ap.add_argument("--keep-unet", action="store_true",
                    help="a candidate as wide as --init continues its U-Net (default: every candidate's U-Net starts "
                         "fresh, with the session-6 signal-propagation fix, on the frozen per-voxel branch)")
    args = ap.parse_args(argv)

    import torch

    from elf_workflows.surrogate.infer import load_model
    from elf_workflows.surrogate.train import TrainConfig, prepare_training_data, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "log.txt").open("a")

    def log(msg: str) -> None:
        line = f"[{time.perf_counter() - t_start:6.0f} s] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    start = load_model(args.init)
    base = start.config.to_dict()
    if args.device.startswith("cuda"):
        log(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    log(f"init {args.init}: {start.version}, {start.config}")
    common = dict(epochs=10_000, patch_size=32, patches_per_epoch=args.patches_per_epoch, batch_size=8, lr=args.lr,
                  pool=1, pretrain_steps=0, seed=1, threads=4, device=args.device, val_every=args.val_every,
                  val_max_cells=150, init=str(args.init), fresh_unet=not args.keep_unet, freeze_pointwise=True,
                  workers=args.workers, max_train_cells=args.max_train_cells or None)
    t0 = time.perf_counter()
    prepared = prepare_training_data(args.data, TrainConfig(model=base, **common))
    log(f"{len(prepared.cells)} training, {len(prepared.val_cells)} validation cells prepared in "
        f"{time.perf_counter() - t0:.0f} s")
    widths = [int(w) for w in args.candidates.split(",")]
    summary = {"init": start.version, "candidates": {}}
    work = Path("/tmp/unet_candidates")
    work.mkdir(exist_ok=True)
    for i, width in enumerate(widths):
        left = args.minutes * 60 - (time.perf_counter() - t_start) - args.reserve
        share = left / (len(widths) - i)
        cfg = TrainConfig(model={**base, "base_channels": width}, max_minutes=share / 60, **common)
        name = f"unet{width}"
        log(f"{name}: {share:.0f} s")
        metrics = train(args.data, work / f"{name}.pt", cfg, log=lambda m, n=name: log(f"{n}: {m}"), progress=False,
                        prepared=prepared)
        shutil.copy(work / f"{name}.pt", out / f"{name}.pt")
        shutil.copy(work / f"{name}.metrics.json", out / f"{name}.metrics.json")
        model = load_model(out / f"{name}.pt")
        summary["candidates"][name] = {"version": model.version, "best_val_mae": metrics.get("best_val_mae"),
                                       "initial_val_mae": metrics.get("initial_val_mae"),
                                       "epochs": len(metrics.get("history", [])),
                                       "n_parameters": model.net.n_parameters()}
        log(f"{name}: {json.dumps(summary['candidates'][name])}")
    # forward-pass time of each candidate on the validation cells (whole cells, one at a time)
    for name in summary["candidates"]:
        model = load_model(out / f"{name}.pt")
        net = model.net.to(args.device).eval()
        xs = [torch.from_numpy(c.features)[None].to(args.device) for c in prepared.val_cells]
        with torch.no_grad():
            for x in xs[:5]:
                net(x)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            for x in xs:
                net(x)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        voxels = sum(x[0, 0].numel() for x in xs)
        summary["candidates"][name]["forward_ms_per_cell"] = 1e3 * seconds / len(xs)
        summary["candidates"][name]["forward_mvoxel_per_s"] = voxels / seconds / 1e6
        log(f"{name}: forward {1e3 * seconds / len(xs):.2f} ms per validation cell, {voxels / seconds / 1e6:.1f} Mvoxel/s")
    summary["config"] = asdict(TrainConfig(model=base, **common))
    summary["seconds"] = time.perf_counter() - t_start
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
