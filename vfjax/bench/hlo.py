"""Where a compiled program's memory traffic goes: the bytes each top-level operation of an
optimised HLO module reads and writes, by kind of operation and by the function (of vfjax) it
was traced from, and how much of it is tile padding.

XLA's `cost_analysis()` gives one total ("bytes accessed"); neither JAX nor XLA's Python API
breaks it down per operation, so this reads the module's text (`compiled.as_text()`): each
instruction of a computation that is not a fusion's body (the entry, loop bodies) touches its
operands and its result once. On the CPU the sum is XLA's total exactly (tests/test_hlo.py); on
a TPU each array counts as laid out in its tiles (the layout's `T(8,128)`: a 16-channel array
takes the room of 128 channels), which comes within 10% of XLA's total on the default config.
"""

import collections
import re

_DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
    "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128)\[([\d,]*)\](?:\{([^}]*)\})?")
_HEADER = re.compile(r"^(ENTRY )?%(\S+) \(.*\) -> .* \{$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([a-z][\w-]*)\((.*?)\)(?:, |$)")
_CALLS = re.compile(r"(?:calls|to_apply|condition|body)=%([\w.-]+)")
_FRAME = re.compile(r"stack_frame_id=(\d+)")
# Operations that move no data of their own.
_FREE = {"parameter", "constant", "bitcast", "get-tuple-element", "tuple", "after-all"}


def shape_bytes(text: str, padded: bool = False) -> int:
    """Bytes of every array shape in `text` (a tuple's elements summed); `padded`: as laid out in
    the TPU's tiles (`{minor_to_major:T(8,128)(2,1)}`: the most minor dimension padded to the
    tile's last size, the next one to its first size times the packing of narrow types)."""
    total = 0
    for dtype, dims, layout in _ARRAY.findall(text):
        sizes = [int(d) for d in filter(None, dims.split(","))]
        if padded and layout:
            sizes = _padded(sizes, layout)
        size = 1
        for d in sizes:
            size *= d
        total += size * _DTYPE_BYTES.get(dtype, 4)
    return total


