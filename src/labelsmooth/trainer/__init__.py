"""An event-driven training loop in the style of Composer's, with composable algorithms.

The pieces: :class:`Event` (where in the loop), :class:`State` (what the loop shares),
:class:`Algorithm` and :class:`Callback` (what runs at events), :class:`Engine` (runs them in a
composable order), the :class:`Trainer` that fires them, and :class:`TrainingTargets`, the
targets that label smoothing and mixing write into the batch: index targets that turn dense only
when an operation needs a tensor.
"""

from labelsmooth.trainer.algorithm import Algorithm
from labelsmooth.trainer.batch import batch_get_item, batch_set_item, get_logits
from labelsmooth.trainer.callback import Callback
from labelsmooth.trainer.engine import Engine
from labelsmooth.trainer.events import Event
from labelsmooth.trainer.logger import Logger
from labelsmooth.trainer.state import State
from labelsmooth.trainer.targets import TrainingTargets
from labelsmooth.trainer.time import Duration, Timestamp, TimeUnit
from labelsmooth.trainer.trainer import NonFiniteLossError, Trainer

__all__ = [
    "Algorithm",
    "Callback",
    "Duration",
    "Engine",
    "Event",
    "Logger",
    "NonFiniteLossError",
    "State",
    "TimeUnit",
    "Timestamp",
    "Trainer",
    "TrainingTargets",
    "batch_get_item",
    "batch_set_item",
    "get_logits",
]
