"""Recipes: what is segmented, from which tables and columns. One YAML file each.

A recipe names its input tables (columns and types, key, required columns, plausible ranges: the
contract the load step checks), its clustering features (SQL expressions over the customers table, or
a named builder such as ``rfm``, seglib.rfm's per-customer grouping of invoice lines), the segment names
and the profile each stands for, the words for traits and what the profile step averages. The notebooks
are the same for every recipe; the ``recipe`` job parameter names a built-in one (``airline``,
``retail``: the .yml files beside this module) or a recipe file.

A recipe file can extend another one and point its tables at yours, with no Python::

    extends: retail
    inputs:
      retail_transactions:
        table: my_orders          # in the run's catalog and schema
        columns: {invoice_id: order_no, customer_id: client, invoice_ts: ordered_at}

``descriptions`` (per input, optional) says what a column is, its units and how it is computed: the
comment it carries into the gold tables (seglib.comments); a column without one is described by the
table and column it is read from.

``columns`` maps the recipe's column (left) to your table's (right); the load step reads your table
under the recipe's names, so every later step, and the outputs, are the same as for the recipe's own
layout. A relative path is looked up in the working folder, then in the repository root (the bundle
root on Databricks, when the notebooks run from the repository).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pyspark.sql import types as T

from ..errors import ParameterError

HERE = Path(__file__).resolve().parent
DEFAULT = "airline"  # the job's default recipe
BUILT_IN = tuple(sorted(p.stem for p in HERE.glob("*.yml")))
SUFFIXES = (".yml", ".yaml")
SEG_FEATURES = "seg_features"  # seglib.tables.SEG_FEATURES: the features step's handover table

TYPES = {"string": T.StringType(), "int": T.IntegerType(), "long": T.LongType(), "double": T.DoubleType(),
         "boolean": T.BooleanType(), "date": T.DateType(), "timestamp": T.TimestampType()}
BUILDERS = ("columns", "rfm")  # columns: SQL expressions over the customers table; rfm: seglib.rfm

_KEYS = {
    "": {"extends", "name", "describes", "key", "inputs", "customers_table", "features", "profile_columns",
         "segments", "naming", "naming_log_scale", "traits", "rank_feature", "profile_averages", "overview",
         "demo", "insights", "summary", "playbook", "dashboard"},
    "playbook.*": {"action", "cost_per_customer", "uplift"},
    "profile_columns.*": {"table", "sql"},
    "naming": {"max_distance", "unmatched"},
    "insights": {"customer", "revenue", "orders", "recency", "averages", "performance", "breakdowns", "grids", "words"},
    "insights.words": {"customer", "customers", "order", "orders", "recency", "revenue"},
    "insights.performance": {"columns", "rename"},
    "insights.breakdowns[]": {"name", "column", "label", "order", "chart", "title", "legend"},
    "insights.grids[]": {"name", "rows", "columns", "title"},
    "demo": {"generate", "customers"},
    "inputs.*": {"table", "columns", "schema", "key", "required", "non_negative", "plausible", "min_rows",
                 "optional", "optional_columns", "attributes", "descriptions"},
    "features": {"build", "columns", "log", "scores"},
    "features.scores.*": {"column", "at_most", "at_least"},
    "segments[]": {"name", "profile"},
    "overview": {"count_by", "by_month", "distinct"},
}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RecipeError(ParameterError):
    """A recipe file is not acceptable: names the file, the key and what was expected."""


@dataclass(frozen=True)
class InputTable:
    """One input table of a recipe: the contract the load step checks, and where its rows come from."""
    name: str                                   # the recipe's name for it (what the stages call it)
    table: str                                  # the table read: *name*, or the one a mapping points at
    schema: T.StructType                        # the recipe's columns and types
    columns: dict[str, str] = field(default_factory=dict)  # recipe column -> the read table's column
    key: str | None = None                      # not null and unique
    required: tuple[str, ...] = ()              # must not be null
    non_negative: tuple[str, ...] = ()
    plausible: dict[str, tuple[float, float]] = field(default_factory=dict)  # outside: treated as missing
    min_rows: int = 1
    optional: bool = False                      # the table may be absent
    optional_columns: tuple[str, ...] = ()      # may be absent: filled with nulls
    attributes: tuple[str, ...] = ()            # carried into the gold output
    # column -> what it is (units, how computed): the comment of the gold column it passes into
    descriptions: dict[str, str] = field(default_factory=dict)

    def source_column(self, column: str) -> str:
        """*column* as the read table names it."""
        return self.columns.get(column, column)

    def description(self, column: str) -> str:
        """What *column* is: the recipe's description, else where it comes from (the table and column read)."""
        if column in self.descriptions:
            return self.descriptions[column]
        source = self.source_column(column)
        return f"From input {self.table}.{source}" + (f" (the recipe's {column})" if source != column else "") + "."


