"""The Deribit API vocabulary shared by the capture client and the simulator.

Instrument names, channel names, JSON-RPC error codes and the option tick grid live here once,
so that the simulator and the client cannot drift apart on what Deribit means by them.
"""
