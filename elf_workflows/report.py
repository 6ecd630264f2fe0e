"""The screening report: ranked table, ranking and parity plots, ELF slices of the top templates.

Written into an output folder as PNG figures plus ``report.md`` and ``report.html`` (the HTML embeds
the same figures by relative path) and ``ranking.json``. The parity data come from
:func:`dft_check`: GPAW on the primitive cells of a few templates, against the surrogate on the same
grid (ELF at the DFT ELF maxima, and the template score).
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from elf_workflows.store import TemplateStore

PROTOTYPE_MARKERS = {"fcc": "o", "bcc": "s", "hcp": "^", "A15": "D", "sc": "v"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------------------------------
# DFT spot check for the parity plot
# --------------------------------------------------------------------------------------------------
def dft_check(store: TemplateStore, template_ids: list[str], engine: str = "surrogate",
              settings: str = "loose", predict=None, timeout_s: float | None = 60.0) -> list[dict]:
    """GPAW against the surrogate on the primitive cells of ``template_ids``.

    For each template: GPAW (preset ``settings``) on the primitive standard cell; the surrogate on
    GPAW's grid; the ELF at the DFT ELF's local maxima (predicted vs DFT) and the template score of
    each ELF (DFT: basins of the SCF density; surrogate: of the SAD, as in screening), plus
    ``score_pred_dft_density``: the surrogate ELF's basins filled with the SCF density, which tells an
    ELF error (it differs from ``score_dft``) from a density error (it differs from ``score_pred``).
    Templates that fail (e.g. no PAW dataset) are reported with a ``reason``.

    ``predict(structure, shape) -> elf`` replaces the shipped surrogate (e.g. another model).
    ``timeout_s`` caps each GPAW calculation (s); one that runs over is reported as failed.
    """
    from dataclasses import replace

    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from elf_workflows.reference.gpaw import PRESETS, compute_gpaw_elf
    from elf_workflows.surrogate.evaluate import local_maxima
    from elf_workflows.templates import score_template

    if predict is None:
        from elf_workflows.surrogate import load_model, predict_elf

        model = load_model()

        def predict(structure, shape):
            return predict_elf(structure, shape=shape, model=model)
    rows = []
    for tid in template_ids:
        doc = store.get(tid, engine=engine)
        structure = SpacegroupAnalyzer(doc.to_structure()).get_primitive_standard_structure()
        row: dict[str, Any] = {"template_id": tid, "formula": doc.formula, "prototype": doc.prototype,
                               "pressure_gpa": doc.pressure_gpa, "nsites": len(structure)}
        try:
            start = time.perf_counter()
            ref = compute_gpaw_elf(structure, settings=replace(PRESETS[settings], timeout_s=timeout_s))
            row["dft_seconds"] = round(time.perf_counter() - start, 2)
        except Exception as exc:  # noqa: BLE001 - a failed spot check must not stop the report
            row["reason"] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            rows.append(row)
            continue
        pred = np.asarray(predict(structure, ref.elf.shape), float)
        mask = local_maxima(ref.elf)
        row.update(
            grid=list(ref.elf.shape),
            settings=settings,
            elf_dft=ref.elf[mask].round(4).tolist(),
            elf_pred=pred[mask].round(4).tolist(),
            elf_voxel_mae=float(np.mean(np.abs(pred - ref.elf))),
            score_dft=score_template(structure, ref.elf, ref.density, density_source="scf").score,
            score_pred=score_template(structure, pred).score,
            score_pred_dft_density=score_template(structure, pred, ref.density, density_source="scf").score,
        )
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------
def ranking_figure(rows: list[dict], path: Path, top: int = 20) -> Path:
    """Left: the best ``top`` templates by score (by highest interstitial ELF when every score is 0).
    Right: the highest interstitial ELF against pressure, per element and prototype, with the
    electron-gas value 0.5 above which attractors count in the score."""
    from matplotlib.patches import Patch

    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, max(4.0, 0.28 * min(top, len(rows)) + 1.5)))
    best = rows[:top][::-1]
    labels = [f"{r['formula']} {r['prototype']} {r['pressure_gpa']:g} GPa" for r in best]
    protos = sorted(PROTOTYPE_MARKERS)
    colors = [plt.cm.tab10(protos.index(r["prototype"]) % 10) if r["prototype"] in PROTOTYPE_MARKERS else "grey"
              for r in best]
    all_zero = all(not r.get("score") for r in rows)
    if all_zero:
        ax1.barh(range(len(best)), [r.get("max_interstitial_elf") or 0.0 for r in best], color=colors)
        ax1.axvline(0.5, color="k", ls="--", lw=0.8)
        ax1.set_xlabel("highest interstitial ELF")
        ax1.set_title(f"top {len(best)} templates (every score is 0: no interstitial ELF above 0.5)", fontsize=9)
    else:
        ax1.barh(range(len(best)), [r["score"] for r in best], color=colors)
        ax1.set_xlabel("template score (localised interstitial e per metal atom)")
        ax1.set_title(f"top {len(best)} templates")
    ax1.set_yticks(range(len(best)), labels, fontsize=8)
    shown = sorted({r["prototype"] for r in best if r["prototype"] in PROTOTYPE_MARKERS})
    ax1.legend(handles=[Patch(color=plt.cm.tab10(protos.index(p) % 10), label=p) for p in shown],
               fontsize=8, loc="lower right")
    formulas = sorted({r["formula"] for r in rows})
    cmap = plt.cm.tab10 if len(formulas) <= 10 else plt.cm.tab20
    for i, formula in enumerate(formulas):
        labelled = False
        for proto, marker in PROTOTYPE_MARKERS.items():
            pts = sorted((r["pressure_gpa"], r.get("max_interstitial_elf") or 0.0) for r in rows
                         if r["formula"] == formula and r["prototype"] == proto and r["pressure_gpa"] is not None)
            if pts:
                x, y = zip(*pts)
                ax2.plot(x, y, marker=marker, color=cmap(i % cmap.N), lw=0.8, ms=5,
                         label=None if labelled else formula)
                labelled = True
    ax2.axhline(0.5, color="k", ls="--", lw=0.8)
    ax2.set_xlabel("pressure (GPa)")
    ax2.set_ylabel("highest interstitial ELF")
    ax2.set_title("highest interstitial ELF vs pressure (marker: "
                  + ", ".join(f"{m} {p}" for p, m in PROTOTYPE_MARKERS.items()) + ")", fontsize=9)
    ax2.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parity_figure(checks: list[dict], path: Path) -> Path | None:
    """Surrogate vs GPAW: ELF at the DFT maxima (left) and template scores (right)."""
    done = [c for c in checks if "elf_dft" in c]
    if not done:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.6))
    for i, c in enumerate(done):
        ax1.scatter(c["elf_dft"], c["elf_pred"], s=14, alpha=0.7, color=plt.cm.tab10(i % 10),
                    label=f"{c['formula']} {c['prototype']} {c['pressure_gpa']:g} GPa")
    ax1.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax1.set(xlim=(0, 1), ylim=(0, 1), xlabel="ELF at DFT maxima, GPAW", ylabel="ELF there, surrogate",
            title="ELF at the DFT ELF maxima")
    ax1.legend(fontsize=7)
    dft = np.array([c["score_dft"] for c in done])
    pred = np.array([c["score_pred"] for c in done])
    ax2.scatter(dft, pred, color=[plt.cm.tab10(i % 10) for i in range(len(done))])
    for c, x, y in zip(done, dft, pred):
        ax2.annotate(c["formula"], (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    hi = max(float(dft.max()), float(pred.max()), 0.05) * 1.1
    ax2.plot([0, hi], [0, hi], "k--", lw=0.8)
    ax2.set(xlim=(0, hi), ylim=(0, hi), xlabel="score, GPAW ELF", ylabel="score, surrogate ELF",
            title="template score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def elf_slices_figure(store: TemplateStore, rows: list[dict], path: Path, n: int = 4) -> Path | None:
    """ELF of the best ``n`` templates on the lattice plane through their strongest interstitial attractor."""
    plt = _plt()
    docs = []
    for r in rows[:n]:
        doc = store.get(r["template_id"], engine=r.get("engine"))
        if "elf" in doc.grids:
            docs.append(doc)
    if not docs:
        return None
    fig, axes = plt.subplots(1, len(docs), figsize=(3.6 * len(docs), 3.8), squeeze=False)
    for ax, doc in zip(axes[0], docs):
        elf = store.load_grid(doc, "elf")
        structure = doc.to_structure()
        inter = [a for a in doc.attractors if a.kind == "interstitial"]
        z = inter[0].frac_coords[2] % 1.0 if inter else 0.0
        k = int(round(z * elf.shape[2])) % elf.shape[2]
        plane = elf[:, :, k]
        a, b = structure.lattice.matrix[0], structure.lattice.matrix[1]
        i, j = np.meshgrid(np.arange(elf.shape[0] + 1) / elf.shape[0], np.arange(elf.shape[1] + 1) / elf.shape[1],
                           indexing="ij")
        x = i * a[0] + j * b[0]
        y = i * a[1] + j * b[1]
        values = np.pad(plane, ((0, 1), (0, 1)), mode="wrap")
        mesh = ax.pcolormesh(x, y, values, vmin=0, vmax=1, cmap="viridis", shading="gouraud")
        for site in structure:
            f = site.frac_coords % 1.0
            if abs(((f[2] - k / elf.shape[2]) + 0.5) % 1.0 - 0.5) < 0.5 / elf.shape[2] + 1e-6:
                for di in (0, 1):
                    for dj in (0, 1):
                        fi, fj = f[0] + di, f[1] + dj
                        if fi <= 1 + 1e-6 and fj <= 1 + 1e-6:
                            p = fi * a + fj * b
                            ax.plot(p[0], p[1], "o", ms=6, mfc="white", mec="k")
        for att in inter:
            f = np.asarray(att.frac_coords) % 1.0
            if abs(((f[2] - k / elf.shape[2]) + 0.5) % 1.0 - 0.5) < 0.5 / elf.shape[2] + 1e-6:
                p = f[0] * a + f[1] * b
                ax.plot(p[0], p[1], "x", ms=7, color="red")
        ax.set_aspect("equal")
        ax.set_title(f"{doc.formula} {doc.prototype} {doc.pressure_gpa:g} GPa\nz = {k}/{elf.shape[2]}, "
                     f"score {doc.score:.3f}", fontsize=9)
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
    fig.colorbar(mesh, ax=axes[0].tolist(), shrink=0.8, label="ELF")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------
def order_rows(rows: list[dict]) -> list[dict]:
    """Rows by descending score; ties (e.g. many templates at score 0, no void above ELF 0.5) by
    descending highest interstitial ELF, then ``template_id``."""
    return sorted(rows, key=lambda r: (-float(r.get("score") or 0.0), -float(r.get("max_interstitial_elf") or 0.0),
                                       str(r.get("template_id"))))


def _table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["rank", "template", "formula", "prototype", "P (GPa)", "score", "max interstitial ELF",
              "interstitial e"]
    body = []
    for i, r in enumerate(rows, 1):
        elf_max = r.get("max_interstitial_elf")
        electrons = r.get("interstitial_electrons")
        body.append([str(i), str(r["template_id"]), str(r["formula"]), str(r["prototype"]),
                     f"{r['pressure_gpa']:g}" if r.get("pressure_gpa") is not None else "-",
                     f"{r['score']:.4f}", f"{elf_max:.3f}" if elf_max is not None else "-",
                     f"{electrons:.3f}" if electrons is not None else "-"])
    return header, body


def format_table(rows: list[dict]) -> str:
    """The ranked table as aligned plain text (what the demo prints)."""
    header, body = _table(rows)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def write_report(store: TemplateStore, out_dir: str | Path, engine: str = "surrogate", top: int = 20,
                 checks: list[dict] | None = None, n_slices: int = 4, info: dict | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``ranking.json`` and the figures into ``out_dir``.

    Returns the paths written, by name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = order_rows(store.rank(engine=engine))
    if not rows:
        from elf_workflows.errors import StoreError

        raise StoreError(f"no templates with engine {engine!r} in {store.description}; screen first")
    paths: dict[str, Path] = {}
    paths["ranking_plot"] = ranking_figure(rows, out / "ranking.png", top=top)
    parity = parity_figure(checks or [], out / "parity.png")
    if parity:
        paths["parity_plot"] = parity
    slices = elf_slices_figure(store, rows, out / "elf_slices.png", n=n_slices)
    if slices:
        paths["elf_slices"] = slices
    (out / "ranking.json").write_text(json.dumps({"info": info or {}, "ranking": rows, "dft_check": checks or []},
                                                 indent=1, default=str))
    paths["ranking_json"] = out / "ranking.json"

    header, body = _table(rows[:top])
    md = [f"# Template screening report ({engine})", ""]
    for key, value in (info or {}).items():
        md.append(f"- **{key}**: {value}")
    md += ["", f"{len(rows)} templates in `{store.description}`; the best {len(body)}:", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    md += ["", "Score: localised interstitial electrons per metal atom, "
           "Σ m·q·clip((ELF−0.5)/0.5, 0, 1) / N_metal over interstitial ELF attractors; templates with equal "
           "scores are ordered by their highest interstitial ELF.", "",
           "## Ranking", "", "![ranking](ranking.png)", ""]
    if parity:
        done = [c for c in checks if "elf_dft" in c]
        md += ["## Surrogate against DFT (GPAW spot check)", "", "![parity](parity.png)", "",
               "| template | sites | grid | ELF voxel MAE | score GPAW | score surrogate | surrogate ELF, GPAW density "
               "| GPAW s |", "|---|---|---|---|---|---|---|---|"]
        md += [f"| {c['template_id']} | {c['nsites']} | {'x'.join(map(str, c['grid']))} | {c['elf_voxel_mae']:.3f} "
               f"| {c['score_dft']:.3f} | {c['score_pred']:.3f} | {c.get('score_pred_dft_density', float('nan')):.3f} "
               f"| {c['dft_seconds']} |" for c in done]
        md += [f"| {c['template_id']} | failed: {c['reason']} | | | | | | |" for c in checks if "reason" in c]
        md += ["", f"GPAW settings: preset `{done[0]['settings']}` (not converged: a sanity check, not a benchmark).",
               ""]
    if slices:
        md += ["## ELF of the top templates", "", "Lattice plane through the strongest interstitial attractor "
               "(red ×); white circles: metal atoms in the plane.", "", "![ELF slices](elf_slices.png)", ""]
    (out / "report.md").write_text("\n".join(md))
    paths["markdown"] = out / "report.md"
    (out / "report.html").write_text(_markdown_to_html(md, title=f"Template screening report ({engine})"))
    paths["html"] = out / "report.html"
    return paths


def _markdown_to_html(lines: list[str], title: str) -> str:
    """The few markdown constructs the report uses (headings, lists, tables, images) as HTML."""
    import re

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:2px 8px;font-size:90%}img{max-width:100%}</style></head><body>"]
    in_table = in_list = False
    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells) + "</tr>")
            else:
                out.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{inline(line[2:])}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        image = re.match(r"!\[(.*)\]\((.*)\)", line)
        if image:
            out.append(f"<p><img alt='{html.escape(image.group(1))}' src='{html.escape(image.group(2))}'></p>")
        elif line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    if in_table:
        out.append("</table>")
    if in_list:
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out)
