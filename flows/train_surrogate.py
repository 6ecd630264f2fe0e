#!/usr/bin/env python
"""Train the ELF surrogate on a reference dataset as a jobflow job (TrainSurrogateMaker).

Run here, or --submit to a GPU worker of a jobflow-remote project (the `gpu` worker of
flows/jobflow_remote_project.yaml) with --device cuda.

Examples:
  python flows/train_surrogate.py --dataset refs --out surrogate.pt --epochs 20
  python flows/train_surrogate.py --dataset /scratch/me/refs --out /scratch/me/surrogate.pt \\
      --device cuda --epochs 200 --submit --project elf_workflows --worker gpu
"""

from __future__ import annotations

import argparse
import sys

from elf_workflows.remote import add_submit_arguments, quiet_library_warnings


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="reference dataset directory (records.jsonl + shards/)")
    parser.add_argument("--out", default="surrogate.pt", help="model file to write (default surrogate.pt)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--patch", type=int, default=32, help="patch edge in voxels (multiple of 4)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    parser.add_argument("--store", default=None, help="local JobStore location (directory or mongodb:// URI)")
    add_submit_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_library_warnings()
    from pathlib import Path

    from jobflow import Flow

    from elf_workflows.errors import ElfWorkflowsError, InputError

    try:
        from elf_workflows.flows import run_flow
        from elf_workflows.jobs import TrainSurrogateMaker

        if args.epochs <= 0 or args.batch_size <= 0 or args.patch <= 0:
            raise InputError("--epochs, --batch-size and --patch must be positive")
        config = {"epochs": args.epochs, "device": args.device, "patch_size": args.patch,
                  "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads}
        job = TrainSurrogateMaker(config=config).make(str(Path(args.dataset).resolve()), str(Path(args.out).resolve()),
                                                      resume=args.resume)
        flow = Flow([job], output=job.output, name="train surrogate")
        if args.submit:
            from elf_workflows.remote import submit

            ids = submit(flow, project=args.project, worker=args.worker)
            print(f"submitted training job {ids}; model goes to {args.out}", file=sys.stderr)
            print("next: jf runner start   # then: jf job list", file=sys.stderr)
            return 0
        result = run_flow(flow, args.store)
    except (ElfWorkflowsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    best = (result.get("metrics") or {}).get("best_val_mae")
    print(f"model {result['model']}" + (f", best validation ELF MAE {best:.4f}" if best is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
