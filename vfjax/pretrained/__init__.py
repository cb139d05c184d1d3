"""Public image-diffusion checkpoints as the base generator, converted by renaming and
transposing, with no retraining: diffusers' `UNet2DModel` (`diffusers_unet`) and OpenAI's
guided-/improved-diffusion `UNetModel` (`adm_unet`), over shared helpers (`mapping`); the
published checkpoints by name (`presets`); the folder a run loads (`export`); the command line
(`python -m vfjax.pretrained`, `__main__`)."""
