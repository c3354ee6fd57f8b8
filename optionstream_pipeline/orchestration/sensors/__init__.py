"""Sensors: the capture supervisor, which keeps exactly one capture run alive."""

from optionstream_pipeline.orchestration.sensors.capture_supervisor import SENSOR_NAME, build_capture_supervisor

__all__ = ["SENSOR_NAME", "build_capture_supervisor"]
