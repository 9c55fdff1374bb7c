"""Every Kubernetes manifest under deploy/k8s validates against the Kubernetes API schemas.

kubernetes-validate (PyPI) bundles the OpenAPI schemas of each Kubernetes release, so this runs
offline. Resources are checked in strict mode (an unknown or misspelt field fails) against the
oldest and the newest release it bundles that we support. KEDA's custom resources are not in
those schemas: they are checked against ``keda.schema.yaml`` beside this file, written by hand
from KEDA's documented CRD fields. Kustomization files are kustomize's, not the API server's:
their resources must exist and validate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
#: The oldest Kubernetes release still supported upstream when this was written, and the newest bundled.
VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
KEDA = yaml.safe_load((Path(__file__).with_name("keda.schema.yaml")).read_text())


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        for i, doc in enumerate(d for d in yaml.safe_load_all(path.read_text()) if d):
            docs.append((f"{path.relative_to(K8S)}#{i}:{doc.get('kind')}", doc))
    return docs


DOCS = documents()


def test_there_is_something_to_validate() -> None:
    """The manifests were found: Deployments, StatefulSets, Services, KEDA objects, Kustomizations."""
    kinds = {doc["kind"] for _, doc in DOCS}
    assert {"Deployment", "StatefulSet", "Service", "ScaledObject", "Kustomization"} <= kinds


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[n for n, _ in DOCS])
def test_manifest_validates(name: str, doc: dict[str, Any]) -> None:
    """The resource is valid: Kubernetes' strict schemas, KEDA's hand-written one, or a kustomization whose
    resources exist."""
    api_group = doc["apiVersion"].split("/")[0]
    if api_group == "keda.sh":
        jsonschema.validate(doc, {**KEDA, "$ref": f"#/$defs/{doc['kind']}"})
    elif api_group == "kustomize.config.k8s.io":
        assert doc["kind"] == "Kustomization"
        base = K8S / name.split("#")[0]
        for resource in doc.get("resources", []):
            assert (base.parent / resource).exists(), f"{name}: {resource} does not exist"
    else:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
