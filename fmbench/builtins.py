"""Importing this module registers every built-in component (fmbench.plugins loads it before any
plug-in, so a plug-in cannot take a built-in's name and ``fmbench list`` shows everything)."""

import fmbench.data  # noqa: F401  (2D datasets)
import fmbench.executors  # noqa: F401  (local, slurm, ray)
import fmbench.image_metrics  # noqa: F401  (fid, kid, bpd)
import fmbench.image_tasks  # noqa: F401  (image datasets)
import fmbench.metrics  # noqa: F401
import fmbench.models  # noqa: F401  (model kinds, activations)
import fmbench.paths  # noqa: F401  (paths, couplings)
import fmbench.solvers  # noqa: F401
