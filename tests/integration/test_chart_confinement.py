"""What confines stemkube's pods and its kubectl users (issue #15 items 3 and 4), as the chart
renders it and as a real kube-apiserver takes it.

- The NetworkPolicies: each one's pod selector against the pods it is meant for (the chart's
  and the separator pods the real operator code builds), ports, peers, ipBlocks and their
  except-lists from the values, default and customised, and none when disabled. The except-list
  of "public addresses" is checked against the URL address check it backs up.
- Pod Security `restricted` for every pod, the separator's included: its fields in what is
  rendered (readOnlyRootFilesystem too, which the admission level does not check), and a real
  API server admitting the pods in a namespace that enforces the level.
- The user ClusterRoles: their rules and aggregation labels, then REAL ServiceAccount tokens
  (TokenRequest API) bound to them, and to the built-in view, edit and admin roles they are
  aggregated into, making real requests.

The tier runs no CNI that enforces NetworkPolicy: the rendered policies are validated and
stored by the API server, not enforced. Enforcement needs a CNI that enforces NetworkPolicy
(Calico, Cilium, ...); the chart's README says so too."""

import contextlib
import copy
import ipaddress
import random
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from stemkube_contract.addresses import address_problem
from stemkube_contract.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from stemkube_operator.config import load_config
from stemkube_operator.jobspec import build_job
from tests.harness.fixtures import Cluster, kubectl, temporary_namespace
from tests.integration.test_chart import CHART, helm

pytestmark = pytest.mark.integration

Doc = dict[str, Any]
NS = "music"
EXTERNAL = (
    "--set=minio.enabled=false",
    "--set=storage.external.existingSecret=s3-credentials",
)
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def render(*values: str, release: str = "rel", namespace: str = NS) -> list[Doc]:
    text = helm("template", release, str(CHART), f"--namespace={namespace}", *values).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def policies(docs: list[Doc]) -> dict[str, Doc]:
    """NetworkPolicies by name (namespace/name where the template names a namespace)."""
    out = {}
    for doc in docs:
        if doc["kind"] == "NetworkPolicy":
            meta = doc["metadata"]
            key = f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]
            out[key] = doc["spec"]
    return out


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def pod_templates(docs: list[Doc]) -> dict[str, Doc]:
    """Every pod the chart itself makes, by its object's name: {metadata, spec}."""
    out = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            out[doc["metadata"]["name"]] = doc["spec"]["template"]
        elif doc["kind"] == "Pod":
            out[doc["metadata"]["name"]] = {"metadata": doc["metadata"], "spec": doc["spec"]}
    return out


def separator_pod(docs: list[Doc], namespace: str = NS) -> Doc:
    """The pod template of a separator Job as the real operator code builds it, configured
    from the environment the chart gives the operator."""
    operator = named(docs, "Deployment", "rel-stemkube-operator")
    env = {
        e["name"]: e["value"]
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in e
    }
    cr = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "song", "namespace": namespace, "uid": "0000-1111"},
        "spec": {
            "input": {"bucket": "stemkube", "key": "inputs/song/a.mp3", "filename": "a.mp3"},
            "output": {"bucket": "stemkube", "key": "results/song.zip"},
        },
    }
    template: Doc = build_job(cr, load_config(env))["spec"]["template"]
    return template


def by_name(*namespaces: str) -> Doc:
    return {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(namespaces)}


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the chart's policies use matchLabels
    return bool(selector["matchLabels"].items() <= labels.items())


def peers(rule: Doc) -> list[Doc]:
    found: list[Doc] = rule["from"] if "from" in rule else rule.get("to", [])
    return list(found)


def ip_blocks(rule: Doc) -> dict[str, list[str]]:
    return {
        p["ipBlock"]["cidr"]: p["ipBlock"].get("except", []) for p in peers(rule) if "ipBlock" in p
    }


def is_public_rule(rule: Doc) -> bool:
    return set(ip_blocks(rule)) == {"0.0.0.0/0", "2000::/3"} and "ports" not in rule


# Rendering: the NetworkPolicies ---------------------------------------------------------------


