"""One export run: DataLakeExporter and its steps (fetch -> write -> commit -> prune), backfill."""
