"""Every example in buddy's docstrings runs (doctests), module by module, in every subpackage."""

import doctest
import importlib
import pkgutil

import pytest

import buddy.engine
import buddy.graphs
import buddy.machines
import buddy.rules


def _modules():
    for package in (buddy.engine, buddy.machines, buddy.rules, buddy.graphs):
        yield package.__name__
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            yield info.name


@pytest.mark.parametrize("name", sorted(set(_modules())))
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
