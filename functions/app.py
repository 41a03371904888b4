"""The app the bundled functions belong to: `demo`, as the README and the benchmarks call it."""

from runtime import App

__all__ = ["app"]

app = App("demo")
