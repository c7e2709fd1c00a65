"""Synthesized images (activation maximisation; Simonyan et al. 2014, Olah et al. 2017): optimise a batch of
images so that an objective — channels, units, class logits, directions, their weighted sums, and the batch's
diversity — grows.

Kept apart as in Lucent's ``optvis``: ``objectives`` (what to maximise), ``param`` (pixels or a 1/f-scaled Fourier
spectrum, optionally in decorrelated colour), ``transforms`` (Lucent's pad / jitter / scale / rotate / jitter),
``render`` (the loop, the presets and the result). Each regulariser is switchable, so one can see what it does.
"""
