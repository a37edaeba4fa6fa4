"""Leader election on a coordination.k8s.io Lease, so that several replicas run safely: one
acts, the others wait to take over. (Kopf's own peering freezes replicas of equal priority
instead of electing one.)

Leading is a deadline, not a flag: a replica leads until ``renew_deadline`` seconds after the
start of its last successful renewal, by its own monotonic clock. Another replica may take the
Lease only ``lease_seconds`` after that renewal's ``renewTime``, so the leader stops acting a
margin (``lease_seconds - renew_deadline``) before anyone else can start, however long a call
of its own hangs. A replica that cannot renew (an API-server outage, a partition) stops
leading and keeps trying: when the server is back it takes the Lease again (its own, expired)
or finds another replica leading and stands by. It never exits for that."""

import datetime
import logging
import threading
import time

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

# (connect, read) seconds of each Lease call: two of them (read, replace) fit well inside the
# renew deadline, so a stalled server costs a few attempts rather than the leadership.
REQUEST_TIMEOUT = (2.0, 3.0)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_deadline: float = 10.0,
        retry_seconds: float = 2.0,
    ) -> None:
        if not retry_seconds < renew_deadline < lease_seconds:
            raise ValueError("need retry_seconds < renew_deadline < lease_seconds")
        self._api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds, self.renew_deadline = lease_seconds, renew_deadline
        self.retry_seconds = retry_seconds
        # Written by the election thread, read by any: one float, replaced whole.
        self._leads_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def leads(self) -> bool:
        return time.monotonic() < self._leads_until

    def stop(self, timeout: float = 3.0) -> None:
        """Stops campaigning and gives the Lease up if this replica holds it, so that a standby
        takes over at its next retry instead of after the Lease expires."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        was_leading = False
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                held = self._try_acquire_or_renew()
            except Exception as exc:
                # The server's trouble, not a verdict: keep leading until the deadline.
                log.warning("leader election: lease %s/%s: %s", self.namespace, self.name, exc)
            else:
                if held:
                    self._leads_until = began + self.renew_deadline
                else:
                    self._leads_until = 0.0  # another replica holds it
            leading = self.leads()
            if leading and not was_leading:
                log.info("leader election: %s leads", self.identity)
            elif was_leading and not leading:
                log.error("leader election: %s stopped leading (lease not renewed)", self.identity)
            was_leading = leading
            self._stop.wait(self.retry_seconds)
        if self.leads():
            self._leads_until = 0.0
            self._release()

    def _try_acquire_or_renew(self) -> bool:
        now = _now()
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(
                    holder_identity=self.identity,
                    lease_duration_seconds=self.lease_seconds,
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=0,
                ),
            )
            try:
                self._api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            return True
        spec = lease.spec
        renewed = spec.renew_time
        expired = renewed is None or (now - renewed).total_seconds() > (
            spec.lease_duration_seconds or self.lease_seconds
        )
        if spec.holder_identity and spec.holder_identity != self.identity and not expired:
            return False
        if spec.holder_identity != self.identity:
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            spec.acquire_time = now
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.lease_seconds
        spec.renew_time = now
        try:
            # The resourceVersion in the object makes this a compare-and-swap.
            self._api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _release(self) -> None:
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self._api.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT
                )
                log.info("leader election: %s released the lease", self.identity)
        except Exception as exc:
            # It expires on its own lease_seconds later.
            log.warning("leader election: could not release the lease: %s", exc)
