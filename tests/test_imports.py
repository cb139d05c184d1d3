"""Dependencies point down: every vfjax import, read from the source (nothing is imported), must
go to the importer's own layer or one below it, and no mode imports another (docs/design.md,
section 4; ARCHITECTURE.md describes the layers)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The modes share what lies below them and import none of each other.
MODES = {
    "train": ("vfjax.train",),
    "sample": ("vfjax.sample",),
    "evaluate": (
        "vfjax.evaluation.evaluate",
        "vfjax.evaluation.streams",
        "vfjax.evaluation.report",
    ),
    "bench": ("vfjax.bench",),
}

# Bottom to top. A module belongs to the layer of the longest name below that is it or one of
# its packages.
LAYERS = (
    # The maths of the method: imports nothing of the project.
    ("vfjax.diffusion",),
    # Files, processes, command-line errors, weight files, frame statistics, FLOP counts.
    (
        "vfjax.fileio",
        "vfjax.distributed",
        "vfjax.cli",
        "vfjax.weights",
        "vfjax.consistency",
        "vfjax.flops",
    ),
    # Input pipeline and data sets; the files a run writes (metrics, videos).
    ("vfjax.data", "vfjax.writers", "vfjax.samples"),
    # Orbax and the mesh: they know no model.
    ("vfjax.checkpointing", "vfjax.base_checkpoint", "vfjax.sharding"),
    # Flax modules over the maths.
    ("vfjax.models",),
    # The config and its checks.
    ("vfjax.config",),
    # Feature networks, metrics and protocols (not the evaluate mode).
    ("vfjax.evaluation",),
    # Public checkpoints as the base generator; experiment presets for configs.
    ("vfjax.pretrained", "vfjax.experiments"),
    ("vfjax.state",),
    ("vfjax.steps",),
    # What the modes share: run setup, and long videos from the sampling step.
    ("vfjax.run_setup", "vfjax.long_video"),
    # The modes.
    tuple(name for names in MODES.values() for name in names),
    ("vfjax.main",),
)


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: pathlib.Path) -> set[str]:
    """The vfjax modules `path` imports, at the top or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if _is_module(full) else base)
    return {m for m in found if m == "vfjax" or m.startswith("vfjax.")}


def _match(module: str, names) -> str | None:
    hits = [n for n in names if module == n or module.startswith(n + ".")]
    return max(hits, key=len) if hits else None


def _layer(module: str) -> int | None:
    owners = {n: i for i, layer in enumerate(LAYERS) for n in layer}
    best = _match(module, owners)
    return None if best is None else owners[best]


def _mode(module: str) -> str | None:
    names = {n: mode for mode, prefixes in MODES.items() for n in prefixes}
    best = _match(module, names)
    return None if best is None else names[best]


def _modules() -> dict[str, set[str]]:
    return {
        _module_name(p): _imports(p)
        for p in sorted((ROOT / "vfjax").rglob("*.py"))
        if _module_name(p) != "vfjax"
    }


def test_every_module_has_a_layer():
    missing = [m for m in _modules() if _layer(m) is None]
    assert not missing, f"add these modules to LAYERS in {__file__}: {missing}"


def test_imports_point_down():
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _modules().items()
        for target in sorted(targets)
        if target != "vfjax" and _layer(target) is not None and _layer(target) > _layer(module)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_mode_imports_another():
    crossing = [
        f"{module} ({_mode(module)}) imports {target} ({_mode(target)})"
        for module, targets in _modules().items()
        for target in sorted(targets)
        if _mode(module) and _mode(target) and _mode(module) != _mode(target)
    ]
    assert not crossing, "modes importing each other:\n" + "\n".join(crossing)


def test_the_parser_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The checks above are only as good as `_imports`: it must see imports inside functions,
    `from package import module`, and relative imports."""
    package = tmp_path / "vfjax" / "pkg"
    package.mkdir(parents=True)
    (tmp_path / "vfjax" / "__init__.py").write_text("")
    (tmp_path / "vfjax" / "other.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "sibling.py").write_text("")
    source = package / "mod.py"
    source.write_text(
        "import os\n"
        "from vfjax import other\n"
        "from . import sibling\n"
        "def f():\n"
        "    import vfjax.train\n"
        "    from ..pkg.sibling import name\n"
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert _imports(source) == {"vfjax.other", "vfjax.pkg.sibling", "vfjax.train"}


def test_every_module_the_docs_run_exists():
    """Each `python -m vfjax...` in the README and the Markdown docs names a module that exists
    (a renamed module leaves a documented command that fails on a fresh clone)."""
    import importlib.util
    import re

    named = set()
    docs = [*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"), *(ROOT / "launch").glob("*.sh")]
    for doc in docs:
        named |= set(re.findall(r"python3? -m (vfjax[\w.]*)", doc.read_text()))
    assert "vfjax.main" in named
    missing = sorted(m for m in named if importlib.util.find_spec(m) is None)
    assert not missing, missing
