"""`seglib validate`: the bundle checked offline, before anyone deploys it.

- databricks.yml and its includes load; every target's jobs and dashboards load with the official
  databricks-bundles classes, which reject unknown keys and wrong types;
- every ${var.x} is declared; every depends_on names a task of the job;
- every notebook_path exists and is an nbformat-4 notebook with a tagged `parameters` cell;
- each job's parameters and its notebooks' parameters cells agree (names, and defaults of the knobs);
- every schedule, with its variables resolved in each target, is a valid typed CronSchedule (a known
  pause_status, a Quartz expression, a known time zone);
- a dashboard whose file_path names ${var.dashboard} has a file for every recipe's `dashboard`, and in each
  target the dashboard variable is the recipe variable's;
- every pipeline (Lakeflow) loads with the typed class; its root_path and library globs exist and hold
  Python that compiles; its seglib.* configuration parses (seglib.pipeline.Settings) in every target; a
  serverless one has a catalog and a schema; one whose sources import seglib installs it; a job's
  pipeline_task names a pipeline of this bundle;
- every recipe file in the repository (recipes/**/*.yml) reads and checks (seglib.recipes);
- optionally, the wheel builds and `import seglib` works from it in a clean venv.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from . import bundle as B
from .errors import ParameterError
from .params import LOCAL_ONLY

# The job sets these per deployment or per run; a notebook's own default (e.g. catalog "" = the
# session's, run_id "" = generated) may differ.
DEPLOYMENT_PARAMS = {"catalog", "run_id"}


def check(root: Path | None = None, env: dict[str, str] | None = None) -> list[str]:
    """All problems found (empty when the bundle is valid); *env*: the BUNDLE_VAR_x (None: os.environ)."""
    try:
        bundle = B.load(root, env=env)
    except B.BundleError as e:
        return [str(e)]
    problems = _undeclared_variables(bundle)
    for target in [None, *bundle.target_names()]:
        bundle.target = target
        where = f"target {target}" if target else "base configuration"
        problems += [f"{where}: {p}" for p in _typed_resources(bundle, need_compute=target is not None)]
        problems += [f"{where}: {p}" for p in _schedules(bundle)]
        problems += [f"{where}: {p}" for p in _pipelines(bundle)]
        problems += [f"{where}: {p}" for p in _dashboard_matches_recipe(bundle)]
    bundle.target = None
    problems += _dashboards_per_recipe(bundle)
    problems += _recipe_files(bundle.root)
    problems += _made_from_params(bundle.root)
    # The notebooks' defaults are the repository's: a user's BUNDLE_VAR_x for this deploy is not a drift.
    bundle.environment = False
    for job in bundle.resources("jobs"):
        problems += _job(bundle, job)
    return sorted(set(problems), key=problems.index)


def _undeclared_variables(bundle: B.Bundle) -> list[str]:
    declared = set(bundle.config.get("variables") or {})
    problems = []
    for path in sorted({bundle.root / "databricks.yml", *bundle.files.values()}):
        for name in sorted(set(B.VAR_REF.findall(path.read_text())) - declared):
            problems.append(f"{path.relative_to(bundle.root)}: ${{var.{name}}} is not declared under variables")
    return problems


def _typed_resources(bundle: B.Bundle, need_compute: bool = False) -> list[str]:
    from databricks.bundles.dashboards import Dashboard
    from databricks.bundles.jobs import Job
    from databricks.bundles.pipelines import Pipeline
    problems = []
    for kind, cls in (("jobs", Job), ("dashboards", Dashboard), ("pipelines", Pipeline)):
        for key, spec in bundle.resources(kind).items():
            try:
                cls.from_dict(spec)
            except Exception as e:  # the package raises ValueError/TypeError naming the field
                problems.append(f"{kind}.{key}: {e}")
            if kind == "jobs":
                problems += _task_compute(key, spec, need_compute)
            if kind == "dashboards" and spec.get("file_path"):
                try:  # the CLI substitutes variables (e.g. ${var.recipe}) before it reads the file
                    path = bundle.resolve(spec["file_path"])
                except B.BundleError as e:
                    problems.append(f"dashboards.{key}: file_path: {e}")
                    continue
                if not (bundle.files[f"dashboards.{key}"].parent / path).is_file():
                    shown = path if path == spec["file_path"] else f"{spec['file_path']} ({path})"
                    problems.append(f"dashboards.{key}: file_path {shown} does not exist")
    return problems


# Quartz: seconds minutes hours day-of-month month day-of-week [year]
_QUARTZ_FIELDS = (6, 7)
# Java also takes custom offsets, which the IANA database lacks: GMT+1, GMT-05:30, UTC+0100, ...
_JAVA_OFFSET_ZONE = re.compile(r"(GMT|UTC)[+-]\d{1,2}(:?\d{2})?")


def _schedules(bundle: B.Bundle) -> list[str]:
    """Each job's schedule with this target's variable values, through the typed CronSchedule (the
    unresolved ${var.x} passes any typed check, so a pause_status of PAUSD would reach the deploy)."""
    from zoneinfo import available_timezones

    from databricks.bundles.jobs import CronSchedule
    problems, zones = [], available_timezones()  # empty where there is no time zone database: no check
    for key, spec in bundle.resources("jobs").items():
        if not spec.get("schedule"):
            continue
        where = f"jobs.{key}: schedule"
        try:
            schedule = bundle.resolve(spec["schedule"])
            CronSchedule.from_dict(schedule)
        except Exception as e:  # BundleError (a variable without value) or the typed class's ValueError
            problems.append(f"{where}: {e}")
            continue
        if not schedule.get("pause_status"):
            problems.append(f"{where}: no pause_status; the Databricks default is UNPAUSED, say it explicitly")
        if len(str(schedule.get("quartz_cron_expression", "")).split()) not in _QUARTZ_FIELDS:
            problems.append(f"{where}: quartz_cron_expression {schedule.get('quartz_cron_expression')!r} is not "
                            f"a Quartz expression (seconds minutes hours day-of-month month day-of-week [year])")
        zone = str(schedule.get("timezone_id", ""))
        if zones and zone not in zones and not _JAVA_OFFSET_ZONE.fullmatch(zone):
            problems.append(f"{where}: timezone_id {schedule.get('timezone_id')!r} is not a known time zone")
    return problems


_PIPELINE_REF = re.compile(r"\$\{resources\.pipelines\.([A-Za-z0-9_]+)\.id\}")
_IMPORTS_SEGLIB = re.compile(r"^\s*(from|import)\s+seglib\b", re.MULTILINE)


def _pipelines(bundle: B.Bundle) -> list[str]:
    """What the typed Pipeline class cannot see: the sources on disk, the values of the configuration this
    target deploys, seglib installed where the sources import it, and the jobs' pipeline tasks."""
    from .pipeline import AS_OF, CONF_PREFIX, RFM_BINS, SOURCE_TABLE, Settings
    problems, pipelines = [], bundle.resources("pipelines")
    for key, spec in pipelines.items():
        where = f"pipelines.{key}"
        base = bundle.files[where].parent
        if spec.get("root_path") and not (base / spec["root_path"]).is_dir():
            problems.append(f"{where}: root_path {spec['root_path']} is not a folder")
        sources: list[Path] = []
        for library in spec.get("libraries") or []:
            pattern = str((library.get("glob") or {}).get("include") or (library.get("file") or {}).get("path") or "")
            if not pattern:
                continue
            folder = base / pattern.removesuffix("/**")
            found = sorted(folder.rglob("*")) if pattern.endswith("/**") else [folder]
            found = [f for f in found if f.is_file() and f.suffix in (".py", ".sql") and "__pycache__" not in f.parts]
            if not found:
                problems.append(f"{where}: library {pattern} matches no .py or .sql file")
            sources += found
        for source in sources:
            if source.suffix == ".py":
                try:
                    compile(source.read_text(), str(source), "exec")
                except SyntaxError as e:
                    problems.append(f"{where}: {source.relative_to(bundle.root)} does not compile: {e}")
        try:
            conf = {k: str(v) for k, v in (bundle.resolve(spec.get("configuration") or {})).items()}
            catalog, schema = bundle.resolve(spec.get("catalog") or ""), bundle.resolve(spec.get("schema") or "")
        except B.BundleError as e:
            problems.append(f"{where}: {e}")
            continue
        unknown = sorted(k for k in conf if k.startswith(CONF_PREFIX) and k not in (SOURCE_TABLE, RFM_BINS, AS_OF))
        if unknown:
            problems.append(f"{where}: configuration {', '.join(unknown)} is not a setting of seglib.pipeline "
                            f"(known: {SOURCE_TABLE}, {RFM_BINS}, {AS_OF})")
        try:
            Settings.from_conf(conf)
        except ParameterError as e:
            problems.append(f"{where}: configuration: {e}")
        if spec.get("serverless") and not (catalog and schema):
            problems.append(f"{where}: a serverless pipeline publishes to Unity Catalog: catalog and schema must be "
                            f"set (catalog {catalog!r}, schema {schema!r})")
        installs = [str(d) for d in (spec.get("environment") or {}).get("dependencies") or []]
        if any(_IMPORTS_SEGLIB.search(s.read_text()) for s in sources if s.suffix == ".py") and not any(
                "${workspace.file_path}" in d or d.endswith(".whl") or "seglib" in d for d in installs):
            problems.append(f"{where}: its sources import seglib, which environment.dependencies does not install "
                            f"(e.g. --editable ${{workspace.file_path}})")
    for job, spec in bundle.resources("jobs").items():
        for task in spec.get("tasks") or []:
            if not task.get("pipeline_task"):
                continue
            ref = str(task["pipeline_task"].get("pipeline_id", ""))
            m = _PIPELINE_REF.fullmatch(ref)
            if not m or m.group(1) not in pipelines:
                problems.append(f"jobs.{job}, task {task.get('task_key')}: pipeline_id {ref!r} is not "
                                f"${{resources.pipelines.<key>.id}} of a pipeline in this bundle")
    return problems


