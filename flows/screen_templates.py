#!/usr/bin/env python
"""Screen metal sublattices as superhydride templates with the jobflow TemplateScreeningMaker.

Runs here (jobflow.run_locally) into the embedded store, or with --submit puts the flow in the
queue of a jobflow-remote project (then `jf runner start`, `jf job list`).

Examples:
  python flows/screen_templates.py --elements La,Y,Ca --prototypes fcc,bcc,hcp --pressures 150,250
  python flows/screen_templates.py --elements La --prototypes fcc --pressures 150 --engine gpaw --gpaw-settings loose
  python flows/screen_templates.py --elements La,Y --prototypes fcc,hcp --pressures 150,250 \\
      --submit --project elf_workflows --worker cpu --store mongodb://db.my.lab:27017/elf_workflows
"""

from __future__ import annotations

import argparse
import sys

from elf_workflows.remote import add_submit_arguments, quiet_library_warnings


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", required=True, help="comma-separated metals, e.g. La,Y,Ca")
    parser.add_argument("--prototypes", required=True, help="comma-separated prototypes, e.g. fcc,bcc,hcp,A15")
    parser.add_argument("--pressures", required=True, help="comma-separated pressures in GPa, e.g. 100,200,300")
    parser.add_argument("--engine", default="surrogate",
                        help="ELF engine: surrogate (default), gpaw, gradient-expansion, or package.module:function")
    parser.add_argument("--gpaw-settings", default=None, help="GPAW preset (default, training, loose) for --engine gpaw")
    parser.add_argument("--model", default=None, help="surrogate model file (default: the shipped one)")
    parser.add_argument("--binaries", action="store_true", help="also screen binary prototypes of element pairs")
    parser.add_argument("--store", default=None,
                        help="elf-workflows store (directory or mongodb:// URI); also holds the local JobStore. "
                             "Default: $ELF_WORKFLOWS_STORE, else ./elf_store")
    parser.add_argument("--top", type=int, default=20, help="rows of the ranking to print (default 20)")
    parser.add_argument("--json", action="store_true", help="print the ranking as JSON on standard output")
    add_submit_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_library_warnings()
    import json

    from elf_workflows.errors import ElfWorkflowsError

    try:
        from elf_workflows.flows import TemplateScreeningMaker, run_flow
        from elf_workflows.store import default_store_spec

        engine_kwargs = {}
        if args.gpaw_settings:
            engine_kwargs["settings"] = args.gpaw_settings
        if args.model:
            engine_kwargs["model"] = args.model
        store = args.store or default_store_spec()
        maker = TemplateScreeningMaker(engine=args.engine, engine_kwargs=engine_kwargs, binaries=args.binaries,
                                       store=store)
        flow = maker.make(args.elements, args.prototypes, [float(p) for p in args.pressures.split(",") if p.strip()])
        if args.submit:
            from elf_workflows.remote import submit

            ids = submit(flow, project=args.project, worker=args.worker)
            print(f"submitted {len(ids)} job(s) of flow {flow.uuid}; templates go to {store}", file=sys.stderr)
            print("next: jf runner start   # then: jf job list, jf flow list", file=sys.stderr)
            return 0
        ranked = run_flow(flow, store)
    except ElfWorkflowsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(ranked[: args.top], indent=2))
        return 0
    print(f"{'rank':>4}  {'template_id':<28} {'formula':<8} {'prototype':<9} {'P (GPa)':>7} {'score':>8}")
    for row in ranked[: args.top]:
        print(f"{row['rank']:>4}  {str(row['template_id']):<28} {row['formula']:<8} {str(row['prototype']):<9} "
              f"{row['pressure_gpa'] or 0:>7.0f} {row['score']:>8.4f}")
    print(f"{len(ranked)} templates ranked; stored in {store} (elf-workflows rank --store {store})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
