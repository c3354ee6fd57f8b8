"""Instrument discovery in plain Python (no Dagster): which BTC options capture should follow.

- :mod:`.filters`: parse ``public/get_instruments`` objects tolerantly and apply the configured
  filters (expiry window, strike band around the underlying, cap, explicit include and exclude).
- :mod:`.underlying`: the underlying price the strike band is centred on.
- :mod:`.store`: the universe on disk: a ``current.json`` view written atomically, and a Parquet
  history of every discovery run with what was added, kept, expired or dropped.
- :mod:`.source`: :class:`UniverseFileSource`, the capture engine's ``instrument_source``, so a
  running capture follows the universe without a restart.
- :mod:`.run`: one discovery run end to end (fetch, filter, store), called by the Dagster asset.

Import from the modules themselves: the package imports nothing, so that capture, which reads the
universe through :mod:`.source`, does not load pyarrow for the history it never writes.
"""
