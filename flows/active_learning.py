#!/usr/bin/env python
"""Active learning with the jobflow ActiveLearningMaker: surrogate screening → DFT on the
top-ranked and the least certain templates → compare → add to the dataset → retrain.

The least certain templates are those whose score is most sensitive to the surrogate's ELF error
at their void maxima (engine surrogate-uncertainty, see docs/flows.md).

Examples:
  python flows/active_learning.py --elements La,Y,Ca --prototypes fcc,bcc,hcp --pressures 150,250 \\
      --dataset refs --n-top 3 --n-uncertain 3 --submit --project elf_workflows --worker cpu
  python flows/active_learning.py --elements Li,Al --prototypes fcc,bcc --pressures 100 \\
      --dataset refs --dft gpaw --gpaw-settings loose --n-top 1 --n-uncertain 1 --no-retrain   # runs here
"""

from __future__ import annotations

import argparse
import sys

from elf_workflows.remote import add_submit_arguments, quiet_library_warnings


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", required=True, help="comma-separated metals")
    parser.add_argument("--prototypes", required=True, help="comma-separated prototypes")
    parser.add_argument("--pressures", required=True, help="comma-separated pressures in GPa")
    parser.add_argument("--dataset", required=True, help="dataset directory the new DFT records are added to")
    parser.add_argument("--dft", choices=("gpaw", "vasp"), default="gpaw", help="DFT code for the selected templates")
    parser.add_argument("--gpaw-settings", default="training", help="GPAW preset: default, training, loose")
    parser.add_argument("--n-top", type=int, default=3, help="best-scored templates recomputed with DFT")
    parser.add_argument("--n-uncertain", type=int, default=3, help="least certain templates recomputed with DFT")
    parser.add_argument("--no-retrain", action="store_true", help="stop after the comparison")
    parser.add_argument("--model-out", default="surrogate-retrained.pt", help="retrained model file")
    parser.add_argument("--epochs", type=int, default=20, help="retraining epochs")
    parser.add_argument("--device", default="cpu", help="retraining device: cpu or cuda")
    parser.add_argument("--store", default=None, help="elf-workflows store / local JobStore (directory or URI)")
    add_submit_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_library_warnings()
    from pathlib import Path

    from elf_workflows.errors import ElfWorkflowsError

    try:
        from elf_workflows.flows import ActiveLearningMaker, ReferenceSetMaker, TemplateScreeningMaker, run_flow
        from elf_workflows.store import default_store_spec

        store = args.store or default_store_spec()
        maker = ActiveLearningMaker(
            screening=TemplateScreeningMaker(store=store),
            reference=ReferenceSetMaker(engine=args.dft, engine_kwargs={"settings": args.gpaw_settings}),
            n_top=args.n_top, n_uncertain=args.n_uncertain, retrain=not args.no_retrain,
            train_kwargs={"epochs": args.epochs, "device": args.device})
        flow = maker.make(args.elements, args.prototypes, [float(p) for p in args.pressures.split(",") if p.strip()],
                          dataset=str(Path(args.dataset).resolve()), model_out=str(Path(args.model_out).resolve()))
        if args.submit:
            from elf_workflows.remote import submit

            ids = submit(flow, project=args.project, worker=args.worker)
            print(f"submitted {len(ids)} job(s) of flow {flow.uuid}", file=sys.stderr)
            print("next: jf runner start   # then: jf job list, jf flow list", file=sys.stderr)
            return 0
        result = run_flow(flow, store)
    except (ElfWorkflowsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{'template_id':<28} {'reason':<9} {'surrogate':>9} {'DFT':>7} {'ELF MAE':>8}")
    for row in result["comparison"]:
        mae = f"{row['elf_mae']:.4f}" if row.get("elf_mae") is not None else "-"
        dft = f"{row['dft_score']:.4f}" if row.get("dft_score") is not None else "-"
        print(f"{str(row['template_id']):<28} {row['reason']:<9} {row['surrogate_score']:>9.4f} {dft:>7} {mae:>8}")
    if "model" in result:
        print(f"retrained model: {result['model']['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
