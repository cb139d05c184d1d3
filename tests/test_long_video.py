"""Long videos from the trained tiny model: what they cost in compiles."""

import jax
import pytest

from tests.helpers import CLASS_FIELDS, tiny
from vfjax import sample

pytestmark = pytest.mark.xdist_group("class_run")  # Shares the class_run fixture (conftest).


def test_long_video_compiles_each_sampling_program_once(class_run):
    """A long video of 3 clips ('continue', the default) and its independent-clips reference
    share one sampler of single clips: its two programs (a clip alone, a clip holding frames)
    compile once each, not the first of them again for the reference."""
    compiled = []

    def listener(event: str, seconds: float, **kwargs) -> None:
        del seconds
        name = kwargs.get("fun_name", "")
        if event == "/jax/core/compile/backend_compile_duration" and "sample_videos" in name:
            compiled.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fields = {"sampling.num_frames": 6, "sampling.label": 1}
        out = sample.sample(tiny(**CLASS_FIELDS, **fields), class_run)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert out["long_method"] == "continue" and out["clips"] == 3
    assert len(compiled) == 2, compiled