def test_policies_are_on_by_default_and_none_when_disabled() -> None:
    assert set(policies(render())) == {
        "rel-stemkube-api",
        "rel-stemkube-operator",
        f"{NS}/rel-stemkube-separator",
        "rel-stemkube-test",
        "rel-stemkube-minio",
        "rel-stemkube-minio-bucket",
    }
    for spec in policies(render()).values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]  # both directions, every pod
    assert policies(render("--set=networkPolicy.enabled=false")) == {}
    external = policies(render(*EXTERNAL, "--set=storage.external.endpoint=https://s3.x.io"))
    assert "rel-stemkube-minio" not in external
    assert "rel-stemkube-minio-bucket" not in external


def test_each_policy_selects_its_own_pods_and_no_other() -> None:
    docs = render()
    pods = pod_templates(docs)
    pods["separator"] = separator_pod(docs)
    meant = {
        "rel-stemkube-api": "rel-stemkube-api",
        "rel-stemkube-operator": "rel-stemkube-operator",
        f"{NS}/rel-stemkube-separator": "separator",
        "rel-stemkube-test": "rel-stemkube-test-api",
        "rel-stemkube-minio": "rel-stemkube-minio",
        "rel-stemkube-minio-bucket": "rel-stemkube-minio-bucket",
    }
    assert set(pods) == set(meant.values())  # every pod has its policy
    for policy, spec in policies(docs).items():
        chosen = {
            pod for pod, t in pods.items() if selects(spec["podSelector"], t["metadata"]["labels"])
        }
        assert chosen == {meant[policy]}, policy