def _padded(sizes: list[int], layout: str) -> list[int]:
    order, _, tiling = layout.partition(":")
    tiles = [[int(t) for t in tile.split(",") if t] for tile in re.findall(r"\(([\d,]*)\)", tiling)]
    minor = [int(d) for d in order.split(",") if d]
    if not tiles or not minor or not sizes:
        return sizes
    sizes = list(sizes)
    tile = tiles[0]
    pack = tiles[1][0] if len(tiles) > 1 and tiles[1] else 1
    wanted = [tile[-1]] + ([tile[-2] * pack] if len(tile) > 1 else [])
    for dim, multiple in zip(minor, wanted, strict=False):  # Tiles cover the minor 1-2 dims.
        sizes[dim] = -(-sizes[dim] // multiple) * multiple
    return sizes


def _computations(text: str) -> dict[str, list[str]]:
    comps, name = {}, None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            name = header.group(2)
            comps[name] = []
        elif line.startswith("}"):
            name = None
        elif name is not None:
            comps[name].append(line)
    return comps


def _sources(text: str, package: str) -> dict[str, str]:
    """stack_frame_id -> `file:function` of the innermost frame in `package` (else innermost)."""
    sections = collections.defaultdict(dict)
    section = None
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            section = line
            continue
        if section and re.match(r"^\d+ ", line):
            key, _, value = line.partition(" ")
            sections[section][key] = value.strip().strip('"')
        elif section and not line.strip():
            section = None
    files, functions = sections["FileNames"], sections["FunctionNames"]
    locations, frames = sections["FileLocations"], sections["StackFrames"]

    def field(value, name):
        found = re.search(rf"{name}=(\d+)", value)
        return found.group(1) if found else None

    def describe(frame_id):
        location = locations.get(field(frames.get(frame_id, ""), "file_location_id") or "", "")
        file = files.get(field(location, "file_name_id") or "", "?")
        function = functions.get(field(location, "function_name_id") or "", "?")
        return file, function

    out = {}
    for frame_id in frames:
        chain, seen, current = [], set(), frame_id
        while current and current not in seen:
            seen.add(current)
            chain.append(describe(current))
            parent = field(frames.get(current, ""), "parent_frame_id")
            current = parent if parent != current else None
        inside = [c for c in chain if f"/{package}/" in c[0]]
        file, function = (inside or chain or [("?", "?")])[0]
        if f"/{package}/" in file:
            file = package + "/" + file.split(f"/{package}/", 1)[1]
        out[frame_id] = f"{file}:{function}"
    return out


def operations(text: str, package: str = "vfjax") -> list[dict]:
    """The top-level operations of an optimised HLO module's text: name, opcode, `kind`
    (convolution, matmul, reduction, elementwise, copy, collective or the opcode), `bytes` (result
    and operands) and `source` (innermost `package` frame; for an operation the compiler added,
    such as a layout copy, that of its first operand with one)."""
    comps = _computations(text)
    called = {c for lines in comps.values() for line in lines for c in _CALLS.findall(line)}
    fused = {c for lines in comps.values() for line in lines if " fusion(" in line
             for c in re.findall(r"calls=%([\w.-]+)", line)}  # fmt: skip
    sources = _sources(text, package)
    ops = []
    for comp, lines in comps.items():
        if comp in fused or (comp in called and comp.startswith("region")):
            continue
        types, origin = {}, {}
        for line in lines:
            m = _INSTR.match(line)
            if not m:
                continue
            name, result, opcode, operands = m.groups()
            names = re.findall(r"%([\w.-]+)", operands)
            types[name] = result
            frame = _FRAME.search(line)
            source = sources.get(frame.group(1)) if frame else None
            source = source or next((origin[o] for o in names if origin.get(o)), None)
            origin[name] = source
            if opcode in _FREE or opcode.endswith("-done"):
                continue
            operand_types = [types.get(o, "") for o in names]
            ops.append(
                {
                    "name": name,
                    "opcode": opcode,
                    "kind": _kind(opcode, line, comps),
                    "bytes": _bytes(opcode, result, operand_types, True),
                    "logical_bytes": _bytes(opcode, result, operand_types, False),
                    "source": source or "?",
                }
            )
    return ops


def _bytes(opcode: str, result: str, operands: list[str], padded: bool) -> int:
    """Result and operands; an asynchronous start's result already holds its operands (a tuple of
    the operands, the result and a context)."""
    if opcode.endswith("-start"):
        return shape_bytes(result, padded)
    return shape_bytes(result, padded) + sum(shape_bytes(o, padded) for o in operands)


def _kind(opcode: str, line: str, comps: dict) -> str:
    if opcode.startswith(("all-", "collective", "reduce-scatter")):
        return "collective"
    if opcode in ("copy", "copy-start", "transpose"):
        return "copy"
    if opcode in ("slice-start", "dynamic-slice", "slice"):
        return "slice"
    body = opcode
    if opcode == "fusion":
        called = re.findall(r"calls=%([\w.-]+)", line)
        body = "\n".join(_flatten(called, comps))
    for word, kind in (
        ("convolution(", "convolution"),
        ("dot(", "matmul"),
        ("reduce(", "reduction"),
    ):
        if word in body or opcode == word[:-1]:
            return kind
    return "elementwise" if opcode == "fusion" else opcode


def _flatten(names: list[str], comps: dict, seen=None) -> list[str]:
    """The lines of computations `names` and of the fusions nested in them."""
    seen = set() if seen is None else seen
    lines = []
    for name in names:
        if name in seen or name not in comps:
            continue
        seen.add(name)
        lines += comps[name]
        nested = [c for line in comps[name] for c in re.findall(r"calls=%([\w.-]+)", line)]
        lines += _flatten(nested, comps, seen)
    return lines


def bytes_by(
    ops: list[dict], key: str, top: int = 12, padding: bool = False
) -> list[tuple[str, float]]:
    """(value of `key`, share of all bytes), largest first, the rest summed as `other`;
    `padding`: the tile padding's bytes (as laid out, less the shapes' own) as shares of all."""
    totals = collections.Counter()
    for op in ops:
        totals[op[key]] += op["bytes"] - (op["logical_bytes"] if padding else 0)
    whole = sum(op["bytes"] for op in ops) or 1
    ranked = totals.most_common()
    rows = [(k, v / whole) for k, v in ranked[:top]]
    if len(ranked) > top:
        rows.append(("other", sum(v for _, v in ranked[top:]) / whole))
    return rows
