"""The documentation's tables that restate code, rendered from the code itself.

Each table sits in a markdown file between `<!-- table: NAME -->` and `<!-- end table -->`:
`presets` (README.md), `descriptions` (docs/model.md) and `weights` (docs/weights.md) from
`keras_vit.presets`; `tests` (docs/development.md) from the first paragraph of each test
module's docstring.

    python docs/tables.py          # rewrite the tables in place
    python docs/tables.py --check  # exit 1 and name the files whose tables are out of date

tests/test_docs.py runs the check.
"""

import ast
import pathlib
import re
import sys

from keras_vit import presets

ROOT = pathlib.Path(__file__).resolve().parent.parent
FILES = ("README.md", "docs/model.md", "docs/weights.md", "docs/development.md")
BLOCK = re.compile(r"(<!-- table: (\w+) -->\n)(.*?)(<!-- end table -->)", re.S)


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def parameter_count(config):
    """Parameters of `ViT(**config)`, counted from the architecture (as the ViT paper
    describes it, with the later families' options) rather than by building the model."""
    d, m = config.get("hidden_dim", 768), config.get("mlp_dim", 3072)
    (height, width), (patch_h, patch_w) = (
        _pair(config.get("image_size", 224)), _pair(config.get("patch_size", 16)))
    grid_h, grid_w = height // patch_h, width // patch_w
    pooling = config.get("pooling", "token")
    class_token = config.get("class_token")
    class_token = pooling == "token" if class_token is None else class_token
    distillation = config.get("distillation_token", False)
    positioned = (class_token + distillation) if config.get("class_token_position", True) else 0
    rms = config.get("norm_type", "layer_norm") == "rms_norm"
    norm = lambda width: width if rms else 2 * width  # noqa: E731 - scale (and offset)
    bias = lambda name, width: width if config.get(name, True) else 0  # noqa: E731
    attention = 4 * d * d + sum(bias(f"{p}_bias", d) for p in ("query", "key", "value", "output"))
    swiglu = config.get("mlp_type", "mlp") == "swiglu"
    mlp = (2 + swiglu) * d * m + (1 + swiglu) * bias("mlp_bias", m) + bias("mlp_bias", d)
    mlp += norm(m) if config.get("mlp_inner_norm") else 0
    count = patch_h * patch_w * config.get("num_channels", 3) * d + bias("patch_bias", d)
    count += norm(d) if config.get("patch_norm") else 0
    count += (class_token + distillation + config.get("num_register_tokens", 0)) * d
    kind = config.get("position_embedding", "learned")
    if kind == "learned":
        count += (grid_h * grid_w + positioned) * d
    elif kind == "learned_2d":
        count += (grid_h + grid_w) * (d // 2) + (grid_w * (d % 2)) + positioned * d
    count += norm(d) if config.get("pre_norm", False) else 0
    block = 2 * norm(d) + attention + mlp + (2 * d if config.get("layer_scale_init") else 0)
    count += config.get("num_layers", 12) * block + norm(d)  # then encoder_norm or pooled_norm
    if pooling == "map":  # probe, attention (all biases), norm, plain MLP
        count += d + 4 * d * d + 4 * d + norm(d) + 2 * d * m + m + d
    elif pooling == "probe":  # probe, key and value (the blocks' biases), output
        count += d + 3 * d * d + bias("key_bias", d) + bias("value_bias", d) + d
    features = d
    if config.get("representation_size"):
        features = config["representation_size"]
        count += d * features + features  # pre_logits
    if config.get("include_top", True):
        heads = 1 + (distillation and config.get("distillation_head", True))
        classes = config.get("num_classes", 1000)
        count += heads * (features * classes + classes)
    return count


def _top1(top1, source):
    """The top-1 and source cells."""
    return ("-", source or "-") if top1 is None else (f"{top1:g}", source)


def _size(image_size):
    return str(image_size) if isinstance(image_size, int) else "x".join(map(str, image_size))


def presets_table():
    rows = [
        "| preset | model | parameters | outputs | default weights | ImageNet-1k top-1 | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, description in presets.list_presets().items():
        preset = presets.get_preset(name)
        config, default = preset["config"], preset["default_weights"]
        entry = preset["weights"][default]
        outputs = (f"{config.get('num_classes', 1000)} classes" if config.get("include_top", True)
                   else "features")
        top1, source = _top1(entry["top1"], entry["top1_source"])
        rows.append(
            f"| `{name}` | {description.split(':')[0]} | {parameter_count(config):,} | {outputs} "
            f"| `{default}` ({_size(entry['image_size'])} px) | {top1} | {source} |"
        )
    return "\n".join(rows) + "\n"


def weights_table():
    rows = [
        "| preset | weights name | format | res | classes | ImageNet-1k top-1 | source | file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in presets.list_presets():
        preset = presets.get_preset(name)
        for weights, (top1, location) in presets.list_weights(name).items():
            entry = preset["weights"][weights]
            default = " (default)" if weights == preset["default_weights"] else ""
            classes = entry["num_classes"] or "no head"
            rows.append(
                f"| {name} | `{weights}`{default} | {entry['format']} "
                f"| {_size(entry['image_size'])} | {classes} "
                f"| {' | '.join(_top1(top1, entry['top1_source']))} | {location} |"
            )
    return "\n".join(rows) + "\n"


def descriptions_table():
    rows = ["| preset | description |", "|---|---|"]
    rows += [f"| `{name}` | {text} |" for name, text in presets.list_presets().items()]
    return "\n".join(rows) + "\n"


def tests_table():
    rows = ["| test module | what it checks |", "|---|---|"]
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        summary = " ".join(docstring.split("\n\n")[0].split())
        rows.append(f"| `tests/{path.name}` | {summary} |")
    return "\n".join(rows) + "\n"


TABLES = {"presets": presets_table, "descriptions": descriptions_table,
          "weights": weights_table, "tests": tests_table}


def render(text):
    """`text` with every table block replaced by its freshly rendered table."""
    return BLOCK.sub(lambda m: m[1] + TABLES[m[2]]() + m[4], text)


def stale_files():
    """The FILES whose committed tables differ from the rendered ones."""
    return [name for name in FILES if render((ROOT / name).read_text()) != (ROOT / name).read_text()]


def main(argv):
    if argv[1:] == ["--check"]:
        stale = stale_files()
        for name in stale:
            print(f"{name}: tables out of date; run python docs/tables.py")
        return 1 if stale else 0
    for name in FILES:
        path = ROOT / name
        path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
