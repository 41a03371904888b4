"""What the benchmarks share: set-up, apps, floor helpers, rounds, reports, the command line."""
