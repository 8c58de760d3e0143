"""The ResNeSt network and the one builder.

A variant is a row of :data:`~.variants.VARIANTS`; :func:`build` turns a row (plus keyword overrides)
into a :class:`ResNeSt`. Every variant uses the deep stem, ResNet-D average-pool shortcuts
and avd (average downsampling inside the bottleneck).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, List, Optional, Sequence, Tuple

import mxnet as mx
from mxnet import autograd
from mxnet.gluon import nn
from mxnet.gluon.nn import HybridBlock

from .._compat.mxnet_blocks import PerKeyGraphCache, is_hybridized
from .blocks import Bottleneck, graph_generation, make_shortcut, make_stem, portable_graph
from .parameters import load_parameters
from .variants import VARIANTS, resolve_name

__all__ = ["ResNeSt", "StageFeatures", "STEM_BLOCKS", "STAGE_BLOCKS", "build"]

#: Attribute names of the stem's blocks and of the four stages (C2..C5), in data-path order.
STEM_BLOCKS: Tuple[str, ...] = ("conv1", "bn1", "relu", "maxpool")
STAGE_BLOCKS: Tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")


_OUTPUT_STRIDES = {32: (1, 1), 16: (1, 2), 8: (2, 4)}  # dilation of stages 3 and 4


class ResNeSt(PerKeyGraphCache):
    """ResNeSt: (N, 3, H, W) -> (N, num_classes) logits.

    Stages ``layer1..layer4`` give C2..C5 (strides 4, 8, 16, 32; with ``output_stride`` 16
    or 8 the last stages are dilated instead of strided). :meth:`stages` returns them.

    Parameters
    ----------
    layers : blocks per stage.
    radix, cardinality, bottleneck_width : R, K and the per-group width (ResNeXt "d").
    stem_width : s of the deep stem (3x3 convs s, s, 2s).
    avd_first : average downsampling before (True, "-fast") or after the 3x3 conv.
    classes : size of the classifier (GluonCV's argument name). The network then carries it as
        ``num_classes``, and ``classes`` holds the class names as GluonCV's pretrained
        classifiers do (None until known; ``get_model(..., pretrained=...)`` sets ImageNet's).
    output_stride : 32, 16 or 8 (8 and 16 dilate stages 3/4 for dense prediction).
        ``dilated=True`` is GluonCV's spelling of ``output_stride=8``.
    norm_layer, norm_kwargs : normalisation (BatchNorm, SyncBatchNorm, ...).
    dropblock_prob : DropBlock probability in stages 3 and 4 (training only).
    final_drop : dropout before the classifier.
    last_gamma : zero-init the last norm's gamma of every bottleneck.
    use_global_stats : freeze BatchNorm statistics (fine-tuning).
    split_drop_ratio : dropout inside the attention MLP.
    """

    def __init__(self, layers: Sequence[int], radix: int = 2, cardinality: int = 1,
                 bottleneck_width: int = 64, stem_width: int = 32, avd: bool = True,
                 avd_first: bool = False, classes: int = 1000, output_stride: int = 32,
                 dilated: bool = False, norm_layer: Callable = nn.BatchNorm,
                 norm_kwargs: Optional[dict] = None, dropblock_prob: float = 0.0,
                 final_drop: float = 0.0, last_gamma: bool = False,
                 use_global_stats: bool = False, split_drop_ratio: float = 0.0,
                 name_prefix: str = "resnest_", **kwargs: Any) -> None:
        super().__init__(prefix=name_prefix, **kwargs)
        layers = tuple(layers)
        if len(layers) != 4 or not all(isinstance(n, int) and n >= 1 for n in layers):
            raise ValueError(f"layers must be four positive ints, got {layers!r}")
        for arg, value in (("radix", radix), ("cardinality", cardinality),
                           ("bottleneck_width", bottleneck_width), ("stem_width", stem_width)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{arg} must be an int >= 1, got {value!r}")
        if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
            raise ValueError(f"classes must be a positive int, got {classes!r}")
        if dilated:
            output_stride = 8
        if output_stride not in _OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be 32, 16 or 8, got {output_stride!r}")
        if not 0.0 <= final_drop < 1.0:
            raise ValueError(f"final_drop must be in [0, 1), got {final_drop}")
        norm_kwargs = dict(norm_kwargs or {})
        if use_global_stats:
            norm_kwargs["use_global_stats"] = True
        self.num_classes, self.output_stride = classes, output_stride
        self._class_names: Optional[List[str]] = None
        d3, d4 = _OUTPUT_STRIDES[output_stride]
        block_kw = dict(radix=radix, cardinality=cardinality, bottleneck_width=bottleneck_width,
                        avd=avd, avd_first=avd_first, norm_layer=norm_layer,
                        norm_kwargs=norm_kwargs, last_gamma=last_gamma,
                        split_drop_ratio=split_drop_ratio)
        with self.name_scope():
            self.conv1 = make_stem(stem_width, norm_layer, norm_kwargs)
            self.bn1 = norm_layer(in_channels=stem_width * 2, **norm_kwargs)
            self.relu = nn.Activation("relu")
            self.maxpool = nn.MaxPool2D(3, 2, 1)
            in_ch = stem_width * 2
            stage_cfg = [(64, 1, 1, 1, 0.0), (128, 2, 1, 1, 0.0),
                         (256, 2 if d3 == 1 else 1, d3, 1, dropblock_prob),
                         (512, 2 if d4 == 1 else 1, d4, d3, dropblock_prob)]
            for i, ((planes, strides, dil, first_dil, p), n) in enumerate(zip(stage_cfg, layers)):
                stage = nn.HybridSequential(prefix=f"layers{i + 1}_")
                with stage.name_scope():
                    down = None
                    if strides != 1 or in_ch != planes * 4:
                        down = make_shortcut(in_ch, planes * 4, strides, norm_layer,
                                             norm_kwargs, prefix=f"down{i + 1}_")
                    for j in range(n):
                        stage.add(Bottleneck(planes, in_ch, strides if j == 0 else 1,
                                             first_dil if j == 0 else dil, dil,
                                             down if j == 0 else None,
                                             dropblock_prob=p, **block_kw))
                        in_ch = planes * 4
                setattr(self, f"layer{i + 1}", stage)
            self.avgpool = nn.GlobalAvgPool2D()
            self.flat = nn.Flatten()
            self.drop = nn.Dropout(final_drop) if final_drop > 0 else None
            self.fc = nn.Dense(classes, in_units=in_ch)

    # -- class names -------------------------------------------------------------------------
    @property
    def classes(self) -> Optional[List[str]]:
        """Class names (``num_classes`` of them), or None when unknown (GluonCV's convention)."""
        return self._class_names

    @classes.setter
    def classes(self, names: Optional[Sequence[str]]) -> None:
        if names is not None:
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise TypeError(f"classes must be a list of class names (str) or None, got "
                                f"{names!r:.80}")
            names = list(names)
            if len(names) != self.num_classes:
                raise ValueError(f"{len(names)} class names for a {self.num_classes}-class "
                                 f"classifier; give one name per output")
        self._class_names = names

    # -- forward -----------------------------------------------------------------------------
    def stages(self, F, x) -> list:
        """[C2, C3, C4, C5] for an input x; works on NDArray and Symbol."""
        for name in STEM_BLOCKS:
            x = getattr(self, name)(x)
        outs = []
        for name in STAGE_BLOCKS:
            x = getattr(self, name)(x)
            outs.append(x)
        return outs

    def hybrid_forward(self, F, x):
        x = self.flat(self.avgpool(self.stages(F, x)[-1]))
        if self.drop is not None:
            x = self.drop(x)
        return self.fc(x)

    @property
    def min_input_size(self) -> int:
        """Smallest H and W accepted: the network's total stride."""
        return self.output_stride

    def check_input(self, x) -> None:
        """Raise ValueError unless x is an (N, 3, H, W) batch with H, W >= the total stride."""
        shape = tuple(x.shape)
        if len(shape) != 4:
            raise ValueError(f"ResNeSt expects a 4-D (N, 3, H, W) batch, got shape {shape}")
        if shape[1] != 3:
            raise ValueError(f"ResNeSt expects 3 input channels (RGB, NCHW layout), got shape "
                             f"{shape}; an (N, H, W, 3) image needs x.transpose((0, 3, 1, 2))")
        if min(shape[2:]) < self.min_input_size:
            raise ValueError(f"input {shape[2]}x{shape[3]} is smaller than the network's total "
                             f"stride {self.min_input_size}; use H, W >= {self.min_input_size}")

    def forward(self, x, *args):
        if isinstance(x, mx.nd.NDArray):
            self.check_input(x)
            if is_hybridized(self):
                self._select_graph()
        return super().forward(x, *args)

    # -- one traced graph per mode -------------------------------------------------------------
    # DropBlock is active in training only and adds no node at inference, and inference runs
    # the oneDNN-fused graph (conv+BN+ReLU folded) that cannot be trained. MXNet traces a
    # hybridized block once, so ResNeSt keeps one graph per (mode, drop settings, backend) and
    # picks the one matching the call (PerKeyGraphCache).

    def hybridize(self, active: bool = True, backend: Optional[str] = None, clear: bool = True,
                  static_alloc: bool = False, static_shape: bool = False,
                  inference_backend: Optional[str] = "auto", **kwargs: Any) -> None:
        """HybridBlock.hybridize, plus ``inference_backend``.

        ``inference_backend``: graph backend for calls outside training. ``"auto"`` (default)
        uses ``"MKLDNN"`` (oneDNN fusion: conv+BN+ReLU, conv+add) when MXNet has it, None
        turns it off. ``backend`` (MXNet's argument) applies to every mode instead.
        """
        if inference_backend == "auto":
            inference_backend = "MKLDNN" if _has_onednn() else None
        self._user_backend = backend
        self._inference_backend = inference_backend
        super().hybridize(active, backend=backend, clear=clear, static_alloc=static_alloc,
                          static_shape=static_shape, **kwargs)

    def _select_graph(self, training: Optional[bool] = None, portable: bool = False) -> None:
        if training is None:
            training = autograd.is_training()
        backend = getattr(self, "_user_backend", None)
        if backend is None and not training and not portable:
            backend = getattr(self, "_inference_backend", None)
        key = (bool(training), graph_generation(), backend, portable)
        previous = self.graph_key
        # a changed drop probability is baked into every traced training graph: drop them all
        self.use_graph(key, backend, keep_others=previous is not None and previous[1] == key[1])

    def export(self, path: str, epoch: int = 0, remove_amp_cast: bool = True) -> None:
        """Export the plain inference graph (``path-symbol.json``, ``path-%04d.params``).

        The exported graph holds standard operators only (no DropBlock, no backend-specific
        fused nodes, no in-graph constants), so it loads with ``SymbolBlock.imports`` anywhere
        and converts to ONNX.
        """
        if not is_hybridized(self):
            raise RuntimeError("call net.hybridize() before net.export()")
        self._select_graph(training=False, portable=True)
        if not self.has_graph():
            s = self.min_input_size
            with autograd.predict_mode(), portable_graph():
                self.trace(mx.nd.zeros((1, 3, s, s), ctx=_param_ctx(self)))
        super().export(path, epoch, remove_amp_cast)

    def load_parameters(self, filename: str, ctx=None, allow_missing: bool = False,
                        ignore_extra: bool = False, cast_dtype: bool = False,
                        dtype_source: str = "current") -> None:
        """Load a ``.params`` file; errors list every missing and unexpected key."""
        load_parameters(self, filename, ctx=ctx, allow_missing=allow_missing,
                        ignore_extra=ignore_extra, cast_dtype=cast_dtype,
                        dtype_source=dtype_source)


class StageFeatures(HybridBlock):
    """(N, 3, H, W) -> (C2, C3, C4, C5) of a :class:`ResNeSt`, sharing its parameters.

    The stem and stage blocks are registered by their attribute names (:data:`STEM_BLOCKS`,
    :data:`STAGE_BLOCKS`), so parameters keep their structural keys; the classifier is not part
    of it.
    """

    def __init__(self, net: ResNeSt, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(net, ResNeSt):
            raise TypeError(f"{type(self).__name__} needs a gluon_resnest ResNeSt, got "
                            f"{type(net).__name__}")
        object.__setattr__(self, "net", net)       # called, not registered: no fc
        for name in STEM_BLOCKS + STAGE_BLOCKS:
            self.register_child(getattr(net, name), name)

    def hybrid_forward(self, F, x):
        return tuple(self.net.stages(F, x))


def _has_onednn() -> bool:
    return mx.runtime.Features().is_enabled("MKLDNN")


def _param_ctx(block) -> mx.Context:
    for p in block.collect_params().values():
        try:
            return p.list_ctx()[0]
        except RuntimeError:
            continue
    return mx.cpu()


def build(name: str, **kwargs: Any) -> ResNeSt:
    """Build variant ``name`` with random (uninitialised) weights; kwargs override the spec.

    Spec fields (``radix``, ``dropblock_prob``, ...) and every :class:`ResNeSt` argument are
    accepted. ``dilation`` (GluonCV: 2 = output stride 16, 4 = 8) and ``input_size``
    (GluonCV's static DropBlock size, not needed here) are accepted for compatibility.
    """
    spec = VARIANTS[resolve_name(name)]
    dilation = kwargs.pop("dilation", None)
    if dilation is not None:
        strides = {1: 32, 2: 16, 4: 8}
        if dilation not in strides:
            raise ValueError(f"dilation must be 1, 2 or 4 (output stride 32, 16, 8), got "
                             f"{dilation!r}")
        kwargs.setdefault("output_stride", strides[dilation])
    kwargs.pop("input_size", None)
    arch = {f: kwargs.pop(f) for f in ("layers", "radix", "cardinality", "bottleneck_width",
                                       "stem_width", "avd_first", "dropblock_prob",
                                       "final_drop") if f in kwargs}
    spec = replace(spec, **arch)
    net = ResNeSt(spec.layers, radix=spec.radix, cardinality=spec.cardinality,
                  bottleneck_width=spec.bottleneck_width, stem_width=spec.stem_width,
                  avd_first=spec.avd_first, dropblock_prob=spec.dropblock_prob,
                  final_drop=spec.final_drop, **kwargs)
    net.variant = resolve_name(name)
    net.default_cfg = spec.default_cfg
    return net
