"""`seglib validate` on the real bundle and on broken copies of it (offline, no Spark)."""
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from seglib import bundle as B
from seglib.cli import main
from seglib.validate import check

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def copy(tmp_path):
    for name in ("databricks.yml", "resources", "notebooks", "dashboards", "recipes", "pipelines"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name)
        elif src.exists():
            shutil.copy(src, tmp_path / name)
    return tmp_path


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_the_shipped_bundle_is_valid():
    assert check(ROOT) == []


def test_cli_exit_codes(copy, capsys):
    assert main(["validate", "--bundle", str(copy), "--skip-wheel"]) == 0
    (copy / "notebooks" / "03_cluster.ipynb").unlink()
    assert main(["validate", "--bundle", str(copy), "--skip-wheel"]) == 1
    assert "03_cluster.ipynb does not exist" in capsys.readouterr().err


def test_unknown_key_in_a_job_is_rejected_by_the_typed_classes(copy):
    def add(d):
        d["resources"]["jobs"]["segmentation"]["tasks"][0]["notebook_task"]["base_parameter"] = {"k": "5"}
    edit_yaml(copy / "resources" / "segmentation.job.yml", add)
    problems = check(copy)
    assert any("jobs.segmentation" in p and "base_parameter" in p for p in problems), problems


def test_unknown_key_in_a_target_override_is_rejected(copy):
    edit_yaml(copy / "databricks.yml",
              lambda d: d["targets"]["classic"]["resources"]["jobs"]["segmentation"].update({"max_concurent_runs": 1}))
    problems = check(copy)
    assert any(p.startswith("target classic: jobs.segmentation") and "max_concurent_runs" in p for p in problems)


def test_missing_notebook(copy):
    (copy / "notebooks" / "04_profile.ipynb").unlink()
    assert any("task profile: notebook notebooks/04_profile.ipynb does not exist" in p for p in check(copy))


def test_notebook_without_parameters_cell(copy):
    path = copy / "notebooks" / "02_features.ipynb"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("tags", None)
    nbformat.write(nb, path)
    assert any("02_features.ipynb has no cell tagged `parameters`" in p for p in check(copy))


def test_parameter_the_job_does_not_pass(copy):
    def drop(d):
        params = d["resources"]["jobs"]["segmentation"]["parameters"]
        params[:] = [p for p in params if p["name"] != "null_policy"]
    edit_yaml(copy / "resources" / "segmentation.job.yml", drop)
    assert any("02_features.ipynb takes parameter null_policy, which job segmentation does not pass" in p
               for p in check(copy))


def test_job_parameter_no_notebook_declares(copy):
    edit_yaml(copy / "resources" / "segmentation.job.yml",
              lambda d: d["resources"]["jobs"]["segmentation"]["parameters"].append({"name": "kk", "default": "5"}))
    assert "job segmentation: parameter kk is not declared by any of its notebooks" in check(copy)


def test_defaults_that_disagree(copy):
    edit_yaml(copy / "databricks.yml", lambda d: d["variables"]["k"].update({"default": 6}))
    assert any("03_cluster.ipynb defaults k to '5', job segmentation to '6'" in p for p in check(copy))


def test_undeclared_variable(copy):
    path = copy / "resources" / "segmentation.job.yml"
    path.write_text(path.read_text().replace("${var.seed}", "${var.kmeans_seed}"))
    assert any("${var.kmeans_seed} is not declared" in p for p in check(copy))


def test_depends_on_an_unknown_task(copy):
    def rename(d):
        d["resources"]["jobs"]["segmentation"]["tasks"][2]["depends_on"] = [{"task_key": "featurse"}]
    edit_yaml(copy / "resources" / "segmentation.job.yml", rename)
    assert any("task cluster depends on 'featurse'" in p for p in check(copy))


def test_run_job_task_passing_a_parameter_the_child_lacks(copy):
    def add(d):
        d["resources"]["jobs"]["demo_install"]["tasks"][0]["run_job_task"]["job_parameters"]["k"] = "7"
    edit_yaml(copy / "resources" / "demo_install.job.yml", add)
    assert any("passes k, which job demo_data does not take" in p for p in check(copy))


