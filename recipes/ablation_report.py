"""The ablation grid's report (`recipes.ablations`): from the runs' records, results.json,
README.md (a table per question, mean +- std over seeds, and one paragraph per claim
saying whether it reproduces), accuracy_vs_cost.png, the position-embedding similarity
panel of each variant and attention maps with and without registers.

A difference counts when it exceeds twice its standard error: the seeds' spread, and
never less than the test set's own sampling noise (a binomial proportion)."""

import math
from pathlib import Path

import numpy as np

from keras_vit import atomic, explain, insight
from recipes import reports, run_folder

# The report's questions: (title, [(cell, what it is)]).
GROUPS = [
    ("Position embedding (the ViT paper's Table 8)", [
        ("pos_none", "none"), ("baseline", "learned 1-D"), ("pos_learned_2d", "learned 2-D (rows + columns)"),
        ("pos_sincos_2d", "fixed 2-D sin-cos"), ("pos_rope_2d", "2-D RoPE (axial), no table")]),
    ("Class token or average pooling, two learning rates (Fig. 9)", [
        ("baseline", "class token, lr x1"), ("lr_high", "class token, lr x3"),
        ("pool_gap", "average pooling, lr x1"), ("pool_gap_lr_high", "average pooling, lr x3"),
        ("sincos_gap", "sin-cos 2-D + average pooling (big_vision's plain baseline)")]),
    ("Patch size: accuracy for compute", [
        ("patch_7", "7x7 px (16 patches)"), ("baseline", "4x4 px (49 patches)"),
        ("patch_2", "2x2 px (196 patches)")]),
    ("Depth or width at about equal FLOPs (Fig. 8)", [
        ("shallow_wide", "2 blocks x width 96"), ("baseline", "4 blocks x width 64"),
        ("deep_narrow", "8 blocks x width 48")]),
    ("Register tokens (Darcet et al.)", [("baseline", "0 registers"), ("registers_4", "4 registers")]),
]
ARTEFACT_RATIO = 3.0  # a largest/median patch-token norm above this: high-norm tokens present
POSITION_TABLES = ("baseline", "pos_learned_2d", "pos_sincos_2d")


def summarize(records):
    """{cell: {n, mean, std, parameters, flops_per_image, train_seconds, high_norm_ratio,
    test_examples}} over the seeds of each cell."""
    cells = {}
    for record in records:
        cells.setdefault(record["cell"], []).append(record)
    summary = {}
    for cell, runs in cells.items():
        accuracy = np.array([r["test_accuracy"] for r in runs])
        summary[cell] = {
            "n": len(runs), "mean": float(accuracy.mean()),
            "std": float(accuracy.std(ddof=1)) if len(runs) > 1 else 0.0,
            "parameters": runs[0]["parameters"], "flops_per_image": runs[0]["flops_per_image"],
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
            "high_norm_ratio": float(np.mean([r["high_norm_ratio"] for r in runs])),
            "test_examples": min(r["test_examples"] for r in runs)}
    return summary


def difference(summary, a, b):
    """(mean of a - mean of b, its standard error) in accuracy."""
    sa, sb = summary[a], summary[b]
    p = (sa["mean"] + sb["mean"]) / 2
    sampling = math.sqrt(2 * p * (1 - p) / min(sa["test_examples"], sb["test_examples"]))
    spread = math.sqrt(sa["std"] ** 2 / sa["n"] + sb["std"] ** 2 / sb["n"])
    return sa["mean"] - sb["mean"], max(spread, sampling)


def _pp(value):
    return f"{100 * value:+.2f} pp"


def _said(summary, a, b):
    d, se = difference(summary, a, b)
    return f"{a} - {b} = {_pp(d)} (standard error {100 * se:.2f} pp)"


def _better(summary, a, b):
    """Whether a beats b by more than twice the standard error."""
    d, se = difference(summary, a, b)
    return d > 2 * se


