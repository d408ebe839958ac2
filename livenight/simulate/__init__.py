"""Event-camera simulators that write RLED recordings with ground truth.

* :mod:`.night` — a procedural night street (panning texture, cars with lamps) and the DVS pixel model
  (low-pass photoreceptor = low-light trails, threshold mismatch, refractory period, noise); RLED ±10 ms windows.
* :mod:`.natural` — natural image statistics (scikit-image photographs, dead leaves, 1/f textures) under camera
  ego-motion or a fixed camera with moving objects, through the same pixel model; contiguous windows (every event
  counts). The bundled model is trained on these.

Importing this package is cheap: numba, torch and h5py load on first use.
"""

from .natural import NaturalScene, random_natural_scene, simulate_natural, write_natural
from .night import DvsParams, NightScene, SimResult, simulate_night, write_night, write_sim

__all__ = ["NightScene", "DvsParams", "SimResult", "simulate_night", "write_night", "write_sim", "NaturalScene",
           "random_natural_scene", "simulate_natural", "write_natural"]
