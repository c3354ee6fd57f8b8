from optionstream_pipeline.orchestration.assets.capture.checks import capture_health_checks
from optionstream_pipeline.orchestration.assets.capture.topic import TOPIC_ASSET_KEY, deribit_option_books

__all__ = ["TOPIC_ASSET_KEY", "capture_health_checks", "deribit_option_books"]
