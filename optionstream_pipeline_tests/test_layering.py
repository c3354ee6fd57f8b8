"""The package layout keeps its promise: only ``orchestration/`` imports Dagster.

Checked in a fresh interpreter, so that no other test's imports hide a leak: every module of every
engine package is imported, then ``sys.modules`` must hold no Dagster module. The same holds for the
``optionstream`` command line with all its sub-commands registered.

The capture side stays light as well: ``optionstream capture --help``, and the capture command up to
its engine, load none of the archive's libraries (pyarrow, DuckDB), the web view's (uvicorn,
Starlette) or Dagster; every command builds the whole parser, so no sub-command may import them to
build its own (``optionstream_pipeline/cli.py``).
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

HEAVY = """
import sys
HEAVY = ("pyarrow", "duckdb", "dagster", "uvicorn", "starlette", "pandas", "numpy")
def heavy():
    return sorted({name.split(".")[0] for name in sys.modules if name.split(".")[0].startswith(HEAVY)})
"""
CAPTURE_HELP = """
import atexit, json, runpy
atexit.register(lambda: print(json.dumps({"heavy": heavy()})))
sys.argv = ["optionstream", "capture", "--help"]
runpy.run_module("optionstream_pipeline.cli", run_name="__main__")
"""
CAPTURE_ENGINE = """
import json
from optionstream_pipeline.capture import cli as capture_cli
from optionstream_pipeline.capture.universe import build_engine
from optionstream_pipeline.cli import build_parser
engines = []
for instruments in ("BTC-26JUN26-100000-C,BTC-26JUN26-100000-P", "auto"):
    options = ["--config", "config/config.yaml", "--instruments", instruments, "--brokers", "127.0.0.1:9"]
    args = build_parser().parse_args(["capture", *options, "--no-status"])
    assert args.func is capture_cli.run_capture_command
    engines.append(type(build_engine(capture_cli.settings_from_args(args))).__name__)  # connects only in run()
print(json.dumps({"engines": engines, "heavy": heavy()}))
"""


def _run_fresh(code: str) -> dict:
    """``code`` run in a fresh interpreter, with ``heavy()`` defined; its last line of output, as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", HEAVY + code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_engine_package_imports_dagster() -> None:
    report = _run_fresh(IMPORT_ALL)
    packages = {name.split(".")[1] for name in report["imported"]}
    engine = {"archive", "capture", "consume", "deribit", "discovery", "kafka", "query", "records", "simulator"}
    assert engine <= packages
    assert report["dagster"] == [], f"imported Dagster: {report['dagster'][:5]}"


def test_capture_help_imports_no_heavy_library() -> None:
    report = _run_fresh(CAPTURE_HELP)
    assert report["heavy"] == [], f"optionstream capture --help imported {report['heavy']}"


def test_the_capture_command_up_to_its_engine_imports_no_heavy_library() -> None:
    report = _run_fresh(CAPTURE_ENGINE)
    assert report["engines"] == ["CaptureEngine", "CaptureEngine"]
    assert report["heavy"] == [], f"optionstream capture (parser, settings, engine) imported {report['heavy']}"


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
