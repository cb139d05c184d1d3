"""Command line of the data package.

    python -m vfjax.data prepare --name=ucf101 --manual_dir=~/UCF101 --data_dir=~/tfds \\
        --resolution=64 [--ucf_split=1] [--min_frames=16] [--workers=8]
    python -m vfjax.data stats --name=ucf101 --data_dir=~/tfds --resolution=64
    python -m vfjax.data bench --name=video_folder --manual_dir=/tmp/vf_videos \\
        --data_dir=/tmp/vf_tfds --fake_videos=32 --resolution=64 --num_frames=16
    python -m vfjax.data text --name=video_folder --data_dir=~/tfds --resolution=64 \\
        --encoder=minilm [--max_tokens=32]      # (re)embed the captions of a prepared set
"""

import argparse
import json
import sys

from absl import logging

from vfjax.data import bench, preparation, storage, text
from vfjax.data import config as config_lib


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vfjax.data", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (
        ("prepare", "build a data set from local files and print its statistics"),
        ("stats", "print the statistics of a prepared data set"),
        ("bench", "measure the clips/s the input pipeline delivers"),
        ("text", "embed the stored captions of a prepared data set (text conditioning)"),
    ):
        sub = commands.add_parser(name, help=summary)
        sub.add_argument("--name", required=True, choices=config_lib.DATASET_NAMES)
        sub.add_argument("--manual_dir", default="")
        sub.add_argument("--data_dir", default="")
        sub.add_argument("--resolution", type=int, default=64)
        sub.add_argument("--store_resolution", type=int, default=0)
        sub.add_argument("--ucf_split", type=int, default=1)
        sub.add_argument("--min_frames", type=int, default=0)
        sub.add_argument("--jpeg_quality", type=int, default=95)
        sub.add_argument("--workers", type=int, default=0, help="prepare threads (0: all cores)")
        sub.add_argument("--num_frames", type=int, default=16)
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
        if name in ("prepare", "text"):
            sub.add_argument("--encoder", default="", help="text encoder: 'minilm' or a folder")
            sub.add_argument("--max_tokens", type=int, default=32)
        if name == "bench":
            sub.add_argument("--stride", type=int, default=1)
            sub.add_argument("--batch_size", type=int, default=8)
            sub.add_argument("--batches", type=int, default=20)
            sub.add_argument("--num_workers", type=int, default=2, help="grain reader threads")
            sub.add_argument("--prefetch", type=int, default=4)
            sub.add_argument("--fake_videos", type=int, default=0, help="write N videos first")
            sub.add_argument("--fake_frames", type=int, default=100)
            sub.add_argument("--fake_size", default="240x320", help="HEIGHTxWIDTH")
    return parser


def _data_config(args):
    cfg = config_lib.default_config()
    for field in ("name", "manual_dir", "data_dir", "resolution", "store_resolution"):
        cfg[field] = getattr(args, field)
    cfg.ucf_split, cfg.min_frames, cfg.num_frames = args.ucf_split, args.min_frames, args.num_frames
    cfg.jpeg_quality, cfg.prepare_workers = args.jpeg_quality, args.workers
    if args.command == "bench":
        cfg.stride, cfg.num_workers, cfg.prefetch = args.stride, args.num_workers, args.prefetch
    if args.command in ("prepare", "text") and (args.encoder or args.command == "text"):
        cfg.cond, cfg.text_encoder = "text", args.encoder or text.MINILM
        cfg.text_max_tokens = args.max_tokens
    return cfg


def main(argv: list[str]) -> int:
    """Runs one command; returns the exit status (2 with a one-line message on bad input)."""
    args = _parser().parse_args(argv)
    logging.set_verbosity(logging.INFO)
    cfg = _data_config(args)
    try:
        config_lib.validate(cfg)
        if args.command == "prepare":
            result = preparation.prepare(cfg)
        elif args.command == "stats":
            result = storage.dataset_stats(storage.open_builder(cfg))
        elif args.command == "text":
            result = text.ensure_embedded(cfg)
        else:
            if args.fake_videos:
                if not cfg.manual_dir:
                    raise ValueError("--fake_videos needs --manual_dir, the folder to write to.")
                height, width = (int(v) for v in args.fake_size.lower().split("x"))
                bench.write_fake_videos(
                    cfg.manual_dir, args.fake_videos, args.fake_frames, height, width
                )
            result = bench.benchmark(cfg, batch_size=args.batch_size, batches=args.batches)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json or args.command in ("bench", "text"):
        print(json.dumps(result))
    else:
        print(preparation.format_stats(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
