"""How good an explanation is: metrics (pointing game, energy, SSIM, rank correlation, deletion/insertion), the model-
randomisation sanity check, the localization experiment on the classroom data, the approximate maps' quality.
"""
