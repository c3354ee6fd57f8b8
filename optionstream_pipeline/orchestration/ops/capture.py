"""The capture op: the capture engine running inside one long-lived Dagster run.

Dagster has no streaming runtime, so the stream runs in an :class:`EngineThread` and the op only
watches it: every ``orchestration.observation_interval_s`` it records an ``AssetObservation`` of
the Kafka topic asset with the engine's counters. The UI plots those numbers, the asset checks
read them, and the capture supervisor sensor treats them as the run's heartbeat.

Stopping: a cancel from the UI arrives as ``DagsterExecutionInterruptedError`` (a
``BaseException``) during one of the short sleeps; the ``finally`` block stops the engine, which
closes the WebSockets and flushes Kafka within ``kafka.flush_timeout_s``. The op never installs
its own SIGINT handler (a cancel would then end as FAILURE instead of CANCELED). After
``orchestration.recycle_after_s`` the op returns normally: the run ends SUCCESS and the supervisor
starts a fresh one, which keeps each run's event log bounded.
"""

import time

from dagster import AssetObservation, Failure, OpExecutionContext, op

from optionstream_pipeline.capture.engine import CaptureEngine, EngineThread
from optionstream_pipeline.capture.stats import CaptureStats
from optionstream_pipeline.capture.universe import build_engine, describe
from optionstream_pipeline.config import Settings
from optionstream_pipeline.orchestration.assets.capture.topic import TOPIC_ASSET_KEY
from optionstream_pipeline.orchestration.assets.metadata import metadata_value
from optionstream_pipeline.orchestration.ops.observation import observation_values
from optionstream_pipeline.orchestration.resources import OptionStreamSettings

SLEEP_STEP_S = 0.25  # a cancel is noticed within this long


@op(
    name="capture_order_books",
    description="Capture Deribit BTC option books into Kafka until cancelled or recycled; "
    "observes the Kafka topic asset with the engine counters every few seconds.",
)
def capture_order_books(context: OpExecutionContext, optionstream: OptionStreamSettings) -> None:
    settings = optionstream.settings()
    engine = build_engine(settings)
    runner = EngineThread(engine)
    context.log.info(
        f"capture {engine.capture_id}: {describe(settings)} -> topic {settings.kafka.topic}, {engine.interval} books"
    )
    try:
        runner.start(ready_timeout_s=settings.orchestration.engine_start_timeout_s)
        _watch(context, engine, runner, settings)
    finally:
        _stop(context, runner)


def _watch(context: OpExecutionContext, engine: CaptureEngine, runner: EngineThread, settings: Settings) -> None:
    """Observe until the recycle time; raise :class:`Failure` if the engine dies on its own."""
    orchestration = settings.orchestration
    started = time.monotonic()
    recycle_at = started + orchestration.recycle_after_s if orchestration.recycle_after_s else None
    before: CaptureStats | None = None
    while True:
        if not runner.alive:
            raise Failure(description=f"the capture engine stopped on its own: {runner.error!r}")
        after = engine.stats()
        _observe(context, after, before, set(engine.instruments), settings.kafka.topic)
        before = after
        _stop_if_declared_dead(context)
        if recycle_at is not None and time.monotonic() >= recycle_at:
            context.log.info(f"recycling after {orchestration.recycle_after_s:g} s; the supervisor starts a fresh run")
            return
        _sleep(orchestration.observation_interval_s, runner)


def _stop_if_declared_dead(context: OpExecutionContext) -> None:
    """A run the supervisor marked failed (its heartbeat looked stale) must not keep capturing next
    to its replacement: two captures would double every record and every Deribit connection."""
    run = context.instance.get_run_by_id(context.run.run_id)
    if run is not None and run.is_finished:
        raise Failure(
            description=f"this run was marked {run.status.value} while still capturing (by the capture "
            "supervisor after a stale heartbeat?); stopping so that only its replacement captures"
        )


def _observe(
    context: OpExecutionContext, after: CaptureStats, before: CaptureStats | None, followed: set[str], topic: str
) -> None:
    values = observation_values(after, before, followed, topic)
    metadata = {key: metadata_value(value) for key, value in values.items()}
    context.log_event(AssetObservation(asset_key=TOPIC_ASSET_KEY, metadata=metadata))


def _sleep(seconds: float, runner: EngineThread) -> None:
    """Short sleeps, so a cancel (delivered between them) and an engine death are noticed quickly."""
    deadline = time.monotonic() + seconds
    while runner.alive and (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(SLEEP_STEP_S, remaining))


def _stop(context: OpExecutionContext, runner: EngineThread) -> None:
    """Stop and flush; runs on success, failure and cancel alike."""
    if not runner.alive:
        return
    try:
        final = runner.stop()
    except TimeoutError as exc:  # never let a slow stop turn a cancel into a failure, nor go unreported
        context.log.error(f"capture engine did not stop cleanly: {exc}; records may be undelivered")
        return
    undelivered = runner.engine.final_undelivered
    context.log.info(
        f"capture {final.capture_id} stopped: {final.messages_in} in, {final.delivered} delivered, "
        f"{final.delivery_failed} failed, {undelivered or 0} undelivered at the flush bound, "
        f"{final.gaps} gaps, {final.reconnects} reconnects"
    )
