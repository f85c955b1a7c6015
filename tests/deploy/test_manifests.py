"""deploy/k8s and deploy/compose.yaml checked at the schema level, and against each other.

Kubernetes resources are validated against the OpenAPI schemas that `kubernetes-validate` bundles
(strict: unknown fields are errors), the compose file against the Compose Specification schema
that `check-jsonschema` vendors; both offline. The rest are the cross-file facts a schema cannot
see: selectors that select something, probes and Services aimed at declared ports, referenced
Secrets and ConfigMap keys that exist, and every embedded edgefn.toml loading cleanly inside the
image's file layout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import (
    DEPLOY,
    K8S,
    ROOT,
    FakeRoot,
    Image,
    k8s_documents,
    k8s_files,
    load_or_fail,
    toml_port,
)

KNOWN_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "StatefulSet"),
    ("policy/v1", "PodDisruptionBudget"),
}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
REGION_LABEL = "topology.kubernetes.io/region"
# The oldest Kubernetes the manifests are meant for (docs/deploy.md), and the newest bundled schema.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())

DOCS = k8s_documents()


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc["kind"] in kinds]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def port_refs(container: dict[str, Any]) -> set[int | str]:
    ports = container.get("ports", [])
    return {p["containerPort"] for p in ports} | {p["name"] for p in ports if "name" in p}


def gateways() -> list[dict[str, Any]]:
    """The edgefn node workloads: those whose main container runs the image's own entrypoint."""
    found = [
        w
        for w in of_kind(*WORKLOADS)
        if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"
    ]
    assert found, "no gateway workload (label app.kubernetes.io/component=gateway)"
    return found


def region_of(workload: dict[str, Any]) -> str:
    spec = pod(workload)
    if REGION_LABEL in spec.get("nodeSelector", {}):
        return str(spec["nodeSelector"][REGION_LABEL])
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    values = [
        e["values"]
        for term in terms["nodeSelectorTerms"]
        for e in term["matchExpressions"]
        if e["key"] == REGION_LABEL and e["operator"] == "In"
    ]
    assert values and len(values[0]) == 1, f"{workload['metadata']['name']}: not pinned to one region"
    return str(values[0][0])


def configmap_tomls() -> dict[str, str]:
    return {
        f"{cm['metadata']['name']}/{key}": text
        for cm in of_kind("ConfigMap")
        for key, text in cm.get("data", {}).items()
        if key.endswith(".toml")
    }


# --- Kubernetes -------------------------------------------------------------------------------


def test_resources_have_known_kinds_names_and_the_namespace() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    namespace = kustomization["namespace"]
    assert [d["metadata"]["name"] for d in of_kind("Namespace")] == [namespace]
    seen = set()
    for where, doc in DOCS:
        kind = (doc.get("apiVersion"), doc.get("kind"))
        assert kind in KNOWN_KINDS, f"{where}: unknown apiVersion/kind {kind}"
        name = doc.get("metadata", {}).get("name", "")
        assert DNS_LABEL.fullmatch(name) and len(name) <= 63, f"{where}: metadata.name {name!r}"
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, f"{where}: not in namespace {namespace}"
        assert (doc["kind"], name) not in seen, f"{where}: a second {doc['kind']} named {name}"
        seen.add((doc["kind"], name))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_resources_match_the_kubernetes_openapi_schemas(version: str) -> None:
    errors = []
    for where, doc in DOCS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where} {'.'.join(map(str, exc.path))}: {exc.message}")
    assert not errors, "\n".join(errors)
    # The validator does bite: a misspelt field in a real resource is refused.
    broken = json.loads(json.dumps(of_kind("PodDisruptionBudget")[0]))
    broken["spec"]["minAvaliable"] = broken["spec"].pop("minAvailable")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_kustomization_ties_every_manifest_together() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in k8s_files())
    images = {
        c["image"].rsplit(":", 1)[0]
        for w in of_kind(*WORKLOADS)
        for c in pod(w).get("initContainers", []) + pod(w)["containers"]
    }
    for entry in kustomization.get("images", []):
        assert entry["name"] in images, f"kustomization images: {entry['name']!r} is used by no container"


def test_workload_selectors_match_their_pod_labels() -> None:
    for w in of_kind(*WORKLOADS):
        selector = w["spec"]["selector"]
        assert set(selector) == {"matchLabels"}, f"{w['metadata']['name']}: use matchLabels only"
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert selector["matchLabels"].items() <= labels.items(), w["metadata"]["name"]


def test_containers_have_images_ports_probes_resources_and_no_privileges() -> None:
    for w in of_kind(*WORKLOADS):
        spec, name = pod(w), w["metadata"]["name"]
        pod_security = spec.get("securityContext", {})
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{c['name']}"
            image = c.get("image", "")
            assert ":" in image and not image.endswith(":latest"), (
                f"{where}: image {image!r} has no pinned tag"
            )
            security = {**pod_security, **c.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True and security.get("runAsUser", 0) != 0, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert "ALL" in security.get("capabilities", {}).get("drop", []), where
            assert "memory" in c.get("resources", {}).get("limits", {}), f"{where}: no memory limit"
            assert c["resources"].get("requests"), f"{where}: no resource requests"
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}: mounts undeclared volume {mount['name']}"
        for c in spec["containers"]:
            where = f"{name}/{c['name']}"
            declared = port_refs(c)
            assert declared, f"{where}: no ports"
            assert {"readinessProbe", "livenessProbe"} <= c.keys(), f"{where}: needs readiness and liveness"
            for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(probe_name)
                if probe is None or "exec" in probe:
                    continue
                action = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
                assert action["port"] in declared, (
                    f"{where}: {probe_name} port {action['port']!r} not declared"
                )


