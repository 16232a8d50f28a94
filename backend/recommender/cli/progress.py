"""The progress bar that long commands (ingest, reindex) show on stderr."""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..service import IngestEvent


class ProgressBar:
    """Turns the service's ``IngestEvent`` stream into a tqdm bar with images/s and ETA.

    Failures are printed above the bar as they happen; ``counts`` adds new/dup/failed tallies.
    """

    def __init__(self, quiet: bool, counts: bool = False) -> None:
        self.quiet = quiet
        self.show_counts = counts
        self.counts: dict[str, int] = {}
        self.bar: tqdm | None = None

    def __call__(self, event: IngestEvent) -> None:
        if event.outcome == "started":
            self.bar = tqdm(total=event.total, unit="img", disable=self.quiet, dynamic_ncols=True, file=sys.stderr)
            return
        assert self.bar is not None, "the service announces the total before any result"
        self.counts[event.outcome] = self.counts.get(event.outcome, 0) + 1
        if event.outcome == "failed":
            self.bar.write(f"skipped {event.path or event.name}: {event.message}", file=sys.stderr)
        if self.show_counts:
            c = self.counts
            shown = {"new": c.get("ingested", 0), "dup": c.get("duplicate", 0), "failed": c.get("failed", 0)}
            if "queued" in c:  # ingest --queue --no-wait: the bar counts photos handed to the workers
                shown = {"queued": c["queued"], **shown}
            self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
