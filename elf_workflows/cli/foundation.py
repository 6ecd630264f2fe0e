"""Commands ``sad`` and ``symmetry``: the SAD field of a structure and its space group on grids."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from elf_workflows.errors import GridError

GRID_HELP = "Grid sizes NX NY NZ (any positive integers)."
SPACING_HELP = "Largest voxel edge (Å): the smallest FFT-friendly, symmetry-compatible grid is chosen."


def resolve_grid(structure, grid: Optional[tuple[int, int, int]], spacing: Optional[float],
                 default_spacing: float = 0.1) -> tuple[int, int, int]:
    """The grid a command works on: ``--grid`` as given, else the grid for ``--spacing`` (Å)."""
    from elf_workflows.grids import check_grid, grid_for_spacing

    if grid is not None and spacing is not None:
        raise GridError("give either --grid or --spacing, not both")
    if grid is not None:
        return check_grid(grid)
    return check_grid(grid_for_spacing(structure, spacing if spacing is not None else default_spacing))


def sad(
    structure_file: Path = typer.Argument(..., help="Structure file (POSCAR, CIF, ... anything pymatgen reads)."),
    output: Path = typer.Option(Path("CHGCAR"), "-o", "--output", help="CHGCAR to write (ρ·V, as VASP)."),
    grid: Optional[tuple[int, int, int]] = typer.Option(None, "--grid", help=GRID_HELP),
    spacing: Optional[float] = typer.Option(None, "--spacing", help=SPACING_HELP + " Default 0.1 Å."),
    partition: bool = typer.Option(False, "--partition", help="Superpose the partition densities (pseudo valence "
                                   "+ PAW compensation charges) that scores count basin electrons in, not the "
                                   "smooth valence densities the surrogate reads."),
) -> None:
    """Superposition of valence atomic densities (SAD) on the unit-cell grid, written as a CHGCAR."""
    from elf_workflows.io import read_structure, write_chgcar
    from elf_workflows.sad import integrate, superpose, valence_count

    structure = read_structure(structure_file)
    shape = resolve_grid(structure, grid, spacing)
    kind = "partition" if partition else "valence"
    start = time.perf_counter()
    rho = superpose(structure, shape, kind)
    seconds = time.perf_counter() - start
    write_chgcar(structure, rho, output)
    typer.echo(
        f"{structure.composition.reduced_formula}: SAD ({kind}) on {shape[0]}x{shape[1]}x{shape[2]} grid, "
        f"{integrate(rho, structure):.6f} of {valence_count(structure):g} valence electrons, "
        f"ρ in [{rho.min():.4g}, {rho.max():.4g}] e/Å³, {seconds:.2f} s -> {output}", err=True)


def symmetry(
    structure_file: Path = typer.Argument(..., help="Structure file."),
    symprec: float = typer.Option(1e-3, help="spglib tolerance (Å)."),
    grid: Optional[tuple[int, int, int]] = typer.Option(None, "--grid", help="Also report this grid."),
    spacing: float = typer.Option(0.1, "--spacing", help=SPACING_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Space group, Seitz operators (W, w), and which grids they map onto themselves."""
    from elf_workflows.grids import grid_for_spacing
    from elf_workflows.io import read_structure
    from elf_workflows.symmetry import get_space_group, seitz_symbol

    structure = read_structure(structure_file)
    group = get_space_group(structure, symprec)
    best = grid_for_spacing(structure, spacing, symprec)
    grids = [best] + ([tuple(grid)] if grid else [])
    report = {
        "formula": structure.composition.reduced_formula,
        "spacegroup": {"symbol": group.symbol, "number": group.number},
        "n_operations": len(group),
        "operations": [
            {"W": W.tolist(), "w": [round(float(t), 8) for t in w], "seitz": seitz_symbol(W, w)}
            for W, w in zip(group.rotations, group.translations)
        ],
        "wyckoffs": list(group.wyckoffs),
        "grids": [
            {"shape": list(g), "compatible_operations": int(group.is_grid_compatible(g).sum()),
             "all_compatible": bool(group.is_grid_compatible(g).all()),
             "note": f"smallest FFT-friendly grid for {spacing} Å" if i == 0 else "requested"}
            for i, g in enumerate(grids)
        ],
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{report['formula']}: {group.symbol} (No. {group.number}), {len(group)} operations")
    for i, op in enumerate(report["operations"]):
        typer.echo(f"  {i + 1:3d} {op['seitz']}")
    for g in report["grids"]:
        shape = "x".join(map(str, g["shape"]))
        typer.echo(f"grid {shape}: {g['compatible_operations']}/{len(group)} operations map it onto itself ({g['note']})")


def register(app: typer.Typer) -> None:
    app.command("sad")(sad)
    app.command("symmetry")(symmetry)
