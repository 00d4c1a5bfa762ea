"""The course's own small models, trained on the shapes task (``helpers.shapes``) by
``tools/train_course_models.py``: the task's classes and image size, and the two architectures.
"""

from __future__ import annotations

import torch

__all__ = ["SHAPES", "SIZE", "build_course_model", "CourseCNN"]

SHAPES = ["circle", "square", "triangle", "cross"]
SIZE = 64  # pixels per side; the course ViT cuts this into 8 x 8 patches of 8 pixels


def build_course_model(name: str) -> torch.nn.Module:
    """The untrained architecture of a course model: ``"course_vit"`` (a 4-block timm ViT on
    8 x 8 patches of 8 pixels, 96 dimensions, 3 heads, a class token) or ``"course_cnn"`` (five
    3 x 3 convolutions down to the same 8 x 8 grid, global average pooling, one linear layer)."""
    if name == "course_vit":
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(img_size=SIZE, patch_size=8, num_classes=len(SHAPES),
                                 embed_dim=96, depth=4, num_heads=3, mlp_ratio=2.0)
    if name == "course_cnn":
        return CourseCNN()
    raise ValueError(f"unknown course model {name!r}: 'course_vit' or 'course_cnn'")


class CourseCNN(torch.nn.Module):
    """``features`` (conv-BN-ReLU x 5, strides 2 1 2 1 2: 64 -> 8 pixels), global average
    pooling, ``classifier`` (one ``nn.Linear``), so CAM applies to its last ReLU."""

    def __init__(self, classes: int = len(SHAPES)) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        widths = [3, 32, 64, 64, 96, 128]
        for i, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
            layers += [torch.nn.Conv2d(c_in, c_out, 3, stride=2 - i % 2, padding=1, bias=False),
                       torch.nn.BatchNorm2d(c_out), torch.nn.ReLU()]
        self.features = torch.nn.Sequential(*layers)
        self.classifier = torch.nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))
