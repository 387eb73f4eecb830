"""monitor: watch and exporter, which run the pipeline on a schedule over one held connection per target."""
