"""Plotly figures and exports (PNG, HTML, settings) of attributions, unit views and evaluations, with the single
colour-scale rule. Plots import only core: method labels and computed data are passed in.
"""
