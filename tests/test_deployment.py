"""compose.yaml and the Kubernetes manifests: valid against Kubernetes' schemas (offline,
from the kubernetes-validate package), and every `autan` command in them one the CLI takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from runtime.ops.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "docs" / "kubernetes"
KUBERNETES = "1.31.0"


def _resources() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((MANIFESTS / name).read_text()):
            if document:
                found.append(
                    (f"{name}:{document['kind']}/{document['metadata']['name']}", document)
                )
    return found


@pytest.mark.parametrize(
    ("where", "resource"), _resources(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_manifest_is_valid_kubernetes(where: str, resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES, strict=True)


def test_the_fleet_on_kubernetes_has_its_parts() -> None:
    by_kind = {(r["kind"], r["metadata"]["name"]): r for _, r in _resources()}
    control = by_kind["Deployment", "autan-control"]
    assert control["spec"]["replicas"] == 2
    agents = by_kind["DaemonSet", "autan-agent"]["spec"]["template"]["spec"]
    assert agents["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert agents["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert ("Service", "autan-gateway") in by_kind
    nats = yaml.safe_load((MANIFESTS / "nats-values.yaml").read_text())
    assert nats["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert nats["config"]["jetstream"]["fileStore"]["pvc"]["enabled"] is True


def _autan_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for where, resource in _resources():
        spec = resource.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            if container["image"] == "autan":
                commands.append((where, container["args"]))
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        if service.get("build"):
            commands.append((f"compose:{name}", service["command"]))
    return commands


@pytest.mark.parametrize(
    ("where", "args"), _autan_commands(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_autan_command_is_one_the_cli_takes(where: str, args: list[str]) -> None:
    parsed = _parser().parse_args([a.replace("$(NODE_NAME)", "node-1") for a in args])
    assert parsed.command in {"serve", "agent", "gateway"}


def test_compose_runs_a_fleet_on_a_nats_cluster() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    nats = [name for name in services if name.startswith("nats-")]
    assert len(nats) == 3
    for name in nats:
        command = services[name]["command"]
        routes = command[command.index("--routes") + 1].split(",")
        assert sorted(r.split("//")[1].split(":")[0] for r in routes) == sorted(set(nats) - {name})
    url = compose["x-autan-env"]["AUTAN_NATS_URL"]
    assert sorted(u.split("//")[1].split(":")[0] for u in url.split(",")) == sorted(nats)
    roles = [s["command"][0] for s in services.values() if s.get("build")]
    assert roles.count("serve") == 2
    assert roles.count("agent") == 2
    assert all(
        "--fleet" in s["command"] for s in services.values() if s.get("command", [""])[0] == "serve"
    )
    assert not services["minio"]["image"].endswith(":latest")
