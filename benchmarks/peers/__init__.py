"""Autan beside its peers (Ray Serve, Celery with Redis) on the same workloads, in one run.

An optional extra (`pip install 'autan[peers]'`, and `redis-server` on the path for
Celery), not part of `make test`: `python -m benchmarks.peers`.
"""
