"""Scoring as an HTTP service: ``douban serve`` (FastAPI + uvicorn).

- :mod:`pipeline.serve.app`: the FastAPI app (routes, request limits, JSON errors, lifespan).
- :mod:`pipeline.serve.batcher`: gathers concurrent requests into micro-batches for one
  inference thread, with a bounded queue (overload answers 503, never unbounded memory).
- :mod:`pipeline.serve.runner`: runs the app under uvicorn (one or more worker processes).
"""