def _dashboards_per_recipe(bundle: B.Bundle) -> list[str]:
    """A dashboard file chosen by ${var.dashboard}: one exists for every recipe (built in or in recipes/). In
    each target the `dashboard` variable must also be the `recipe` variable's (_dashboard_matches_recipe):
    another one's queries name columns that recipe's gold tables lack, and the deployed dashboard fails."""
    from .recipes import RECIPES, RecipeError, get
    recipes = dict(RECIPES)
    for path in sorted((bundle.root / "recipes").rglob("*.y*ml")):
        with contextlib.suppress(RecipeError):  # reported by _recipe_files
            recipes[str(path.relative_to(bundle.root))] = get(str(path))
    problems = []
    for key, spec in bundle.resources("dashboards").items():
        path = str(spec.get("file_path") or "")
        if "${var.dashboard}" not in path:
            continue
        base = bundle.files[f"dashboards.{key}"].parent
        for name, recipe in recipes.items():
            candidate = path.replace("${var.dashboard}", recipe.dashboard)
            if B.VAR_REF.search(candidate) is None and not (base / candidate).is_file():
                problems.append(f"dashboards.{key}: recipe {name} names dashboard {recipe.dashboard}, which has "
                                f"no file {candidate}")
    return problems


def _dashboard_matches_recipe(bundle: B.Bundle) -> list[str]:
    """In this target, a dashboard chosen by ${var.dashboard} is the `recipe` variable's dashboard."""
    from .recipes import RECIPES, RecipeError, get
    values = bundle.variables()
    chosen, dashboard = values.get("recipe"), values.get("dashboard")
    keys = [k for k, spec in bundle.resources("dashboards").items()
            if "${var.dashboard}" in str(spec.get("file_path") or "")]
    if not keys or not chosen or not dashboard:
        return []
    try:  # a recipe file is relative to the bundle root, where the job runs it from
        recipe = get(chosen if chosen.lower() in RECIPES or Path(chosen).is_absolute() else str(bundle.root / chosen))
    except (RecipeError, ParameterError) as e:
        return [f"variable recipe: {e}"]
    if recipe.dashboard == dashboard:
        return []
    return [f"dashboards.{key}: variable recipe is {chosen}, whose dashboard is {recipe.dashboard}, but variable "
            f"dashboard is {dashboard}; deploy with --var dashboard={recipe.dashboard} "
            f"(or BUNDLE_VAR_dashboard={recipe.dashboard})" for key in keys]