def claims(summary):
    """[(claim, verdict, evidence)] for the claims whose cells were all run."""
    out = []

    def claim(text, cells, judge):
        if all(cell in summary for cell in cells):
            out.append((text, *judge()))

    def position_kind():
        kinds = ("baseline", "pos_learned_2d", "pos_sincos_2d", "pos_rope_2d")
        best = max(kinds, key=lambda c: summary[c]["mean"])
        worst = min(kinds, key=lambda c: summary[c]["mean"])
        holds = not _better(summary, best, worst)
        return ("reproduces" if holds else "does not reproduce",
                f"best {best}, worst {worst}: {_said(summary, best, worst)}")

    def pooling():
        token = max(("baseline", "lr_high"), key=lambda c: summary[c]["mean"])
        gap = max(("pool_gap", "pool_gap_lr_high"), key=lambda c: summary[c]["mean"])
        equal = not (_better(summary, token, gap) or _better(summary, gap, token))
        return ("reproduces" if equal else "does not reproduce",
                f"best of each: {_said(summary, token, gap)}")

    def patches():
        steps = [_better(summary, "patch_2", "baseline"), _better(summary, "baseline", "patch_7")]
        verdict = ("reproduces" if all(steps) else "partly (one step within noise)"
                   if any(steps) else "does not reproduce")
        flops = ", ".join(f"{c} {summary[c]['flops_per_image'] / 1e6:.1f} MFLOPs"
                          for c in ("patch_7", "baseline", "patch_2"))
        return verdict, (f"{_said(summary, 'patch_2', 'baseline')}; "
                         f"{_said(summary, 'baseline', 'patch_7')}; {flops}")

    def registers():
        before, after = (summary[c]["high_norm_ratio"] for c in ("baseline", "registers_4"))
        if before < ARTEFACT_RATIO:
            verdict = "cannot be tested at this scale (no high-norm tokens without registers)"
        else:
            verdict = "reproduces" if after < ARTEFACT_RATIO else "does not reproduce"
        return verdict, (f"largest / median patch-token norm {before:.2f} without registers, "
                         f"{after:.2f} with 4; accuracy {_said(summary, 'registers_4', 'baseline')}")

    claim("Without a position embedding the model is clearly worse.", ("baseline", "pos_none"),
          lambda: ("reproduces" if _better(summary, "baseline", "pos_none") else
                   "does not reproduce", _said(summary, "baseline", "pos_none")))
    claim("The kind of position embedding (1-D, 2-D, fixed, rotary) hardly matters.",
          ("baseline", "pos_learned_2d", "pos_sincos_2d", "pos_rope_2d"), position_kind)
    claim("A class token and average pooling do equally well once the learning rate is tuned.",
          ("baseline", "lr_high", "pool_gap", "pool_gap_lr_high"), pooling)
    claim("Fixed 2-D sin-cos with average pooling is a strong plain baseline (not worse).",
          ("baseline", "sincos_gap"),
          lambda: ("does not reproduce" if _better(summary, "baseline", "sincos_gap") else
                   "reproduces", _said(summary, "sincos_gap", "baseline")))
    claim("Smaller patches buy accuracy with compute.", ("patch_2", "baseline", "patch_7"), patches)
    claim("At equal compute, depth helps more than width.", ("deep_narrow", "shallow_wide"),
          lambda: ("reproduces" if _better(summary, "deep_narrow", "shallow_wide") else
                   "does not reproduce", _said(summary, "deep_narrow", "shallow_wide")))
    claim("Register tokens remove high-norm artefact tokens.", ("baseline", "registers_4"), registers)
    return out


def readme(summary, records, schedule, figures=()):
    """The report's README.md text; `figures`: [(caption, file name)] shown at the end."""
    seconds = sum(r["train_seconds"] for r in records)
    first = records[0]
    where = first["hardware"]  # training.hardware_description names the backend
    if first["backend"] not in where:
        where += f" (Keras backend {first['backend']})"
    lines = ["# The ViT paper's design ablations on Fashion-MNIST", "",
             f"`python -m recipes ablations --schedule {schedule}`: {len(records)} runs "
             f"({len(summary)} cells), {first['train_examples']:,} training images, "
             f"{first['epochs']} epochs, accuracy on {first['test_examples']:,} test images; "
             f"{seconds / 60:.1f} min of training in all on {where}. Mean +- std over seeds "
             "(n runs).", ""]
    if schedule == "cpu":
        lines += ["The CPU schedule is short, so that the grid runs on a laptop: its models "
                  "are far from converged (the fashion_mnist recipe, on all 60,000 images for "
                  "120 epochs, passes 93 %: saved_models/fashion_mnist). The grid compares how "
                  "fast each design learns as much as where it would end; the paper's claims "
                  "are about converged models trained on far more data. `--schedule full` "
                  "trains on all 60,000 images for 100 epochs (a GPU).", ""]
    for title, cells in GROUPS:
        rows = [(c, what) for c, what in cells if c in summary]
        if len(rows) < 2:  # nothing to compare
            continue
        lines += [f"## {title}", "", "| cell | what | test accuracy | parameters | MFLOPs / image "
                  "| training s |", "|---|---|---|---|---|---|"]
        for cell, what in rows:
            s = summary[cell]
            lines.append(f"| {cell} | {what} | {100 * s['mean']:.2f} +- {100 * s['std']:.2f} % "
                         f"(n={s['n']}) | {s['parameters']:,} | {s['flops_per_image'] / 1e6:.1f} "
                         f"| {s['train_seconds']:.0f} |")
        lines.append("")
    lines += ["## Do the claims hold here?", ""]
    for text, verdict, evidence in claims(summary):
        lines += [f"- **{text}** {verdict[0].upper() + verdict[1:]}: {evidence}.", ""]
    if "baseline" in summary:
        lines += ["## For the shipped model", ""] + shipped_model_advice(summary) + [""]
    for caption, name in figures:
        lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    return "\n".join(lines)


