#!/usr/bin/env python
"""DFT reference ELF for a set of structures with the jobflow ReferenceSetMaker → dataset records.

VASP runs through atomate2 (elf_workflows.reference.vasp.VaspElfMaker: an LELF static), so the
flow is normally submitted to a cluster with jobflow-remote; --engine gpaw runs here with GPAW.
Each finished cell is scored and appended (ELF + SCF density) to the dataset directory.

Examples:
  python flows/vasp_reference_set.py POSCAR_1 POSCAR_2 --dataset refs --submit --project elf_workflows --worker cpu
  python flows/vasp_reference_set.py --sublattices templates.json --dataset refs --submit
  python flows/vasp_reference_set.py Al.vasp --engine gpaw --gpaw-settings loose --dataset refs   # runs here
"""

from __future__ import annotations

import argparse
import sys

from elf_workflows.remote import add_submit_arguments, quiet_library_warnings


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("structures", nargs="*", help="structure files (POSCAR, CIF, ... anything pymatgen reads)")
    parser.add_argument("--sublattices", default=None,
                        help="JSON file of `elf-workflows sublattices -o FILE.json` (template ids are kept)")
    parser.add_argument("--dataset", required=True, help="dataset directory the records are appended to")
    parser.add_argument("--engine", choices=("vasp", "gpaw"), default="vasp", help="DFT code (default vasp)")
    parser.add_argument("--gpaw-settings", default="default", help="GPAW preset: default, training, loose")
    parser.add_argument("--split", choices=("train", "val", "test"), default="train", help="split of the records")
    parser.add_argument("--store", default=None, help="local JobStore location (directory or mongodb:// URI)")
    add_submit_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_library_warnings()
    import json
    from pathlib import Path

    from elf_workflows.errors import ElfWorkflowsError, InputError

    try:
        from elf_workflows.flows import ReferenceSetMaker, run_flow
        from elf_workflows.io import read_structure

        structures, metadata = [], []
        for path in args.structures:
            structures.append(read_structure(path))
            metadata.append({"source_file": str(path)})
        if args.sublattices:
            for doc in json.loads(Path(args.sublattices).read_text()):
                structures.append(doc["structure"])
                metadata.append({k: doc.get(k) for k in ("template_id", "prototype", "pressure_gpa")})
        if not structures:
            raise InputError("give structure files or --sublattices FILE.json")
        maker = ReferenceSetMaker(engine=args.engine, engine_kwargs={"settings": args.gpaw_settings},
                                  dataset=str(Path(args.dataset).resolve()), split=args.split,
                                  source="flows/vasp_reference_set.py")
        flow = maker.make(structures, metadata=metadata)
        if args.submit:
            from elf_workflows.remote import submit

            ids = submit(flow, project=args.project, worker=args.worker)
            print(f"submitted {len(ids)} job(s) for {len(structures)} structure(s); records go to {args.dataset}",
                  file=sys.stderr)
            print("next: jf runner start   # then: jf job list", file=sys.stderr)
            return 0
        records = run_flow(flow, args.store)
    except (ElfWorkflowsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for rec in records:
        print(f"{rec['id']}  {rec['formula']:<8} {rec['engine']:<5} grid {'x'.join(map(str, rec['shape']))}  "
              f"{rec['electrons']:.3f} e  score {rec.get('score')}")
    print(f"{len(records)} record(s) in {args.dataset}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
