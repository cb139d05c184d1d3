"""Converts a public image-diffusion checkpoint into a base generator a VideoFusion run loads.

    python -m vfjax.pretrained diffusers --src=ddpm-cifar10-32 --out=runs/base_cifar
    python -m vfjax.pretrained adm --src=64x64_diffusion.pt --out=runs/base_adm64 \\
        --flags="--attention_resolutions 32,16,8 --num_channels 192 --num_head_channels 64 ..."
    python -m vfjax.pretrained adm --preset=guided-diffusion/lsun_bedroom \\
        --src=lsun_bedroom.pt --out=runs/base_bedroom
    python -m vfjax.main --config=... --config.init.base_checkpoint=runs/base_cifar \\
        $(cat runs/base_cifar/base_flags.txt)

`--preset` names a published checkpoint (`vfjax.pretrained.presets`): it supplies the flags and
the architecture the file must have. What does not map is refused with one line naming it.
"""

from absl import app, flags

from vfjax import cli
from vfjax.pretrained import export, presets

flags.DEFINE_string("src", None, "diffusers folder (or its weights file), or ADM .pt file.")
flags.DEFINE_string("out", None, "New folder for the converted base generator.")
flags.DEFINE_string("flags", "", "adm: the checkpoint's model (and diffusion) flags.")
flags.DEFINE_string("preset", "", f"A published checkpoint: {', '.join(sorted(presets.PRESETS))}.")
FLAGS = flags.FLAGS


def main(argv) -> None:
    if len(argv) != 2 or argv[1] not in export.FORMATS:
        raise app.UsageError(f"Give one format, {' or '.join(export.FORMATS)}; got {argv[1:]}.")
    cli.quiet_libraries()
    cli.run_guarded(export.convert, argv[1], FLAGS.src, FLAGS.out, FLAGS.flags, FLAGS.preset)


if __name__ == "__main__":
    flags.mark_flags_as_required(["src", "out"])
    app.run(main)
