"""Image data shared by every path: the one evaluation transform and image reading; output
folder checks."""
from .paths import check_output_folder
from .transforms import (
    IMAGE_EXTENSIONS,
    INTERPOLATION,
    CorruptImageError,
    EvalTransform,
    decode,
    list_images,
    normalize,
    read_image,
)

__all__ = ["IMAGE_EXTENSIONS", "INTERPOLATION", "CorruptImageError", "EvalTransform",
           "check_output_folder", "decode", "list_images", "normalize", "read_image"]
