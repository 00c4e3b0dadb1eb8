"""The Databricks asset bundle as data: databricks.yml, its includes, variables and targets.

`seglib run` takes its task graph and parameter defaults from here, so the local run and the deployed
job cannot drift; `seglib validate` checks the bundle offline (see validate.py).
"""
from __future__ import annotations

import ast
import copy
import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import SeglibError

VAR_REF = re.compile(r"\$\{var\.([A-Za-z0-9_]+)\}")
# Lists whose items a target override merges by key, as the Databricks CLI does.
_MERGE_KEYS = {"tasks": "task_key", "job_clusters": "job_cluster_key", "environments": "environment_key",
               "parameters": "name"}


class BundleError(SeglibError):
    """The bundle files cannot be read or do not make sense."""


@dataclass
class Task:
    key: str
    notebook: Path | None
    depends_on: list[str]


@dataclass
class Bundle:
    root: Path
    config: dict                      # databricks.yml merged with its includes (not resolved)
    files: dict[str, Path] = field(default_factory=dict)  # resource key -> the YAML file defining it
    target: str | None = None
    # BUNDLE_VAR_x overrides a variable, as in the CLI; off to see the repository's own values
    environment: bool = True
    env: dict[str, str] | None = None  # where BUNDLE_VAR_x are read (None: os.environ)

    # ---- variables ------------------------------------------------------------------------------
    def variables(self) -> dict[str, str | None]:
        """Each declared variable's value for this target: --var/env BUNDLE_VAR_x, target, default."""
        values = {}
        overrides = (self.target_config().get("variables") or {})
        for name, spec in (self.config.get("variables") or {}).items():
            spec = spec or {}
            value = overrides.get(name, spec.get("default"))
            if self.environment:
                value = (os.environ if self.env is None else self.env).get(f"BUNDLE_VAR_{name}", value)
            values[name] = None if value is None else str(value)
        return values

    def resolve(self, value):
        """Substitute ${var.x} (other references, e.g. ${resources...}, are left as they are)."""
        if isinstance(value, str):
            variables = self.variables()

            def sub(m):
                if m.group(1) not in variables:
                    raise BundleError(f"${{var.{m.group(1)}}} is not declared under variables in databricks.yml")
                if variables[m.group(1)] is None:
                    raise BundleError(f"variable {m.group(1)} has no value; set --var or BUNDLE_VAR_{m.group(1)}")
                return variables[m.group(1)]
            return VAR_REF.sub(sub, value)
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    # ---- targets and resources --------------------------------------------------------------------
    def target_names(self) -> list[str]:
        return list((self.config.get("targets") or {}))

    def target_config(self) -> dict:
        targets = self.config.get("targets") or {}
        name = self.target or next((n for n, t in targets.items() if (t or {}).get("default")), None)
        if name is None:
            return {}
        if name not in targets:
            raise BundleError(f"target {name!r} is not defined in databricks.yml; targets: {', '.join(targets)}")
        return targets[name] or {}

    def resources(self, kind: str) -> dict[str, dict]:
        """Resources of a kind (jobs, dashboards, ...) with the target's overrides merged in."""
        base = copy.deepcopy((self.config.get("resources") or {}).get(kind) or {})
        for key, override in ((self.target_config().get("resources") or {}).get(kind) or {}).items():
            base[key] = _merge(base.get(key, {}), override)
        return base

    def job(self, key: str) -> dict:
        jobs = self.resources("jobs")
        if key not in jobs:
            raise BundleError(f"job {key!r} is not defined in resources/*.yml; jobs: {', '.join(jobs)}")
        return jobs[key]

    def job_file(self, key: str) -> Path:
        return self.files.get(f"jobs.{key}", self.root / "databricks.yml")

    def tasks(self, key: str) -> list[Task]:
        """The job's tasks in dependency order (ties keep their order in the file)."""
        job, base = self.job(key), self.job_file(key).parent
        tasks = []
        for t in job.get("tasks") or []:
            nb = (t.get("notebook_task") or {}).get("notebook_path")
            path = (base / nb).resolve() if nb else None
            if path is not None and path.suffix == "":
                path = path.with_suffix(".ipynb")  # the CLI accepts notebook paths without extension
            tasks.append(Task(t["task_key"], path, [d["task_key"] for d in t.get("depends_on") or []]))
        return _topological(tasks, key)

    def parameters(self, key: str) -> dict[str, str]:
        """The job's parameters and their defaults, variables resolved."""
        return {p["name"]: str(self.resolve(p.get("default", ""))) for p in self.job(key).get("parameters") or []}


