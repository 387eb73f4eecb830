"""Pure analysis over Snapshots: capacity, rates, sources and findings. No I/O, no clock."""
