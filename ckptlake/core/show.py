"""`show REF`: everything about one version, from its manifest, its aliases and one step of
lineage in each direction (parents, inputs and children, each with its status)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..format.refs import Ref
from ..results import _Result
from ..store.base import Store
from . import catalog
from .lineage import lineage


@dataclass(frozen=True)
class VersionDetail(_Result):
    artifact: str
    version: int
    kind: str  # "dir" | "file"
    step: int | None
    created: datetime
    created_by: str
    tool: str
    total_bytes: int
    stored_bytes: int  # the distinct chunk objects as stored (encoded ones smaller)
    file_count: int
    chunks: int  # distinct chunk objects
    files: list[dict[str, Any]]  # {"path", "size"} (+ "executable", "symlink", "tensors")
    dirs: list[str]
    metrics: dict[str, float]
    metadata: dict[str, str]
    provenance: dict[str, Any]
    aliases: list[str]
    parents: list[dict[str, Any]]  # {"artifact", "version", "relation", "status", "step"}
    inputs: list[dict[str, str]]
    children: list[dict[str, Any]]  # {"artifact", "version", "relation", "status", "step"}

    @property
    def ref(self) -> str:
        return f"{self.artifact}@v{self.version}"


def show(store: Store, ref: str | Ref) -> VersionDetail:
    m = catalog.resolve(store, ref)
    alias_map = catalog.aliases(store, m.artifact)
    graph = lineage(store, f"{m.artifact}@v{m.version}", direction="both", depth=1)
    root = graph.root

    def edge_doc(edge: Any, other_id: str) -> dict[str, Any]:
        n = graph.node(other_id)
        return {"artifact": n.artifact, "version": n.version, "relation": edge.relation,
                "status": n.status, "step": n.step, "deleted": n.deleted}

    children = sorted((edge_doc(e, e.child) for e in graph.children_of(root)),
                      key=lambda d: (d["artifact"], d["version"]))
    status = {e.parent: graph.node(e.parent) for e in graph.parents_of(root)}
    parents = []
    for p in m.parents:
        n = status.get(f"{p['artifact']}@v{p['version']}")
        parents.append({**p, "status": n.status if n else "missing",
                        "step": n.step if n else None, "deleted": n.deleted if n else None})
    files = []
    for e in m.files:
        doc: dict[str, Any] = {"path": e.path}
        if e.symlink is not None:
            doc["symlink"] = e.symlink
        else:
            doc["size"] = e.size
            if e.executable:
                doc["executable"] = True
            if e.tensors is not None:
                doc["tensors"] = len(e.tensors)
        files.append(doc)
    return VersionDetail(
        artifact=m.artifact, version=m.version, kind=m.kind, step=m.step, created=m.created,
        created_by=m.created_by, tool=m.tool, total_bytes=m.total_bytes,
        stored_bytes=m.stored_bytes, file_count=len(m.files), chunks=len(m.chunk_digests()),
        files=files,
        dirs=list(m.dirs), metrics=dict(m.metrics), metadata=dict(m.metadata),
        provenance=dict(m.provenance),
        aliases=sorted(a for a, v in alias_map.items() if v == m.version),
        parents=parents, inputs=[dict(i) for i in m.inputs], children=children)