def test_task_graph_and_defaults_come_from_the_job_yaml(copy):
    b = B.load(ROOT)
    assert [t.key for t in b.tasks("segmentation")] == ["load", "features", "cluster", "profile", "write", "insights"]
    assert b.parameters("segmentation")["k"] == "5"
    # Reordering the YAML does not change the dependency order; a new task joins the local run.
    def shuffle(d):
        tasks = d["resources"]["jobs"]["segmentation"]["tasks"]
        tasks.reverse()
        tasks.append({"task_key": "extra", "depends_on": [{"task_key": "write"}],
                      "notebook_task": {"notebook_path": "../notebooks/04_profile.ipynb"}})
    edit_yaml(copy / "resources" / "segmentation.job.yml", shuffle)
    # profile and write need only the cluster step (they run side by side on Databricks): ties keep file order.
    assert [t.key for t in B.load(copy).tasks("segmentation")] == [
        "load", "features", "cluster", "write", "profile", "insights", "extra"]
    graph = {t.key: set(t.depends_on) for t in b.tasks("segmentation")}
    assert graph["write"] == graph["profile"] == {"cluster"} and graph["insights"] == {"write", "profile"}


def test_target_overrides_merge_by_task_key_and_variables_resolve():
    b = B.load(ROOT, "classic")
    load = next(t for t in b.job("segmentation")["tasks"] if t["task_key"] == "load")
    assert load["job_cluster_key"] == "seglib_cluster" and load["notebook_task"]["notebook_path"].endswith("01_load.ipynb")
    # An override is passed, not set in os.environ: the runtime rows' threads read it meanwhile.
    assert B.load(ROOT, env={"BUNDLE_VAR_k": "7"}).parameters("segmentation")["k"] == "7"
    with pytest.raises(B.BundleError, match="target 'nope' is not defined"):
        B.load(ROOT, "nope")


def test_env_example_lists_what_the_code_reads():
    keys = [line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
            if line and not line.startswith("#")]
    declared = set(B.load(ROOT).config["variables"])
    assert {k.removeprefix("BUNDLE_VAR_") for k in keys if k.startswith("BUNDLE_VAR_")} == declared
    sdk = {"DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"}  # read by databricks-sdk
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "seglib").rglob("*.py"))
    for key in keys:
        if not key.startswith("BUNDLE_VAR_") and key not in sdk:
            assert f'"{key}' in source, f"{key} is in .env.example but no seglib code reads it"


def test_each_target_puts_tasks_on_exactly_one_kind_of_compute(copy):
    for target, key in (("dev", "environment_key"), ("prod", "environment_key"), ("classic", "job_cluster_key")):
        tasks = B.load(ROOT, target).job("segmentation")["tasks"]
        assert all(t.get(key) for t in tasks), target
    # Serverless and a cluster on the same task is refused before deploy.
    def both(d):
        d["targets"]["classic"]["resources"]["jobs"]["segmentation"]["tasks"][0]["environment_key"] = "default"
    edit_yaml(copy / "databricks.yml", both)
    assert any(p.startswith("target classic: jobs.segmentation, task load: sets both environment_key and job_cluster_key")
               for p in check(copy))


def test_a_task_missing_from_a_targets_task_list_is_caught(copy):
    """A task added to the job YAML but not to the classic target's list would deploy without compute."""
    def drop_last(d):
        d["targets"]["classic"]["resources"]["jobs"]["segmentation"]["tasks"].pop()
    edit_yaml(copy / "databricks.yml", drop_last)
    last = B.load(ROOT).tasks("segmentation")[-1].key
    assert f"target classic: jobs.segmentation, task {last}: runs on no compute; give it an environment_key " \
           f"or a job_cluster_key in this target's task list" in check(copy)


# ---------- compute per target: every job with notebook tasks, not only segmentation ----------

WHEEL = "./dist/*.whl"  # the artifact's output (artifacts.seglib_wheel builds into dist/), relative to databricks.yml


def _typed_jobs(target: str) -> dict:
    """Every job of the target, merged the way the CLI merges targets (seglib.bundle), as typed Jobs."""
    from databricks.bundles.jobs import Job
    return {key: Job.from_dict(spec) for key, spec in B.load(ROOT, target).resources("jobs").items()}