def shipped_model_advice(summary):
    """The report's lines on what the grid suggests for the shipped recipe: the cells that
    beat the baseline by more than twice the standard error, best first."""
    better = sorted((c for c in summary if c != "baseline" and _better(summary, c, "baseline")),
                    key=lambda c: -summary[c]["mean"])
    if not better:
        return ["No cell beats the baseline by more than twice its standard error: nothing "
                "here suggests changing the shipped recipe."]
    listed = "; ".join(_said(summary, c, "baseline") for c in better)
    return [f"Better than the baseline by more than twice the standard error: {listed}. "
            "The shipped model (saved_models/fashion_mnist) uses the baseline's design at a "
            "far longer schedule, where such gains may shrink: `recipes/fashion_mnist_gpu.sh` "
            "retrains it with 2-D RoPE and with fixed 2-D sin-cos positions, beside the shipped "
            "recipe unchanged, on a GPU; the shipped model changes only if that full-length "
            "run beats it."]


def plot_cost(summary, path):
    """Test accuracy (mean, std bars) against forward MFLOPs per image, one point a cell."""
    plt = reports.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for cell, s in sorted(summary.items()):
        x = s["flops_per_image"] / 1e6
        ax.errorbar(x, 100 * s["mean"], yerr=100 * s["std"], fmt="o", capsize=3)
        ax.annotate(cell, (x, 100 * s["mean"]), fontsize=7, xytext=(4, 2),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("forward MFLOPs per image")
    ax.set_ylabel("test accuracy (%)")
    fig.tight_layout()
    reports.save_figure(fig, path)


def write_report(records, runs_dir, output_dir, test_images, schedule):
    """Writes results.json, README.md and the figures into `output_dir`; returns
    {name: path}."""
    import keras

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(records)
    paths = {"results": out / "results.json", "report": out / "README.md",
             "Test accuracy against forward FLOPs": out / "accuracy_vs_cost.png"}
    run_folder.write_json(paths["results"], records)
    plot_cost(summary, paths["Test accuracy against forward FLOPs"])

    def model(cell):
        seed = min(r["seed"] for r in records if r["cell"] == cell)
        return keras.saving.load_model(Path(runs_dir) / cell / f"seed_{seed}" / "model.keras")

    for cell in POSITION_TABLES:
        if cell in summary:
            name = f"Position embedding similarity (Fig. 10): {cell}"
            paths[name] = out / f"position_similarity_{cell}.png"
            explain.plot_position_similarity(insight.position_embedding_similarity(model(cell)),
                                             paths[name])
    images = np.asarray(test_images[:6], "float32")
    for cell in ("baseline", "registers_4"):
        if cell in summary:
            vit = model(cell)
            maps = insight.upsample_map(insight.class_token_attention(vit, images), vit.image_size)
            name = f"Class-token attention of the last block: {cell}"
            paths[name] = out / f"attention_{cell}.png"
            explain.plot_overlays(images, maps, paths[name],
                                  map_title="last block, class token attention")
    figures = [(name, path.name) for name, path in paths.items() if path.suffix == ".png"]
    atomic.write_text(paths["report"], readme(summary, records, schedule, figures))
    return paths