@dataclass(frozen=True)
class Score:
    """A score column from a feature: the first rule (bound, score) that matches, else 1."""
    column: str
    rules: tuple[tuple[float, int], ...]
    at_most: bool                               # value <= bound (recency) or value >= bound


@dataclass(frozen=True)
class Action:
    """A playbook entry: what to do for a segment, its cost per customer contacted (in the revenue's
    currency) and its assumed uplift (the share of the segment's yearly revenue it adds: 0.05 = +5%)."""
    action: str
    cost_per_customer: float
    uplift: float

    def __post_init__(self):
        if isinstance(self.cost_per_customer, bool) or not isinstance(self.cost_per_customer, (int, float)) \
                or not self.cost_per_customer > 0:
            raise ParameterError(f"{self.action}: cost_per_customer must be > 0, got {self.cost_per_customer!r}")
        if isinstance(self.uplift, bool) or not isinstance(self.uplift, (int, float)) or not self.uplift >= 0:
            raise ParameterError(f"{self.action}: uplift must be >= 0, got {self.uplift!r}")


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str                                 # the file it was read from (named in errors)
    describes: str
    key: str                                    # the customer column of the gold output
    tables: dict[str, InputTable]               # the input tables, in load order
    customers_table: str                        # the input table that lists the customers
    build: str                                  # how seg_features is built (BUILDERS)
    feature_sql: dict[str, str]                 # feature -> SQL expression (build "columns")
    log_features: tuple[str, ...]               # enter the model as log1p(x / median x) with feature_transform=log1p
    scores: dict[str, Score]
    # Naming (seglib.naming): the z-score profile each segment name stands for, in business order
    # (segment id 0 is the most valuable); counts and amounts compared on a log scale.
    signatures: tuple[tuple[str, dict[str, float]], ...]
    naming_log_scale: tuple[str, ...]
    traits: dict[str, tuple[str, str]]          # words for a feature above / below the nearest named segment
    rank_feature: str                           # orders extra clusters (k above the number of names)
    profile_averages: dict[str, str]            # profile column -> seg_features column
    overview: dict = field(default_factory=dict)
    demo: dict = field(default_factory=dict)      # generate: "module:function" of seglib; customers: default size
    insights: dict = field(default_factory=dict)  # what the insights notebook reads and shows (seglib.insights)
    summary: dict = field(default_factory=dict)   # gold_segment_summary column -> (gold column, decimals)
    # Columns that names and profiles rest on but the model does not cluster on: name -> (input table,
    # SQL expression over it), joined to the customers by the table's key.
    profile_columns: dict = field(default_factory=dict)
    # A cluster that falls short of the signature it would take by more than max_distance (mean squared
    # z-score shortfall, naming.signature_shortfall) gets a name from its traits
    # ("<unmatched> (<trait>, <trait>)") instead of an unearned one; None: every signature is used.
    max_distance: float | None = None
    unmatched: str = "Customers"
    playbook: dict[str, Action] = field(default_factory=dict)  # segment name -> the ROI action (insights)
    dashboard: str = "generic"                  # dashboards/customer_segments_<this>.lvdash.json reads its gold tables

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.tables)

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        return tuple(t for t, spec in self.tables.items() if spec.optional)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.feature_sql)

    @property
    def naming_features(self) -> tuple[str, ...]:
        """What names and profiles rest on: the clustering features, then the profile columns."""
        return self.features + tuple(self.profile_columns)

    @property
    def feature_inputs(self) -> tuple[str, ...]:
        """The input tables the features step reads."""
        if self.build != "columns":
            return self.inputs
        return tuple(dict.fromkeys([self.customers_table, *[t for t, _ in self.profile_columns.values()]]))

    @property
    def base_table(self) -> str:
        """What gold_customer_segments_ml has a row of per customer: the customers table, or (rfm) the
        features step's handover table, the customers with their RFM values, scores and rule segment."""
        return self.customers_table if self.build == "columns" else SEG_FEATURES

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(a for spec in self.tables.values() for a in spec.attributes)

    @property
    def demo_customers(self) -> int:
        return int(self.demo.get("customers", 1000))

    def demo_generator(self):
        """The function that writes this recipe's demo input (spark, where, customers, seed, log=...)."""
        import importlib
        target = self.demo.get("generate")
        if not target:
            raise RecipeError(f"recipe {self.name} ({self.source}) has no demo data generator (key demo.generate)")
        module, _, function = str(target).partition(":")
        return getattr(importlib.import_module(module), function)

    def schema(self, table: str) -> T.StructType:
        return self.tables[table].schema

    def __str__(self) -> str:
        return self.name


