"""The queue protocol: how jobs live in Redis, in one package.

- ``keys``: every key name, each of a queue's under its hash tag (one Redis Cluster slot);
- ``records``: the job and result records (arq's format, JSON), the one codec every reader uses;
- ``lua/``: every script, one file each; ``scripts`` loads them;
- ``queue``: the scripts and reads of one queue, with typed arguments and answers.

The producer (``producer.client``), the worker (``worker.engine``), admission, listings and the
API all go through it; nothing else knows how a job is laid out in Redis.
"""
