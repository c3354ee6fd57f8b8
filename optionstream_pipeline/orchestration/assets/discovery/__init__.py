from optionstream_pipeline.orchestration.assets.discovery.universe import UNIVERSE_ASSET_KEY, btc_option_universe

__all__ = ["UNIVERSE_ASSET_KEY", "btc_option_universe"]