def _recipe_files(root: Path) -> list[str]:
    """Each recipe file a job's ``recipe`` parameter may name: its keys, types and column mapping."""
    from .recipes import RecipeError, get
    problems = []
    for path in sorted((root / "recipes").rglob("*.y*ml")):
        try:
            get(str(path))
        except RecipeError as e:
            problems.append(str(e))
    return problems


def _made_from_params(root: Path) -> list[str]:
    """The files made from seglib.params (notebooks' parameters cells, variables, .env.example, README)."""
    from . import param_files
    try:
        return param_files.stale(root)
    except B.BundleError as e:
        return [str(e)]


def _task_compute(job: str, spec: dict, need_compute: bool = False) -> list[str]:
    """Each task runs on one kind of compute (in a target, where the compute is chosen: exactly one, so a
    task added to the job but not to a target's task list is caught), and what it references exists."""
    problems = []
    envs = {e.get("environment_key") for e in spec.get("environments") or []}
    clusters = {c.get("job_cluster_key") for c in spec.get("job_clusters") or []}
    for task in spec.get("tasks") or []:
        where = f"jobs.{job}, task {task.get('task_key')}"
        kinds = [k for k in ("environment_key", "job_cluster_key", "existing_cluster_id", "new_cluster") if task.get(k)]
        if need_compute and not kinds and (envs or clusters):
            problems.append(f"{where}: runs on no compute; give it an environment_key or a job_cluster_key "
                            f"in this target's task list")
        if len(kinds) > 1:
            problems.append(f"{where}: sets both {' and '.join(kinds)}; a task runs either serverless or on a cluster")
        if task.get("environment_key") and task["environment_key"] not in envs:
            problems.append(f"{where}: environment_key {task['environment_key']!r} is not in the job's environments")
        if task.get("job_cluster_key") and task["job_cluster_key"] not in clusters:
            problems.append(f"{where}: job_cluster_key {task['job_cluster_key']!r} is not in the job's job_clusters")
    return problems


