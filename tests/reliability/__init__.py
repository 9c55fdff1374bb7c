"""Reliability: crashes, restarts, bursts and hostile input, with real Redis and real workers."""
