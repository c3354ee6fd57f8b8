"""The package layout keeps its promise: only ``orchestration/`` imports Dagster.

Checked in a fresh interpreter, so that no other test's imports hide a leak: every module of every
engine package is imported, then ``sys.modules`` must hold no Dagster module. The same holds for the
``optionstream`` command line with all its sub-commands registered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import optionstream_pipeline
imported = []
for top in pkgutil.iter_modules(optionstream_pipeline.__path__, "optionstream_pipeline."):
    if top.name == "optionstream_pipeline.orchestration":
        continue  # (walk_packages would import it to look inside)
    package = importlib.import_module(top.name)
    imported.append(top.name)
    for module in pkgutil.walk_packages(getattr(package, "__path__", []), top.name + "."):
        importlib.import_module(module.name)
        imported.append(module.name)
from optionstream_pipeline.cli import build_parser
build_parser()
dagster = sorted(name for name in sys.modules if name.split(".")[0].startswith("dagster"))
print(json.dumps({"imported": imported, "dagster": dagster}))
"""


def test_no_engine_package_imports_dagster() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    packages = {name.split(".")[1] for name in report["imported"]}
    engine = {"archive", "capture", "consume", "deribit", "discovery", "kafka", "query", "records", "simulator"}
    assert engine <= packages
    assert report["dagster"] == [], f"imported Dagster: {report['dagster'][:5]}"


def test_the_package_root_shows_the_data_path() -> None:
    root = REPO_ROOT / "optionstream_pipeline"
    packages = sorted(path.name for path in root.iterdir() if path.is_dir() and path.name != "__pycache__")
    assert packages == [
        "archive",
        "capture",
        "consume",
        "deribit",
        "discovery",
        "kafka",
        "orchestration",
        "query",
        "records",
        "replay",
        "schemas",
        "simulator",
    ]