# ---------------------------------------------------------------------------------------------------
# Reading a recipe file
# ---------------------------------------------------------------------------------------------------
def get(recipe: str | Recipe = DEFAULT) -> Recipe:
    """A built-in recipe by name, or a recipe file by path (.yml)."""
    if isinstance(recipe, Recipe):
        return recipe
    text = str(recipe).strip()
    if text.lower() in BUILT_IN:
        return _load(str(HERE / f"{text.lower()}.yml"))
    if text.endswith(SUFFIXES) or "/" in text:
        return _load(str(find(text)))
    raise ParameterError(f"recipe must be one of {', '.join(BUILT_IN)} or a path to a recipe file "
                         f"({' or '.join(SUFFIXES)}), got {recipe!r}")


def absolute(recipe: str) -> str:
    """A built-in name as it is; a recipe file as an absolute path (for notebooks that run elsewhere)."""
    text = str(recipe).strip()
    return text if text.lower() in BUILT_IN else str(find(text))


def find(path: str) -> Path:
    """A recipe file: absolute, or relative to the working folder, then to the repository root when seglib
    runs from the repository's src/ (as the notebooks do on Databricks and in a checkout)."""
    given = Path(path).expanduser()
    places = [given] if given.is_absolute() else [Path.cwd() / given, *[r / given for r in _repository_roots()]]
    for place in places:
        if place.is_file():
            return place.resolve()
    raise RecipeError(f"recipe file {path} not found; looked in " + ", ".join(str(p.parent) for p in places))


def _repository_roots() -> list[Path]:
    root = HERE.parents[2]  # <root>/src/seglib/recipes
    return [root] if (root / "src" / "seglib").is_dir() and (root / "notebooks").is_dir() else []


