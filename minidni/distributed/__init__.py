"""Real decoupling: the modules of a network trained in parallel worker processes on Ray (a library).

- :mod:`~minidni.distributed.stage`: one group of consecutive modules with its
  synthesizers and input models, and the bookkeeping of what is in flight
  (plain Python, no Ray);
- :mod:`~minidni.distributed.worker`: the Ray actor that holds a stage and
  applies the messages (synthesizer and input-model targets) the driver hands it;
- :mod:`~minidni.distributed.pipeline`: the driver: the decoupled (DNI) and the
  locked (bprop) pipelines, lock-step mode, failures, joining a cluster;
- :mod:`~minidni.distributed.state`: flat checkpoints with the same keys for a
  pipeline and the single-process trainer; moving a stage onto a GPU;
- :mod:`~minidni.distributed.batches`: the minibatch order of a pipeline run.

The command line that uses them (``python -m minidni.run mnist|cifar10
--workers K``) is :mod:`minidni.experiments.pipeline`; nothing here imports an
experiment. Ray is optional (``pip install -e ".[distributed]"``); nothing
here imports it at module level.
"""

from minidni.distributed.batches import batch_indices
from minidni.distributed.pipeline import (Pipeline, PipelineStalled, WorkerDied, balanced_groups, init_ray,
                                          require_ray)
from minidni.distributed.stage import Stage
from minidni.distributed.state import trainer_state

__all__ = ["Pipeline", "PipelineStalled", "WorkerDied", "Stage", "balanced_groups", "batch_indices", "init_ray",
           "require_ray", "trainer_state"]
