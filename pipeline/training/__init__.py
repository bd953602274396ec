"""Stage 3: train, fine-tune and evaluate models; each stage reads and writes artifacts only."""
