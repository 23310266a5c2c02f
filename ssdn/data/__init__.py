"""Image loading and the registered evaluation sets (``python -m ssdn.data.download`` fetches them)."""

from ssdn.data.io import IMAGE_EXTENSIONS, ImageDecodeError, list_images, load_image
from ssdn.data.testsets import (
    TestImage,
    TestSetIntegrityError,
    TestSetNotFoundError,
    TestSetSpec,
    get_testset,
    load_testset,
    testset_names,
    testset_paths,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageDecodeError",
    "TestImage",
    "TestSetIntegrityError",
    "TestSetNotFoundError",
    "TestSetSpec",
    "get_testset",
    "list_images",
    "load_image",
    "load_testset",
    "testset_names",
    "testset_paths",
]
