"""The repository stands alone: nothing in it points outside it, and its design page exists and
names the contracts that the code keeps.

The rule for paths is strict: no product file contains two dots followed by a slash, the start
of every relative path that climbs out of a folder. Inside the repository such a path is never
needed: documents and comments name files from the repository root (`requirements.txt`,
`vfjax/bench/peer/`), and scripts find the root from their own location, as
`$(dirname "$0")/..` does (two dots after the slash, not before one). So any occurrence is a path
to something a clone does not hold (a folder beside the repository, a reader's own machine) or
one that should be written from the root; both fail here, with the file and line.
"""

import os
import re
import subprocess

from tests.helpers import ROOT

# Built so that this file does not contain the string it looks for.
UP = "." * 2 + "/"
# The product: what a user's clone holds and reads.
FOLDERS = ("vfjax", "configs", "launch", "tests")
FILES = ("README.md", "ARCHITECTURE.md", "PERFORMANCE.md", "pyproject.toml", ".ci/run")
DESIGN = os.path.join(ROOT, "docs", "design.md")


def _in_product(path: str) -> bool:
    top = path.split("/", 1)[0]
    name = os.path.basename(path)
    return (
        top in FOLDERS
        or path in FILES
        or (top == "docs" and path.count("/") == 1 and path.endswith(".md"))
        or (path.count("/") == 0 and name.startswith("requirements") and name.endswith(".txt"))
    )


def _repository_files() -> list[str]:
    """Paths (from the root, with `/`) of the files git tracks or would track (new files that
    .gitignore does not exclude); without git, every file below the root but build outputs."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        paths = out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".venv", "runs"}
        paths = []
        for folder, dirs, names in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
            rel = os.path.relpath(folder, ROOT)
            paths += [os.path.normpath(os.path.join(rel, n)).replace(os.sep, "/") for n in names]
    return sorted(p for p in paths if os.path.isfile(os.path.join(ROOT, p)))


def _product_files() -> list[str]:
    return [p for p in _repository_files() if _in_product(p)]


def test_the_product_files_are_found():
    """The search below is only as good as its list of files."""
    files = set(_product_files())
    assert {"README.md", "pyproject.toml", ".ci/run", "requirements.txt", "docs/design.md"} <= files
    this = os.path.relpath(os.path.abspath(__file__), ROOT).replace(os.sep, "/")
    assert {"vfjax/main.py", "configs/default.py", "launch/local.sh", this} <= files
    assert "vfjax/bench/peer/diffusers_unet3d_bench.py" in files
    assert "docs/long_video.gif" not in files  # Only docs/*.md.


def test_no_path_leaves_the_repository():
    found = []
    for path in _product_files():
        with open(os.path.join(ROOT, path), "rb") as f:
            for number, line in enumerate(f.read().split(b"\n"), 1):
                if UP.encode() in line:
                    text = line.decode("utf-8", "replace").strip()
                    found.append(f"{path}:{number}: {text}")
    assert not found, (
        f"{len(found)} line(s) point outside the repository (write paths from its root):\n"
        + "\n".join(found)
    )


def test_the_docs_named_in_the_product_exist():
    """Every `docs/...` file a product file names is in the repository."""
    missing = []
    for path in _product_files():
        with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                for named in re.findall(r"\bdocs/[\w./-]*\w", line):
                    if not os.path.exists(os.path.join(ROOT, named)):
                        missing.append(f"{path}:{number}: {named}")
    assert not missing, "\n".join(missing)


# The contracts of docs/design.md, section 5, by the names the code gives them.
DECOMPOSED = (
    "frame_lambdas",
    "independent_lambdas",
    "key_frame_index",
    "sample_noise",
    "q_sample",
    "remove_base",
    "combine",
    "base_as_noise",
    "residual_as_noise",
    "loss_weights",
    "predict_noise",
    "videofusion_loss",
    "image_loss",
)
METRICS = ("frechet_distance", "kernel_distance", "inception_score")
TERMS = (
    "--mode",
    "--workdir",
    "--config.FIELD=VALUE",
    "--print_config",
    "python -m vfjax.pretrained",
    "python -m vfjax.bench",
    "--peer_dir",
    "step_time_s",
    "videos_per_s",
    "model_flops_per_step",
    "achieved_tflops",
    "peak_memory_bytes",
    "metrics.jsonl",
    "checkpoints/<step>/",
    "samples/",
    "eval/<protocol>_<step>",
    "data_law",
    "load_i3d",
    "('data', 'fsdp')",
)
# Config fields that sweeps and scripts set: each named on the page and present in the config.
FIELDS = (
    "seed",
    "total_steps",
    "batch_size",
    "log_every_steps",
    "checkpoint_every_steps",
    "sample_every_steps",
    "base_pretrain_steps",
    "data.name",
    "data.num_frames",
    "data.resolution",
    "data.stride",
    "data.manual_dir",
    "data.data_dir",
    "data.cond",
    "diffusion.lam",
    "diffusion.base_stop_gradient",
    "diffusion.key_input",
    "diffusion.prediction",
    "diffusion.min_snr_gamma",
    "diffusion.snr_floor",
    "diffusion.base_image_weight",
    "init.base_checkpoint",
    "model.kind",
    "optim.freeze_base",
    "sampling.num_frames",
    "sampling.long_method",
    "sampling.long_overlap",
    "sampling.long_base",
    "sampling.long_guidance",
    "sampling.long_context_guidance",
    "eval.protocol",
    "mesh.data",
    "mesh.fsdp",
)


def _design() -> str:
    assert os.path.isfile(DESIGN), "docs/design.md, the repository's design page, is missing"
    with open(DESIGN, encoding="utf-8") as f:
        return f.read()


def test_the_design_page_names_the_contracts():
    from vfjax.diffusion import decomposed
    from vfjax.evaluation import i3d, metrics

    page = _design()
    for module, names in ((decomposed, DECOMPOSED), (metrics, METRICS), (i3d, ("load_i3d",))):
        for name in names:
            assert f"`{name}(" in page, f"docs/design.md does not name {module.__name__}.{name}"
            assert callable(getattr(module, name, None)), f"{module.__name__} has no {name}"
    missing = [term for term in TERMS if term not in page]
    assert not missing, f"docs/design.md does not mention {missing}"


def test_the_design_pages_fields_and_choices_are_the_configs():
    from vfjax import config as config_lib
    from vfjax.data import config as data_config
    from vfjax.diffusion import decomposed
    from vfjax.models import architecture

    page = _design()
    config = config_lib.base_config()
    for field in FIELDS:
        assert f"`{field}`" in page, f"docs/design.md does not name the config field {field}"
        node = config
        for part in field.split("."):
            assert part in node, f"docs/design.md names {field}, which base_config() lacks"
            node = node[part]
    choices = {
        "data.name": data_config.DATASET_NAMES,
        "model.kind": architecture.MODEL_KINDS,
        "diffusion.key_input": decomposed.KEY_INPUTS,
        "diffusion.prediction": decomposed.PREDICTIONS,
        "sampling.long_method": config_lib.LONG_METHODS,
        "sampling.long_base": config_lib.LONG_BASES,
    }
    for field, values in choices.items():
        # The field's entry on the page: its name, then its values in parentheses.
        entries = re.findall(re.escape(f"`{field}`") + r" \(([^)]*)\)", page)
        listed = [set(re.findall(r"`(\w+)`", e)) for e in entries]
        assert set(values) in listed, f"{field}: the page lists {listed}, the code {set(values)}"
