"""Tasks: Copy / Repeat Copy streams with a curriculum, and character-level LM helpers.

- :mod:`minidni.tasks.copy`: episode encodings, :class:`CopyTaskStream`, :func:`sequence_bits`,
  :class:`EpisodeScorer`.
- :mod:`minidni.tasks.curriculum`: :class:`Curriculum` (the 0.15-bit rule, levels, solved length).
- :mod:`minidni.tasks.ptb`: :class:`CharStream` windows for truncated BPTT, :func:`one_hot`, :class:`BPCMeter`.
"""

from minidni.tasks.copy import (CompletedEpisode, CopyTaskStream, CopyWindow, EpisodeScorer,
                                copy_episode, repeat_copy_episode, sequence_bits)
from minidni.tasks.curriculum import Curriculum
from minidni.tasks.ptb import BPCMeter, CharStream, CharWindow, nats_to_bits, one_hot
from minidni.tasks.odd_digits import OddDigitPeriod, OddDigitStream, odd_counts

__all__ = ["CompletedEpisode", "CopyTaskStream", "CopyWindow", "EpisodeScorer", "copy_episode",
           "repeat_copy_episode", "sequence_bits", "Curriculum", "BPCMeter", "CharStream",
           "CharWindow", "nats_to_bits", "one_hot",
           "OddDigitPeriod", "OddDigitStream", "odd_counts"]
