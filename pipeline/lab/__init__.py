"""Representation lab: what fine-tuning changes inside the encoder, layer by layer.

One module per view (pure functions over arrays): :mod:`probes` (linear probe per layer),
:mod:`geometry` (star separation, silhouette, linear CKA), :mod:`projection` (PCA / t-SNE maps),
:mod:`word_in_context` (one word in many reviews), :mod:`attention_heads` (head views and head
statistics). :mod:`inputs` opens a run's encoders, sample and pooled vectors, :mod:`views`
computes each view with its cache, and :mod:`run` runs them into ``runs/<run>/lab/``
(``douban lab``);
:func:`pipeline.lab.run.read_lab` is what the app reads;
:mod:`lab_plots` draws them with matplotlib for reports. docs/lab.md explains each view.
"""
