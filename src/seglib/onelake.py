"""Tables at paths, e.g. OneLake from another workspace, with service-principal OAuth from a secret store.

The lab's cross-workspace mode: the Gold inputs are Delta folders under ``source_path`` and seglib
writes under ``target_path``, typically
``abfss://<workspace>@onelake.dfs.fabric.microsoft.com/<lakehouse>.Lakehouse/Tables``. When either is
an abfss:// URL and ``secret_scope`` plus the three ``*_key`` parameters are set, the session
authenticates to that storage as a service principal (OAuth client credentials), whose tenant id,
client id and secret are read from the platform's secret store. Parameters only ever name secrets;
their values are never printed, logged or put into an error message.
"""
from __future__ import annotations

import importlib
import os
import re
from typing import Any

from . import tables as TB
from .errors import ParameterError

ONELAKE_HOST = "onelake.dfs.fabric.microsoft.com"
SECRET_KEYS = ("tenant_id_key", "client_id_key", "client_secret_key")
_ABFSS_HOST = re.compile(r"^abfss://[^@/]+@([^/]+)")


def _env_name(scope: str, key: str) -> str:
    return "SEGLIB_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", f"{scope}_{key}").upper()


def _dbutils(namespace: dict | None):
    if namespace is None:  # called outside a notebook cell: look in the IPython user namespace
        try:
            from IPython import get_ipython
            namespace = getattr(get_ipython(), "user_ns", None)
        except ImportError:
            namespace = None
    return (namespace or {}).get("dbutils")


def get_secret(scope: str, key: str, namespace: dict | None = None) -> str:
    """The secret *key* of *scope*: Databricks ``dbutils.secrets`` when the notebook has dbutils,
    Fabric ``notebookutils.credentials`` (scope = Key Vault URL) when importable, else the environment
    variable ``SEGLIB_SECRET_<SCOPE>_<KEY>`` (upper case, other characters as ``_``) for local runs."""
    missing = ParameterError(f"secret {key!r} not found in secret scope {scope!r}")
    dbutils = _dbutils(namespace)
    if dbutils is not None:
        source = "Databricks secret scope"
        lookup = lambda: dbutils.secrets.get(scope, key)  # noqa: E731
    else:
        try:
            notebookutils = importlib.import_module("notebookutils")
        except ImportError:
            notebookutils = None
        if notebookutils is not None:
            source = "Key Vault"
            lookup = lambda: notebookutils.credentials.getSecret(scope, key)  # noqa: E731
        else:
            source, variable = "environment", _env_name(scope, key)
            lookup = lambda: os.environ.get(variable)  # noqa: E731
            missing = ParameterError(f"secret {key!r} of secret scope {scope!r} not found: "
                                     f"set the environment variable {variable} for local runs")
    try:
        value = lookup()
    except Exception as e:  # the store's own error; its text is not repeated (it could echo values)
        raise ParameterError(f"secret {key!r} of scope {scope!r} could not be read from the {source} "
                             f"({type(e).__name__})") from None
    if not value:
        raise missing
    return value


def oauth_confs(host: str, tenant_id: str, client_id: str, client_secret: str) -> dict[str, str]:
    """The ABFS driver's OAuth client-credentials settings for one storage host."""
    return {
        f"fs.azure.account.auth.type.{host}": "OAuth",
        f"fs.azure.account.oauth.provider.type.{host}":
            "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider",
        f"fs.azure.account.oauth2.client.id.{host}": client_id,
        f"fs.azure.account.oauth2.client.secret.{host}": client_secret,
        f"fs.azure.account.oauth2.client.endpoint.{host}":
            f"https://login.microsoftonline.com/{tenant_id}/oauth2/token",
    }


def configure_oauth(spark, tenant_id: str, client_id: str, client_secret: str, host: str = ONELAKE_HOST) -> list[str]:
    """Let *spark* reach abfss://...@*host* as the service principal. Returns the conf keys set
    (never their values)."""
    confs = oauth_confs(host, tenant_id, client_id, client_secret)
    for name, value in confs.items():
        try:
            spark.conf.set(name, value)
        except Exception as e:  # e.g. a conf serverless compute does not allow; never echo the value
            raise ParameterError(f"could not set Spark conf {name} ({type(e).__name__}); on compute that does "
                                 f"not allow it, configure storage access on the cluster instead") from None
    return list(confs)


def abfss_hosts(*paths: str) -> list[str]:
    """The storage hosts of the abfss:// paths among *paths*, in order, each once."""
    hosts = [m.group(1) for m in (_ABFSS_HOST.match(p or "") for p in paths) if m]
    return list(dict.fromkeys(hosts))


def setup_storage(spark, params: dict[str, Any], namespace: dict | None = None) -> tuple[TB.Location, str]:
    """Where this notebook's tables live, from its parameters (``globals()`` in a notebook): the run's
    Location (``schema``, ``catalog``, ``source_path``, ``target_path``; empty paths = catalog tables)
    and a one-line description (no secrets). For abfss:// paths with ``secret_scope`` and all three
    ``*_key`` parameters set, configures OAuth for their storage hosts with secrets from the store.
    """
    namespace = params if namespace is None else namespace
    where = TB.Location(params["schema"], params.get("catalog") or None, params.get("source_path") or "",
                        params.get("target_path") or "")
    scope = params.get("secret_scope") or ""
    keys = {k: params.get(k) or "" for k in SECRET_KEYS}
    given = [k for k, v in keys.items() if v]
    if given and len(given) < len(SECRET_KEYS):
        raise ParameterError(f"set all of {', '.join(SECRET_KEYS)} or none; missing: "
                             f"{', '.join(k for k in SECRET_KEYS if not keys[k])}")
    if given and not scope:
        raise ParameterError("secret_scope is required when the *_key parameters name secrets")
    hosts = abfss_hosts(where.source_path, where.target_path)
    if given and hosts:
        tenant_id, client_id, client_secret = (get_secret(scope, keys[k], namespace) for k in SECRET_KEYS)
        for host in hosts:
            configure_oauth(spark, tenant_id, client_id, client_secret, host)
    return where, where.describe() + (f"; OAuth service principal for {', '.join(hosts)}" if given and hosts else "")
