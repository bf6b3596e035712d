"""Route templates like `POST /webhooks/{app}/{token}`: matching for the router and fault injection."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoutePattern:
    """`METHOD /seg/{param}/seg`; `{...}` matches one path segment, `*` as method matches any."""

    method: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> RoutePattern:
        method, _, path = spec.strip().partition(" ")
        if not path.startswith("/"):
            raise ValueError(f"route pattern must look like 'POST /channels/{{id}}/messages', got {spec!r}")
        return cls(method.upper(), _split(path))

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("*", method.upper()):
            return None
        parts = _split(path)
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.segments, parts, strict=True):
            if want.startswith("{") and want.endswith("}"):
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params

    def __str__(self) -> str:
        return f"{self.method} /{'/'.join(self.segments)}"


def _split(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("?", 1)[0].split("/") if part)
