"""Stage 1: from CSV files to prepared reviews (ingest, clean, segment, split; the demo corpus)."""
