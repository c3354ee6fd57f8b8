"""Kafka side of the data path: producer, topic admin, embedded broker."""
