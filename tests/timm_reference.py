"""timm as the reference for the timm-format loaders, importable on the CPU machines.

timm imports torchvision at import time (for data transforms and a frozen BatchNorm),
but its ViT code uses none of it; PyPI's torchvision wheel is built against the CUDA
torch and its compiled ops do not load on the CPU torch the tests use. Where the real
torchvision does not import, timm is imported with a stand-in for it that has every
name and no function (`_Absent` raises when used), removed again afterwards.
"""

import importlib.abc
import importlib.machinery
import sys
import types

import pytest


class _AbsentMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return name  # enum members, e.g. InterpolationMode.BICUBIC, as their names


class _Absent(metaclass=_AbsentMeta):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is not installed: this is the stand-in for timm's import")


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Absent


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def import_timm():
    """timm, with the real torchvision if it imports, else with the stand-in; skips the
    test when timm is not installed."""
    pytest.importorskip("torch")
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or the CUDA build's ops failing on the CPU torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        finder = _StandInFinder()
        sys.meta_path.insert(0, finder)
        try:
            return pytest.importorskip("timm")
        finally:
            sys.meta_path.remove(finder)
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]
    return pytest.importorskip("timm")
