"""Progress of the long loops (training steps, evaluated clips, the demo's stages): a tqdm bar on a
terminal; elsewhere (CI logs, KFP task logs, a pipe) no bar, whose carriage returns and redraws make
a log unreadable, but one summary line when the loop is done.

Everything goes to stderr, beside the logs, so that stdout stays the command's result (JSON, YAML).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

Item = TypeVar("Item")


class Progress:
    """One loop's progress, counted in items (`over`) or in named stages (`stage`); `note(loss=...)`
    shows values beside the bar and in the summary, which is printed once `total` is reached.

    description: what the loop does ("train joint"); total: how many items it reaches; initial: how
    many were done before (a resumed run); enabled: False shows and prints nothing (a training rank
    other than the first).
    """

    def __init__(self, description: str, total: int, unit: str = "step", initial: int = 0,
                 enabled: bool = True) -> None:
        self.description, self.total, self.unit, self.initial = description, total, unit, initial
        self.enabled = enabled
        self.on_terminal = enabled and sys.stderr.isatty()
        self.done = initial
        self.values: dict[str, float] = {}
        self._bar: tqdm | None = None
        self._started = 0.0

    def over(self, items: Iterable[Item]) -> Iterator[Item]:
        self._open()
        try:
            for item in items:
                yield item
                self._advance()
        finally:
            self._close()

    @contextlib.contextmanager
    def stage(self, label: str) -> Iterator[None]:
        """One stage of `total`, named `label` on the bar while it runs."""
        self._open()
        if self.on_terminal:
            self._bar.set_description(f"{self.description}: {label}")
        try:
            yield
        except BaseException:
            self._close()
            raise
        self._advance()

    def note(self, **values: float) -> None:
        self.values.update(values)
        if self._bar is not None and self.on_terminal:
            self._bar.set_postfix({name: f"{value:.4g}" for name, value in self.values.items()})

    def _open(self) -> None:
        if self._bar is None:
            self._started = time.perf_counter()
            self._bar = tqdm(total=self.total, initial=self.initial, desc=self.description, unit=self.unit,
                             disable=not self.on_terminal, file=sys.stderr, dynamic_ncols=True)

    def _advance(self) -> None:
        self.done += 1
        self._bar.update()
        if self.done == self.total:
            self._close()
            if self.enabled and not self.on_terminal:
                noted = ", ".join(f"{name} {value:.4g}" for name, value in self.values.items())
                print(f"{self.description}: {self.done - self.initial} {self.unit}s in "
                      f"{time.perf_counter() - self._started:.1f} s" + (f" ({noted})" if noted else ""),
                      file=sys.stderr, flush=True)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
