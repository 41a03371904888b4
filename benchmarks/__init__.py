"""Side-by-side benchmarks: our path and its floor, in alternating rounds, on one nats-server.

    python -m benchmarks.echo_latency     # .remote() p50/p99 vs nats-py request/reply (<= 2.0x)
    python -m benchmarks.map_throughput   # .map() calls/s vs JetStream publish + pull (>= 0.5x)
    python -m benchmarks.embed_overhead   # embed .remote() vs session.run alone (< 1 ms added)
    python -m benchmarks.cold_start       # zero to first result vs a fresh ORT process (<= 0.5x)
    python -m benchmarks.reaction         # first call at zero -> worker forked (p50 < 100 ms)
    python -m benchmarks.burst            # 2,000 calls 0 -> 4 -> 0 workers vs one warm worker
    python -m benchmarks.batching         # batched MLP rows/s vs session.run at 32 (>= 0.8x)
    python -m benchmarks.http_bridge      # HTTP call vs .remote(), 202s under load, triggers
    python -m benchmarks.gpu_throughput   # GPU rows/s vs raw onnxruntime-gpu (>= 0.9x)
    python -m benchmarks.soak             # 50 clients for 10 min: nothing lost (make soak)

Each takes size flags (all but `gpu_throughput` also `--quick`), prints a table with the
ratio and the goal, and writes `benchmarks/out/<name>.json`. They are not tests: `make bench`
runs them, nothing asserts.
Shared set-up (server, deploy, worker processes) is in `benchmarks.kit.harness`; the scaler and the
local provider run in the benchmark's process through `benchmarks.kit.fleet`, on the `bench` app
(`benchmarks.kit.apps`).
"""
