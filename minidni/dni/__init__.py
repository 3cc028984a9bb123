"""Decoupled neural interfaces: synthetic-gradient models and the trainers that use them.

Exports are listed one per line so that each helper can append its own.
"""

from minidni.dni.synthesizers import (OracleSynthesizer, Regressor, Synthesizer, conv_synthesizer, mlp_regressor,
                                     mlp_synthesizer)
from minidni.dni.feedforward import METHODS, FeedForwardTrainer, Module, StepResult, build_trainer
from minidni.dni.recurrent import MODES, RESETS, RecurrentTrainer, char_loss, copy_loss
from minidni.dni.multinet import TwoClockTrainer

__all__ = [
    "Regressor",
    "Synthesizer",
    "OracleSynthesizer",
    "mlp_synthesizer",
    "conv_synthesizer",
    "mlp_regressor",
    "METHODS",
    "Module",
    "FeedForwardTrainer",
    "StepResult",
    "build_trainer",
    "MODES",
    "RESETS",
    "RecurrentTrainer",
    "copy_loss",
    "char_loss",
    "TwoClockTrainer",
]
