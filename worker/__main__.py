"""``python -m worker``: the same as the ``worker`` command."""

from worker.cli import run

if __name__ == "__main__":
    run()
