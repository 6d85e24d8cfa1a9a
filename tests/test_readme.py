"""The README's model examples run as written (the weights examples need a download)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _section(title):
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


@pytest.mark.slow
def test_model_section_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", _section("The model"), re.S)
    assert blocks, "the README's model section has no Python example"
    for block in blocks:
        namespace = {}
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["logits"].shape == (2, 1000)
