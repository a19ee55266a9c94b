"""The public API: what ``__all__`` promises is importable, and public classes are exported."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

PACKAGES = ["webserver", "webclient"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name: str) -> None:
    """Every name in __all__ is importable from the package."""
    package = importlib.import_module(name)
    exported = getattr(package, "__all__", [])
    assert exported, f"{name} has no __all__"
    missing = [item for item in exported if not hasattr(package, item)]
    assert missing == []


@pytest.mark.parametrize("name", PACKAGES)
def test_public_classes_are_exported(name: str) -> None:
    """A public class defined in a public module appears in the package's __all__."""
    package = importlib.import_module(name)
    exported = set(getattr(package, "__all__", []))
    unexported = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name in ("cli", "testing"):
            continue
        module = importlib.import_module(f"{name}.{info.name}")
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and value.__module__ == module.__name__
                and not attr.startswith("_")
                and attr not in exported
            ):
                unexported.append(f"{info.name}.{attr}")
    assert unexported == []


def _modules(name: str) -> dict[str, object]:
    """The package's own modules (not the toolkit both packages share), by name."""
    package = importlib.import_module(name)
    return {
        info.name: importlib.import_module(f"{name}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if info.name not in ("__main__", "_shared")
    }


def _class_names(name: str) -> set[str]:
    return {
        attr
        for module in _modules(name).values()
        for attr, value in vars(module).items()
        if inspect.isclass(value) and value.__module__ == getattr(module, "__name__", None)
    }


def test_no_class_name_means_two_things() -> None:
    """No class name is defined in both packages: a name says which side it belongs to."""
    assert _class_names("webserver") & _class_names("webclient") == set()


def test_no_private_module_name_means_two_things() -> None:
    """No private module name is in both packages (public cli, config, errors are the norm)."""
    server, client = (
        {module for module in _modules(name) if module.startswith("_")}
        for name in ("webserver", "webclient")
    )
    assert server & client == set()
