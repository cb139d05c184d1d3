"""The data package's command line: statistics, caption embeddings and the input benchmark of a
data set; and `prepare`, a thin alias of `python -m vfjax.main --mode=prepare` (the one way to
prepare a data set: both call `vfjax.data.prepare`).

    python -m vfjax.data stats --name=ucf101 --data_dir=~/tfds --resolution=64
    python -m vfjax.data text --name=video_folder --data_dir=~/tfds --resolution=64 \\
        --encoder=minilm [--max_tokens=32]      # (re)embed the captions of a prepared set
    python -m vfjax.data bench --name=video_folder --manual_dir=/tmp/vf_videos \\
        --data_dir=/tmp/vf_tfds --fake_videos=32 --resolution=64 --num_frames=16
    python -m vfjax.data prepare --name=ucf101 --manual_dir=~/UCF101 --data_dir=~/tfds \\
        --resolution=64        # the same as --mode=prepare with these config.data fields

Flags are the `config.data` fields of the same names (`--workers` is `prepare_workers`,
`--encoder` `text_encoder`, `--max_tokens` `text_max_tokens`).
"""

import json
import sys

from absl import flags, logging

from vfjax import cli
from vfjax.data import config as config_lib

COMMANDS = ("stats", "text", "bench", "prepare")


def _define(fv: flags.FlagValues) -> None:
    d = config_lib.default_config()
    flags.DEFINE_enum("name", None, config_lib.DATASET_NAMES, "Data set.", flag_values=fv)
    for field in ("manual_dir", "data_dir"):
        flags.DEFINE_string(field, d[field], f"config.data.{field}", flag_values=fv)
    for field in ("resolution", "store_resolution", "ucf_split", "min_frames", "num_frames"):
        flags.DEFINE_integer(field, d[field], f"config.data.{field}", flag_values=fv)
    flags.DEFINE_integer("stride", d.stride, "config.data.stride", flag_values=fv)
    flags.DEFINE_integer("jpeg_quality", d.jpeg_quality, "Prepare: JPEG quality.", flag_values=fv)
    flags.DEFINE_integer("workers", 0, "Prepare: decoding threads (0: all cores).", flag_values=fv)
    flags.DEFINE_string("encoder", "", "Text encoder: 'minilm' or a folder.", flag_values=fv)
    flags.DEFINE_integer("max_tokens", d.text_max_tokens, "Tokens per caption.", flag_values=fv)
    flags.DEFINE_bool("json", False, "Print JSON instead of text.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 8, "Bench: clips per batch.", flag_values=fv)
    flags.DEFINE_integer("batches", 20, "Bench: timed batches.", flag_values=fv)
    flags.DEFINE_integer("num_workers", 2, "Bench: grain reader threads.", flag_values=fv)
    flags.DEFINE_integer("prefetch", 4, "Bench: batches read ahead.", flag_values=fv)
    flags.DEFINE_integer("fake_videos", 0, "Bench: write N videos first.", flag_values=fv)
    flags.DEFINE_integer("fake_frames", 100, "Bench: frames per written video.", flag_values=fv)
    flags.DEFINE_string("fake_size", "240x320", "Bench: HEIGHTxWIDTH of them.", flag_values=fv)


def _data_config(command: str, fv: flags.FlagValues):
    cfg = config_lib.default_config()
    for field in ("name", "manual_dir", "data_dir", "resolution", "store_resolution"):
        cfg[field] = fv[field].value
    for field in ("ucf_split", "min_frames", "num_frames", "stride", "jpeg_quality"):
        cfg[field] = fv[field].value
    cfg.prepare_workers = fv.workers
    if command == "bench":
        cfg.num_workers, cfg.prefetch = fv.num_workers, fv.prefetch
    if command in ("prepare", "text") and (fv.encoder or command == "text"):
        from vfjax.data import text

        cfg.cond, cfg.text_encoder = "text", fv.encoder or text.MINILM
        cfg.text_max_tokens = fv.max_tokens
    return cfg


def _run(command: str, fv: flags.FlagValues):
    from vfjax.data import bench, preparation, storage, text

    cfg = _data_config(command, fv)
    config_lib.validate(cfg)
    if command == "prepare":
        return preparation.prepare(cfg)
    if command == "stats":
        return storage.dataset_stats(storage.open_builder(cfg))
    if command == "text":
        return text.ensure_embedded(cfg)
    if fv.fake_videos:
        if not cfg.manual_dir:
            raise ValueError("--fake_videos needs --manual_dir, the folder to write to.")
        height, width = (int(v) for v in fv.fake_size.lower().split("x"))
        bench.write_fake_videos(cfg.manual_dir, fv.fake_videos, fv.fake_frames, height, width)
    return bench.benchmark(cfg, batch_size=fv.batch_size, batches=fv.batches)


def main(argv: list[str]) -> int:
    """Runs `argv` (without the program name); returns the exit status (2, with a one-line
    `vfjax: error: ...`, on bad input)."""
    fv = flags.FlagValues()
    _define(fv)
    try:
        rest = fv(["vfjax.data", *argv])[1:]
        if len(rest) != 1 or rest[0] not in COMMANDS:
            raise ValueError(f"give one command of {', '.join(COMMANDS)} (got {rest})")
        if fv.name is None:
            raise ValueError("--name is required")
    except (flags.Error, ValueError) as e:
        print(f"vfjax: error: {cli.one_line(e)}", file=sys.stderr)
        return 2
    command = rest[0]
    logging.set_verbosity(logging.INFO)
    try:
        result = _run(command, fv)
    except cli.PEOPLE_ERRORS as e:
        print(f"vfjax: error: {cli.one_line(e)}", file=sys.stderr)
        return 2
    from vfjax.data import preparation

    if fv.json or command in ("bench", "text"):
        print(json.dumps(result))
    else:
        print(preparation.format_stats(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
