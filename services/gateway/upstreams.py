"""The routing client: the gateway's internal calls to identity, commerce and notify.

Every client comes from :func:`shared.http.create_client` with the internal credential, so each
call carries ``X-Siyu-Internal-Token``, the request id and the trace context, keeps its
connections alive (shorter than the services' server keep-alive) and re-sends a safe request
whose pooled connection died under it. An upstream's answer is consumed like untrusted input:
only the statuses a route expects pass, bodies are validated, and every other outcome becomes one
of our problems (a 5xx or a timeout never leaks an upstream's body to the mini-program).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
from fastapi import Response
from pydantic import BaseModel, TypeAdapter, ValidationError

from services.gateway.settings import GatewaySettings
from shared.errors import DependencyUnavailable, SiyuError, UpstreamError
from shared.http import RETRY_SAFE, create_client
from shared.observability import get_logger

log = get_logger(__name__)

Service = Literal["identity", "commerce", "notify"]
DEFAULT_RETRY_AFTER = 5
MAX_RETRY_AFTER = 300
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class UpstreamAnswer:
    """An upstream's refusal, as far as the gateway reads it."""

    status: int
    problem: dict[str, Any]
    retry_after: int

    @property
    def type_slug(self) -> str:
        return str(self.problem.get("type", "")).rsplit("/", 1)[-1]

    def extras(self) -> dict[str, Any]:
        """What of the upstream's problem is safe to pass on (WeChat's errcode, for support)."""
        code = self.problem.get("errcode")
        return {"errcode": code} if isinstance(code, int) else {}

    def detail(self, default: str) -> str:
        """The owner's own words for a refusal it gave on purpose (a 4xx), else ``default``."""
        text = self.problem.get("detail")
        if self.status < 500 and isinstance(text, str) and text.strip():
            return text[:500]
        return default


ErrorMap = Mapping[int, Callable[[UpstreamAnswer], SiyuError]]


def _retry_after(response: httpx.Response) -> int:
    raw = response.headers.get("retry-after", "")
    seconds = int(raw) if raw.isdigit() else DEFAULT_RETRY_AFTER
    return max(1, min(seconds, MAX_RETRY_AFTER))


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content[:16384])
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def unavailable(service: str, retry_after: int = 2) -> DependencyUnavailable:
    return DependencyUnavailable(
        f"{service} is busy or unreachable; retry in {retry_after} s", headers={"Retry-After": str(retry_after)}
    )


class Upstreams:
    """One pooled client per internal service; ``request`` turns any answer into data or a problem."""

    def __init__(self, clients: Mapping[Service, httpx.AsyncClient]) -> None:
        self._clients = dict(clients)

    @classmethod
    def create(
        cls,
        settings: GatewaySettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        transports: Mapping[Service, httpx.AsyncBaseTransport] | None = None,
    ) -> Upstreams:
        """``transport`` (every service) or ``transports`` (per service) replace the network: tests
        put the real apps in-process behind ``httpx.ASGITransport``."""
        urls: dict[Service, str] = {
            "identity": settings.identity_url,
            "commerce": settings.commerce_url,
            "notify": settings.notify_url,
        }
        return cls(
            {
                name: create_client(
                    url,
                    internal_token=settings.internal_token_value,
                    timeout=settings.upstream_timeout_seconds,
                    max_connections=settings.upstream_max_connections,
                    transport=(transports or {}).get(name, transport),
                )
                for name, url in urls.items()
            }
        )

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def request(
        self,
        service: Service,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: frozenset[int] = frozenset({200}),
        errors: ErrorMap | None = None,
        retry_safe: bool = False,
    ) -> httpx.Response:
        """Call ``service``; the response when its status is expected, else the mapped problem.

        ``retry_safe`` marks a POST that may be sent twice (a read sent as POST, or one the owner
        de-duplicates): the transport then re-sends it when its connection died before an answer.
        """
        try:
            response = await self._clients[service].request(
                method,
                path,
                json=json_body,
                params=params,
                headers=headers,
                extensions=RETRY_SAFE if retry_safe else None,
            )
        except httpx.TransportError as exc:
            log.warning("upstream.unreachable", service=service, path=path, error=repr(exc))
            raise unavailable(service) from exc
        if response.status_code in expect:
            return response
        answer = UpstreamAnswer(response.status_code, _problem(response), _retry_after(response))
        if answer.status == 401 and answer.type_slug == "unauthorized":
            # The owner's InternalOnly refused our credential: a deployment error, not the user's.
            log.error("upstream.credential_rejected", service=service, path=path)
            raise UpstreamError(f"{service} refused the gateway's internal credential")
        mapped = (errors or {}).get(answer.status)
        if mapped is not None:
            raise mapped(answer)
        if answer.status in (429, 503):
            raise unavailable(service, answer.retry_after)
        log.error("upstream.unexpected", service=service, path=path, status=answer.status, problem=answer.problem)
        raise UpstreamError(f"{service} answered {answer.status}")


def parse(model: type[M], response: httpx.Response, service: str) -> M:
    """The upstream's body as ``model``, or a 502: an answer we cannot read is the upstream's fault."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        log.error("upstream.bad_body", service=service, error=str(exc)[:500])
        raise UpstreamError(f"{service} answered with an unexpected body") from None


def relay(
    shape: TypeAdapter[Any], response: httpx.Response, service: str, *, status_code: int | None = None
) -> Response:
    """The owner's answer passed on: validated against the contract's ``shape``, with exactly the
    fields the owner set (an optional field it left out stays out) and nothing the shape does not
    name; a 502 when it does not fit."""
    try:
        value = shape.validate_json(response.content)
    except ValidationError as exc:
        log.error("upstream.bad_body", service=service, error=str(exc)[:500])
        raise UpstreamError(f"{service} answered with an unexpected body") from None
    return Response(
        shape.dump_json(value, exclude_unset=True),
        status_code=status_code or response.status_code,
        media_type="application/json",
    )