def _load(path: str) -> Recipe:
    # Read again when the file changes: a notebook session outlives edits to the user's recipe file.
    return _load_version(path, Path(path).stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _load_version(path: str, mtime_ns: int) -> Recipe:
    return _build(Path(path), _merged(Path(path), ()))


def _read(path: Path) -> dict:
    import yaml
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe file {path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file {path}: expected a mapping of keys (describes, inputs, features, ...), "
                          f"got {type(data).__name__}")
    _check_keys(path, data, "")
    return data


def _check_entries(path: Path, entries: dict, at: str, expected: str = "") -> None:
    """A mapping of named entries (input tables, scores, profile columns, playbook actions): each entry is
    a mapping whose keys are checked against *at*.*."""
    for name, spec in entries.items():
        if not isinstance(spec, dict):
            raise RecipeError(f"recipe file {path}: key {at}.{name} must be a mapping{expected}")
        _check_keys(path, spec, f"{at}.{name}")


def _check_keys(path: Path, data: dict, at: str) -> None:
    """Unknown keys stop the run: a typo would otherwise be ignored silently."""
    allowed = _KEYS.get(re.sub(r"\.[^.\[]+$", ".*", at) if at.count(".") else at, _KEYS.get(at))
    if allowed is not None:
        for key in data:
            if key not in allowed:
                raise RecipeError(f"recipe file {path}: key {_join(at, key)} is unknown; expected one of "
                                  f"{', '.join(sorted(allowed))}")
    for key, value in data.items():
        if key in ("inputs", "playbook") and isinstance(value, dict):
            _check_entries(path, value, key)
        elif key == "features" and isinstance(value, dict):
            _check_keys(path, value, "features")
            if isinstance(value.get("scores"), dict):
                _check_entries(path, value["scores"], "features.scores")
        elif key == "segments" and isinstance(value, list):
            for i, seg in enumerate(value):
                if not isinstance(seg, dict):
                    raise RecipeError(f"recipe file {path}: key segments[{i}] must be a mapping with name and profile")
                _check_keys(path, seg, "segments[]")
        elif key in ("overview", "demo", "naming") and isinstance(value, dict):
            _check_keys(path, value, key)
        elif key == "profile_columns" and isinstance(value, dict):
            _check_entries(path, value, key, " with table and sql")
        elif key == "insights" and isinstance(value, dict):
            _check_keys(path, value, "insights")
            for part in ("performance", "words"):
                if isinstance(value.get(part), dict):
                    _check_keys(path, value[part], f"insights.{part}")
            for part in ("breakdowns", "grids"):
                for i, item in enumerate(value.get(part) or []):
                    if not isinstance(item, dict):
                        raise RecipeError(f"recipe file {path}: key insights.{part}[{i}] must be a mapping")
                    _check_keys(path, item, f"insights.{part}[]")


def _join(at: str, key) -> str:
    return f"{at}.{key}" if at else str(key)


def _merged(path: Path, seen: tuple[Path, ...]) -> dict:
    """The file's keys over those of the recipe it extends (mappings merge, everything else replaces)."""
    if path in seen:
        raise RecipeError(f"recipe file {path}: extends itself through {' -> '.join(map(str, seen))}")
    data = _read(path)
    base = data.pop("extends", None)
    if base is None:
        data.setdefault("name", path.stem)
        return data
    if not isinstance(base, str):
        raise RecipeError(f"recipe file {path}: key extends must be a recipe name or file, got {base!r}")
    if base.strip().lower() in BUILT_IN:
        base_path = HERE / f"{base.strip().lower()}.yml"
    else:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        if not base_path.is_file():
            raise RecipeError(f"recipe file {path}: key extends names {base!r}, which is neither a built-in "
                              f"recipe ({', '.join(BUILT_IN)}) nor a file next to it")
    merged = _merge(_merged(base_path.resolve(), (*seen, path)), data)
    merged["name"] = data.get("name", path.stem)
    return merged


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _build(path: Path, d: dict) -> Recipe:
    def fail(key: str, expected: str):
        raise RecipeError(f"recipe file {path}: key {key}: expected {expected}")

    def names(key: str, value, allowed=None) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            fail(key, "a list of column names")
        if allowed is not None:
            unknown = [v for v in value if v not in allowed]
            if unknown:
                fail(key, f"names among {', '.join(allowed)}; {', '.join(unknown)} is not one")
        return tuple(value)

    for required in ("inputs", "customers_table", "features", "segments", "key"):
        if required not in d:
            fail(required, "a value (every recipe has inputs, customers_table, key, features and segments)")
    if not isinstance(d["inputs"], dict) or not d["inputs"]:
        fail("inputs", "a mapping of input table name -> its schema and rules")
    tables = {}
    for name, spec in d["inputs"].items():
        tables[name] = _input_table(path, str(name), spec, fail, names)
    customers = d["customers_table"]
    if customers not in tables:
        fail("customers_table", f"one of the inputs ({', '.join(tables)}), got {customers!r}")
    f = d["features"]
    build = f.get("build", "columns")
    if build not in BUILDERS:
        fail("features.build", f"one of {', '.join(BUILDERS)}, got {build!r}")
    sql = f.get("columns")
    if not isinstance(sql, dict) or not sql or not all(isinstance(v, str) and v.strip() for v in sql.values()):
        fail("features.columns", "a mapping of feature name -> SQL expression over the customers table")
    for name in sql:
        if not _IDENTIFIER.match(str(name)):
            fail(f"features.columns.{name}", "a feature name of letters, digits and underscores")
    features = tuple(sql)
    scores = {}
    for name, s in (f.get("scores") or {}).items():
        rules = s.get("at_most", s.get("at_least"))
        if s.get("column") not in features:
            fail(f"features.scores.{name}.column", f"one of the features ({', '.join(features)})")
        if ("at_most" in s) == ("at_least" in s) or not isinstance(rules, list) or not all(
                isinstance(r, list) and len(r) == 2 for r in rules):
            fail(f"features.scores.{name}", "column and one of at_most / at_least: a list of [bound, score]")
        scores[str(name)] = Score(s["column"], tuple((b, int(v)) for b, v in rules), "at_most" in s)
    segments = d["segments"]
    if not isinstance(segments, list) or not segments:
        fail("segments", "a list of {name, profile}, most valuable first")
    profile_columns = {}
    for name, spec in (d.get("profile_columns") or {}).items():
        if not _IDENTIFIER.match(str(name)) or name in features:
            fail(f"profile_columns.{name}", "a new column name (letters, digits, underscores), not a feature's")
        if spec.get("table") not in tables or not isinstance(spec.get("sql"), str) or not spec["sql"].strip():
            fail(f"profile_columns.{name}", f"table (one of {', '.join(tables)}) and sql (an expression over it)")
        if not tables[spec["table"]].key:
            fail(f"profile_columns.{name}.table", f"an input with a key to join the customers on; {spec['table']} has none")
        profile_columns[str(name)] = (spec["table"], spec["sql"])
    named_on = features + tuple(profile_columns)
    signatures = []
    for i, seg in enumerate(segments):
        profile = seg.get("profile")
        if not isinstance(seg.get("name"), str) or not isinstance(profile, dict) or not profile:
            fail(f"segments[{i}]", "name (text) and profile (feature -> z-score)")
        unknown = [c for c in profile if c not in named_on]
        if unknown:
            fail(f"segments[{i}].profile", f"features among {', '.join(named_on)}; {', '.join(unknown)} is not one")
        signatures.append((seg["name"], {str(c): float(z) for c, z in profile.items()}))
    if len({n for n, _ in signatures}) < len(signatures):
        fail("segments", "distinct names")
    traits = d.get("traits") or {}
    for c, words in traits.items():
        if c not in named_on or not (isinstance(words, list) and len(words) == 2):
            fail(f"traits.{c}", f"a feature ({', '.join(named_on)}) -> [word above, word below]")
    rank = d.get("rank_feature", features[0])
    if rank not in features:
        fail("rank_feature", f"one of the features ({', '.join(features)})")
    averages = d.get("profile_averages") or {}
    if not isinstance(averages, dict):
        fail("profile_averages", "a mapping of profile column -> features column")
    key = d["key"]
    if not isinstance(key, str) or not _IDENTIFIER.match(key):
        fail("key", "the customer column's name")
    naming = d.get("naming") or {}
    playbook = {}
    for name, spec in (d.get("playbook") or {}).items():
        try:
            playbook[str(name)] = Action(str(spec["action"]), spec["cost_per_customer"], spec["uplift"])
        except (KeyError, TypeError, ParameterError) as e:
            fail(f"playbook.{name}", "action (text), cost_per_customer (a number > 0) and uplift (a number >= 0)"
                 + (f": {e}" if isinstance(e, ParameterError) else ""))
    summary = d.get("summary") or {}
    for name, spec in summary.items():
        if not (_IDENTIFIER.match(str(name)) and isinstance(spec, list) and len(spec) == 2
                and isinstance(spec[0], str) and isinstance(spec[1], int)):
            fail(f"summary.{name}", "[gold column, decimals]: the per-segment average of that column, rounded")
    dashboard = d.get("dashboard", "generic")
    if not isinstance(dashboard, str) or not _IDENTIFIER.match(dashboard):
        fail("dashboard", "the name of a dashboard file dashboards/customer_segments_<name>.lvdash.json")
    return Recipe(
        name=str(d["name"]), source=str(path), describes=str(d.get("describes", "customers")), key=key,
        tables=tables, customers_table=customers, build=build, feature_sql={str(k): v for k, v in sql.items()},
        log_features=names("features.log", f.get("log"), features), scores=scores, signatures=tuple(signatures),
        naming_log_scale=names("naming_log_scale", d.get("naming_log_scale"), named_on),
        traits={str(c): (w[0], w[1]) for c, w in traits.items()}, rank_feature=rank,
        profile_averages={str(k): str(v) for k, v in averages.items()}, overview=dict(d.get("overview") or {}),
        demo=dict(d.get("demo") or {}), insights=dict(d.get("insights") or {}),
        summary={str(k): (v[0], v[1]) for k, v in summary.items()}, profile_columns=profile_columns,
        max_distance=_max_distance(naming.get("max_distance"), fail), unmatched=str(naming.get("unmatched", "Customers")),
        playbook=playbook, dashboard=dashboard)


def _max_distance(value, fail) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        fail("naming.max_distance", f"a number > 0 (mean squared z-score distance), got {value!r}")
    return float(value)


def _input_table(path: Path, name: str, spec: dict, fail, names) -> InputTable:
    at = f"inputs.{name}"
    if not _IDENTIFIER.match(name):
        fail(at, "a table name of letters, digits and underscores")
    schema = spec.get("schema")
    if not isinstance(schema, dict) or not schema:
        fail(f"{at}.schema", "a mapping of column -> type (" + ", ".join(TYPES) + ")")
    for column, kind in schema.items():
        if kind not in TYPES:
            fail(f"{at}.schema.{column}", f"one of {', '.join(TYPES)}, got {kind!r}")
    columns = tuple(schema)
    struct = T.StructType([T.StructField(str(c), TYPES[k]) for c, k in schema.items()])
    table = spec.get("table", name)
    if not isinstance(table, str) or not _IDENTIFIER.match(table):
        fail(f"{at}.table", f"a table name of letters, digits and underscores, got {table!r}")
    def per_column(key: str, what: str, expected: str) -> dict:
        """spec[key]: a mapping of this table's columns -> a non-empty text."""
        value = spec.get(key) or {}
        if not isinstance(value, dict):
            fail(f"{at}.{key}", what)
        for column, text in value.items():
            if column not in columns:
                fail(f"{at}.{key}.{column}", f"a column of {name} ({', '.join(columns)})")
            if not isinstance(text, str) or not text.strip():
                fail(f"{at}.{key}.{column}", expected)
        return value

    mapping = per_column("columns", "a mapping of the recipe's column -> your table's column",
                         "the name of your table's column")
    if len(set(mapping.values())) < len(mapping):
        fail(f"{at}.columns", "each of your columns mapped once")
    key = spec.get("key")
    if key is not None and key not in columns:
        fail(f"{at}.key", f"a column of {name} ({', '.join(columns)})")
    plausible = spec.get("plausible") or {}
    for column, bounds in plausible.items():
        if column not in columns or not (isinstance(bounds, list) and len(bounds) == 2):
            fail(f"{at}.plausible.{column}", f"a column of {name} -> [low, high]")
    min_rows = spec.get("min_rows", 1)
    if not isinstance(min_rows, int) or min_rows < 0:
        fail(f"{at}.min_rows", "a whole number, 0 or more")
    descriptions = per_column("descriptions", "a mapping of column -> what it is (units, how it is computed)",
                              "a non-empty text: what the column is, its units, how it is computed")
    return InputTable(
        name=name, table=table, schema=struct, columns={str(k): str(v) for k, v in mapping.items()}, key=key,
        required=names(f"{at}.required", spec.get("required"), columns),
        non_negative=names(f"{at}.non_negative", spec.get("non_negative"), columns),
        plausible={str(c): (float(lo), float(hi)) for c, (lo, hi) in plausible.items()}, min_rows=min_rows,
        optional=bool(spec.get("optional", False)),
        optional_columns=names(f"{at}.optional_columns", spec.get("optional_columns"), columns),
        attributes=names(f"{at}.attributes", spec.get("attributes"), columns),
        descriptions={str(c): " ".join(t.split()) for c, t in descriptions.items()})


def builtin() -> dict[str, Recipe]:
    return {name: get(name) for name in BUILT_IN}


def __getattr__(name: str):
    # AIRLINE, RETAIL (the built-in recipes, for tests and readers) and RECIPES read their files on first
    # use, not at import.
    if name in ("AIRLINE", "RETAIL"):
        return get(name.lower())
    if name == "RECIPES":
        return builtin()
    raise AttributeError(name)
