"""The job: its fan-out to the sources, their policies, its progress, cancel and timing."""
