"""The flight recorder's settings, read from ``RECORDER__*`` environment variables."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from messaging.errors import ConfigurationError

DAY = 24 * 3600


class RecorderSettings(BaseSettings):
    """Off unless ``enabled`` (``RECORDER__ENABLED=true``). Immutable.

    Retention is RabbitMQ's own: ``x-max-age`` and ``x-max-length-bytes`` on
    the stream, applied a whole segment at a time, hence the small segment
    size (RabbitMQ's default of 500 MB would keep far more than asked).
    """

    model_config = SettingsConfigDict(
        env_prefix="RECORDER__", env_file=None, extra="ignore", frozen=True
    )

    enabled: bool = False
    stream: str = Field(default="chimera.recorder", min_length=1, max_length=255)
    max_age_seconds: int = Field(default=DAY, gt=0, description="x-max-age of the stream.")
    max_bytes: int = Field(
        default=1_000_000_000, gt=0, description="x-max-length-bytes of the stream."
    )
    segment_bytes: int = Field(
        default=8_000_000, gt=0, description="x-stream-max-segment-size-bytes."
    )
    buffer: int = Field(
        default=20_000, gt=0, description="Records held in memory; the oldest go when full."
    )
    batch: int = Field(default=500, gt=0, description="Records per stream message at most.")
    flush_interval: float = Field(default=0.2, gt=0, description="Seconds between writes.")
    write_timeout: float = Field(default=5.0, gt=0, description="Seconds one write may take.")
    bodies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Agents whose bodies are recorded, comma-separated (*: all)."
    )
    body_max_bytes: int = Field(default=4096, ge=0, description="Body bytes kept per record.")

    @field_validator("bodies", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def records_bodies_of(self, agent: str) -> bool:
        return "*" in self.bodies or agent in self.bodies

    def stream_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "stream",
            "x-max-age": f"{self.max_age_seconds}s",
            "x-max-length-bytes": self.max_bytes,
            "x-stream-max-segment-size-bytes": self.segment_bytes,
        }


def load_recorder_settings() -> RecorderSettings:
    """The settings from the environment; :class:`ConfigurationError` naming a bad variable."""
    try:
        return RecorderSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"RECORDER__{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigurationError(f"invalid recorder configuration: {problems}") from None
