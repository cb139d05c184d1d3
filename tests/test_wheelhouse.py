"""launch/wheelhouse.py: a wheelhouse of what a target lacks, installed into a fresh directory
and imported from there. Offline: two pure-Python wheels made here stand in for the registry
(pip runs `--isolated --no-index --find-links`), one depending on the other."""

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from tests.helpers import ROOT

SCRIPT = os.path.join(ROOT, "launch", "wheelhouse.py")
TOP, DEP = "vfjax-wh-top", "vfjax-wh-dep"


def make_wheel(dest, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(dest / f"{module}-{version}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    links = tmp_path_factory.mktemp("links")
    make_wheel(links, DEP, "1.0")
    make_wheel(links, TOP, "2.0", requires=(f"{DEP}>=1",))
    return links


def wheelhouse(*args, python=(sys.executable,)):
    return subprocess.run(
        [*python, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def offline(links) -> list[str]:
    return [f"--pip-arg={a}" for a in ("--isolated", "--no-index", f"--find-links={links}")]


def test_build_brings_the_closure_and_installs_into_a_fresh_directory(index, tmp_path):
    dest, target = tmp_path / "whl", tmp_path / "fresh"
    run = wheelhouse("build", TOP, f"--dest={dest}", *offline(index))
    assert run.returncode == 0, run.stderr
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert manifest["missing"] == {DEP: "1.0", TOP: "2.0"}
    assert (
        len(manifest["wheels"]) == 2 and "missing there: vfjax-wh-dep, vfjax-wh-top" in run.stdout
    )

    run = wheelhouse("install", f"--wheelhouse={dest}", f"--target={target}")
    assert run.returncode == 0, run.stderr
    assert f"installed 2 wheels into {target}" in run.stdout
    check = subprocess.run(
        [sys.executable, "-c", "import vfjax_wh_top, vfjax_wh_dep; print(vfjax_wh_top.__file__)"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    assert check.returncode == 0 and check.stdout.startswith(str(target)), check.stderr


def test_build_leaves_out_what_the_probe_found(index, tmp_path):
    probe = tmp_path / "probe.json"
    run = wheelhouse("probe", f"--out={probe}")
    assert run.returncode == 0, run.stderr
    seen = json.loads(probe.read_text())
    assert seen["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "pytest" in seen["installed"] and seen["import_errors"] == {}
    # The target has the dependency: only the top package is brought.
    seen["installed"][DEP] = "1.0"
    probe.write_text(json.dumps(seen))
    dest = tmp_path / "whl"
    run = wheelhouse("build", TOP, f"--dest={dest}", f"--probe={probe}", *offline(index))
    assert run.returncode == 0, run.stderr
    assert json.loads((dest / "MANIFEST.json").read_text())["missing"] == {TOP: "2.0"}
    # ... unless its import failed there.
    seen["import_errors"] = {DEP: "ModuleNotFoundError: broken"}
    probe.write_text(json.dumps(seen))
    run = wheelhouse(
        "build", TOP, f"--dest={tmp_path / 'whl2'}", f"--probe={probe}", *offline(index)
    )
    manifest = json.loads((tmp_path / "whl2" / "MANIFEST.json").read_text())
    assert run.returncode == 0 and set(manifest["missing"]) == {TOP, DEP}


def test_install_without_pip_unpacks_the_wheels(index, tmp_path):
    dest, target = tmp_path / "whl", tmp_path / "fresh"
    assert wheelhouse("build", TOP, f"--dest={dest}", *offline(index)).returncode == 0
    # `python -S`: no site-packages, hence no pip (and none of its distributions installed).
    run = wheelhouse(
        "install", f"--wheelhouse={dest}", f"--target={target}", python=(sys.executable, "-S")
    )
    assert run.returncode == 0, run.stderr
    assert (target / "vfjax_wh_top" / "__init__.py").exists()


def test_errors_are_one_line(tmp_path, index):
    run = wheelhouse("install", f"--wheelhouse={tmp_path}", f"--target={tmp_path / 't'}")
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"wheelhouse: error: no MANIFEST.json in {tmp_path}: build the wheelhouse first"
    )
    run = wheelhouse("build", "vfjax-wh-nothing", f"--dest={tmp_path / 'w'}", *offline(index))
    assert run.returncode == 2 and run.stderr.startswith("wheelhouse: error: pip could not")
    assert len(run.stderr.strip().splitlines()) == 1


def test_wheels_for_another_python_are_left_out():
    spec = importlib.util.spec_from_file_location("wheelhouse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    here = f"cp3{sys.version_info.minor}"
    other = f"cp3{sys.version_info.minor + 1}"
    machine = sysconfig.get_platform().split("-")[-1]
    assert module.compatible("a-1.0-py3-none-any.whl")
    assert module.compatible(f"b-1.0-{here}-{here}-manylinux_2_28_{machine}.whl")
    assert module.compatible(f"c-1.0-cp38-abi3-manylinux2014_{machine}.whl")
    assert not module.compatible(f"d-1.0-{other}-{other}-manylinux_2_28_{machine}.whl")
    assert not module.compatible(f"e-1.0-{here}-{here}-macosx_11_0_arm64.whl")
