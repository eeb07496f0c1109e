"""Evaluation: held-out prompts against the tuned, base and production models, and the gate.

The pure parts, usable without any backend:

- :mod:`~vertex_tuner.evaluation.metrics`: the metrics by stable name and
  :func:`~vertex_tuner.evaluation.metrics.compute_metrics`;
- :mod:`~vertex_tuner.evaluation.gate`: the ``promote_if`` expression language,
  :func:`~vertex_tuner.evaluation.gate.parse_gate`;
- :mod:`~vertex_tuner.evaluation.results`: the result types and their JSON form;
- :mod:`~vertex_tuner.evaluation.report`: Markdown, HTML and JSON reports.

:mod:`~vertex_tuner.evaluation.runner` runs the generations through a backend.
"""
