"""Exponential backoff with jitter and a cap. Pure: no sleeping, no I/O."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from messaging.errors import ConfigurationError


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry reaching the broker.

    The delay before retry ``n`` (0-based) is ``initial_delay * multiplier**n``,
    capped at ``max_delay``, then scaled by a random factor in
    ``[1 - jitter, 1]`` so that many clients dropped together do not return
    together.
    """

    max_retries: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.5
    _random: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.initial_delay <= 0 or self.max_delay < self.initial_delay:
            raise ConfigurationError(
                "retry delays must satisfy 0 < initial_retry_delay <= max_retry_delay, got "
                f"initial_retry_delay={self.initial_delay}, max_retry_delay={self.max_delay}"
            )
        if self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ConfigurationError("multiplier must be >= 1 and jitter within [0, 1]")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        # Cap the exponent first so a long outage cannot overflow the float.
        base = min(self.max_delay, self.initial_delay * self.multiplier ** min(retry, 64))
        return base * (1.0 - self.jitter * self._random.random())

    def delays(self) -> Iterator[float]:
        """The delays of one bounded attempt: ``max_retries`` of them."""
        return (self.delay(n) for n in range(self.max_retries))
