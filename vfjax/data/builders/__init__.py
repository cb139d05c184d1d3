"""tfds builders of the real data sets, by `data.name`."""

from vfjax.data.builders.folders import SkyTimelapse, TaiChi, VideoFolder
from vfjax.data.builders.ucf101 import Ucf101

BUILDERS = {
    "ucf101": Ucf101,
    "sky_timelapse": SkyTimelapse,
    "taichi": TaiChi,
    "video_folder": VideoFolder,
}