def test_services_select_workloads_and_target_their_ports() -> None:
    workloads = of_kind(*WORKLOADS)
    for svc in of_kind("Service"):
        name, selector = svc["metadata"]["name"], svc["spec"].get("selector", {})
        selected = [
            w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selector and selected, f"Service {name} selects no workload ({selector})"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for w in selected:
                declared = set().union(*(port_refs(c) for c in pod(w)["containers"]))
                assert target in declared, f"Service {name}: {w['metadata']['name']} has no port {target!r}"


def test_the_admin_api_is_reachable_only_inside_the_cluster() -> None:
    admin_services = [
        s for s in of_kind("Service") if any(p.get("targetPort") == "admin" for p in s["spec"]["ports"])
    ]
    assert admin_services, "no Service for the admin port"
    for svc in admin_services:
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]
    public = [s for s in of_kind("Service") if s["spec"].get("type") in ("LoadBalancer", "NodePort")]
    assert public and all(p.get("targetPort") == "http" for s in public for p in s["spec"]["ports"])


def test_referenced_configmaps_and_secrets_exist_with_their_keys() -> None:
    def keys(kind: str, name: str) -> set[str]:
        doc = named(kind, name)
        return set(doc.get("data", {})) | set(doc.get("stringData", {}))

    for w in of_kind(*WORKLOADS):
        spec = pod(w)
        for v in spec.get("volumes", []):
            if "configMap" in v:
                cm = v["configMap"]
                assert {i["key"] for i in cm.get("items", [])} <= keys("ConfigMap", cm["name"])
            if "secret" in v:
                assert keys("Secret", v["secret"]["secretName"])
        for c in spec.get("initContainers", []) + spec["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if field in ref:
                        assert ref[field]["key"] in keys(kind, ref[field]["name"]), (
                            f"{c['name']}: {env['name']}"
                        )


def test_admin_token_comes_from_a_secret() -> None:
    for w in gateways():
        (main,) = pod(w)["containers"]
        env = {e["name"]: e for e in main.get("env", [])}
        assert "secretKeyRef" in env["EDGEFN_ADMIN_TOKEN"]["valueFrom"], w["metadata"]["name"]


def test_one_gateway_deployment_per_region_with_its_config_and_budget(image: Image) -> None:
    tomls = configmap_tomls()
    regions = []
    for w in gateways():
        name, spec, region = w["metadata"]["name"], pod(w), region_of(w)
        regions.append(region)
        (main,) = spec["containers"]
        assert "command" not in main and "args" not in main, f"{name}: runs the image's ENTRYPOINT as is"
        (render,) = spec["initContainers"]
        env = {e["name"]: e.get("value") for e in render["env"]}
        assert env["EDGEFN_REGION"] == region, name
        (template,) = [v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v]
        text = tomls[f"{template}/{region}.toml"]
        node = tomllib.loads(text)["node"]
        assert node["region"] == region, f"{template}/{region}.toml serves region {node['region']}"
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert ports == {"http": toml_port(text, "listen"), "admin": toml_port(text, "admin_listen")}, name
        mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
        assert str(image.config_path.parent) in mounts, (
            f"{name}: nothing mounted where the image reads its config"
        )
        assert node["data_dir"] in mounts and not mounts[node["data_dir"]].get("readOnly"), name
        assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"
        labels = w["spec"]["template"]["metadata"]["labels"]
        budgets = [
            b
            for b in of_kind("PodDisruptionBudget")
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(budgets) == 1 and budgets[0]["spec"].get("minAvailable", 0) >= 1, (
            f"{name}: PodDisruptionBudget"
        )
        others = [g for g in gateways() if g is not w]
        assert not any(
            budgets[0]["spec"]["selector"]["matchLabels"].items()
            <= o["spec"]["template"]["metadata"]["labels"].items()
            for o in others
        ), f"{name}: its budget also covers another region"
    assert sorted(regions) == ["eu-west", "us-east"]
    assert sorted(k.split("/", 1)[1] for k in tomls) == [f"{r}.toml" for r in sorted(regions)]


def test_every_configmap_toml_is_a_valid_config_in_the_image(fake_root: FakeRoot) -> None:
    services = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in of_kind("Service")}
    tomls = configmap_tomls()
    assert tomls, "no ConfigMap holds an edgefn.toml"
    for where, text in tomls.items():
        config = load_or_fail(fake_root.install_config(text), f"ConfigMap {where}")
        redis = urlsplit(config.node.control_plane)
        assert redis.scheme == "redis" and redis.port in services.get(redis.hostname or "", set()), where
        for origin in config.origins.values():
            for endpoint in origin.endpoints:
                url = urlsplit(endpoint.url)
                assert url.port in services.get(url.hostname or "", set()), (
                    f"{where}: {endpoint.url} is no Service"
                )


def test_render_config_init_container_writes_the_config_the_node_loads(
    fake_root: FakeRoot, image: Image
) -> None:
    for w in gateways():
        name, spec = w["metadata"]["name"], pod(w)
        (render,), (main,) = spec["initContainers"], spec["containers"]
        config_dir = str(image.config_path.parent)
        (volume,) = [m["name"] for m in main["volumeMounts"] if m["mountPath"] == config_dir]
        assert {"name": volume, "mountPath": config_dir} in render["volumeMounts"], (
            f"{name}: init writes elsewhere"
        )
        script = render["command"][-1]
        for mount in sorted(render["volumeMounts"], key=lambda m: -len(m["mountPath"])):
            host = fake_root.path(mount["mountPath"])
            host.mkdir(parents=True, exist_ok=True)
            (source,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
            if "configMap" in source:
                for key, text in named("ConfigMap", source["configMap"]["name"])["data"].items():
                    (host / key).write_text(text)
            script = script.replace(mount["mountPath"], str(host))
        pod_name = f"{name}-5d8f7c9b6-x2x7q"
        env = {"PATH": os.environ["PATH"]}
        for e in render["env"]:
            field = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            env[e["name"]] = pod_name if field == "metadata.name" else e["value"]
        run = subprocess.run(
            [*render["command"][:-1], script], env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        rendered = fake_root.path(image.config_path)
        config = load_or_fail(rendered, f"{rendered.name} rendered by {name}/{render['name']}")
        assert config.node.name == pod_name and config.node.region == region_of(w)


# --- Compose ----------------------------------------------------------------------------------

COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def compose_nodes(image: Image) -> dict[str, Path]:
    """edgefn node services -> the host file each mounts where the image reads its config."""
    nodes = {}
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source, target, *_ = volume.split(":")
            if target == str(image.config_path):
                nodes[name] = (DEPLOY / source).resolve()
    return nodes


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert not errors, "\n".join(errors)
    broken = {**COMPOSE, "services": {**SERVICES, "redis": {**SERVICES["redis"], "helthcheck": {}}}}
    assert not validator.is_valid(broken), "the compose schema accepts a misspelt key"


def test_compose_dependencies_exist_and_wait_for_health() -> None:
    for name, service in SERVICES.items():
        for dependency, how in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
            if how.get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{dependency} has no healthcheck to wait for"
        if "build" in service:
            build = service["build"]
            assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_compose_runs_two_nodes_on_redis_with_valid_configs(fake_root: FakeRoot, image: Image) -> None:
    nodes = compose_nodes(image)
    assert len(nodes) == 2, nodes
    names, regions = set(), set()
    for service_name, source in nodes.items():
        service = SERVICES[service_name]
        assert source.is_file(), f"{service_name} mounts {source}, which does not exist"
        text = source.read_text()
        config = load_or_fail(fake_root.install_config(text), f"{source.relative_to(ROOT)} ({service_name})")
        names.add(config.node.name)
        regions.add(config.node.region)
        redis = urlsplit(config.node.control_plane)
        assert redis.scheme == "redis" and redis.hostname in SERVICES, service_name
        command = SERVICES[redis.hostname].get("command", [])
        served = int(command[command.index("--port") + 1]) if "--port" in command else 6379
        assert (redis.port or 6379) == served, f"{service_name}: Redis listens on {served}"
        assert redis.hostname in service["depends_on"], f"{service_name} starts before Redis"
        for origin in config.origins.values():
            for endpoint in origin.endpoints:
                host = urlsplit(endpoint.url).hostname
                assert host in SERVICES and host in service["depends_on"], f"{service_name}: {endpoint.url}"
        published = {int(p.rsplit(":", 1)[1]) for p in service["ports"]}
        assert published == {toml_port(text, "listen"), toml_port(text, "admin_listen")}, service_name
        admin_binding = [p for p in service["ports"] if p.endswith(f":{toml_port(text, 'admin_listen')}")]
        assert all(p.startswith("127.0.0.1:") for p in admin_binding), (
            f"{service_name}: admin port open to all"
        )
        targets = {v.split(":")[1] for v in service["volumes"]}
        assert str(config.node.data_dir) in targets, f"{service_name}: data_dir is not on a volume"
        assert service.get("read_only") is True and "/tmp" in service.get("tmpfs", [])
        assert "EDGEFN_ADMIN_TOKEN" in service["environment"]
        assert f":{toml_port(text, 'admin_listen')}/healthz" in " ".join(service["healthcheck"]["test"])
    assert len(names) == 2 and regions == {"eu-west", "us-east"}


def test_docs_name_every_deploy_file() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file():
            assert str(path.relative_to(ROOT)) in docs, (
                f"docs/deploy.md does not mention {path.relative_to(ROOT)}"
            )
