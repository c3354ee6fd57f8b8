"""The one ``Definitions`` of OptionStream, loaded by ``workspace.yaml``.

Layout after Dagster's ``project_fully_featured``: assets per area under ``assets/``, the capture
op under ``ops/``, jobs, schedules and the supervisor sensor beside it, and the resources chosen by
deployment (``OPTIONSTREAM_DEPLOYMENT=production|demo``). Crons and the supervisor interval come
from the validated settings, read once when the code location loads; a bad configuration fails the
load with a message naming the key.
"""

from __future__ import annotations

from dagster import Definitions

from optionstream_pipeline.archive.tables import TICKER
from optionstream_pipeline.orchestration.assets import (
    btc_option_universe,
    build_archive_asset,
    build_archive_checks,
    capture_health_checks,
    deribit_option_books,
)
from optionstream_pipeline.orchestration.jobs import build_archive_job, capture_job, discovery_job, health_checks_job
from optionstream_pipeline.orchestration.resources import deployment_name, resources_for
from optionstream_pipeline.orchestration.schedules import build_schedules
from optionstream_pipeline.orchestration.sensors import build_capture_supervisor

DEPLOYMENT = deployment_name()
RESOURCES = resources_for(DEPLOYMENT)
SETTINGS = RESOURCES["optionstream"].settings()
ARCHIVE = build_archive_asset(SETTINGS.kafka.partitions)  # one partition key per Kafka partition
TICKER_ARCHIVE = build_archive_asset(SETTINGS.kafka.partitions, TICKER)
ARCHIVE_JOB = build_archive_job(ARCHIVE.partitions_def, tickers=SETTINGS.deribit.tickers)

defs = Definitions(
    assets=[btc_option_universe, deribit_option_books, ARCHIVE, TICKER_ARCHIVE],
    asset_checks=[*capture_health_checks, *build_archive_checks(SETTINGS.kafka.partitions)],
    jobs=[capture_job, discovery_job, health_checks_job, ARCHIVE_JOB],
    schedules=build_schedules(SETTINGS, ARCHIVE_JOB),
    sensors=[build_capture_supervisor(SETTINGS.orchestration.supervisor_interval_s)],
    resources=RESOURCES,
)
