"""Resources, chosen by deployment (``OPTIONSTREAM_DEPLOYMENT``: ``production`` or ``demo``).

As in Dagster's ``project_fully_featured``, every deployment gets the same resource keys and only
their configuration differs. Here there is one resource, the typed OptionStream settings: the
engine, discovery and checks read everything from it, so a run, a sensor tick and a test all see
the same validated configuration (``config/config.yaml`` plus ``OPTIONSTREAM_*`` environment
overrides). Secrets stay in the environment; the resource never holds them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from dagster import ConfigurableResource

from optionstream_pipeline.config import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, Settings, load_settings

DEPLOYMENT_ENV = "OPTIONSTREAM_DEPLOYMENT"
DEPLOYMENTS = ("production", "demo")
REPO_CONFIG_PATH = Path(__file__).resolve().parents[3] / DEFAULT_CONFIG_PATH


class OptionStreamSettings(ConfigurableResource):
    """The validated OptionStream settings, re-read on every use so a config change needs no reload.

    ``overrides`` maps dotted keys to YAML scalars, like the ``OPTIONSTREAM_*`` environment
    variables (``{"deribit.instruments": "auto"}``); they apply after the environment.
    """

    config_path: str | None = None
    overrides: dict[str, str] = {}

    def settings(self) -> Settings:
        settings = load_settings(self.config_path or default_config_path())
        if not self.overrides:
            return settings
        return settings.replace(**{key: _scalar(value) for key, value in self.overrides.items()})


def _scalar(text: str) -> Any:
    return yaml.safe_load(text) if text.strip() else text


def default_config_path() -> Path:
    """``$OPTIONSTREAM_CONFIG``, else ``config/config.yaml`` in the working directory, else the repo's."""
    explicit = os.environ.get(CONFIG_PATH_ENV)
    if explicit:
        return Path(explicit)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else REPO_CONFIG_PATH


# The demo follows the discovered universe (the shipped file lists two options for the CLI) and lets
# the capture's Prometheus endpoint pick a free port, so a demo never collides with a real capture.
DEMO_OVERRIDES = {"deribit.instruments": "auto", "capture.metrics.port": "0"}

RESOURCES_BY_DEPLOYMENT: dict[str, dict[str, Any]] = {
    "production": {"optionstream": OptionStreamSettings()},
    "demo": {"optionstream": OptionStreamSettings(overrides=DEMO_OVERRIDES)},
}


def deployment_name() -> str:
    """The deployment from ``OPTIONSTREAM_DEPLOYMENT`` (default ``production``); fails on a typo."""
    name = os.environ.get(DEPLOYMENT_ENV, "production").strip() or "production"
    if name not in RESOURCES_BY_DEPLOYMENT:
        raise ValueError(f"{DEPLOYMENT_ENV}={name!r} is not allowed; allowed: {', '.join(DEPLOYMENTS)}")
    return name


def resources_for(deployment: str | None = None) -> dict[str, Any]:
    return RESOURCES_BY_DEPLOYMENT[deployment or deployment_name()]
