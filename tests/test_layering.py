"""The package layering (README "Architecture"), checked on the source with ``ast``.

A module may import its own layer or a lower one, never a higher one; imports inside functions
and under ``TYPE_CHECKING`` count too. Nothing outside ``cli/`` imports ``visionloop.cli`` or
``rich``; ``serving/`` imports neither torch, ultralytics nor ``training/``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "visionloop"

# Lowest first. A top-level module or package of visionloop that is in no layer fails the test.
LAYERS: list[set[str]] = [
    {"__init__", "settings", "errors", "files", "predictions", "evaluation", "config_file"},
    {"datasets", "registry", "store"},
    {"training", "serving", "feedback", "promotion", "monitoring", "reports", "ci"},
    {"demo", "loop"},
    {"cli", "__main__"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}
UI_ONLY = ("rich",)  # presentation libraries only cli/ may use
NOT_IN_SERVING = ("torch", "torchvision", "ultralytics", "visionloop.training")


@dataclass(frozen=True)
class Import:
    path: Path  # the importing file
    line: int
    target: str  # absolute dotted name

    def __str__(self) -> str:
        return f"{self.path.relative_to(SRC.parent)}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[Import]:
    """Every import in the file, relative ones made absolute."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [Import(path, node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            if base_name == "visionloop":  # `from . import loop` names modules (`__version__` is not one)
                out += [Import(path, node.lineno, "visionloop" if a.name.startswith("__") else f"visionloop.{a.name}")
                        for a in node.names]
            else:
                out.append(Import(path, node.lineno, base_name))
    return out


def part_of(dotted: str) -> str:
    """visionloop.training.pipeline → training; visionloop → __init__."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def is_in(target: str, roots: tuple[str, ...]) -> bool:
    return any(target == r or target.startswith(r + ".") for r in roots)


def layer_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        if not is_in(imp.target, ("visionloop",)):
            continue
        src, dst = part_of(module_name(imp.path)), part_of(imp.target)
        if dst not in RANK:
            bad.append(f"{imp}, which is in no layer")
        elif RANK[dst] > RANK.get(src, len(LAYERS)):
            bad.append(f"{imp} (layer {RANK[src]} {src} may not import layer {RANK[dst]} {dst})")
    return bad


def ui_violations(imports: list[Import]) -> list[str]:
    return [f"{imp} (only cli/ may)" for imp in imports
            if part_of(module_name(imp.path)) not in ("cli", "__main__") and is_in(imp.target, ("visionloop.cli", *UI_ONLY))]


def serving_violations(imports: list[Import]) -> list[str]:
    return [f"{imp} (serving/ stays torch-free)" for imp in imports
            if part_of(module_name(imp.path)) == "serving" and is_in(imp.target, NOT_IN_SERVING)]


SOURCES = sorted(PKG.rglob("*.py"))
ALL_IMPORTS = [imp for p in SOURCES for imp in imports_of(p)]


def test_every_module_has_a_layer():
    parts = {part_of(module_name(p)) for p in SOURCES}
    assert parts - RANK.keys() == set(), "modules in no layer: add them to LAYERS (and README Architecture)"


def test_no_module_imports_a_higher_layer():
    bad = layer_violations(ALL_IMPORTS)
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_only_cli_imports_cli_and_rich():
    bad = ui_violations(ALL_IMPORTS)
    assert not bad, "library code must not import the CLI layer or print with rich:\n" + "\n".join(bad)


def test_serving_imports_no_torch_ultralytics_or_training():
    bad = serving_violations(ALL_IMPORTS)
    assert not bad, "serving/ must stay torch-free:\n" + "\n".join(bad)


def test_importing_serving_loads_no_torch():
    """The same rule at run time, transitively: every serving module, then a look at sys.modules."""
    mods = [module_name(p) for p in SOURCES if part_of(module_name(p)) == "serving"]
    code = (f"import importlib, sys\nfor m in {mods!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'ultralytics')"
            f" or m.startswith('visionloop.training')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", f"importing serving/ loaded: {r.stdout.strip()}"


# -- the checker itself ------------------------------------------------------------------------
@pytest.mark.parametrize("rel, code, target", [
    ("visionloop/loop.py", "from .cli.console import err_console", "visionloop.cli.console"),
    ("visionloop/cli/loop.py", "from ..training.events import NullEvents", "visionloop.training.events"),
    ("visionloop/demo.py", "def f():\n    from . import registry", "visionloop.registry"),
    ("visionloop/serving/__init__.py", "from . import app", "visionloop.serving"),
    ("visionloop/serving/app.py", "import torch.nn", "torch.nn"),
])
def test_imports_are_resolved(tmp_path, monkeypatch, rel, code, target):
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "src")
    f = tmp_path / "src" / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(code + "\n")
    (imp,) = imports_of(f)
    assert imp.target == target and imp.line == code.count("\n") + 1
    assert str(imp) == f"src/{rel}:{imp.line} imports {target}"


def test_each_rule_flags_its_case(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "src")
    files = {"visionloop/loop.py": "import os\n\ndef f():\n    from .cli import console\n",
             "visionloop/store.py": "from . import promotion\nfrom .errors import NotFoundError\n",
             "visionloop/promotion.py": "from . import __version__\nfrom .nowhere import x\n",
             "visionloop/training/pipeline.py": "from rich.console import Console\nfrom ..datasets import catalog\n",
             "visionloop/serving/runtime.py": "import ultralytics\nfrom ..training import export\nimport numpy\n",
             "visionloop/cli/data.py": "from rich.table import Table\nfrom ..demo import run_demo\n"}
    imports = []
    for rel, code in files.items():
        f = tmp_path / "src" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(code)
        imports += imports_of(f)
    assert layer_violations(imports) == [
        "src/visionloop/loop.py:4 imports visionloop.cli (layer 3 loop may not import layer 4 cli)",
        "src/visionloop/store.py:1 imports visionloop.promotion (layer 1 store may not import layer 2 promotion)",
        "src/visionloop/promotion.py:2 imports visionloop.nowhere, which is in no layer",
    ]
    assert ui_violations(imports) == [
        "src/visionloop/loop.py:4 imports visionloop.cli (only cli/ may)",
        "src/visionloop/training/pipeline.py:1 imports rich.console (only cli/ may)",
    ]
    assert serving_violations(imports) == [
        "src/visionloop/serving/runtime.py:1 imports ultralytics (serving/ stays torch-free)",
        "src/visionloop/serving/runtime.py:2 imports visionloop.training (serving/ stays torch-free)",
    ]
