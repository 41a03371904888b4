"""When a worker process was asked for, forked and started: its first cold-start phases."""

from __future__ import annotations

import msgspec

__all__ = ["Boot"]


class Boot(msgspec.Struct, frozen=True):
    """When this process was asked for, forked and reached its main (unix seconds; 0: unknown)."""

    spawned_unix_s: float = 0.0
    forked_unix_s: float = 0.0
    main_unix_s: float = 0.0
    template: str = ""  # forked from a template: "hit" (ready), "built" (waited for it)
    template_unix_s: float = 0.0  # when that template became ready

    def phases_ms(self) -> dict[str, float]:
        """`fork` and `boot` when forked from the fork server, `start` for a fresh process;
        `template`: the wait for the template this worker's fork waited for."""
        if not self.spawned_unix_s:
            return {}
        if self.template == "built" and self.template_unix_s:
            return {
                "template": _ms(self.template_unix_s - self.spawned_unix_s),
                "fork": _ms(self.forked_unix_s - self.template_unix_s),
                "boot": _ms(self.main_unix_s - self.forked_unix_s),
            }
        if self.forked_unix_s:
            return {
                "fork": _ms(self.forked_unix_s - self.spawned_unix_s),
                "boot": _ms(self.main_unix_s - self.forked_unix_s),
            }
        return {"start": _ms(self.main_unix_s - self.spawned_unix_s)}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
