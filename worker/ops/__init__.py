"""Operating a worker: heartbeats and health checks, metrics, logs, and the start-up check of its plugins."""