def test_the_api_is_reached_from_the_ingress_namespace_and_the_test_pod_only() -> None:
    docs = render()
    api = policies(docs)["rel-stemkube-api"]
    http, metrics = api["ingress"]
    assert http["ports"] == [{"port": 8000, "protocol": "TCP"}]
    ingress_ns, test_pod = peers(http)
    assert ingress_ns == {"namespaceSelector": {"matchExpressions": [by_name("ingress-nginx")]}}
    assert selects(
        test_pod["podSelector"], pod_templates(docs)["rel-stemkube-test-api"]["metadata"]["labels"]
    )
    assert metrics == {
        "from": [{"namespaceSelector": {}}],
        "ports": [{"port": 9090, "protocol": "TCP"}],
    }

    custom = policies(
        render(
            "--set=api.containerPort=8100",
            "--set=api.metrics.port=9100",
            '--set-json=networkPolicy.ingressNamespaces=["traefik","edge"]',
            '--set-json=networkPolicy.apiFrom=[{"ipBlock":{"cidr":"203.0.113.0/24"}}]',
            "--set-json=networkPolicy.metricsNamespaceSelector="
            '{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}',
        )
    )
    http, metrics = custom["rel-stemkube-api"]["ingress"]
    assert http["ports"] == [{"port": 8100, "protocol": "TCP"}]
    assert peers(http)[0]["namespaceSelector"] == {"matchExpressions": [by_name("traefik", "edge")]}
    assert peers(http)[2] == {"ipBlock": {"cidr": "203.0.113.0/24"}}
    assert metrics["ports"] == [{"port": 9100, "protocol": "TCP"}]
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert peers(metrics) == [{"namespaceSelector": monitoring}]
    # The operator's metrics (and health) port, from the same namespaces only; its job link's
    # port from separator pods only.
    metrics_rule, link_rule = custom["rel-stemkube-operator"]["ingress"]
    assert metrics_rule == {
        "from": [{"namespaceSelector": monitoring}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }
    assert link_rule["ports"] == [{"port": 8082, "protocol": "TCP"}]
    operator = named(render(), "Deployment", "rel-stemkube-operator")
    ports = operator["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [(p["name"], p["containerPort"]) for p in ports] == [("http", 8080), ("link", 8082)]


def test_separators_reach_the_job_link_and_only_separators_do() -> None:
    """The separator pods' only way to their job: the operator's link port, both ends."""
    docs = render('--set-json=operator.watchNamespaces=["music","jobs"]')
    specs = policies(docs)
    pods = pod_templates(docs)
    [_, link_in] = specs["rel-stemkube-operator"]["ingress"]
    [separators] = peers(link_in)
    assert separators["namespaceSelector"]["matchExpressions"] == [by_name("music", "jobs")]
    chosen = {
        pod
        for pod, t in pods.items()
        if selects(separators["podSelector"], t["metadata"]["labels"])
    }
    assert chosen == set()  # no pod of the chart's own
    assert selects(separators["podSelector"], separator_pod(docs, "jobs")["metadata"]["labels"])
    for ns in ("music", "jobs"):
        link_out = specs[f"{ns}/rel-stemkube-separator"]["egress"][1]
        assert link_out["ports"] == [{"port": 8082, "protocol": "TCP"}]
        [operator] = peers(link_out)
        assert operator["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": NS}}
        reached = {
            pod
            for pod, t in pods.items()
            if selects(operator["podSelector"], t["metadata"]["labels"])
        }
        assert reached == {"rel-stemkube-operator"}


def test_nothing_reaches_separators_tests_or_the_bucket_hook() -> None:
    for name, spec in policies(render()).items():
        if name.endswith(("-separator", "-test", "-minio-bucket")):
            assert "ingress" not in spec, name  # Ingress in policyTypes, no rule: deny all


def test_dns_and_the_api_server_from_values() -> None:
    dns = {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": DNS_PORTS,
    }
    # The API server is no pod: by default any address on the usual ports.
    any_api_server = {
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]
    }
    specs = policies(render())
    for name in ("rel-stemkube-api", "rel-stemkube-operator"):
        assert specs[name]["egress"][:2] == [dns, any_api_server], name
    for name in (
        f"{NS}/rel-stemkube-separator",
        "rel-stemkube-test",
        "rel-stemkube-minio",
        "rel-stemkube-minio-bucket",
    ):
        assert specs[name]["egress"][0] == dns
        assert any_api_server not in specs[name]["egress"], name  # no token, no API server

    custom = policies(
        render(
            '--set-json=networkPolicy.apiServer.cidrs=["172.18.0.2/32","10.0.0.1/32"]',
            "--set-json=networkPolicy.apiServer.ports=[6443]",
            "--set=networkPolicy.dns.namespace=dns",
            # Helm merges maps: null drops the default label, as values.yaml says.
            '--set-json=networkPolicy.dns.podSelector={"matchLabels":{"k8s-app":null,"app":"coredns"}}',
        )
    )
    assert custom[f"{NS}/rel-stemkube-separator"]["egress"][0]["to"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "dns"}
    }
    for name in ("rel-stemkube-api", "rel-stemkube-operator"):
        custom_dns, api_server = custom[name]["egress"][:2]
        assert custom_dns["to"] == [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}},
                "podSelector": {"matchLabels": {"app": "coredns"}},
            }
        ]
        assert api_server == {
            "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}, {"ipBlock": {"cidr": "10.0.0.1/32"}}],
            "ports": [{"port": 6443, "protocol": "TCP"}],
        }


