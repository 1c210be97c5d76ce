"""How a dataset's results were derived: its input files, the jobs that read them, the files
they wrote and the jobs that read those in turn (a merge reads its array's shards, a follow-up
its parent's results).

A file is what it is, not what it is called: files are one node per SHA-256, so an output that a
later job took as an input links the two jobs, whatever either named it. A job with no recorded
checksums (not completed yet) hangs under its parent job, if it has one, else under the dataset.

Pure: it takes stored jobs; `labctl lineage` prints it (a tree, `--json`, `--dot`) and the
dataset's page draws the DOT with graphviz.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from labctl.jobs.timeline import bytes_text
from labctl.model.job import Job

Kind = Literal["file", "job"]
How = Literal["input", "output", "follow-up", "rerun"]


@dataclass(frozen=True)
class Node:
    """A file (`id` = `file:SHA256`) or a job (`id` = `job:JOB_ID`) and how to label it."""

    id: str
    kind: Kind
    label: str
    detail: str


@dataclass(frozen=True)
class Edge:
    """`source` was read by, or written by, or run again as `target`."""

    source: str
    target: str
    how: How
    note: str = ""  # a rerun's verdict, if it was compared


@dataclass
class Lineage:
    dataset: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    @classmethod
    def of(cls, dataset: str, jobs: Sequence[Job]) -> Lineage:
        seen = cls(dataset)
        for job in sorted(jobs, key=lambda job: job.created_at):
            seen._add_job(job)
        return seen

    def _add_job(self, job: Job) -> None:
        commit = str(job.pipelines.get("commit") or "?")[:12]
        node = Node(
            f"job:{job.job_id}",
            "job",
            f"{job.job_id} {job.job_type}",
            f"{job.status} · pipelines@{commit} · {job.user} · "
            f"{job.created_at:%Y-%m-%d %H:%M} · {job.compute_cluster}",
        )
        self.nodes[node.id] = node
        inputs = [item for item in job.input_checksums if item.get("sha256")]
        for item in inputs:
            self._edge(self._file(item["name"], item.get("size"), item["sha256"]), node.id, "input")
        for result in job.results:
            self._edge(node.id, self._file(result.name, result.size, result.sha256), "output")
        if job.rerun is not None and f"job:{job.rerun.job_id}" in self.nodes:
            verdict = str(job.reproduction.match) if job.reproduction else ""
            self._edge(f"job:{job.rerun.job_id}", node.id, "rerun", verdict)
        elif job.parent_job and f"job:{job.parent_job}" in self.nodes and not inputs:
            self._edge(f"job:{job.parent_job}", node.id, "follow-up")

    def _file(self, name: str, size: int | None, sha256: str) -> str:
        key = f"file:{sha256}"
        if key not in self.nodes:  # the first name it was seen under
            detail = f"{bytes_text(size)} · sha256 {sha256[:12]}"
            self.nodes[key] = Node(key, "file", name, detail)
        return key

    def _edge(self, source: str, target: str, how: How, note: str = "") -> None:
        edge = Edge(source, target, how, note)
        if edge not in self.edges:
            self.edges.append(edge)

    def children(self, node_id: str) -> list[str]:
        return [edge.target for edge in self.edges if edge.source == node_id]

    @property
    def roots(self) -> list[str]:
        """Nodes nothing leads to: the dataset's own files, and jobs with no recorded inputs."""
        led_to = {edge.target for edge in self.edges}
        return [node_id for node_id in self.nodes if node_id not in led_to]

    def tree(self) -> list[str]:
        """The lineage as an indented tree; a part already shown once is named, not repeated."""
        lines = [self.dataset]
        shown: set[str] = set()
        roots = self.roots
        for index, root in enumerate(roots):
            lines += self._branch(root, "", index == len(roots) - 1, shown)
        return lines

    def _branch(
        self, node_id: str, prefix: str, last: bool, shown: set[str], via: Edge | None = None
    ) -> Iterator[str]:
        node = self.nodes[node_id]
        again = node_id in shown
        how = ""
        if via is not None and via.how in ("follow-up", "rerun"):
            how = f"{via.how}{f' ({via.note})' if via.note else ''}: "
        yield (
            f"{prefix}{'└── ' if last else '├── '}{how}{node.label} ({node.detail})"
            + (" ... shown above" if again and self.children(node_id) else "")
        )
        if again:
            return
        shown.add(node_id)
        below = [edge for edge in self.edges if edge.source == node_id]
        inner = prefix + ("    " if last else "│   ")
        for index, edge in enumerate(below):
            yield from self._branch(edge.target, inner, index == len(below) - 1, shown, edge)

    def as_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "nodes": [vars(node) for node in self.nodes.values()],
            "edges": [vars(edge) for edge in self.edges],
        }

    def dot(self) -> str:
        """The lineage in graphviz's DOT, left to right: files as boxes, jobs as rounded ones."""
        lines = [
            f"digraph {_quoted(self.dataset)} {{",
            "  rankdir=LR;",
            '  node [fontname="Helvetica", fontsize=10];',
        ]
        for index, node in enumerate(self.nodes.values()):
            shape = 'shape=box, style="rounded,filled", fillcolor="#e7f0fd"'
            if node.kind == "file":
                shape = 'shape=note, style=filled, fillcolor="#f5f7fa"'
            label = _quoted("\n".join([node.label, *node.detail.split(" · ")]))
            lines.append(f"  n{index} [{shape}, label={label}];")
        number = {node_id: index for index, node_id in enumerate(self.nodes)}
        for edge in self.edges:
            style = ""
            if edge.how in ("follow-up", "rerun"):
                said = f"{edge.how}: {edge.note}" if edge.note else edge.how
                style = f" [style=dashed, label={_quoted(said)}]"
            lines.append(f"  n{number[edge.source]} -> n{number[edge.target]}{style};")
        lines.append("}")
        return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """A DOT string: JSON's escaping of quotes, backslashes and line breaks is DOT's."""
    return json.dumps(text, ensure_ascii=False)
