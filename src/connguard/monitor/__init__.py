"""Monitors: `watch` (the live view) and the exporter, each running the pipeline on a schedule over one held connection."""
