"""Every Kubernetes manifest under deploy/k8s validates against the Kubernetes API schemas.

kubernetes-validate (PyPI) bundles the OpenAPI schemas of each Kubernetes release, so this runs
offline. Resources are checked in strict mode (an unknown or misspelt field fails) against the
oldest and the newest release it bundles that we support. KEDA's custom resources are not in
those schemas: they are checked against ``keda.schema.yaml`` beside this file, written by hand
from KEDA's documented CRD fields. Kustomization files are kustomize's, not the API server's:
their resources must exist and validate; their patches are fragments, checked to name a resource
of the base they patch.
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


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def patches() -> dict[Path, Path]:
    """Every patch file named by a kustomization, and that kustomization's folder."""
    found = {}
    for path in K8S.rglob("kustomization.yaml"):
        for patch in load(path)[0].get("patches", []):
            found[(path.parent / patch["path"]).resolve()] = path.parent
    return found


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.resolve() not in PATCHES:
            docs += [(f"{path.relative_to(K8S)}#{i}:{doc.get('kind')}", doc) for i, doc in enumerate(load(path))]
    return docs


def resources_of(folder: Path) -> set[tuple[str, str]]:
    """(kind, name) of every resource a kustomization folder builds from, bases included."""
    kustomization = load(folder / "kustomization.yaml")[0]
    found = set()
    for entry in kustomization.get("resources", []):
        target = (folder / entry).resolve()
        if target.is_dir():
            found |= resources_of(target)
        else:
            found |= {(d["kind"], d["metadata"]["name"]) for d in load(target)}
    return found


PATCHES = patches()
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


@pytest.mark.parametrize("patch", sorted(PATCHES), ids=[str(p.relative_to(K8S)) for p in sorted(PATCHES)])
def test_every_patch_names_a_resource_it_patches(patch: Path) -> None:
    """Each kustomize patch targets a resource (kind and name) that its kustomization builds."""
    targets = resources_of(PATCHES[patch])
    for doc in load(patch):
        assert {"apiVersion", "kind", "metadata"} <= set(doc)
        assert (doc["kind"], doc["metadata"]["name"]) in targets, f"{patch.name} patches nothing that exists"