def test_the_bundled_minio_is_reached_from_stemkubes_pods_only() -> None:
    docs = render('--set-json=operator.watchNamespaces=["music","jobs"]')
    specs = policies(docs)
    minio_pods = {
        "matchLabels": {
            "app.kubernetes.io/name": "stemkube",
            "app.kubernetes.io/instance": "rel",
            "app.kubernetes.io/component": "minio",
        }
    }
    to_minio = {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}},
                "podSelector": minio_pods,
            }
        ],
        "ports": [{"port": 9000, "protocol": "TCP"}],
    }
    for name in (
        "rel-stemkube-api",
        "rel-stemkube-operator",
        "music/rel-stemkube-separator",
        "jobs/rel-stemkube-separator",
        "rel-stemkube-minio-bucket",
    ):
        assert to_minio in specs[name]["egress"], name
    [rule] = specs["rel-stemkube-minio"]["ingress"]
    assert rule["ports"] == [{"port": 9000, "protocol": "TCP"}]
    pods = pod_templates(docs)
    allowed = {
        pod
        for pod, t in pods.items()
        if any(selects(p["podSelector"], t["metadata"]["labels"]) for p in peers(rule))
    }
    assert allowed == {"rel-stemkube-api", "rel-stemkube-operator", "rel-stemkube-minio-bucket"}
    [separators] = [p for p in peers(rule) if "namespaceSelector" in p]
    assert selects(separators["podSelector"], separator_pod(docs, "jobs")["metadata"]["labels"])
    assert separators["namespaceSelector"]["matchExpressions"] == [by_name("music", "jobs")]
    # MinIO itself reaches DNS and nothing else.
    assert len(specs["rel-stemkube-minio"]["egress"]) == 1

    # Every namespace watched: separators anywhere, and their policy in the release namespace
    # only (the chart cannot know the others; the README says to copy it).
    everywhere = policies(render('--set-json=operator.watchNamespaces=["*"]'))
    [rule] = everywhere["rel-stemkube-minio"]["ingress"]
    [separators] = [p for p in peers(rule) if "namespaceSelector" in p]
    assert separators["namespaceSelector"] == {}
    assert [k for k in everywhere if k.endswith("-separator")] == [f"{NS}/rel-stemkube-separator"]


@pytest.mark.parametrize(
    ("values", "cidrs", "port"),
    [
        # A name may resolve to any address: public ones, on the endpoint's port or scheme's.
        (["--set=storage.external.endpoint=https://s3.eu-west-1.amazonaws.com"], None, 443),
        (["--set=storage.external.endpoint=http://ceph.storage:8080"], None, 8080),
        (["--set=storage.external.endpoint=http://s3.example.com"], None, 80),
        # An IP address is its one address, private or not.
        (["--set=storage.external.endpoint=http://10.88.0.1:9100"], ["10.88.0.1/32"], 9100),
        (["--set=storage.external.endpoint=https://[fd00::5]:9000"], ["fd00::5/128"], 9000),
        # The values win over the endpoint.
        (
            [
                "--set=storage.external.endpoint=https://rgw.internal",
                '--set-json=networkPolicy.objectStore.cidrs=["10.20.0.0/24","10.30.0.0/24"]',
                "--set=networkPolicy.objectStore.port=7480",
            ],
            ["10.20.0.0/24", "10.30.0.0/24"],
            7480,
        ),
    ],
)
def test_an_external_object_store_from_its_endpoint_or_the_values(
    values: list[str], cidrs: list[str] | None, port: int
) -> None:
    specs = policies(render(*EXTERNAL, *values))
    for name in ("rel-stemkube-api", "rel-stemkube-operator", f"{NS}/rel-stemkube-separator"):
        store = specs[name]["egress"][2]
        assert store["ports"] == [{"port": port, "protocol": "TCP"}], name
        if cidrs is None:
            assert set(ip_blocks(store)) == {"0.0.0.0/0", "2000::/3"}
            assert "10.0.0.0/8" in ip_blocks(store)["0.0.0.0/0"]
        else:
            assert ip_blocks(store) == {cidr: [] for cidr in cidrs}


def test_only_the_operator_and_separators_reach_public_addresses() -> None:
    specs = policies(render())
    public = {name for name, spec in specs.items() if any(map(is_public_rule, spec["egress"]))}
    assert public == {"rel-stemkube-operator", f"{NS}/rel-stemkube-separator"}
    # No rule anywhere lets a pod reach every address on every port.
    for name, spec in specs.items():
        for rule in spec["egress"]:
            assert "to" in rule or "ports" in rule, name


def _public_except_lists(*values: str) -> dict[str, list[str]]:
    [rule] = [
        r for r in policies(render(*values))["rel-stemkube-operator"]["egress"] if is_public_rule(r)
    ]
    return ip_blocks(rule)


