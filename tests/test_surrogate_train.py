"""Surrogate training, evaluation and CLI on a tiny synthetic reference dataset (target: a known ELF-like field)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from elf_workflows.dataset import DatasetWriter, ReferenceDataset, record_id
from elf_workflows.sad import sad_density
from elf_workflows.surrogate import load_model
from elf_workflows.surrogate.features import gradient_expansion_elf
from elf_workflows.surrogate.model import UNetConfig
from elf_workflows.surrogate.train import TrainConfig, train

torch.set_num_threads(1)

TINY = UNetConfig(base_channels=4, levels=2, convs_per_level=1, spacing=0.3).to_dict()


def synthetic_target(structure, shape):
    """An ELF-like field the network can learn from its inputs: a squashed gradient-expansion ELF."""
    ge = gradient_expansion_elf(sad_density(structure, shape), structure.lattice)
    return 0.15 + 0.7 * ge**2


def make_dataset(path):
    cells = [
        ("train", Structure(Lattice.cubic(3.3), ["Ca", "Ca"], [[0, 0, 0], [0.5, 0.5, 0.5]])),
        ("train", Structure(Lattice.cubic(3.6), ["Fe", "Pb"], [[0, 0, 0], [0.5, 0.5, 0.5]])),
        ("train", Structure(Lattice.cubic(3.0), ["K"], [[0, 0, 0]])),
        ("val", Structure(Lattice.cubic(3.4), ["Mg", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])),
        ("test", Structure(Lattice.cubic(3.9), ["Ca", "Ba"], [[0, 0, 0], [0.5, 0.5, 0.5]])),
    ]
    with DatasetWriter(path) as writer:
        for split, s in cells:
            shape = (12, 12, 12)
            elf = synthetic_target(s, shape)
            writer.add({"id": record_id(s, "synthetic"), "structure": s, "engine": "gpaw", "split": split,
                        "seconds": 60.0, "source": "synthetic test"}, elf, sad_density(s, shape))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("surrogate")
    data = make_dataset(root / "data")
    out = root / "model.pt"
    cfg = TrainConfig(epochs=12, patch_size=12, patches_per_epoch=16, batch_size=4, lr=5e-3, pool=2, seed=3, pretrain_steps=0, val_every=1, freeze_pointwise=False,
                      threads=1, model=TINY)
    metrics = train(data, out, cfg, progress=False, log=lambda m: None)
    return data, out, cfg, metrics


def test_tiny_training_lowers_the_loss_and_logs_every_term(trained):
    data, out, cfg, metrics = trained
    h = metrics["history"]
    assert len(h) == 12
    assert np.mean([r["loss_vox"] for r in h[-3:]]) < 0.8 * h[0]["loss_vox"]
    # the untrained network (sigmoid(0) = 0.5 everywhere, up to its random head) against the trained one
    assert metrics["initial_val_mae"] > 0.1
    assert metrics["best_val_mae"] == min(r["val_mae"] for r in h) < 0.5 * metrics["initial_val_mae"]
    for row in h:
        for t in ("vox", "hist", "grad"):
            assert np.isfinite(row[f"loss_{t}"]) and row[f"weight_{t}"] > 0
    assert h[-1]["s_vox"] != 0.0  # the uncertainty weights were learned
    for suffix in (".ckpt",):
        assert (out.parent / (out.name + suffix)).is_file()
    assert (out.parent / "model.metrics.json").is_file() and (out.parent / "model.loss.png").stat().st_size > 1000
    model = load_model(out)
    assert model.version.startswith("surrogate-")
    assert model.metadata["trained_on"]["n_train_cells"] == 3
    assert model.metadata["trained_on"]["dataset"] == "data"  # the dataset's name, not this machine's path
    assert "BaCa" not in model.metadata["trained_on"]["train_formulas"]  # the test split is never read
    # the V/V0 range of the training cells is recorded and read back by the domain check
    from elf_workflows.surrogate.domain import compression_ratio, trained_v_ratio

    ds = ReferenceDataset(data)
    ratios = [compression_ratio(ds.load_structure(r["id"])) for r in ds.records(split="train")]
    assert trained_v_ratio(model) == pytest.approx((min(ratios), max(ratios)), abs=1e-4)


def test_pointwise_pretraining_fits_a_local_target(tmp_path):
    from elf_workflows.surrogate.data import load_cells
    from elf_workflows.surrogate.model import PeriodicUNet
    from elf_workflows.surrogate.train import pretrain_pointwise

    ds = ReferenceDataset(make_dataset(tmp_path / "data"))
    cfg = UNetConfig(**TINY)
    cells = load_cells(ds, list(ds.records(split="train")), cfg.spacing, cfg.multiple)
    torch.manual_seed(0)
    net = PeriodicUNet(cfg)
    target = np.concatenate([c.target.ravel() for c in cells])
    mae_const = np.abs(target - target.mean()).mean()
    mae = pretrain_pointwise(net, cells, 300, np.random.default_rng(0))
    # the target is a pointwise function of the ge_elf input channel: a per-voxel model fits it closely
    assert mae < 0.3 * mae_const
    with torch.no_grad():
        pred = np.concatenate([net(torch.from_numpy(c.features)[None])[0, 0].numpy().ravel() for c in cells])
    assert np.abs(pred - target).mean() == pytest.approx(mae, abs=0.02)  # the U-Net head is still zero


def test_init_and_freeze_pointwise_train_only_the_unet(trained, tmp_path):
    data, out, cfg, _ = trained
    start = load_model(out)
    cfg2 = TrainConfig(**{**cfg.__dict__, "epochs": 2, "init": str(out), "freeze_pointwise": True})
    metrics = train(data, tmp_path / "model.pt", cfg2, progress=False, log=lambda m: None)
    ck = torch.load(tmp_path / "model.pt.ckpt", weights_only=False)["net"]
    before = start.net.state_dict()
    assert all(torch.equal(ck[k], before[k]) for k in before if k.startswith("point."))
    assert any(not torch.equal(ck[k], before[k]) for k in before if k.startswith("down."))
    # the starting weights are the first "best": validation before training equals the init model's
    assert metrics["initial_val_mae"] == pytest.approx(min(r["val_mae"] for r in _history(out)), rel=1e-6)


def _history(out):
    return json.loads((out.parent / "model.metrics.json").read_text())["history"]


def test_resume_continues_from_checkpoint(trained, tmp_path):
    data, out, cfg, _ = trained
    import shutil

    for name in (out.name, out.name + ".ckpt", "model.metrics.json"):
        shutil.copy(out.parent / name, tmp_path / name)
    cfg2 = TrainConfig(**{**cfg.__dict__, "epochs": 13})
    metrics = train(data, tmp_path / "model.pt", cfg2, resume=True, progress=False, log=lambda m: None)
    assert [r["epoch"] for r in metrics["history"]] == list(range(1, 14))


def test_evaluate_reports_metrics_and_figures(trained, tmp_path):
    from elf_workflows.surrogate.evaluate import evaluate, local_maxima

    data, out, _, _ = trained
    result = evaluate(data, "test", load_model(out), tmp_path)
    assert result["n_structures"] == 1 and result["n_maxima"] > 0
    ds = ReferenceDataset(data)
    rec = next(ds.records(split="test"))
    s, ref, _ = ds.load(rec["id"])
    # the constant baseline's voxel MAE, recomputed independently
    const = result["constant"]
    assert result["summary"]["constant"]["voxel_mae"] == pytest.approx(np.abs(ref - const).mean(), rel=1e-5)
    assert result["constant_from"] == "train split" and const != 0.5
    assert local_maxima(ref).sum() == result["n_maxima"]
    for name in ("metrics.json", "per_structure.csv", "parity.png", "b2_slices.png", "b2_isosurfaces.png"):
        assert (tmp_path / name).stat().st_size > 100
    assert result["figures"]["b2_pairs_found"] == ["BaCa", "FePb"]
    # the per-compression summary: the one test cell falls in its V/V0 bin and repeats the overall numbers
    from elf_workflows.surrogate.domain import compression_ratio
    from elf_workflows.surrogate.evaluate import COMPRESSION_BINS

    ((label, part),) = result["by_compression"].items()
    lo, hi = COMPRESSION_BINS[label]
    assert lo <= compression_ratio(s) < hi and part["n_structures"] == 1
    assert part["surrogate"]["voxel_mae"] == pytest.approx(result["summary"]["surrogate"]["voxel_mae"], rel=1e-12)
    assert part["gradient_expansion"]["maxima_r2"] == pytest.approx(result["summary"]["gradient_expansion"]["maxima_r2"])


def test_periodic_isosurface_of_a_gaussian_is_a_sphere_of_the_analytic_radius():
    """exp(-r²/2σ²) = level on a sphere of radius σ·sqrt(2 ln(1/level)), also when centred on a cell corner."""
    from elf_workflows.surrogate.evaluate import periodic_isosurface

    lattice = Lattice.cubic(4.0)
    n, sigma, level = 48, 0.6, 0.5
    x = np.arange(n) / n * 4.0
    for centre in (2.0, 0.0):
        d = (x - centre + 2.0) % 4.0 - 2.0  # periodic distance along an axis
        r2 = d[:, None, None] ** 2 + d[None, :, None] ** 2 + d[None, None, :] ** 2
        verts, faces = periodic_isosurface(np.exp(-r2 / (2 * sigma**2)), level, lattice)
        dv = (verts - centre + 2.0) % 4.0 - 2.0
        radius = np.linalg.norm(dv, axis=1)
        assert len(faces) > 100
        assert radius == pytest.approx(sigma * np.sqrt(2 * np.log(1 / level)), abs=0.02)
    assert len(periodic_isosurface(np.full((4, 4, 4), 0.2), 0.5, lattice)[1]) == 0


def test_local_maxima_periodic():
    from elf_workflows.surrogate.evaluate import local_maxima

    f = np.zeros((8, 8, 8)) + 0.1
    f[0, 0, 0] = 0.9  # wraps around the cell corner
    f[4, 4, 4] = 0.7
    f[4, 4, 5] = 0.6  # not a maximum: its neighbour is higher
    assert set(map(tuple, np.argwhere(local_maxima(f, floor=0.5)))) == {(0, 0, 0), (4, 4, 4)}


def test_cli_predict_train_evaluate(trained, tmp_path, capsys):
    from elf_workflows.cli import main

    data, out, _, _ = trained
    poscar = tmp_path / "CaBa.vasp"
    Structure(Lattice.cubic(3.9), ["Ca", "Ba"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(poscar), fmt="poscar")
    poscar2 = tmp_path / "K.vasp"
    Structure(Lattice.cubic(3.0), ["K"], [[0, 0, 0]]).to(filename=str(poscar2), fmt="poscar")
    assert main(["predict", str(poscar), "--grid", "10", "12", "14", "-o", str(tmp_path / "ELFCAR"),
                 "--model", str(out)]) == 0
    text = (tmp_path / "ELFCAR").read_text()
    model = load_model(out)
    assert model.version in text.splitlines()[0]
    side = json.loads((tmp_path / "ELFCAR.json").read_text())
    assert side["model_version"] == model.version and side["grid"] == [10, 12, 14]
    from elf_workflows.io import read_elfcar

    _, elf = read_elfcar(tmp_path / "ELFCAR")
    assert elf.shape == (10, 12, 14) and 0 <= elf.min() and elf.max() <= 1
    assert main(["predict", str(poscar), str(poscar2), "--out-dir", str(tmp_path / "many"), "--model", str(out)]) == 0
    assert sorted(p.name for p in (tmp_path / "many").glob("*.ELFCAR")) == ["CaBa.ELFCAR", "K.ELFCAR"]
    capsys.readouterr()
    # bad input: one clear error line, exit 1
    assert main(["predict", str(poscar), str(poscar2), "-o", str(tmp_path / "X")]) == 1
    assert main(["predict", str(tmp_path / "missing.vasp"), "-o", str(tmp_path / "X")]) == 1
    assert main(["predict", str(poscar), "-o", str(tmp_path / "X"), "--model", str(poscar)]) == 1
    assert main(["train", "--data", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "m.pt")]) == 1
    # a per-voxel model (--epochs 0) is its pre-training: without it there is nothing to keep
    assert main(["train", "--data", str(data), "--epochs", "0", "--pretrain-steps", "0", "--out", str(tmp_path / "m.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 5 and "Traceback" not in err and "--epochs 0" in err
    assert main(["evaluate", "--data", str(data), "--split", "test", "--model", str(out), "--out-dir",
                 str(tmp_path / "ev"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["summary"]) == {"surrogate", "gradient_expansion", "constant"}
    assert main(["evaluate", "--data", str(data), "--split", "test", "--model", str(out), "--out-dir",
                 str(tmp_path / "ev")]) == 0
    printed = capsys.readouterr().out.splitlines()  # the table is the JSON's numbers
    row = next(line.split() for line in printed if line.startswith("gradient_expansion"))
    assert [float(x) for x in row[1:]] == pytest.approx(
        [result["summary"]["gradient_expansion"][k] for k in ("voxel_mae", "voxel_rmse", "maxima_mae", "maxima_r2")],
        abs=6e-4)
    assert printed[0].startswith("1 'test' cells") and printed[-1] == f"figures and tables in {tmp_path / 'ev'}"


def test_val_elements_move_whole_chemistries_to_validation(trained):
    from elf_workflows.errors import InputError
    from elf_workflows.surrogate.data import split_records

    data = trained[0]
    with ReferenceDataset(data) as ds:
        train_recs, val_recs = split_records(ds)
        assert ([r["formula"] for r in train_recs], [r["formula"] for r in val_recs]) == (["Ca", "FePb", "K"], ["MgAl"])
        train_recs, val_recs = split_records(ds, val_elements=["Fe", "K"])
        assert [r["formula"] for r in train_recs] == ["Ca"]
        assert sorted(r["formula"] for r in val_recs) == ["FePb", "K", "MgAl"]
        assert not {"Fe", "K"} & {el for r in train_recs for el in r["elements"]}
        with pytest.raises(InputError, match="Ba"):  # only in the test split, which is never touched
            split_records(ds, val_elements=["Ba"])


def test_score_agreement_metrics():
    from elf_workflows.surrogate.evaluate import score_agreement

    agree = score_agreement([0.0, 0.2, 0.5, 1.0], [0.0, 0.3, 0.4, 1.2])
    assert agree["mae"] == pytest.approx((0 + 0.1 + 0.1 + 0.2) / 4)
    assert agree["spearman"] == pytest.approx(1.0) and (agree["nonzero_dft"], agree["nonzero_surrogate"]) == (3, 3)
    assert score_agreement([0.0, 0.2, 0.5], [0.5, 0.2, 0.0])["spearman"] == pytest.approx(-1.0)
    assert score_agreement([0.0, 0.0, 0.0], [0.1, 0.2, 0.3])["spearman"] is None  # undefined, not a number


def test_uncertainty_agreement_ranks_errors():
    from elf_workflows.surrogate.evaluate import uncertainty_agreement

    dft = [0.0, 0.0, 0.5, 1.0, 0.3, 0.0]
    predicted = [0.0, 0.1, 0.2, 1.05, 0.3, 0.0]  # errors 0, 0.1, 0.3, 0.05, 0, 0
    perfect = uncertainty_agreement(dft, predicted, [0.0, 0.2, 0.9, 0.1, 0.01, 0.02], top=2)
    assert perfect["spearman_scored"] == pytest.approx(1.0)  # cells 1-4: errors and uncertainties in the same order
    assert perfect["n_scored"] == 4 and perfect["top_hits"] == 2
    backwards = uncertainty_agreement(dft, predicted, [0.9, 0.2, 0.0, 0.1, 0.5, 0.5], top=2)
    assert backwards["spearman_scored"] == pytest.approx(-0.8) and backwards["top_hits"] == 0
    assert uncertainty_agreement(dft, predicted, [0.1] * 6)["spearman"] is None  # a constant flags nothing


def test_evaluate_scores_each_cell_like_screening(trained, tmp_path):
    from elf_workflows.sad import partition_density
    from elf_workflows.surrogate import predict_elf
    from elf_workflows.surrogate.evaluate import evaluate
    from elf_workflows.templates import score_template

    data, out, _, _ = trained
    model = load_model(out)
    result = evaluate(data, "test", model, None, scores=True)
    (row,) = result["structures"]
    ds = ReferenceDataset(data)
    s, ref, density = ds.load(row["id"])
    ml = predict_elf(s, shape=ref.shape, model=model)
    assert row["dft_score"] == score_template(s, ref.astype(float), density.astype(float)).score
    assert row["surrogate_score"] == pytest.approx(score_template(s, ml, partition_density(s, ml.shape)).score, abs=1e-3)
    assert result["template_scores"]["n_structures"] == 1
    assert result["template_scores"]["mae"] == pytest.approx(abs(row["surrogate_score"] - row["dft_score"]))
    from elf_workflows.templates.score import SURROGATE_VOID_SIGMA, score_uncertainty

    predicted = score_template(s, ml, partition_density(s, ml.shape))
    assert row["surrogate_score_uncertainty"] == pytest.approx(
        score_uncertainty(s, predicted.attractors, SURROGATE_VOID_SIGMA), abs=1e-3)
    assert result["template_scores"]["uncertainty"]["elf_sigma"] == SURROGATE_VOID_SIGMA


def test_interstitial_mask_excludes_exactly_the_core_spheres():
    from elf_workflows.elements import core_radius
    from elf_workflows.surrogate.data import interstitial_mask
    from elf_workflows.symmetry import symmetry_error

    # one atom in a big cube: the excluded fraction is the core sphere's volume fraction
    atom = Structure(Lattice.cubic(8.0), ["Ca"], [[0.5, 0.5, 0.5]])
    mask = interstitial_mask(atom, (80, 80, 80))
    sphere = 4 / 3 * np.pi * core_radius("Ca") ** 3 / atom.volume
    assert (~mask).mean() == pytest.approx(sphere, rel=0.02)
    # a compressed fcc primitive cell (60° axes): neighbours' images count, and the mask is symmetric
    a = 3.4
    fcc = Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Mg"], [[0, 0, 0]])
    m = interstitial_mask(fcc, (24, 24, 24))
    assert m[12, 12, 12]  # the octahedral void (1/2, 1/2, 1/2) lies 1.70 Å from every Mg, outside 1.09 Å
    assert not m[0, 0, 0] and not m[1, 23, 0]  # at and next to the atom, also through a periodic image
    assert symmetry_error(m.astype(float), fcc) == 0.0


def test_interstitial_weighted_l1():
    from elf_workflows.surrogate.train import interstitial_weighted_l1

    pred = torch.tensor([0.2, 0.5, 0.9, 0.1])
    target = torch.tensor([0.3, 0.8, 0.9, 0.5])
    inter = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert float(interstitial_weighted_l1(pred, target, inter, 0.0)) == pytest.approx((0.1 + 0.3 + 0 + 0.4) / 4)
    w = np.array([1 + 4 * 0.3, 1 + 4 * 0.8, 1.0, 1.0])
    expected = (w * np.array([0.1, 0.3, 0.0, 0.4])).sum() / w.sum()
    assert float(interstitial_weighted_l1(pred, target, inter, 4.0)) == pytest.approx(expected, rel=1e-6)


def test_draw_cells_by_voxel_count():
    from elf_workflows.surrogate.train import draw_cells

    sizes = np.array([1000, 8000, 27000])  # 10³, 20³, 30³ voxels
    # power 0: exactly the historical uniform draws
    assert np.array_equal(draw_cells(np.random.default_rng(3), sizes, 50), np.random.default_rng(3).integers(3, size=50))
    n = 200_000
    for power, weights in ((0.0, np.ones(3)), (0.5, np.sqrt(sizes)), (1.0, sizes)):
        freq = np.bincount(draw_cells(np.random.default_rng(0), sizes, n, power), minlength=3) / n
        expected = weights / weights.sum()
        # binomial standard error ≤ 0.0011 at n = 2·10⁵: 5σ
        assert np.abs(freq - expected).max() < 0.0056, (power, freq, expected)


def test_cells_prepared_in_worker_processes_equal_the_serial_ones(trained):
    from elf_workflows.surrogate.data import load_cells

    data, _, cfg, _ = trained
    ds = ReferenceDataset(data)
    recs = list(ds.records())
    mcfg = UNetConfig(**cfg.model)
    serial = load_cells(ds, recs, mcfg.spacing, mcfg.multiple)
    pooled = load_cells(ds, recs, mcfg.spacing, mcfg.multiple, workers=2)
    assert [c.id for c in pooled] == [c.id for c in serial] == [r["id"] for r in recs]
    for a, b in zip(serial, pooled):
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.target, b.target)
        np.testing.assert_array_equal(a.interstitial, b.interstitial)


def test_max_train_cells_keeps_the_first_training_records(trained):
    from dataclasses import replace

    from elf_workflows.surrogate.data import split_records
    from elf_workflows.surrogate.train import prepare_training_data

    data, _, cfg, _ = trained
    train_recs, _ = split_records(ReferenceDataset(data), cfg.val_fraction, cfg.val_elements)
    assert len(train_recs) > 2
    prepared = prepare_training_data(data, replace(cfg, max_train_cells=2))
    assert [c.id for c in prepared.cells] == [r["id"] for r in train_recs[:2]]
    assert len(prepare_training_data(data, cfg).cells) == len(train_recs)


def test_init_from_a_narrower_unet_starts_at_its_pointwise_prediction(trained):
    from elf_workflows.errors import InputError
    from elf_workflows.surrogate.model import PeriodicUNet
    from elf_workflows.surrogate.train import init_from

    _, out, cfg, _ = trained
    start = load_model(out).net
    wider = PeriodicUNet(UNetConfig(**{**cfg.model, "base_channels": 8}))
    assert "pointwise branch" in init_from(wider, start)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, start.config.in_channels, 8, 8, 8)).astype(np.float32))
    with torch.no_grad():
        expected = torch.sigmoid(start.head.bias + start.point(x)[:, 0])
        np.testing.assert_allclose(wider(x)[:, 0].numpy(), expected.numpy(), atol=1e-6)
        assert not torch.allclose(start(x)[:, 0], expected)  # the start's own U-Net correction is left behind
    other_inputs = PeriodicUNet(UNetConfig(**{**cfg.model, "in_channels": cfg.model["in_channels"] - 1}))
    with pytest.raises(InputError, match="inputs, spacing or pointwise branch"):
        init_from(other_inputs, start)


def test_epochs_within_a_wall_clock_budget():
    from elf_workflows.surrogate.train import epochs_within

    # 9 s an epoch plus a 10 s validation every 2 epochs = 14 s an epoch: 7 more fit in 100 s
    assert epochs_within(100.0, 9.0, 10.0, 2, done=1, most=1000) == 8
    assert epochs_within(100.0, 9.0, 10.0, 2, done=1, most=5) == 5
    assert epochs_within(-5.0, 9.0, 10.0, 2, done=1, most=1000) == 1


def test_max_minutes_cuts_the_epochs_and_the_schedule(trained, tmp_path):
    data, _, cfg, _ = trained
    cfg2 = TrainConfig(**{**cfg.__dict__, "epochs": 6, "max_minutes": 1e-4})
    metrics = train(data, tmp_path / "model.pt", cfg2, progress=False, log=lambda m: None)
    assert [r["epoch"] for r in metrics["history"]] == [1]  # the first epoch always runs, then the budget is spent
    assert "val_mae" in metrics["history"][-1]  # the last epoch is validated


def test_patch_copies_run_batched_by_shape_as_they_would_one_by_one():
    """The rotated copies of a batch's patches, grouped into batches of equal shape, give each copy's own prediction."""
    from elf_workflows.surrogate.data import Patch
    from elf_workflows.surrogate.model import PeriodicUNet
    from elf_workflows.surrogate.symmetry_pool import patch_operations, rotate_patch, unrotate_patch
    from elf_workflows.surrogate.train import _pooled_forward

    torch.manual_seed(0)
    net = PeriodicUNet(UNetConfig(**{**TINY, "point_channels": 8}))
    torch.nn.init.normal_(net.point[-1].weight)
    rng = np.random.default_rng(5)
    cubic, tetragonal = patch_operations(np.eye(3) * 3.0, (8, 8, 8)), patch_operations(np.diag([3.0, 3.0, 4.5]), (8, 8, 12))
    patches = [Patch(rng.normal(size=(net.config.in_channels, *shape)).astype(np.float32), np.zeros(shape, np.float32),
                     ops, (slice(None),) * 3)
               for shape, ops in [((8, 8, 8), cubic), ((8, 8, 12), tetragonal), ((8, 8, 8), cubic), ((8, 8, 12), tetragonal)]]
    batched = _pooled_forward(net, patches, 4, np.random.default_rng(1), "cpu")
    one_by_one, pick = [], np.random.default_rng(1)
    for patch in patches:  # the per-copy loop, drawing the same operations
        chosen = patch.patch_ops[pick.choice(len(patch.patch_ops), size=4, replace=False)]
        x = torch.from_numpy(patch.features)
        one_by_one.append(torch.stack([unrotate_patch(net(rotate_patch(x, S).contiguous()[None])[0], S)
                                       for S in chosen]).mean(0))
    assert len(cubic) == len(tetragonal) == 48  # cubic voxels: copies of the 8×8×12 patches come in three shapes
    for a, b in zip(batched, one_by_one):
        assert a.shape == b.shape and a.std() > 0.01
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_draw_rows_fills_the_maxima_fraction_and_keeps_the_historical_stream():
    from elf_workflows.surrogate.train import draw_rows

    sizes = np.array([1000, 8000, 27000])
    offsets = np.array([0, 1000, 9000])
    # no maxima rows: the draws before session 11 (a cell, then a uniform voxel of it)
    rng = np.random.default_rng(5)
    pick = rng.integers(3, size=64)
    legacy = offsets[pick] + (rng.random(64) * sizes[pick]).astype(np.int64)
    assert np.array_equal(draw_rows(np.random.default_rng(5), sizes, 64), legacy)
    # a quarter of the rows from the maxima rows, uniformly; the rest as before
    maxima_rows = np.array([3, 1500, 20000, 35999])
    rows = np.concatenate([draw_rows(np.random.default_rng(s), sizes, 64, 0.0, maxima_rows, 16) for s in range(500)])
    tail = rows.reshape(500, 64)[:, 48:].ravel()
    assert set(np.unique(tail)) == set(maxima_rows)
    freq = np.bincount(np.searchsorted(maxima_rows, tail), minlength=4) / tail.size
    assert np.abs(freq - 0.25).max() < 0.03  # 8000 draws: σ ≈ 0.005
    assert rows.min() >= 0 and rows.max() < sizes.sum()


def test_maxima_fraction_pulls_the_fit_towards_the_maxima(tmp_path):
    """Oversampling the DFT maxima lowers the per-voxel branch's error there (same steps, seed, cells)."""
    from elf_workflows.surrogate.data import load_cells
    from elf_workflows.surrogate.model import PeriodicUNet
    from elf_workflows.surrogate.train import pointwise_elf, pretrain_pointwise

    ds = ReferenceDataset(make_dataset(tmp_path / "data"))
    cfg = UNetConfig(**TINY)
    cells = load_cells(ds, list(ds.records(split="train")), cfg.spacing, 1)
    assert all(c.maxima is not None and c.maxima.any() for c in cells)

    def error_at_maxima(fraction):
        torch.manual_seed(0)
        net = PeriodicUNet(cfg)
        pretrain_pointwise(net, cells, 60, np.random.default_rng(0), batch=512, maxima_fraction=fraction)
        with torch.no_grad():
            err = [np.abs(pointwise_elf(net, torch.from_numpy(c.features.reshape(c.features.shape[0], -1).T.copy()))
                          .numpy() - c.target.ravel())[c.maxima.ravel()] for c in cells]
        return np.concatenate(err).mean()

    with_maxima, without = error_at_maxima(0.5), error_at_maxima(0.0)
    assert with_maxima < 0.8 * without  # measured: 0.086 against 0.190


