"""Example agentq plugins: ``plugin`` registers them, ``scoring`` is what the inference pool imports."""
