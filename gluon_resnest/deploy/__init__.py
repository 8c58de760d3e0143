"""Deployment: the model artifact and the forms it is written in.

- :mod:`.artifact`: the metadata record (:class:`~.artifact.ModelMeta`), the one writer
  (:func:`~.artifact.save`) and the readers of artifacts and variants
  (:class:`~.artifact.LoadedModel`).
- :mod:`.symbol` (MXNet symbol files), :mod:`.onnx`, :mod:`.int8` (oneDNN quantization),
  :mod:`.bf16` (AMP).
- :mod:`.export`: what ``gluon-resnest export`` runs (convert, write, reload and check).

Nothing is imported here, so ``python -m gluon_resnest.deploy.int8`` (the quantization
subprocess) starts cleanly.
"""
