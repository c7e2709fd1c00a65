"""The command-line tools behind ``python -m interpret``: one module per command (explain, list-models and
list-methods, top-patches), joined into one parser by ``interpret.cli.main``.
"""
