"""What every backbone shares: input normalisation buffers and the precision switch."""
from __future__ import annotations

import torch
import torch.nn as nn


class Backbone(nn.Module):
    """A frozen feature extractor: ``features(image, names) -> {name: tensor}`` on RGB [0, 1]
    images; subclasses register ``mean`` and ``std`` buffers."""

    autocast_dtype = None   # set by set_precision
    channels_last = False   # set by set_precision

    def set_precision(self, dtype) -> "Backbone":
        """Run the network under autocast in ``dtype`` (None: float32). Inside, maps are
        channels_last under autocast on CPU and CUDA, and in float32 on a CPU too: oneDNN's
        channels_last kernels made a whole fp32 evaluation 10-17% faster on an AVX2 Zen 3 (the
        64-channel layers most), with the same gradient to float precision."""
        self.autocast_dtype = dtype
        kind = self.mean.device.type
        self.channels_last = kind == "cpu" or (dtype is not None and kind == "cuda")
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        return self

    def _input(self, image: torch.Tensor, names) -> tuple[torch.Tensor, int]:
        """The network's input for ``image`` (channels_last where set) and the index of
        the deepest of ``names`` in ``self.names``."""
        deepest = max(self.names.index(n) for n in names)
        x = self.preprocess(image)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, deepest