def test_classic_target_runs_every_notebook_task_on_a_job_cluster_with_the_wheel():
    jobs = _typed_jobs("classic")
    with_notebooks = {key for key, job in jobs.items() if any(t.notebook_task for t in job.tasks)}
    assert {"segmentation", "demo_data"} <= with_notebooks  # demo_install and the refresh run these two
    for key, job in jobs.items():
        clusters = {c.job_cluster_key: c.new_cluster for c in job.job_clusters}
        for task in job.tasks:
            where = f"classic: jobs.{key}, task {task.task_key}"
            assert task.environment_key is None, f"{where} still asks for serverless"
            if task.notebook_task:
                assert task.job_cluster_key in clusters, f"{where}: job_cluster_key {task.job_cluster_key!r}"
                assert clusters[task.job_cluster_key].spark_version == "17.3.x-scala2.13", where
                assert WHEEL in [lib.whl for lib in task.libraries], f"{where}: no wheel library"
    # One cluster definition (a YAML anchor), so the jobs cannot drift apart.
    specs = [c.as_dict() for key in with_notebooks for c in jobs[key].job_clusters]
    assert specs and all(s == specs[0] for s in specs)


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_serverless_targets_run_every_notebook_task_in_the_jobs_environment(target):
    for key, job in _typed_jobs(target).items():
        environments = {e.environment_key: e for e in job.environments}
        for task in job.tasks:
            if task.notebook_task:
                where = f"{target}: jobs.{key}, task {task.task_key}"
                assert task.environment_key in environments, where
                assert task.job_cluster_key is None and task.new_cluster is None and not task.libraries, where
                assert "../dist/*.whl" in environments[task.environment_key].spec.dependencies, where


def test_classic_cluster_is_one_definition_in_the_yaml():
    text = (ROOT / "databricks.yml").read_text()
    assert text.count("spark_version:") == 1 and text.count("whl: ./dist/*.whl") == 1


# ---------- the daily mode=score refresh ----------

REFRESH = "segmentation_refresh"


@pytest.mark.parametrize("target", ["dev", "prod", "classic"])
def test_the_daily_refresh_scores_with_the_segmentation_job_on_a_paused_schedule(target):
    from databricks.bundles.jobs import Job, PauseStatus
    from seglib.params import PARAMS
    b = B.load(ROOT, target)
    job = Job.from_dict(b.resolve(b.job(REFRESH)))  # variables resolved as the CLI does, then typed
    seconds, minutes, hours, day_of_month, month, day_of_week = job.schedule.quartz_cron_expression.split()
    assert (month, {day_of_month, day_of_week}) == ("*", {"*", "?"}), "daily"
    assert all(f.isdigit() for f in (seconds, minutes, hours)), "once a day, at a fixed time"
    assert job.schedule.timezone_id == "UTC"
    assert job.schedule.pause_status == PauseStatus.PAUSED  # until someone flips refresh_schedule_status
    (task,) = job.tasks
    assert task.run_job_task.as_dict()["job_id"] == "${resources.jobs.segmentation.id}"
    passed = task.run_job_task.job_parameters
    assert passed["mode"] == "score" and PARAMS["mode"].parse("score") == "score"
    # catalog and schema are the refresh job's own parameters, passed through, with the bundle's defaults
    assert passed["catalog"] == "{{job.parameters.catalog}}" and passed["schema"] == "{{job.parameters.schema}}"
    assert b.parameters(REFRESH) == {"catalog": b.variables()["catalog"], "schema": b.variables()["schema"]}
    assert set(passed) <= set(b.parameters("segmentation"))


def test_the_refresh_schedule_status_is_a_variable():
    assert B.load(ROOT, "prod").variables()["refresh_schedule_status"] == "PAUSED"
    unpaused = {"BUNDLE_VAR_refresh_schedule_status": "UNPAUSED"}
    b = B.load(ROOT, "prod", env=unpaused)
    assert b.resolve(b.job(REFRESH)["schedule"])["pause_status"] == "UNPAUSED"
    assert check(ROOT, env=unpaused) == []


def test_a_bad_refresh_schedule_is_caught_with_the_variables_resolved(copy):
    assert any(p.startswith(f"target prod: jobs.{REFRESH}: schedule:") and "'PAUSD' is not a valid PauseStatus" in p
               for p in check(copy, env={"BUNDLE_VAR_refresh_schedule_status": "PAUSD"}))
    edit_yaml(copy / "resources" / f"{REFRESH}.job.yml",
              lambda d: d["resources"]["jobs"][REFRESH]["schedule"].update(quartz_cron_expression="0 6 * * *",
                                                                           timezone_id="Europe/Nowhere"))
    problems = check(copy)
    assert any(f"jobs.{REFRESH}: schedule: quartz_cron_expression '0 6 * * *' is not a Quartz" in p for p in problems)
    assert any(f"jobs.{REFRESH}: schedule: timezone_id 'Europe/Nowhere' is not a known time zone" in p
               for p in problems)


