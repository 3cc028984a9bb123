"""Real decoupling: the modules of a network trained in parallel worker processes on Ray.

- :mod:`~minidni.distributed.stage`: one group of consecutive modules with its
  synthesizers and input models, and the bookkeeping of what is in flight
  (plain Python, no Ray);
- :mod:`~minidni.distributed.worker`: the Ray actor that holds a stage and
  relays its messages to the workers below and above;
- :mod:`~minidni.distributed.pipeline`: the driver: the decoupled (DNI) and the
  locked (bprop) pipelines, lock-step mode, failures;
- :mod:`~minidni.distributed.state`: flat checkpoints with the same keys for a
  pipeline and the single-process trainer;
- :mod:`~minidni.distributed.cli`: ``--workers``/``--ray-address`` for
  ``python -m minidni.run mnist|cifar10``.

Ray is optional (``pip install -e ".[distributed]"``); nothing here imports it
at module level.
"""

from minidni.distributed.pipeline import Pipeline, WorkerDied, balanced_groups, init_ray, require_ray
from minidni.distributed.stage import Stage
from minidni.distributed.state import trainer_state

__all__ = ["Pipeline", "WorkerDied", "Stage", "balanced_groups", "init_ray", "require_ray", "trainer_state"]