def test_epochs_zero_ships_the_per_voxel_branch_on_stride_free_grids(tmp_path):
    from elf_workflows.surrogate.infer import predict_native

    data = make_dataset(tmp_path / "data")
    cfg = TrainConfig(epochs=0, pretrain_steps=40, seed=0, threads=1, val_every=1, maxima_fraction=0.25,
                      model=UNetConfig(**{**TINY, "spacing": 0.4}).to_dict())
    metrics = train(data, tmp_path / "pv.pt", cfg, progress=False, log=lambda m: None)
    assert metrics["history"] == [] and metrics["best_val_mae"] == pytest.approx(metrics["initial_val_mae"])
    assert metrics["config"]["maxima_fraction"] == 0.25
    model = load_model(tmp_path / "pv.pt")
    assert not model.net.unet_active()
    structure = Structure(Lattice.cubic(3.4), ["Mg", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    elf = predict_native(structure, model)
    assert elf.shape[0] % model.config.multiple != 0  # 3.4 Å / 0.4 Å → 9 voxels, not a multiple of 2
    assert 0.0 <= elf.min() <= elf.max() <= 1.0


def test_a_dropped_unet_runs_on_any_grid_an_active_one_only_on_its_strides():
    from elf_workflows.surrogate.model import PeriodicUNet

    torch.manual_seed(0)
    net = PeriodicUNet(UNetConfig(**TINY))
    x = torch.rand(1, net.config.in_channels, 6, 6, 5)
    with torch.no_grad(), pytest.raises(ValueError, match="multiple"):
        net.logits(x)
    net.drop_unet()
    with torch.no_grad():
        out = net.logits(x)
        assert torch.allclose(out, net.head.bias + net.pointwise(x))
