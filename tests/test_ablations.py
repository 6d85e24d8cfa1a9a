"""The ablation grid (`python -m recipes ablations`): its report on made-up records, and
the command end to end on a few images (skipping finished runs, resuming a stopped one)."""

import json

import numpy as np
import pytest

from tiny import write_fashion_mnist
from recipes import ablation_report, ablations


def fake_records(accuracies, test_examples=10_000):
    """Records as `ablations.run_cell` writes them: {cell: [accuracy per seed]}."""
    return [{"cell": cell, "seed": seed, "test_accuracy": acc, "test_examples": test_examples,
             "train_examples": 10_000, "epochs": 8, "parameters": 1000 + len(cell),
             "flops_per_image": 1e6 * (1 + len(cell)), "train_seconds": 60.0 + seed,
             "high_norm_ratio": 5.0 if cell == "baseline" else 1.5, "backend": "jax",
             "hardware": "test CPU"}
            for cell, values in accuracies.items() for seed, acc in enumerate(values)]


def test_summary_mean_std_and_standard_error():
    summary = ablation_report.summarize(fake_records({"baseline": [0.90, 0.92, 0.94],
                                                      "pos_none": [0.80, 0.80]}))
    assert summary["baseline"]["mean"] == pytest.approx(0.92)
    assert summary["baseline"]["std"] == pytest.approx(0.02)  # sample std: sqrt(0.0008 / 2)
    assert summary["pos_none"]["std"] == 0.0
    assert summary["baseline"]["n"] == 3 and summary["baseline"]["train_seconds"] == 61.0
    d, se = ablation_report.difference(summary, "baseline", "pos_none")
    assert d == pytest.approx(0.12)
    assert se == pytest.approx(np.sqrt(0.02**2 / 3))  # the seeds' spread, above sampling
    # Equal seeds: the test set's sampling noise is the floor.
    summary = ablation_report.summarize(fake_records({"a": [0.9, 0.9], "b": [0.9, 0.9]}))
    assert ablation_report.difference(summary, "a", "b")[1] == pytest.approx(
        np.sqrt(2 * 0.9 * 0.1 / 10_000))


def test_claims_follow_the_numbers():
    grid = {"baseline": [0.900, 0.902], "pos_none": [0.850, 0.852],
            "pos_learned_2d": [0.901, 0.899], "pos_sincos_2d": [0.903, 0.901],
            "pos_rope_2d": [0.800, 0.802], "deep_narrow": [0.90, 0.90],
            "shallow_wide": [0.90, 0.90], "registers_4": [0.9, 0.9]}
    verdicts = {text: verdict for text, verdict, _ in
                ablation_report.claims(ablation_report.summarize(fake_records(grid)))}
    assert verdicts["Without a position embedding the model is clearly worse."] == "reproduces"
    kind = "The kind of position embedding (1-D, 2-D, fixed, rotary) hardly matters."
    assert verdicts[kind] == "does not reproduce"  # RoPE 10 pp behind
    assert verdicts["At equal compute, depth helps more than width."] == "does not reproduce"
    assert verdicts["Register tokens remove high-norm artefact tokens."] == "reproduces"
    # Claims whose cells were not run are left out.
    assert not any("patches" in text for text in verdicts)
    grid["pos_rope_2d"] = [0.900, 0.900]
    verdicts = {text: verdict for text, verdict, _ in
                ablation_report.claims(ablation_report.summarize(fake_records(grid)))}
    assert verdicts[kind] == "reproduces"


def test_readme_tables():
    records = fake_records({"baseline": [0.92, 0.94], "patch_7": [0.85, 0.87], "patch_2": [0.93, 0.95]})
    text = ablation_report.readme(ablation_report.summarize(records), records, "cpu",
                                  [("accuracy vs cost", "accuracy_vs_cost.png")])
    assert "| patch_2 | 2x2 px (196 patches) | 94.00 +- 1.41 % (n=2) | 1,007 | 8.0 | 60 |" in text
    assert "**Smaller patches buy accuracy with compute.** Partly" in text
    assert "6 runs (3 cells)" in text and "![accuracy vs cost](accuracy_vs_cost.png)" in text
    assert "Register" not in text  # no table without its cells
    assert "far from converged" in text
    assert "Better than the baseline by more than twice the standard error: patch_2 - baseline" \
        not in text  # +1 pp with a 1.4 pp spread: not enough
    records += fake_records({"pos_rope_2d": [0.97, 0.971]})
    advice = ablation_report.shipped_model_advice(ablation_report.summarize(records))
    assert advice[0].startswith("Better than the baseline by more than twice the standard "
                                "error: pos_rope_2d - baseline = +4.05 pp")
    assert "far from converged" not in ablation_report.readme(
        ablation_report.summarize(records), records, "full")


def test_every_cell_is_a_valid_model():
    for cell in ablations.CELLS:
        config = ablations.cell_config(ablations.CPU, cell)
        assert ablations.ViTConfig(**config.model).num_classes == 10
    assert ablations.cell_config(ablations.CPU, "lr_high").learning_rate == pytest.approx(3e-3)


def test_grid_end_to_end_skips_done_runs_and_resumes(tmp_path, capsys):
    data = write_fashion_mnist(tmp_path / "data", train=32, test=16)
    argv = ["--cells", "baseline", "registers_4", "--seeds", "0", "--data-dir", str(data),
            "--runs-dir", str(tmp_path / "runs"), "--output-dir", str(tmp_path / "out"),
            "--epochs", "1", "--batch-size", "16", "--verbose", "0", "--pipeline", "numpy"]
    assert ablations.main(argv) == 0
    records = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["cell"], r["seed"], r["test_examples"]) for r in records] == [
        ("baseline", 0, 16), ("registers_4", 0, 16)]
    assert records[1]["model"]["num_register_tokens"] == 4
    for name in ("README.md", "accuracy_vs_cost.png", "position_similarity_baseline.png",
                 "attention_baseline.png", "attention_registers_4.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    run = tmp_path / "runs" / "baseline" / "seed_0"
    # Done runs are skipped; a run stopped before its record resumes from its checkpoint.
    (run / ablations.RECORD).unlink()
    capsys.readouterr()
    assert ablations.main(argv) == 0
    printed = capsys.readouterr().out
    assert "registers_4 seed 0: done already" in printed
    assert "baseline seed 0: done already" not in printed
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 1  # not trained again
    assert json.loads((run / ablations.RECORD).read_text())["cell"] == "baseline"
