#!/usr/bin/env python3
"""Wheels for a machine that cannot reach a package registry (a lent GPU host), built here.

    # On the target, optional (cheap, standard library only): what it has and what imports.
    python launch/wheelhouse.py probe --requirements=launch/requirements-bench.txt > probe.json
    # Here: wheels of what the target lacks, for its Python and platform.
    python launch/wheelhouse.py build --requirements=launch/requirements-bench.txt \\
        --python-version=3.12 --platform=manylinux_2_28_x86_64 --platform=manylinux2014_x86_64 \\
        --probe=probe.json --dest=.whl        # or, without a probe: --have=jax,flax,...
    # On the target: install the wheels of what it still lacks into a folder, then use it.
    python launch/wheelhouse.py install --wheelhouse=.whl --target=.gl
    PYTHONPATH=.gl python -m vfjax.bench suite --out=$OUT/suite

`build` resolves the requirements' whole dependency closure for the target's Python and platform
(pip's resolver, binary wheels only, nothing installed here), drops every distribution the target
has (the probe's installed distributions, less those whose import failed there; without a probe,
the closure of `--have`), and downloads the rest without resolving again. `install` installs,
with no index and no dependency resolution, each wheel whose distribution the running Python
lacks, then imports every requirement of the manifest and exits non-zero if one fails.
Errors are one line: `wheelhouse: error: ...`.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

MANIFEST = "MANIFEST.json"
# Requirement names whose import name is not the name itself (with '-' as '_').
IMPORT_NAMES = {
    "absl-py": "absl",
    "pyyaml": "yaml",
    "pillow": "PIL",
    "orbax-checkpoint": "orbax.checkpoint",
    "tensorflow-cpu": "tensorflow",
    "google-cloud-storage": "google.cloud.storage",
    "protobuf": "google.protobuf",
}


class Error(Exception):
    """A mistake a person fixes: printed as one line."""


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: str) -> list[str]:
    """Requirement lines of `path` (and of the files it includes with `-r`), comments dropped."""
    if not os.path.exists(path):
        raise Error(f"no requirements file {path}")
    specs = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line.startswith(("-r ", "--requirement ")):
                specs += read_requirements(os.path.join(os.path.dirname(path), line.split()[1]))
            elif line and not line.startswith("-"):
                specs.append(line)
    return specs


def requirement_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    if not match:
        raise Error(f"cannot read a package name in requirement {spec!r}")
    return normalize(match.group(0))


def import_name(spec: str) -> str:
    name = requirement_name(spec)
    return IMPORT_NAMES.get(name, name.replace("-", "_"))


_TRY_IMPORTS = """
import importlib, json, sys
errors = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as e:
        errors[name] = f"{type(e).__name__}: {e}".splitlines()[0]
print(json.dumps(errors))
"""


def import_errors(specs: list[str], path: list[str] | None = None) -> dict[str, str]:
    """`{requirement name: error}` of the requirements that do not import in a fresh Python
    (with `path` first on its path); one process for all of them."""
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join([*path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    modules = {import_name(s): requirement_name(s) for s in specs}
    run = subprocess.run(
        [sys.executable, "-c", _TRY_IMPORTS, *modules], capture_output=True, text=True, env=env
    )
    if run.returncode != 0:
        raise Error(f"could not try the imports: {run.stderr.strip().splitlines()[-1:]}")
    return {modules[m]: e for m, e in json.loads(run.stdout.strip().splitlines()[-1]).items()}


def installed() -> dict[str, str]:
    """Distributions the running Python sees, by normalized name."""
    return {normalize(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


# ------------------------------------------------------------------------------------- probe


def probe(requirements: list[str]) -> dict:
    return {
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "platform": sysconfig.get_platform(),
        "installed": installed(),
        "import_errors": import_errors(requirements),
    }


# ------------------------------------------------------------------------------------- build


def _target_args(python_version: str | None, platforms: list[str]) -> list[str]:
    args = ["--only-binary=:all:"]
    if python_version:
        args += ["--python-version", python_version]
    for platform in platforms:
        args += ["--platform", platform]
    return args


def resolve(specs: list[str], target: list[str], pip_args: list[str]) -> dict[str, str]:
    """The dependency closure of `specs` for the target, `{name: version}` (pip's resolver)."""
    if not specs:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            report,
            "--target",
            os.path.join(tmp, "t"),
            *target,
            *pip_args,
            *specs,
        ]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            lines = run.stderr.strip().splitlines()
            raise Error(f"pip could not resolve {' '.join(specs)}: {lines[-1] if lines else ''}")
        with open(report) as f:
            items = json.load(f)["install"]
    return {normalize(i["metadata"]["name"]): i["metadata"]["version"] for i in items}


