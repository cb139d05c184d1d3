"""What every vfjax command does around its work: quiet library logs, and errors for people.

`run_guarded(fn)` runs a command's work; an error a person can fix (a bad value, a missing
file, a NaN) becomes one line `vfjax: error: ...` (the traceback only with `--verbosity=1`), any
other error is logged with its traceback, and on several processes either one stops every
process of the run with the same line (`vfjax.distributed.stop_all`).
"""

import logging as pylogging
import os

from absl import logging

# Errors whose message says what to change; everything else is a bug and shows its traceback.
PEOPLE_ERRORS = (ValueError, OSError, FloatingPointError)


class _LibraryChatter(pylogging.Filter):
    """Drops the INFO records of libraries that narrate their internals (Orbax, tfds, JAX)."""

    NOISY = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/")

    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or not any(
            part in record.pathname for part in self.NOISY
        )


def quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow only reads data and writes summaries here; its oneDNN kernels gain nothing and
    # announce themselves on every start past TF_CPP_MIN_LOG_LEVEL.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_LibraryChatter())


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def run_guarded(fn, *args, **kwargs):
    """`fn(*args, **kwargs)`, with the errors of the module docstring turned into one line."""
    from vfjax import distributed

    try:
        return fn(*args, **kwargs)
    except PEOPLE_ERRORS as e:
        logging.debug("Traceback of the error below:", exc_info=True)
        distributed.stop_all(one_line(e), 2)
    except Exception as e:
        logging.exception("Unexpected error:")
        distributed.stop_all(f"{type(e).__name__}: {one_line(e)}", 1)
