"""CNN Lens core: pure-Python computations over a ``ModelHandle``, returning numpy arrays, dataclasses or figures.

The package has floors; a module imports only its own floor or those below it (``tests/test_import_floors.py``
walks every import and checks it)::

    core         result type, errors, hooks and one capture() of intermediate outputs, input checks, fx tracing
      ^
    engines      how windows are scored (grid and baseline, batched, incremental) and the private copies of a
      ^          shared net the fast paths run on (BN-folded, traced, frozen), built at model load (warm-up)
    attribution  the attribution methods and their registry; each method builds its own Attribution
    units        (beside attribution, neither imports the other) filters, activations, receptive fields,
      ^          top patches, synthesized images, the layer catalog
    evaluation   metrics, the sanity check, the localization experiment
      ^
    plots        figures and exports; they import only core: labels and data are passed in
      ^
    cli          the command-line tools (``python -m interpret``)

``models/`` sits below all of it and imports nothing from here; ``pages/`` (Streamlit) sits above. No import circles,
and no function-level imports of project modules (a heavy optional dependency may be deferred, with a comment).
"""
