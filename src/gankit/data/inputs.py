"""Reading a user's inputs for a trained model (``gankit translate --input``).

An image file, a folder of images (searched recursively, in sorted order) or a ``.npy``/``.npz``
array; every image is converted to the channels and square size the model was trained on
(centre crop, then Lanczos resize, as the training folders are). Problems raise
:class:`~gankit.errors.DataError` naming the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from .decode import IMAGE_EXTENSIONS, _images_under, _read_image
from .files import _stack, load_arrays


def read_inputs(path: str | Path, info: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    """``(images [N, C, H, W] in [-1, 1], names)`` for a model whose run data is ``info``.

    The input domain's shape is ``info["a_shape"]`` (image-to-image models) or
    ``info["shape"]``; names are the files' relative paths without extension (``/`` -> ``_``),
    or ``00000``... for arrays.
    """
    shape = info.get("a_shape") or info["shape"]
    if len(shape) != 3:
        raise DataError("this model does not take images")
    channels, size = int(shape[0]), int(shape[-1])
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if path.suffix in (".npy", ".npz"):
        x = load_arrays(path, image_size=size, channels=channels).x
        if x.dim() != 4:
            raise DataError(f"{path}: holds points, not images")
        return x, [f"{i:05d}" for i in range(len(x))]
    if path.is_dir():
        files = _images_under(path)
        if not files:
            raise DataError(f"{path}: no images found (accepted extensions: "
                            f"{', '.join(IMAGE_EXTENSIONS)})")
        names = [f.relative_to(path).with_suffix("").as_posix().replace("/", "_") for f in files]
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        files, names = [path], [path.stem]
    else:
        raise DataError(f"{path}: expected an image, a folder of images or a .npy/.npz file")
    arrays = [_read_image(f, channels, size) for f in files]
    return _stack(arrays, channels), names
