"""Leader election on a coordination.k8s.io Lease, so that several replicas run safely: one
acts, the others wait to take over. (Kopf's own peering freezes replicas of equal priority
instead of electing one.)"""

import datetime
import logging
import threading

from kubernetes import client
from kubernetes.client.rest import ApiException

from stemkube_operator import metrics

log = logging.getLogger(__name__)


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
        renew_seconds: float = 5.0,
    ) -> None:
        self._api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds, self.renew_seconds = lease_seconds, renew_seconds
        self.leading = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.renew_seconds + 5)
        if self.leading.is_set():
            self._release()
        metrics.LEADING.set(0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                held = self._try_acquire_or_renew()
            except Exception:
                log.exception("leader election: lease %s/%s", self.namespace, self.name)
                held = False
            if held and not self.leading.is_set():
                log.info("leader election: %s leads", self.identity)
                self.leading.set()
                metrics.LEADING.set(1)
            elif not held and self.leading.is_set():
                # Another replica may already act: stop at once rather than act twice.
                log.error("leader election: %s lost the lease", self.identity)
                metrics.LEADING.set(0)
                self.lost.set()
                return
            self._stop.wait(self.renew_seconds)

    def _try_acquire_or_renew(self) -> bool:
        now = _now()
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
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
                self._api.create_namespaced_lease(self.namespace, body)
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
        if spec.holder_identity != self.identity and not expired:
            return False
        if spec.holder_identity != self.identity:
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            spec.acquire_time = now
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.lease_seconds
        spec.renew_time = now
        try:
            # The resourceVersion in the object makes this a compare-and-swap.
            self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _release(self) -> None:
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException:
            log.warning("leader election: could not release the lease", exc_info=True)

    def wait_to_lead(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            if self.leading.wait(0.5):
                return True
        return False