def _job(bundle: B.Bundle, job: str) -> list[str]:
    import nbformat
    import papermill as pm

    try:
        tasks = bundle.tasks(job)
        job_params = {p["name"]: p.get("default", "") for p in bundle.job(job).get("parameters") or []}
        defaults = bundle.parameters(job)
    except B.BundleError as e:
        return [str(e)]
    problems, declared_anywhere = [], set()
    for task in tasks:
        if task.notebook is None:
            continue
        where = f"job {job}, task {task.key}"
        if not task.notebook.is_file():
            problems.append(f"{where}: notebook {task.notebook.relative_to(bundle.root)} does not exist")
            continue
        try:
            nb = nbformat.read(task.notebook, as_version=nbformat.NO_CONVERT)
        except Exception as e:
            problems.append(f"{where}: {task.notebook.name} is not a readable notebook ({e})")
            continue
        if nb.get("nbformat") != 4:
            problems.append(f"{where}: {task.notebook.name} is nbformat {nb.get('nbformat')}, expected 4")
            continue
        if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
            problems.append(f"{where}: {task.notebook.name} has no cell tagged `parameters`")
            continue
        inspected = pm.inspect_notebook(str(task.notebook))
        declared_anywhere |= set(inspected)
        for name, p in inspected.items():
            if name in LOCAL_ONLY:
                continue
            if name not in job_params:
                problems.append(f"{where}: {task.notebook.name} takes parameter {name}, which job {job} does not pass")
            elif name not in DEPLOYMENT_PARAMS and _literal(p["default"]) != defaults[name]:
                problems.append(f"{where}: {task.notebook.name} defaults {name} to {_literal(p['default'])!r}, "
                                f"job {job} to {defaults[name]!r}")
    if any(t.notebook for t in tasks):
        for name in sorted(set(job_params) - declared_anywhere):
            problems.append(f"job {job}: parameter {name} is not declared by any of its notebooks")
    problems += _run_job_tasks(bundle, job)
    return problems