def build(args) -> dict:
    specs = [s for path in args.requirements for s in read_requirements(path)] + args.spec
    if not specs:
        raise Error("no requirements: give --requirements=FILE or requirement specs")
    target = _target_args(args.python_version, args.platform)
    closure = resolve(specs, target, args.pip_arg)
    if args.probe:
        with open(args.probe) as f:
            seen = json.load(f)
        # A distribution whose import failed there is brought anyway (it goes first on the path).
        have = set(seen["installed"]) - set(seen["import_errors"])
    else:
        have = set(resolve(args.have, target, args.pip_arg)) if args.have else set()
    missing = {n: v for n, v in sorted(closure.items()) if n not in have}
    os.makedirs(args.dest, exist_ok=True)
    if missing:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            args.dest,
            *target,
            *args.pip_arg,
            *(f"{n}=={v}" for n, v in missing.items()),
        ]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            lines = run.stderr.strip().splitlines()
            raise Error(f"pip download failed: {lines[-1] if lines else run.returncode}")
    wheels = sorted(f for f in os.listdir(args.dest) if f.endswith(".whl"))
    size = sum(os.path.getsize(os.path.join(args.dest, w)) for w in wheels)
    manifest = {
        "python_version": args.python_version
        or f"{sys.version_info.major}.{sys.version_info.minor}",
        "platforms": args.platform,
        "requirements": specs,
        "missing": missing,
        "kept_from_target": sorted(set(closure) - set(missing)),
        "wheels": wheels,
        "bytes": size,
    }
    with open(os.path.join(args.dest, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


# ----------------------------------------------------------------------------------- install


def wheel_name(filename: str) -> str:
    return normalize(filename.split("-", 1)[0])


def compatible(filename: str) -> bool:
    """Whether the running Python can install the wheel `filename` (its Python, ABI and
    platform tags; a wheelhouse may hold wheels built for several Python versions)."""
    py_tags, abi_tags, platforms = filename[: -len(".whl")].split("-")[-3:]
    version = sys.version_info.minor
    cp = f"cp3{version}"
    py_ok = any(
        t in ("py3", f"py3{version}", cp)
        or (t.startswith("cp3") and "abi3" in abi_tags and int(t[3:]) <= version)
        for t in py_tags.split(".")
    )
    machine = sysconfig.get_platform().split("-")[-1]
    platform_ok = any(p == "any" or p.endswith(machine) for p in platforms.split("."))
    abi_ok = any(a in ("none", "abi3", cp) for a in abi_tags.split("."))
    return py_ok and abi_ok and platform_ok


def install(args) -> dict:
    manifest_path = os.path.join(args.wheelhouse, MANIFEST)
    if not os.path.exists(manifest_path):
        raise Error(f"no {MANIFEST} in {args.wheelhouse}: build the wheelhouse first")
    with open(manifest_path) as f:
        manifest = json.load(f)
    have = installed()
    unusable = [w for w in manifest["wheels"] if not compatible(w)]
    wheels = [w for w in manifest["wheels"] if wheel_name(w) not in have and w not in unusable]
    paths = [os.path.join(args.wheelhouse, w) for w in wheels]
    os.makedirs(args.target, exist_ok=True)
    if paths and importlib.util.find_spec("pip") is not None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--upgrade",
            "--quiet",
            "--target",
            args.target,
            *paths,
        ]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            lines = run.stderr.strip().splitlines()
            raise Error(f"pip install failed: {lines[-1] if lines else run.returncode}")
    else:  # No pip there: a wheel is a zip of what goes into site-packages.
        for path in paths:
            with zipfile.ZipFile(path) as z:
                z.extractall(args.target)
    target = os.path.abspath(args.target)
    errors = import_errors(manifest["requirements"], [target])
    return {
        "installed": wheels,
        "already_there": sorted(set(manifest["wheels"]) - set(wheels) - set(unusable)),
        "not_for_this_python": unusable,
        "target": target,
        "import_errors": errors,
        "pythonpath": target,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="on the target: installed distributions, failed imports")
    p.add_argument("--requirements", action="append", default=[])
    p.add_argument("--out", default="", help="write the JSON here (default: stdout)")
    b = sub.add_parser("build", help="here: download the wheels the target lacks")
    b.add_argument("spec", nargs="*", help="requirement specs beside --requirements")
    b.add_argument("--requirements", action="append", default=[])
    b.add_argument("--python-version", default=None, help="e.g. 3.12 (default: this Python's)")
    b.add_argument("--platform", action="append", default=[], help="wheel platform tags")
    b.add_argument("--probe", default="", help="the target's probe JSON")
    b.add_argument(
        "--have",
        type=lambda s: [x for x in s.split(",") if x],
        default=[],
        help="without a probe: packages the target has (their closure is kept)",
    )
    b.add_argument("--dest", required=True)
    b.add_argument("--pip-arg", action="append", default=[], help="passed on to pip")
    i = sub.add_parser("install", help="on the target: install what it lacks into --target")
    i.add_argument("--wheelhouse", required=True)
    i.add_argument("--target", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "probe":
            specs = [s for path in args.requirements for s in read_requirements(path)]
            text = json.dumps(probe(specs), indent=2)
            if args.out:
                with open(args.out, "w") as f:
                    f.write(text)
            else:
                print(text)
            return 0
        if args.command == "build":
            m = build(args)
            print(
                f"wheelhouse {args.dest}: {len(m['wheels'])} wheels, {m['bytes'] / 2**20:.1f} "
                f"MiB, for Python {m['python_version']}; missing there: "
                f"{', '.join(m['missing']) or 'nothing'}"
            )
            return 0
        r = install(args)
        print(
            f"installed {len(r['installed'])} wheels into {r['target']} ("
            f"{len(r['already_there'])} already there, {len(r['not_for_this_python'])} not for "
            f"this Python); PYTHONPATH={r['pythonpath']}"
        )
        for name, error in r["import_errors"].items():
            print(f"wheelhouse: error: {name} does not import: {error}", file=sys.stderr)
        return 1 if r["import_errors"] else 0
    except (Error, OSError) as e:
        print(f"wheelhouse: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