def notebook_imports(notebook: Path) -> list[str]:
    """What a notebook's code cells import, in order: ``import a.b`` gives a.b; ``from a.b import c`` gives
    a.b and a.b.c (a module, or a name in a.b). Relative imports are skipped."""
    names: list[str] = []
    for cell in json.loads(Path(notebook).read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = cell["source"]
        try:
            tree = ast.parse(source if isinstance(source, str) else "".join(source))
        except SyntaxError:  # a cell with IPython magics: nothing to learn from it
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found = [node.module, *(f"{node.module}.{a.name}" for a in node.names if a.name != "*")]
            else:
                continue
            names += [n for n in found if n not in names]
    return names


def _merge(base, override):
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = _merge(base.get(k), v) if k in base else copy.deepcopy(v)
            if k in _MERGE_KEYS and isinstance(base.get(k), list) and isinstance(v, list):
                out[k] = _merge_list(base[k], v, _MERGE_KEYS[k])
        return out
    return copy.deepcopy(override)


def _merge_list(base: list, override: list, key: str) -> list:
    out = [copy.deepcopy(item) for item in base]
    index = {item.get(key): i for i, item in enumerate(out) if isinstance(item, dict)}
    for item in override:
        if isinstance(item, dict) and item.get(key) in index:
            out[index[item[key]]] = _merge(out[index[item[key]]], item)
        else:
            out.append(copy.deepcopy(item))
    return out


def _topological(tasks: list[Task], job: str) -> list[Task]:
    known = {t.key for t in tasks}
    for t in tasks:
        for d in t.depends_on:
            if d not in known:
                raise BundleError(f"job {job}: task {t.key} depends on {d!r}, which is not a task of the job")
    done, ordered = set(), []
    while len(ordered) < len(tasks):
        ready = [t for t in tasks if t.key not in done and set(t.depends_on) <= done]
        if not ready:
            raise BundleError(f"job {job}: the depends_on graph has a cycle among "
                              f"{', '.join(t.key for t in tasks if t.key not in done)}")
        ordered.append(ready[0])
        done.add(ready[0].key)
    return ordered


def find_root(start: Path | None = None) -> Path:
    """The folder holding databricks.yml: the cwd or a parent, else next to an editable install."""
    here = (start or Path.cwd()).resolve()
    for candidate in [here, *here.parents, Path(__file__).resolve().parents[2]]:
        if (candidate / "databricks.yml").is_file():
            return candidate
    raise BundleError("cannot find databricks.yml; run from the repository (or pass --bundle DIR)")


def load(root: Path | None = None, target: str | None = None, env: dict[str, str] | None = None) -> Bundle:
    """The bundle at *root*; *env* holds the BUNDLE_VAR_x overrides (None: os.environ)."""
    root = Path(root).resolve() if root else find_root()
    main = root / "databricks.yml"
    config = _read_yaml(main)
    files: dict[str, Path] = {}
    for kind, items in (config.get("resources") or {}).items():
        files.update({f"{kind}.{k}": main for k in items or {}})
    for pattern in config.get("include") or []:
        for name in sorted(glob.glob(str(root / pattern))):
            part = _read_yaml(Path(name))
            for kind, items in (part.get("resources") or {}).items():
                bucket = config.setdefault("resources", {}).setdefault(kind, {})
                for key, value in (items or {}).items():
                    if key in bucket:
                        raise BundleError(f"{kind}.{key} is defined twice ({files[f'{kind}.{key}'].name} and {name})")
                    bucket[key] = value
                    files[f"{kind}.{key}"] = Path(name)
            for section in ("variables", "targets"):
                if part.get(section):
                    config.setdefault(section, {}).update(part[section])
    bundle = Bundle(root, config, files, target, env=env)
    bundle.target_config()  # an unknown target fails here, with the list of targets
    return bundle


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path} does not exist") from None
    except yaml.YAMLError as e:
        raise BundleError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a YAML mapping")
    return data
