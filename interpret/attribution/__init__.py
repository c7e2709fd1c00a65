"""The attribution methods (gradients, guided backprop, CAM family, integrated gradients, SmoothGrad, occlusion exact
and approximate, LIME and fast LIME) and their registry: names, parameter specs, details views. Each method builds
its own Attribution.
"""