def test_the_public_except_lists_cover_every_address_the_url_check_refuses() -> None:
    """The policy is the URL check's second line: whatever the check refuses, the policy must
    refuse too; and it excepts no range the check would let through (a range of only public
    addresses in the list would break URL imports and webhooks for nothing)."""
    blocks = _public_except_lists()
    excepted = [ipaddress.ip_network(n) for n in blocks["0.0.0.0/0"] + blocks["2000::/3"]]
    global_v6 = ipaddress.ip_network("2000::/3")

    def allowed_by_policy(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if ip.version == 6 and ip not in global_v6:
            return False
        return not any(ip.version == n.version and ip in n for n in excepted)

    for net in excepted:
        assert address_problem(net.network_address), net
    rng = random.Random(15)
    samples: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(20000)
    ]
    samples += [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(5000)]
    samples += [ipaddress.IPv6Address((0x2 << 124) | rng.getrandbits(125)) for _ in range(5000)]
    for net in excepted:  # the edges of every range and their neighbours
        for edge in (int(net.network_address), int(net.broadcast_address)):
            for offset in (-1, 0, 1):
                with contextlib.suppress(ipaddress.AddressValueError):
                    samples.append(type(net.network_address)(edge + offset))
    for special in ("169.254.169.254", "127.0.0.1", "10.96.0.1", "fe80::1", "::1", "fd00::1"):
        samples.append(ipaddress.ip_address(special))
    leaks = [str(ip) for ip in samples if address_problem(ip) and allowed_by_policy(ip)]
    assert leaks == []
    # And the policy is no blanket refusal: public addresses pass.
    for public in ("1.1.1.1", "93.184.215.14", "2606:4700::1111"):
        assert allowed_by_policy(ipaddress.ip_address(public))


