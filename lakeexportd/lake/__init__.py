"""The lake: layout, sinks, metadata and its commit, cleanup, locks, rebuild, presence."""