def _run_job_tasks(bundle: B.Bundle, job: str) -> list[str]:
    """A run_job_task must name a job of this bundle and pass only parameters that job takes."""
    import re
    problems, jobs = [], bundle.resources("jobs")
    for task in bundle.job(job).get("tasks") or []:
        spec = task.get("run_job_task")
        if not spec:
            continue
        m = re.fullmatch(r"\$\{resources\.jobs\.([A-Za-z0-9_]+)\.id\}", str(spec.get("job_id", "")))
        if not m or m.group(1) not in jobs:
            problems.append(f"job {job}, task {task['task_key']}: job_id {spec.get('job_id')!r} is not "
                            f"${{resources.jobs.<key>.id}} of a job in this bundle")
            continue
        takes = {p["name"] for p in jobs[m.group(1)].get("parameters") or []}
        for name in sorted(set(spec.get("job_parameters") or {}) - takes):
            problems.append(f"job {job}, task {task['task_key']}: passes {name}, which job {m.group(1)} does not take")
    return problems


def _literal(source: str) -> str:
    import ast
    try:
        return str(ast.literal_eval(source))
    except (ValueError, SyntaxError):
        return source


# Without a runtime venv the check makes one holding this platform's Spark (the oldest supported).
WHEEL_CHECK_PYSPARK = "pyspark==3.5.5"


def check_wheel(root: Path | None = None, log=print, runtime: Path | None = None) -> list[str]:
    """Build the wheel as the bundle's artifact does and install it *with its dependencies* beside a
    platform's pyspark (*runtime*, a venv of the runtime matrix; else a temporary venv with
    WHEEL_CHECK_PYSPARK, slower): see seglib.wheel.install. Also: the wheel names none of the local
    extra's packages and carries its data files."""
    from . import wheel as W
    root = Path(root).resolve() if root else B.find_root()
    runtime = Path(runtime).resolve() if runtime else None  # probes below run in a temporary folder
    with tempfile.TemporaryDirectory(prefix="seglib-wheel-") as tmp:
        tmp = Path(tmp)
        try:
            built = W.build(root, tmp / "dist")
        except RuntimeError as e:
            return [str(e)]
        problems = [f"{built.name} requires {r}, which only a local run needs (the platform brings its own)"
                    for r in W.requirements(built)
                    if re.split(r"[ \[<>=!~;]", r, maxsplit=1)[0].lower() in W.LOCAL_ONLY_DISTRIBUTIONS]
        if runtime is None:
            runtime = tmp / "venv"
            log(f"  no runtime venv given: making one with {WHEEL_CHECK_PYSPARK} (slow; `make test` passes one)")
            subprocess.run([sys.executable, "-m", "venv", str(runtime)], check=True, capture_output=True)
            pip = subprocess.run([str(runtime / "bin" / "python"), "-m", "pip", "install", "--quiet",
                                  WHEEL_CHECK_PYSPARK], capture_output=True, text=True)
            if pip.returncode:
                return problems + [f"could not install {WHEEL_CHECK_PYSPARK}: {pip.stderr.strip()[-500:]}"]
        problems += W.install(runtime, built, W.notebook_modules(root / "notebooks"), log=log)
        probe = "import importlib.resources as r, seglib; assert (r.files('seglib.local') / 'log4j2.properties').is_file()"
        run = subprocess.run([str(runtime / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                             cwd=tmp)
        if run.returncode:
            problems.append(f"{built.name} lacks its data files: {run.stderr.strip()[-500:]}")
    return problems
