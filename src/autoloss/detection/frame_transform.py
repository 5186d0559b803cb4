"""The detector's input transform without the resize that does nothing.

Images reach a detector already in its frame (`detection.data` letterboxes or resizes them once, when they
are decoded), and the detector's transform is built with bounds that make its own resize a scale of
exactly 1. torchvision's `GeneralizedRCNNTransform` still interpolates every image at that scale, an
identity that costs about 3 % of a 128 px training step. `FrameTransform` returns such an image as it is,
and resizes every other image exactly as torchvision does. In training it still makes the random draw of
torchvision's size choice, so the global RNG — which Faster R-CNN's samplers read next — moves as before:
a training is bit for bit the same with or without it (tests/test_frame_transform.py).
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform


class FrameTransform(GeneralizedRCNNTransform):
    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        if self.training and self._skip_resize:
            return image, target
        if self.fixed_size is None and len(self.min_size) == 1:
            h, w = image.shape[-2:]
            # torchvision's scale: the short side to min_size unless the long side would pass max_size
            if min(self.min_size[0] / min(h, w), self.max_size / max(h, w)) == 1.0:
                if self.training:
                    self.torch_choice(self.min_size)  # torchvision's draw, kept for the RNG stream
                return image, target
        return super().resize(image, target)


def skip_identity_resize(model: nn.Module) -> nn.Module:
    """Give `model.transform`, if it is torchvision's own transform, the behaviour of `FrameTransform`.

    The instance is re-classed rather than rebuilt so that every setting torchvision's builder gave it
    (bounds, normalisation, padding) stays as it is."""
    transform = getattr(model, "transform", None)
    if type(transform) is GeneralizedRCNNTransform:
        transform.__class__ = FrameTransform
    return model
