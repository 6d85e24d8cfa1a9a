"""Figures of what a ViT attends to and has learned, and the `keras-vit explain` command
(see keras_vit/__main__.py): for a model and a few images it writes

    overlays.png              each image beside its attention-rollout heatmap overlay
    embedding_filters.png     principal components of the patch-embedding filters
    position_similarity.png   cosine similarity of each patch's position embedding
    attention_distance.png    mean attention distance of every head against depth

as in the ViT paper's Figures 6 and 7 (matplotlib, written with the Agg backend)."""

import os

import numpy as np

from keras_vit import insight

CLI_HELP = "write attention-rollout overlays and the ViT paper's analysis figures for a model"


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("The figures need matplotlib: pip install matplotlib "
                          "(in a keras_vit checkout: pip install -e '.[plots]').") from e

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shown(image):
    """An (H, W, C) 0..255 image as matplotlib shows it: (H, W) grey or (H, W, 3) in 0..1."""
    image = np.clip(np.asarray(image, "float64") / 255.0, 0.0, 1.0)
    return image[..., 0] if image.shape[-1] == 1 else image[..., :3]


def plot_overlays(images, maps, path, titles=None, map_title="attention rollout"):
    """Each image beside itself overlaid with its (H, W) map in 0..1 (e.g. from
    `insight.upsample_map`, titled `map_title`); one row per image."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(images), 2, figsize=(5, 2.5 * len(images)), squeeze=False)
    for row, (image, heat) in enumerate(zip(images, maps)):
        shown = _shown(image)
        axes[row, 0].imshow(shown, cmap="gray" if shown.ndim == 2 else None)
        axes[row, 0].set_title(titles[row] if titles else f"image {row}")
        axes[row, 1].imshow(shown, cmap="gray" if shown.ndim == 2 else None)
        overlay = axes[row, 1].imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axes[row, 1].set_title(map_title)
        fig.colorbar(overlay, ax=axes[row, 1], fraction=0.046)
        for ax in axes[row]:
            ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_embedding_filters(components, variance, path):
    """The principal components (count, p, p, C) of the patch-embedding filters, each
    scaled to its own range, titled with its share of the variance."""
    plt = _pyplot()
    columns = min(7, len(components))
    rows = -(-len(components) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.6 * rows + 0.6),
                             squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, component, share in zip(axes.ravel(), components, variance):
        low, high = component.min(), component.max()
        scaled = (component - low) / (high - low) if high > low else np.zeros_like(component)
        ax.imshow(scaled[..., 0] if scaled.shape[-1] == 1 else scaled[..., :3],
                  cmap="gray" if scaled.shape[-1] == 1 else None)
        ax.set_title(f"{100 * share:.1f} %", fontsize=8)
    fig.suptitle("Patch-embedding filters: principal components (share of variance)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_position_similarity(similarity, path):
    """A grid of (h, w) maps: at row i, column j, the cosine similarity of patch (i, j)'s
    position embedding with every other patch's."""
    plt = _pyplot()
    h, w = similarity.shape[:2]
    fig, axes = plt.subplots(h, w, figsize=(0.8 * w + 1.2, 0.8 * h + 0.6), squeeze=False)
    for i in range(h):
        for j in range(w):
            image = axes[i, j].imshow(similarity[i, j], cmap="viridis", vmin=-1, vmax=1)
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            if j == 0:
                axes[i, j].set_ylabel(str(i + 1), fontsize=7)
            if i == h - 1:
                axes[i, j].set_xlabel(str(j + 1), fontsize=7)
    fig.suptitle("Position embedding similarity (input patch row / column)")
    fig.colorbar(image, ax=axes, fraction=0.03, label="cosine similarity")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_attention_distance(distance, path):
    """Mean attention distance (layers, heads) in pixels: one dot per head, against depth."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    layers, heads = distance.shape
    for head in range(heads):
        ax.scatter(np.arange(1, layers + 1), distance[:, head], s=18, label=f"head {head + 1}")
    ax.set_xlabel("network depth (block)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_title("Mean attention distance per head")
    ax.set_xticks(range(1, layers + 1))
    ax.legend(fontsize=7, ncol=2 if heads > 8 else 1, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_figures(model, images, output_dir, titles=None):
    """Writes the four figures for `model` and `images` (B, H, W, C, pixels 0..255) into
    `output_dir` (created if missing); returns {figure name: path}."""
    images = np.asarray(images, "float32")
    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, f"{name}.png") for name in (
        "overlays", "embedding_filters", "position_similarity", "attention_distance")}
    attention = insight.attention_maps(model, images)  # once, for two figures
    rollout = insight.attention_rollout(model, attention=attention)
    plot_overlays(images, insight.upsample_map(rollout, model.image_size), paths["overlays"],
                  titles)
    plot_embedding_filters(*insight.patch_embedding_components(model), paths["embedding_filters"])
    plot_position_similarity(insight.position_embedding_similarity(model),
                             paths["position_similarity"])
    plot_attention_distance(insight.mean_attention_distance(model, attention=attention),
                            paths["attention_distance"])
    return paths


def add_arguments(parser):
    """Adds the subcommand's arguments to an argparse parser."""
    parser.add_argument("model", help="a .keras file, a checkpoint, a preset name or hf:// handle")
    parser.add_argument("--images", required=True, metavar="PATH",
                        help="images: .npy, .npz (images and optional labels) or idx(.gz)")
    parser.add_argument("--labels", metavar="PATH",
                        help="labels for --images (idx or .npy): one image per class is shown")
    parser.add_argument("--count", type=int, default=6,
                        help="how many images to show (default 6)")
    parser.add_argument("--class-names", metavar="PATH",
                        help="a text file of class names, one per line, for the titles")
    parser.add_argument("--output-dir", required=True, help="where the PNG files go")


def images_to_show(images, labels, count):
    """Indices of at most `count` of `images` to draw: with `labels` (N,), the first image
    of each label, labels in the order they first appear (fewer when there are fewer
    labels); with `labels` None, the first `count` images."""
    if labels is None:
        return list(range(min(count, len(images))))
    picked = []
    for label in dict.fromkeys(labels.tolist()):
        picked.append(int(np.flatnonzero(labels == label)[0]))
        if len(picked) == count:
            break
    return picked


def run_cli(args):
    from keras_vit import ViT
    from keras_vit.export.arrays import fit_images, load_arrays

    if args.count < 1:
        raise ValueError(f"--count must be a positive integer, got {args.count}.")
    images, labels = load_arrays(args.images)
    if args.labels:
        labels = load_arrays(args.labels)[0]
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images.")
    model = ViT.from_preset(args.model)
    images = fit_images(images, model.input_shape[1:])
    names = None
    if args.class_names:
        with open(args.class_names) as f:
            names = [line.strip() for line in f if line.strip()]
    chosen = images_to_show(images, labels, args.count)
    titles = None
    if labels is not None:
        titles = [names[labels[i]] if names and labels[i] < len(names) else f"class {labels[i]}"
                  for i in chosen]
    paths = write_figures(model, images[chosen], args.output_dir, titles)
    for path in paths.values():
        print(path)
    return 0
