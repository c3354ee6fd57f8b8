"""The Dagster layer: the only code that imports Dagster, and a thin one.

Laid out after Dagster's ``project_fully_featured``: one ``Definitions`` (:mod:`.definitions`,
loaded by ``workspace.yaml``), ``jobs``, ``schedules``, ``sensors/``, ``ops/``, ``assets/<area>/`` and
``resources/`` chosen by deployment. It wires the plain-Python engine packages (capture, discovery,
kafka, ...) and holds no data-path logic of its own; the rules it applies are plain modules beside
it (``sensors/policy.py``, ``assets/capture/health.py``, ``ops/observation.py``), tested without
Dagster.
"""
