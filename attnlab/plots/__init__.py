"""Figures, drawn from arrays with matplotlib's non-interactive Agg backend: each function takes
arrays (or a :class:`mlp.train.trainer.History`, or runs read by their curves) and a path, and
returns the path. Nothing here reads a run folder or imports a study: the studies load their
runs and call these. Not imported by ``import attnlab``, so that never touches matplotlib.

- :mod:`.maps`: attention maps, the weight on the target token over training, animations;
- :mod:`.curves`: learning curves, the softmax backward's error against the score scale;
- :mod:`.stack`: every layer's and head's attention of a stack on one prompt, and over training;
- :mod:`.max_margin`, :mod:`.icl`, :mod:`.svm`, :mod:`.induction`: the figures of those
  reproductions.
"""

from attnlab.plots._style import DPI, OTHER_COLOR, TARGET_COLOR
from attnlab.plots.curves import plot_attention_curves, plot_backward_error
from attnlab.plots.icl import plot_icl_gd, plot_icl_length, plot_icl_rel_error, plot_icl_shift
from attnlab.plots.induction import (
    KLPanel,
    ProbePanel,
    plot_attention_moments,
    plot_kl_curves,
    plot_probes,
)
from attnlab.plots.maps import (
    AttentionFrames,
    animate_attention,
    plot_attention_maps,
    plot_target_weight,
)
from attnlab.plots.max_margin import (
    plot_max_margin,
    plot_max_margin_kq,
    plot_max_margin_run,
    plot_max_margin_seeds,
)
from attnlab.plots.stack import LayerFrames, animate_layer_maps, plot_layer_maps
from attnlab.plots.svm import plot_svm_kq, plot_svm_multi_token, plot_svm_rank

__all__ = [
    "DPI",
    "OTHER_COLOR",
    "TARGET_COLOR",
    "AttentionFrames",
    "KLPanel",
    "LayerFrames",
    "ProbePanel",
    "animate_attention",
    "animate_layer_maps",
    "plot_attention_curves",
    "plot_attention_maps",
    "plot_attention_moments",
    "plot_backward_error",
    "plot_icl_gd",
    "plot_icl_length",
    "plot_icl_rel_error",
    "plot_icl_shift",
    "plot_kl_curves",
    "plot_layer_maps",
    "plot_max_margin",
    "plot_max_margin_kq",
    "plot_max_margin_run",
    "plot_max_margin_seeds",
    "plot_probes",
    "plot_svm_kq",
    "plot_svm_multi_token",
    "plot_svm_rank",
    "plot_target_weight",
]
