"""A finished SeparationJob's webhook (``spec.webhook.url``): one signed POST of its outcome,
retried with backoff (``stemkube_contract.webhooks``), its state in ``status.webhook``.

Only the leader runs handlers, so it is sent by one replica. What is due is read from the
SeparationJob itself (its phase and ``status.webhook.nextAttemptAt``), read afresh before each
attempt: after a restart or a change of leader the next attempt comes when it was due, and a
timer that fires on a stale copy sends nothing twice. An operator that dies between an attempt
and its record sends that attempt again: delivery is at least once (``Stemkube-Event-Id``
lets a receiver drop a repeat)."""

import datetime
import logging
from collections.abc import Mapping
from typing import Any

from stemkube_contract import webhooks
from stemkube_contract.resource import TERMINAL, status_of
from stemkube_contract.timefmt import parse_time
from stemkube_contract.webhook_sender import deliver
from stemkube_operator.status import output_stems

log = logging.getLogger(__name__)


def url_of(spec: Mapping[str, Any] | None) -> str | None:
    url = ((spec or {}).get("webhook") or {}).get("url")
    return url if isinstance(url, str) and url else None


def pending(spec: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> bool:
    """Whether the SeparationJob has a webhook still to deliver: finished, a URL, and no final
    delivery state."""
    status = status or {}
    if status.get("phase") not in TERMINAL or url_of(spec) is None:
        return False
    delivery = webhooks.Delivery.from_status(status.get("webhook"))
    return delivery is None or not delivery.final


def payload_of(cr: dict[str, Any], models: Any, public_url: str | None) -> dict[str, Any]:
    meta, spec, status = cr["metadata"], cr.get("spec") or {}, cr.get("status") or {}
    word = status_of(status.get("phase"))
    result = status.get("result") or {}
    return webhooks.payload(
        event=webhooks.event_id(meta.get("uid") or meta["name"], word),
        job_id=meta["name"],
        status=word,
        reason=status.get("reason"),
        message=status.get("message"),
        stems=list(result.get("stems") or output_stems(spec, models)),
        size=result.get("size"),
        created_at=parse_time(meta.get("creationTimestamp")),
        started_at=parse_time(status.get("startTime")),
        completed_at=parse_time(status.get("completionTime")),
        public_url=public_url,
    )


def attempt(rt: Any, namespace: str, name: str) -> webhooks.Delivery | None:
    """One attempt for the SeparationJob if one is due now, recorded in its status; what it
    came to (None: nothing was due). ``rt``: the operator's Runtime."""
    cr = rt.kube.read_separation_job(namespace, name)
    if cr is None or cr["metadata"].get("deletionTimestamp"):
        return None
    spec, status = cr.get("spec") or {}, cr.get("status") or {}
    url = url_of(spec)
    if url is None or not pending(spec, status):
        return None
    previous = webhooks.Delivery.from_status(status.get("webhook"))
    now = datetime.datetime.now(datetime.UTC)
    if previous is not None and not previous.due(now):
        return None
    config = rt.config
    ended = parse_time(status.get("completionTime")) or now
    delivery = deliver(
        url,
        payload_of(cr, config.models, config.public_url),
        config.webhook_secret,
        previous,
        ended,
        config.webhook_backoff,
        config.url_policy,
    )
    rt.kube.patch_status(namespace, name, {"webhook": delivery.as_status()})
    shown = webhooks.shown(url)
    if delivery.state == webhooks.DELIVERED:
        log.info("webhook of %s/%s delivered to %s", namespace, name, shown, extra={"job": name})
    else:
        log.warning(
            "webhook of %s/%s to %s: %s (attempt %d, %s)",
            namespace,
            name,
            shown,
            delivery.last_error,
            delivery.attempts,
            delivery.state,
            extra={"job": name},
        )
    return delivery
