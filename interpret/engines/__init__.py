"""How occlusion windows are scored (grid, baseline and aggregation; batched forward passes; incremental inference) and
the private copies of a shared net the fast paths run on (BN-folded, fx-traced, frozen), built once per model by the
warm-up. Engines return scores, never an Attribution.
"""