def test_seglib_run_of_a_job_without_notebooks_fails_clearly_before_starting_spark(tmp_path, monkeypatch, capsys):
    import seglib.local.runner

    def no_spark(*args, **kwargs):
        raise AssertionError("a local Spark was started for a job that cannot run locally")
    monkeypatch.setattr(seglib.local.runner, "local_spark", no_spark)
    code = main(["run", "--job", REFRESH, "--bundle", str(ROOT), "--lakehouse", str(tmp_path / "lakehouse"),
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"seglib: error: job {REFRESH}: task segmentation is not a notebook task; it cannot run locally" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "lakehouse").exists()


def test_a_dashboard_file_missing_for_a_recipe_is_caught(copy):
    (copy / "dashboards" / "customer_segments_retail.lvdash.json").unlink()
    problems = check(copy)
    for recipe in ("retail", "recipes/my_orders.yml"):  # my_orders extends retail, and its dashboard with it
        assert (f"dashboards.customer_segments: recipe {recipe} names dashboard retail, which has no file "
                f"../dashboards/customer_segments_retail.lvdash.json") in problems


def test_a_recipe_file_naming_a_dashboard_with_no_file_is_caught(copy):
    (copy / "recipes" / "theirs.yml").write_text("extends: retail\ndashboard: theirs\n")
    assert check(copy) == ["dashboards.customer_segments: recipe recipes/theirs.yml names dashboard theirs, which "
                           "has no file ../dashboards/customer_segments_theirs.lvdash.json"]


def test_the_dashboard_variable_must_be_the_recipes_dashboard(copy):
    """The dashboard's queries name its recipe's gold columns: recipe and dashboard go together."""
    mine = {"BUNDLE_VAR_recipe": "recipes/my_orders.yml"}
    problems = check(copy, env=mine)
    assert len(problems) == 4  # the base configuration and each target; the notebooks' defaults are no drift
    assert all(p.endswith("dashboards.customer_segments: variable recipe is recipes/my_orders.yml, whose dashboard "
                          "is retail, but variable dashboard is airline; deploy with --var dashboard=retail (or "
                          "BUNDLE_VAR_dashboard=retail)") for p in problems)
    assert check(copy, env={**mine, "BUNDLE_VAR_dashboard": "retail"}) == []
    text = (copy / "databricks.yml").read_text()
    (copy / "databricks.yml").write_text(text.replace("  prod:\n", "  prod:\n    variables: {recipe: retail}\n", 1))
    assert check(copy, env={}) == ["target prod: dashboards.customer_segments: variable recipe is retail, whose dashboard is "
                           "retail, but variable dashboard is airline; deploy with --var dashboard=retail (or "
                           "BUNDLE_VAR_dashboard=retail)"]
    (copy / "databricks.yml").write_text(text.replace("  prod:\n", "  prod:\n    variables: {recipe: retail, "
                                                      "dashboard: retail}\n", 1))
    assert check(copy, env={}) == []
    assert any(p.startswith("target dev: variable recipe: recipe file") and "nothing.yml not found" in p
               for p in check(copy, env={"BUNDLE_VAR_recipe": "recipes/nothing.yml"}))


def test_a_new_recipe_without_a_dashboard_gets_the_generic_one(copy):
    (copy / "recipes" / "theirs.yml").write_text((ROOT / "src/seglib/recipes/retail.yml").read_text()
                                                 .replace("dashboard: retail", "# no dashboard"))
    theirs = {"BUNDLE_VAR_recipe": "recipes/theirs.yml", "BUNDLE_VAR_dashboard": "generic"}
    assert check(copy, env=theirs) == []
    (copy / "dashboards" / "customer_segments_generic.lvdash.json").unlink()
    assert "dashboards.customer_segments: file_path ../dashboards/customer_segments_${var.dashboard}.lvdash.json " \
           "(../dashboards/customer_segments_generic.lvdash.json) does not exist" in " ".join(check(copy, env=theirs))


def test_a_broken_recipe_file_in_the_repository_is_caught(copy):
    (copy / "recipes" / "theirs.yml").write_text("extends: retail\ninputs:\n  retail_transactions:\n    tabel: x\n")
    assert check(copy) == [f"recipe file {copy / 'recipes' / 'theirs.yml'}: key inputs.retail_transactions.tabel "
                           f"is unknown; expected one of attributes, columns, descriptions, key, min_rows, non_negative, optional, "
                           f"optional_columns, plausible, required, schema, table"]


# -- the RFM pipeline (resources/rfm.pipeline.yml) ------------------------------------------------------

def test_the_rfm_pipeline_is_serverless_on_the_bundles_schema_and_a_job_refreshes_it():
    bundle = B.load(ROOT)
    pipeline = bundle.resources("pipelines")["rfm"]
    assert pipeline["serverless"] is True
    assert (pipeline["catalog"], pipeline["schema"]) == ("${var.catalog}", "${var.schema}")
    base = bundle.files["pipelines.rfm"].parent
    assert (base / pipeline["root_path"]).resolve() == ROOT / "pipelines" / "rfm"
    assert [(base / lib["glob"]["include"].removesuffix("/**")).resolve() for lib in pipeline["libraries"]] == [
        ROOT / "pipelines" / "rfm" / "transformations"]
    assert pipeline["environment"]["dependencies"] == ["--editable ${workspace.file_path}"]
    [task] = bundle.job("rfm_pipeline")["tasks"]
    assert task["pipeline_task"]["pipeline_id"] == "${resources.pipelines.rfm.id}"


def _pipeline(copy, change):
    edit_yaml(copy / "resources" / "rfm.pipeline.yml", lambda d: change(d["resources"]["pipelines"]["rfm"]))


@pytest.mark.parametrize("change,expected", [
    (lambda p: p.update({"photn": True}), "pipelines.rfm: Unexpected field 'photn'"),
    (lambda p: p["configuration"].update({"seglib.rfm_bins": "3"}), "seglib.rfm_bins must be 4 or 5"),
    (lambda p: p["configuration"].update({"seglib.asof": "2024-01-01"}), "configuration seglib.asof is not a setting"),
    (lambda p: p["configuration"].update({"seglib.source_table": "a;b"}), "seglib.source_table must match"),
    (lambda p: p.update({"root_path": "../pipelines/rmf"}), "root_path ../pipelines/rmf is not a folder"),
    (lambda p: p["libraries"][0]["glob"].update({"include": "../pipelines/rfm/transforms/**"}),
     "library ../pipelines/rfm/transforms/** matches no .py or .sql file"),
    (lambda p: p.update({"environment": {"dependencies": []}}), "its sources import seglib"),
    (lambda p: p.update({"catalog": ""}), "catalog and schema must be set"),
])
def test_a_broken_pipeline_is_caught(copy, change, expected):
    _pipeline(copy, change)
    problems = check(copy)
    assert any(expected in p for p in problems), problems


def test_a_pipeline_source_that_does_not_compile_is_caught(copy):
    source = copy / "pipelines" / "rfm" / "transformations" / "rfm_segments.py"
    source.write_text(source.read_text() + "\ndef broken(:\n")
    assert any("rfm_segments.py does not compile" in p for p in check(copy))


def test_a_pipeline_task_must_name_a_pipeline_of_the_bundle(copy):
    edit_yaml(copy / "resources" / "rfm.pipeline.yml", lambda d: d["resources"]["jobs"]["rfm_pipeline"]["tasks"][0][
        "pipeline_task"].update({"pipeline_id": "${resources.pipelines.rfm_segments.id}"}))
    assert any("jobs.rfm_pipeline, task refresh: pipeline_id" in p for p in check(copy))


def test_a_targets_variables_reach_the_pipelines_configuration(copy):
    _pipeline(copy, lambda p: p["configuration"].update({"seglib.as_of": "${var.k}"}))
    assert check(copy, env={"BUNDLE_VAR_k": "2024-01-31"}) == []
    assert any("seglib.as_of must be empty" in p for p in check(copy))  # k's default, 5, is no day


def test_the_classic_target_runs_the_pipeline_on_classic_compute():
    pipeline = B.load(ROOT, "classic").resources("pipelines")["rfm"]
    assert pipeline["serverless"] is False
    assert pipeline["clusters"] == [{"label": "default", "node_type_id": "${var.node_type_id}", "num_workers": 1}]
    assert pipeline["libraries"] == B.load(ROOT).resources("pipelines")["rfm"]["libraries"]
