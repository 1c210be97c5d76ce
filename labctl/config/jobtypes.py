"""Job types: each `pipelines/<type>.py` declares its interface; the lab's config adjusts it.

A pipelines module declares a module-level literal

    INTERFACE = {"help": "...", "outputs": ["x.h5"], "options": {"n": {"type": "int"}},
                 "splittable": False, "merge_with": None, "resources": {"mem": "4G"},
                 "max_resources": {"mem": "64G"}}

read from the module's source by labctl.jobs.declarations, at a git commit or in the working
tree, without importing it (the lab server needs none of the pipelines' packages). The config's
`job_types:` replaces declared fields, adds resources per cluster, or defines a type of its own
(with `entry`); `offered_job_types` restricts which types are offered.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from labctl.errors import ConfigError
from labctl.settings import Settings

ENTRY = r"^[a-z_][a-z0-9_]*$"

TIME: str = r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$"
"""SLURM's `--time` formats: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH[:MM[:SS]]`."""
MEMORY: str = r"^\d+[KMGT]?$"
"""SLURM's `--mem` format: a number of megabytes, or with a K, M, G or T suffix."""
_MEM_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def slurm_minutes(time: str) -> float:
    """A `--time` value (see TIME) in minutes."""
    days, _, clock = time.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = [*parts, 0, 0][:3]
    elif len(parts) == 3:  # HH:MM:SS
        hours, minutes, seconds = parts
    else:  # MM or MM:SS
        hours, minutes, seconds = 0, parts[0], (parts[1:] or [0])[0]
    return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60


def slurm_megabytes(mem: str) -> float:
    """A `--mem` value (see MEMORY) in megabytes."""
    unit = mem[-1] if mem[-1] in _MEM_UNITS else "M"
    return float(mem.rstrip("KMGT")) * _MEM_UNITS[unit]


class Resources(Settings):
    """What a SLURM job asks for; a job type's resources override the cluster's defaults."""

    time: str | None = Field(default=None, pattern=TIME)
    mem: str | None = Field(default=None, pattern=MEMORY)
    cpus: int | None = Field(default=None, ge=1, le=1024)
    partition: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")

    def over(self, defaults: Resources) -> Resources:
        """These resources with every unset one taken from `defaults`."""
        return Resources(**{**defaults.model_dump(), **self.model_dump(exclude_none=True)})


def _over(mine: Resources | None, base: Resources | None) -> Resources | None:
    return base if mine is None else mine if base is None else mine.over(base)


class OptionSpec(Settings):
    """One option a job type accepts in `job_options`."""

    type: Literal["str", "int", "float", "bool"] = "str"
    default: str | int | float | bool | None = None
    help: str = ""


class Interface(Settings):
    """What a job type declares: what it makes, which options it takes, what it asks for."""

    help: str = ""
    outputs: list[str] = Field(default_factory=list, description="files the job must produce")
    options: dict[str, OptionSpec] = Field(default_factory=dict)
    splittable: bool = Field(default=False, description="accepts split_idx / num_splits")
    resources: Resources = Field(default_factory=Resources)
    max_resources: Resources | None = Field(
        default=None, description="limits up to which job_options time/mem/cpus may ask for more"
    )
    merge_with: str | None = Field(
        default=None, description="job type queued on a job array's outputs once all tasks ended"
    )

    @field_validator("outputs")
    @classmethod
    def _relative(cls, outputs: list[str]) -> list[str]:
        for name in outputs:
            if name.startswith("/") or ".." in name.split("/") or not name or "\n" in name:
                raise ValueError(
                    f"output {name!r} must be a relative path without '..' or line break"
                )
        return outputs


class JobType(Interface):
    """A job type as labctl runs it: the pipelines module to run, and its interface."""

    entry: str = Field(pattern=ENTRY, description="pipelines module")


class ClusterResources(Settings):
    """A job type's resources on one cluster, each over the type's own."""

    resources: Resources = Field(default_factory=Resources)
    max_resources: Resources | None = None


class JobTypeConfig(Interface):
    """The config's word on a job type: each field it gives replaces the declared one; with
    `entry` it is a job type of its own (for code that declares no interface, or a variant)."""

    entry: str | None = Field(
        default=None, pattern=ENTRY, description="pipelines module; default: the type's name"
    )
    clusters: dict[str, ClusterResources] = Field(
        default_factory=dict, description="resources on some clusters, over the type's"
    )

    @model_serializer(mode="wrap")
    def _as_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Only the fields the config gave, so that a saved config overrides the same ones."""
        dumped: dict[str, Any] = handler(self)
        return {key: value for key, value in dumped.items() if key in self.model_fields_set}


@dataclass(frozen=True)
class JobTypes:
    """The job types offered at one version of pipelines/: what its modules declare, adjusted,
    added to and restricted by the config."""

    declared: Mapping[str, JobType]
    configured: Mapping[str, JobTypeConfig]
    offered: Collection[str] | None = None

    def names(self) -> list[str]:
        """The offered job types: the declared ones, then those the config defines."""
        own = [n for n, given in self.configured.items() if n not in self.declared and given.entry]
        return [n for n in [*self.declared, *own] if self.offered is None or n in self.offered]

    def get(self, name: str, cluster: str | None = None) -> JobType | None:
        """Job type `name` as it runs on `cluster`; None if it is not offered here."""
        return self._resolve(name, cluster) if name in self.names() else None

    def listing(self, cluster: str | None = None) -> dict[str, JobType]:
        """Every offered job type as it runs on `cluster`; ConfigError if the config offers one
        that is not there."""
        missing = sorted(set(self.offered or ()) - set(self.names()))
        if missing:
            raise ConfigError(
                f"offered_job_types: no job type {', '.join(missing)} is declared in pipelines/ "
                "or defined under job_types"
            )
        return {name: self._resolve(name, cluster) for name in self.names()}

    def _resolve(self, name: str, cluster: str | None) -> JobType:
        given = self.configured.get(name, JobTypeConfig())
        base = self.declared.get(given.entry or name)
        fields = base.model_dump() if base else {}
        fields.update((key, getattr(given, key)) for key in given.model_fields_set - {"clusters"})
        spec = JobType.model_validate(fields)
        here = given.clusters.get(cluster) if cluster else None
        if here is not None:
            spec = spec.model_copy(
                update={
                    "resources": here.resources.over(spec.resources),
                    "max_resources": _over(here.max_resources, spec.max_resources),
                }
            )
        if spec.merge_with is not None and spec.merge_with not in self.names():
            raise ConfigError(
                f"job type {name}: merge_with {spec.merge_with!r} is not an offered job type"
            )
        return spec
