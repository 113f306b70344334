"""The usage lines in the docstrings run as written (those marked `doctest: +SKIP` need real data or weights)."""

from __future__ import annotations

import doctest
import functools
import importlib
import importlib.util
import pkgutil
from types import ModuleType

import pytest
from conftest import ROOT

import vae_demo

PACKAGE = [f"vae_demo.{module.name}" for module in pkgutil.iter_modules(vae_demo.__path__)]
BENCHMARKS = [path for path in sorted((ROOT / "benchmarks").glob("*.py")) if ">>>" in path.read_text()]


@functools.cache  # a benchmark file is executed once, for finding its examples and for running them
def load(name: str) -> ModuleType:
    if name in PACKAGE:
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_examples(name: str) -> bool:
    tests = doctest.DocTestFinder().find(load(name))
    return any(not example.options.get(doctest.SKIP) for test in tests for example in test.examples)


MODULES = [name for name in [*PACKAGE, *(path.stem for path in BENCHMARKS)] if with_examples(name)]


def test_the_package_and_the_benchmarks_have_usage_examples():
    assert {"vae_demo.model", "vae_demo.objective", "vae_demo.latent_stats", "glasses_directions"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_usage_examples_run_as_written(name):
    result = doctest.testmod(load(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
