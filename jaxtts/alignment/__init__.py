"""Alignment between acoustic frames and phonemes (GMM-LM §3.3 stochastic monotonic alignment)."""

from jaxtts.alignment.monotonic import (  # noqa: F401
    STAY_MODES, MonotonicEnergy, alignment_context, alignment_energies, alignment_stats,
    alignment_step, cross_attention_weights, durations_from_alignment, initial_alignment,
    monotonic_alignment, monotonic_alignment_reference, sample_stay, stay_probabilities)
