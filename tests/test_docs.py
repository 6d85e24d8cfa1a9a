"""The documentation matches the code: the tables docs/tables.py renders from keras_vit are
the committed ones, its parameter count is the model's, every local link in README.md and
docs/*.md leads to a file (and heading) that exists, and every `keras_vit.` name they quote
exists."""

import importlib
import importlib.util
import pathlib
import re

import pytest

import keras_vit
from keras_vit import presets

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def load_tables():
    spec = importlib.util.spec_from_file_location("doc_tables", ROOT / "docs" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = load_tables()


def test_committed_tables_are_the_rendered_ones():
    assert tables.stale_files() == [], "run python docs/tables.py and commit the result"
    for name, marker in [("README.md", "presets"), ("docs/model.md", "descriptions"),
                         ("docs/weights.md", "weights"), ("docs/development.md", "tests")]:
        assert f"<!-- table: {marker} -->\n| " in (ROOT / name).read_text()


def test_a_hand_edited_table_is_stale():
    readme = (ROOT / "README.md").read_text()
    edited = readme.replace("| 86,567,656 |", "| 86,567,657 |")
    assert edited != readme and tables.render(edited) == readme


def test_every_preset_and_weights_name_is_in_the_tables():
    readme = (ROOT / "README.md").read_text()
    weights = (ROOT / "docs" / "weights.md").read_text()
    for name in presets.list_presets():
        assert f"| `{name}` |" in readme
        for weights_name, (_, location) in presets.list_weights(name).items():
            assert f"| {name} | `{weights_name}`" in weights and location in weights


SMALL = dict(hidden_dim=8, mlp_dim=12, num_heads=2, num_layers=2)
OPTIONS = {
    "gap_pooled_norm": dict(pooling="gap", pooled_norm=True),
    "pre_logits": dict(representation_size=6, num_classes=5),
    "distillation_without_head": dict(distillation_token=True, distillation_head=False),
    "non_square": dict(patch_size=(4, 8), image_size=(8, 24), num_channels=1),
    "learned_2d_odd_width": dict(position_embedding="learned_2d", hidden_dim=10),
    "sincos_gap": dict(position_embedding="sincos_2d", pooling="gap"),
    "swiglu_inner_rms_no_biases": dict(mlp_type="swiglu", mlp_inner_norm=True, norm_type="rms_norm",
                                       query_bias=False, output_bias=False, mlp_bias=False,
                                       patch_bias=False, patch_norm=True),
    "map_rms_pooling_heads": dict(pooling="map", norm_type="rms_norm", pooling_heads=1,
                                  key_bias=False),
    "probe_without_key_bias": dict(pooling="probe", key_bias=False, pooling_heads=1),
}


@pytest.mark.parametrize("name", [*presets.list_presets(), *OPTIONS])
def test_parameter_count_is_the_models(name):
    if name in OPTIONS:
        config = {**SMALL, "patch_size": 4, "image_size": 8, **OPTIONS[name]}
    else:
        config = dict(presets.get_preset(name)["config"], **SMALL)
        config["image_size"] = (2 * config["patch_size"], 3 * config["patch_size"])
    assert tables.parameter_count(config) == keras_vit.ViT(**config).count_params()


def github_anchor(heading):
    """The id GitHub gives a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path):
    seen, result = {}, set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6} (.*)", line)):
            anchor = github_anchor(match[1])
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def local_links(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z]+:", target):
            yield target


def test_github_anchor_follows_githubs_rules():
    assert github_anchor("Deployment: SavedModel, TFLite (LiteRT) and ONNX") == (
        "deployment-savedmodel-tflite-litert-and-onnx")
    assert github_anchor("`make demo`") == "make-demo"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_resolve(path):
    links = list(local_links(path))
    for link in links:
        file_part, _, anchor = link.partition("#")
        target = (path.parent / file_part).resolve() if file_part else path
        assert target.exists(), f"{path.name}: {link} leads to no file"
        if anchor:
            assert target.suffix == ".md", f"{path.name}: {link}: an anchor in a non-markdown file"
            assert anchor in anchors(target), f"{path.name}: {link}: no such heading"


def test_the_readme_links_every_docs_page():
    linked = {pathlib.Path(link.partition("#")[0]).name
              for link in local_links(ROOT / "README.md") if link.startswith("docs/")}
    pages = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


def quoted_names(text):
    return set(re.findall(r"\bkeras_vit(?:\.[A-Za-z_]\w*)+", text))


def resolves(dotted):
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False


def test_quoted_keras_vit_names_exist():
    assert resolves("keras_vit.ViT.from_preset") and not resolves("keras_vit.ViT.from_presets")
    missing = {}
    for path in MARKDOWN:
        for name in quoted_names(path.read_text()):
            if name != "keras_vit.saved_models" and not resolves(name):
                missing.setdefault(path.name, []).append(name)
    assert not missing, f"names the documentation quotes that keras_vit lacks: {missing}"