def test_the_clusters_own_ranges_join_the_except_lists() -> None:
    # separator.urlImport.clusterCIDRs is the one home of the cluster's ranges: the URL check
    # gets them from the operator, the policies from the chart.
    cidrs = '["100.200.0.0/16","10.96.0.0/12","2600:1f18::/64","fd00:10::/108"]'
    values = f"--set-json=separator.urlImport.clusterCIDRs={cidrs}"
    blocks = _public_except_lists(values)
    assert {"100.200.0.0/16", "10.96.0.0/12"} <= set(blocks["0.0.0.0/0"])
    assert "2600:1f18::/64" in blocks["2000::/3"]
    # A ULA range is outside 2000::/3 already, and an except entry outside its cidr is invalid.
    assert "fd00:10::/108" not in blocks["2000::/3"]
    specs = policies(render(values))
    for name in ("rel-stemkube-operator", f"{NS}/rel-stemkube-separator"):
        [public] = [r for r in specs[name]["egress"] if is_public_rule(r)]
        assert ip_blocks(public) == blocks
    operator = named(render(values), "Deployment", "rel-stemkube-operator")
    env = {
        e["name"]: e.get("value")
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["STEMKUBE_URL_DENY_CIDRS"].split(",") == [
        "100.200.0.0/16",
        "10.96.0.0/12",
        "2600:1f18::/64",
        "fd00:10::/108",
    ]


def test_the_schema_refuses_bad_network_values() -> None:
    for value, path in (
        ("--set=networkPolicy.apiServer.ports[0]=70000", "/networkPolicy/apiServer/ports/0"),
        ("--set=networkPolicy.objectStore.cidrs[0]=everywhere", "/networkPolicy/objectStore"),
        ("--set=networkPolicy.typo=1", "additional properties 'typo' not allowed"),
        ("--set=userRoles.enabled=maybe", "/userRoles/enabled"),
    ):
        result = helm("template", "rel", str(CHART), value, check=False)
        assert result.returncode != 0, value
        assert path in result.stderr, result.stderr


# Rendering: Pod Security `restricted` ---------------------------------------------------------


def all_pods(docs: list[Doc]) -> dict[str, Doc]:
    pods = pod_templates(docs)
    pods["separator"] = separator_pod(docs)
    return pods


def test_every_pod_meets_restricted_with_a_read_only_root() -> None:
    pods = all_pods(render())
    assert set(pods) == {
        "rel-stemkube-api",
        "rel-stemkube-operator",
        "rel-stemkube-minio",
        "rel-stemkube-minio-bucket",
        "rel-stemkube-test-api",
        "separator",
    }
    homeless = set()
    for name, template in pods.items():
        spec = template["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), name
        writable = {
            v["name"]
            for v in spec.get("volumes", [])
            if "emptyDir" in v or "persistentVolumeClaim" in v
        }
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert not context.get("privileged"), name
            # The one place such a process writes (HOME: caches, temporary files) is a volume.
            mounts = {
                m["mountPath"]: m["name"]
                for m in container.get("volumeMounts", [])
                if not m.get("readOnly")
            }
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if "HOME" in env:
                assert mounts.get(env["HOME"]) in writable, (name, env["HOME"], mounts)
            else:
                homeless.add(name)
    # The helm test pod only makes one HTTP request: no writable path at all.
    assert homeless == {"rel-stemkube-test-api"}


# Rendering: the user roles ---------------------------------------------------------------------


def test_the_user_roles_and_their_aggregation() -> None:
    docs = render(release="music-stemkube")  # fullname: the release name, as for other roles
    user = named(docs, "ClusterRole", "music-stemkube-user")
    viewer = named(docs, "ClusterRole", "music-stemkube-viewer")
    assert user["rules"] == [
        {
            "apiGroups": ["stemkube.io"],
            "resources": ["separationjobs"],
            "verbs": ["create", "get", "list", "watch", "update", "patch", "delete"],
        },
        {
            "apiGroups": ["stemkube.io"],
            "resources": ["separationjobs/status"],
            "verbs": ["get", "list", "watch"],
        },
    ]
    assert viewer["rules"] == [
        {
            "apiGroups": ["stemkube.io"],
            "resources": ["separationjobs", "separationjobs/status"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k in user["metadata"]["labels"] if k.startswith(aggregate)} == {
        aggregate + "admin",
        aggregate + "edit",
    }
    assert {k for k in viewer["metadata"]["labels"] if k.startswith(aggregate)} == {
        aggregate + "view"
    }
    assert all(user["metadata"]["labels"][aggregate + r] == "true" for r in ("admin", "edit"))

    separate = render("--set=userRoles.aggregate=false")
    for role in ("rel-stemkube-user", "rel-stemkube-viewer"):
        labels = named(separate, "ClusterRole", role)["metadata"]["labels"]
        assert not [k for k in labels if k.startswith(aggregate)], role
    off = render("--set=userRoles.enabled=false")
    assert not [d for d in off if d["metadata"]["name"].endswith(("-user", "-viewer"))]


# The real API server ----------------------------------------------------------------------------


def test_the_rendered_policies_are_accepted_by_the_api_server(
    cluster: Cluster, separation_crd: None
) -> None:
    """Created for real (not a dry run) in the namespaces they name, default and customised,
    and read back unchanged: the API server's validation of selectors, ports and ipBlocks
    (every except entry inside its cidr) passes. Stored, not enforced: no CNI here enforces
    NetworkPolicy."""
    with temporary_namespace(cluster, "np") as home, temporary_namespace(cluster, "np") as jobs:
        for values in (
            [f'--set-json=operator.watchNamespaces=["{home}","{jobs}"]'],
            [
                *EXTERNAL,
                "--set=storage.external.endpoint=https://[2600:1f18::5]:9000",
                '--set-json=separator.urlImport.clusterCIDRs=["10.96.0.0/12","2600:1f18::/64","fd00::/108"]',
                '--set-json=networkPolicy.apiServer.cidrs=["172.18.0.2/32"]',
                '--set-json=networkPolicy.apiFrom=[{"ipBlock":{"cidr":"203.0.113.0/24"}}]',
                '--set-json=networkPolicy.metricsNamespaceSelector={"matchLabels":{"team":"obs"}}',
                '--set-json=operator.watchNamespaces=["*"]',
            ],
        ):
            docs = [d for d in render(*values, namespace=home) if d["kind"] == "NetworkPolicy"]
            for doc in docs:  # as `helm install -n home` places them
                doc["metadata"].setdefault("namespace", home)
            out = kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
            assert out.count("networkpolicy.networking.k8s.io/") == len(docs), out
            net = client.NetworkingV1Api(cluster.api)
            for doc in docs:
                stored = net.read_namespaced_network_policy(
                    doc["metadata"]["name"], doc["metadata"]["namespace"]
                )
                assert cluster.api.sanitize_for_serialization(stored.spec) == doc["spec"]
            # A policy the API server refuses: an except entry outside its cidr. The same
            # apply path fails on it, so the acceptance above is the API server's word.
            bad = copy.deepcopy(docs[0])
            bad["metadata"]["name"] = "bad"
            bad["spec"]["egress"] = [
                {"to": [{"ipBlock": {"cidr": "2000::/3", "except": ["fd00::/8"]}}]}
            ]
            refused = kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
            assert "Invalid" in refused, refused
            assert "except" in refused, refused


def test_every_pod_is_admitted_where_restricted_is_enforced(cluster: Cluster) -> None:
    with temporary_namespace(cluster, "psa") as ns:
        kubectl(cluster, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
        docs = render(namespace=ns)
        # The pods name their ServiceAccounts, which admission looks up: create those.
        accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
        kubectl(cluster, "apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(accounts))
        pods = pod_templates(docs)
        pods["separator"] = separator_pod(docs, ns)

        def admit(template: Doc) -> str:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"x-{secrets.token_hex(3)}",
                    "labels": template["metadata"]["labels"],
                },
                "spec": template["spec"],
            }
            return kubectl(
                cluster,
                "create",
                "--dry-run=server",
                "-n",
                ns,
                "-f",
                "-",
                stdin=yaml.safe_dump(pod),
                check=False,
            )

        for name, template in pods.items():
            out = admit(template)
            assert "created (server dry run)" in out, (name, out)
        # The namespace does enforce: the same pod allowed to escalate is refused.
        loose = copy.deepcopy(pods["rel-stemkube-api"])
        loose["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
        refused = admit(loose)
        assert 'violates PodSecurity "restricted' in refused, refused


# The real API server: user roles with real tokens ------------------------------------------------


def separation_job(namespace: str, name: str = "song") -> Doc:
    # Keys under the namespace's own prefix: what the default storage scope allows, should a
    # scope policy be in force on the tier.
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "input": {
                "bucket": "stemkube",
                "key": f"{namespace}/inputs/{name}/song.mp3",
                "filename": "song.mp3",
            },
            "output": {"bucket": "stemkube", "key": f"{namespace}/results/{name}.zip"},
        },
    }


class As:
    """Requests made with one ServiceAccount's token, from the TokenRequest API."""

    def __init__(self, cluster: Cluster, namespace: str, account: str) -> None:
        core = client.CoreV1Api(cluster.api)
        core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
        token = core.create_namespaced_service_account_token(
            account, namespace, {"spec": {"expirationSeconds": 600}}
        ).status.token
        config = client.Configuration()
        config.host = cluster.plane.server
        config.ssl_ca_cert = str(cluster.plane.pki.ca_cert)
        config.api_key = {"authorization": token}
        config.api_key_prefix = {"authorization": "Bearer"}
        self.api = client.ApiClient(config)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def status(self, call: Callable[[], object]) -> int:
        """The HTTP status of one request: 200/201 when it succeeds."""
        try:
            call()
        except client.ApiException as exc:
            return int(exc.status)
        return 200

    def create(self, namespace: str, name: str = "song") -> int:
        body = separation_job(namespace, name)
        return self.status(
            lambda: self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body
            )
        )

    def get(self, namespace: str, name: str = "song") -> int:
        return self.status(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        )

    def list(self, namespace: str) -> int:
        return self.status(
            lambda: self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        )

    def delete(self, namespace: str, name: str = "song") -> int:
        return self.status(
            lambda: self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        )

    def patch_labels(self, namespace: str, name: str = "song") -> int:
        body = {"metadata": {"labels": {"mine": "yes"}}}
        return self.status(
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body
            )
        )

    def patch_status(self, namespace: str, name: str = "song") -> int:
        body = {"status": {"phase": "Completed", "progress": 100}}
        return self.status(
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body
            )
        )

    def read_secrets(self, namespace: str) -> int:
        return self.status(lambda: self.core.list_namespaced_secret(namespace))

    def exec(self, namespace: str) -> int:
        # Authorization comes before the pod is looked up: 403 without the right, 404 with it.
        return self.status(
            lambda: self.api.call_api(
                f"/api/v1/namespaces/{namespace}/pods/any/exec",
                "POST",
                query_params=[("command", "ls"), ("stdout", "true")],
                auth_settings=["BearerToken"],
                _preload_content=False,
            )
        )


