"""Stage 2: frozen encoder features in a sharded, resumable store."""
