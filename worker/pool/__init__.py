"""The inference pools and what runs in them (standard library only: they run in subinterpreters)."""
