"""Which square image sizes a model's networks accept, and the default size chosen from data.

A model family answers :meth:`gankit.models.base.ModelFamily.valid_image_sizes` with an
:class:`ImageSizes`; the data layer uses it to pick a default ``data.image_size`` for a folder
of mixed-size images, and the API refuses any other size before a network is built, with one
line naming the sizes that work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError

#: The largest size chosen by default (``--image-size`` goes beyond it): larger images are
#: resized down to it, so a folder of camera photos trains in minutes on a CPU, not days.
MAX_DEFAULT_SIZE = 128


def _stage_size(n: int) -> bool:
    """``n = s0 * 2**k`` with ``k >= 1`` and ``s0 >= 4`` (:func:`gankit.nn.conv_stages`)."""
    return n >= 8 and n % 2 == 0


def _nice(n: int) -> bool:
    """Sizes whose strided stages end on a 4..7 base map: 8, 10, 12, 14, 16, 20, ... 64, 80 ..."""
    while n % 2 == 0 and n // 2 >= 4:
        n //= 2
    return 4 <= n <= 7


@dataclass(frozen=True)
class ImageSizes:
    """A set of accepted square sizes: ``accepts(n)``, described in words by ``text``.

    ``preferred`` narrows the sizes a default is chosen from (e.g. DCGAN accepts any even size
    >= 8, but 58 would leave one stride-2 stage on a 29x29 map; 56 keeps four).
    """

    accepts: Callable[[int], bool]
    text: str
    preferred: Callable[[int], bool] = _nice
    square: bool = True  # False: any height x width (MLP networks flatten the image)

    def fits(self, h: int, w: int) -> bool:
        """Whether ``h`` x ``w`` images fit."""
        if not self.square:
            return self.accepts(int(h)) and self.accepts(int(w))
        return h == w and self.accepts(int(h))

    def choose(self, short_side: int) -> int:
        """The default size for images whose typical short side is ``short_side``: the largest
        preferred accepted size <= min(short_side, :data:`MAX_DEFAULT_SIZE`), else the smallest
        accepted size above it."""
        cap = max(1, min(int(short_side), MAX_DEFAULT_SIZE))
        for n in range(cap, 0, -1):
            if self.accepts(n) and self.preferred(n):
                return n
        for n in range(cap, 0, -1):
            if self.accepts(n):
                return n
        for n in range(cap + 1, 4097):
            if self.accepts(n):
                return n
        raise ConfigError(f"no image size fits this model ({self.text})")

    def examples(self, near: int | None = None, k: int = 2) -> list[int]:
        """Up to ``k`` accepted sizes nearest to ``near`` (preferred ones first)."""
        near = near or 64
        cands = [n for n in range(1, 4097) if self.accepts(n)]
        nice = [n for n in cands if self.preferred(n)] or cands
        return sorted(sorted(nice, key=lambda n: (abs(n - near), n))[:k])

    def check(self, size: int | tuple[int, int], model: str, what: str | None = None) -> None:
        """Raise a one-line :class:`ConfigError` unless ``size`` (or ``(h, w)``) is accepted.

        ``what`` names the images (e.g. ``the images of 'faces'``); default: the asked-for
        ``data.image_size``."""
        h, w = (size, size) if isinstance(size, int) else size
        if self.fits(h, w):
            return
        head = f"data.image_size={h} does not fit {model}" if what is None else \
            f"{what} ({h}x{w}) do not fit {model}"
        hint = " or ".join(str(n) for n in self.examples(max(h, w)))
        raise ConfigError(f"{head}: its networks take {self.text}; use --image-size {hint}")


ANY_SIZE = ImageSizes(lambda n: n >= 1, "images of any size", lambda n: True, square=False)
#: The strided-convolution networks of DCGAN and the families built on them.
STAGED = ImageSizes(_stage_size, "square images of an even size >= 8 (e.g. 32, 64, 128)")


def powers_of_two(lo: int) -> ImageSizes:
    """Powers of two from ``lo`` (pix2pix's U-Net halves the image down to 1x1)."""
    return ImageSizes(lambda n: n >= lo and n & (n - 1) == 0,
                      f"square images whose side is a power of two >= {lo} ({lo}, {2 * lo}, "
                      f"{4 * lo}, ...)", lambda n: True)