def bind(cluster: Cluster, namespace: str, account: str, cluster_role: str) -> None:
    client.RbacAuthorizationV1Api(cluster.api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": f"{account}-{cluster_role}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    )


def eventually(check: Callable[[], bool], timeout: float = 30) -> bool:
    """RBAC changes (a binding, an aggregation) reach the authorizer's cache within seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture
def user_roles(cluster: Cluster, separation_crd: None) -> Iterator[str]:
    """The chart's user ClusterRoles, applied for real under a release name of this test's own;
    their fullname."""
    release = f"r{secrets.token_hex(3)}"
    roles = [
        d
        for d in render(release=release)
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith(("-user", "-viewer"))
    ]
    assert len(roles) == 2
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all(roles))
    try:
        yield f"{release}-stemkube"
    finally:
        for role in roles:
            kubectl(
                cluster, "delete", "clusterrole", role["metadata"]["name"], "--ignore-not-found"
            )


def test_kubectl_users_with_real_tokens(cluster: Cluster, user_roles: str) -> None:
    admin = client.CustomObjectsApi(cluster.api)
    with (
        temporary_namespace(cluster, "team") as team,
        temporary_namespace(cluster, "other") as other,
    ):
        # Another team's job, and one in this team's namespace that nobody but the operator
        # may mark done.
        for ns in (team, other):
            admin.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, separation_job(ns))

        user = As(cluster, team, "user")
        assert user.create(team, "mine") == 403  # nothing before the binding
        bind(cluster, team, "user", f"{user_roles}-user")
        assert eventually(lambda: user.list(team) == 200)
        assert user.create(team, "mine") == 200
        assert user.get(team, "mine") == 200
        assert user.patch_labels(team, "mine") == 200
        assert user.patch_status(team) == 403
        assert "status" not in admin.get_namespaced_custom_object(
            GROUP, VERSION, team, PLURAL, "song"
        )
        assert user.delete(team, "mine") == 200
        assert user.get(team, "mine") == 404
        for call in (user.create, user.get, user.list, user.delete):
            assert call(other) == 403, call
        assert user.read_secrets(team) == 403
        assert user.exec(team) == 403

        viewer = As(cluster, team, "viewer")
        bind(cluster, team, "viewer", f"{user_roles}-viewer")
        assert eventually(lambda: viewer.list(team) == 200)
        assert viewer.get(team) == 200
        assert viewer.create(team, "v") == 403
        assert viewer.delete(team) == 403

        # The built-in roles, through aggregation by kube-controller-manager's
        # clusterrole-aggregation-controller.
        view = As(cluster, team, "view")
        bind(cluster, team, "view", "view")
        assert eventually(lambda: view.list(team) == 200)
        assert view.get(team) == 200
        assert view.create(team, "w") == 403
        assert view.patch_status(team) == 403
        assert view.list(other) == 403

        edit = As(cluster, team, "edit")
        bind(cluster, team, "edit", "edit")
        assert eventually(lambda: edit.create(team, "e") == 200)
        assert edit.patch_status(team) == 403
        assert edit.delete(team, "e") == 200
        assert edit.create(other, "e") == 403

        owner = As(cluster, team, "owner")
        bind(cluster, team, "owner", "admin")
        assert eventually(lambda: owner.create(team, "a") == 200)
        assert owner.patch_status(team) == 403
        # The contrast that makes the 403s above mean "no right": with the right, the same
        # exec request gets past authorization to the missing pod.
        assert owner.exec(team) == 404
