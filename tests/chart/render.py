#!/usr/bin/env python3
"""Render and lint the kosmos-vc chart with Helm's own engine, offline.

Uses the PyPI package helm-python-sdk (module ``helm_python``), which binds Helm v4's Go
SDK, so the output is exactly what ``helm template`` / ``helm install`` would produce.

    render.py check
        Exit 0 when the Helm engine loads (prints its version); 4 when it is missing.
    render.py render [-f VALUES]... [--set K=V]... [--set-string K=V]...
                     [--release NAME] [--namespace NS] [--existing OBJECTS.yaml]...
                     [--no-crds] [--output-dir DIR | --json]
        Print the rendered manifests, CRDs included, as one multi-document YAML stream in
        the order ``helm install`` creates them, or write one numbered file per object
        into DIR (apply them in file-name order); --json prints a JSON array instead.
        --existing: objects that already exist in the cluster, for the chart's ``lookup``
        calls (a second render with the first render's Secret is a ``helm upgrade``).
        They are served by a throwaway HTTPS API server on 127.0.0.1 that answers only
        discovery and GETs of those objects, with its own CA that Helm verifies.
    render.py lint [-f VALUES]... [--set K=V]... [--namespace NS]
        Print Helm's lint report as JSON; exit 1 when it has a warning or an error.

Exit codes: 0 success, 1 lint findings, 2 bad usage or input file, 3 the chart refused the
values or failed to render (message on stderr), 4 helm-python-sdk is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

DEFAULT_CHART = Path(__file__).resolve().parents[2] / "charts" / "kosmos-vc"
DEFAULT_RELEASE = "kosmos-vc"
DEFAULT_NAMESPACE = "kosmos-system"

EXIT_LINT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_CHART_REFUSED = 3
EXIT_NO_HELM = 4

# Lint severities as helm-python-sdk reports them.
SEVERITY_WARNING = 2
SEVERITY_NAMES = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}

DOCUMENT_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)

# The order `helm install` creates kinds in (Helm's releaseutil.InstallOrder); unknown
# kinds such as ServiceMonitor and cert-manager's come last. Webhook configurations come
# after the webhook's Deployment, so applying the files in order never points the
# apiserver at a webhook that does not exist yet.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap",
    "StorageClass", "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition",
    "ClusterRole", "ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role",
    "RoleList", "RoleBinding", "RoleBindingList", "Service", "DaemonSet", "Pod",
    "ReplicationController", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler",
    "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]


class UsageError(Exception):
    """Bad command line or unreadable input file."""


def import_helm() -> Any:
    try:
        import helm_python  # noqa: PLC0415 - optional dependency, checked at run time
    except ImportError as error:
        print(
            f"helm-python-sdk is not installed ({error}); install it with "
            "`python3 -m pip install -r .ci/requirements.txt`",
            file=sys.stderr,
        )
        sys.exit(EXIT_NO_HELM)
    return helm_python


# --- values -------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge like Helm merges -f files and --set: maps recursively, anything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def user_values(helm: Any, args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in args.values:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot read values file {path}: {error}") from error
        values = deep_merge(values, helm.values_from_yaml(text) or {})
    for expression in args.set:
        values = deep_merge(values, helm.parse_set_string(expression))
    for expression in args.set_string:
        values = deep_merge(values, helm.parse_set_string_values(expression))
    return values


def split_documents(helm: Any, stream: str) -> Iterator[dict[str, Any]]:
    """Parse a multi-document YAML stream with Helm's YAML reader, skipping empty documents."""
    for document in DOCUMENT_SEPARATOR.split(stream):
        parsed = helm.values_from_yaml(document) if document.strip() else None
        if parsed:
            yield parsed


# --- rendering ----------------------------------------------------------------------


def rendered_documents(
    helm: Any, chart: Any, values: dict[str, Any], args: argparse.Namespace
) -> list[tuple[str, str]]:
    """(source, YAML text) of every object, in the order `helm install` creates them."""
    documents: list[tuple[str, str]] = []
    if not args.no_crds:
        for crd in chart.crds:
            source = crd["filename"]
            documents.extend((source, text) for text in DOCUMENT_SEPARATOR.split(crd["data"]))

    options = {"name": args.release, "namespace": args.namespace}
    if args.existing:
        objects = load_existing(helm, args.existing)
        with FakeApiServer(objects) as server, helm.Config(
            kubeconfig_content=server.kubeconfig(args.namespace), namespace=args.namespace
        ) as config:
            manifests = config.render(chart, values, is_upgrade=True, **options)
    else:
        manifests = chart.render(values, is_install=True, **options)

    for source in sorted(manifests):
        if source.endswith("NOTES.txt"):
            continue
        documents.extend((source, text) for text in DOCUMENT_SEPARATOR.split(manifests[source]))
    parsed = [
        (source, text.strip("\n") + "\n", helm.values_from_yaml(text))
        for source, text in documents
        if text.strip()
    ]
    # Helm creates everything under crds/ before any template.
    ordered = sorted(
        (entry for entry in parsed if entry[2]),
        key=lambda entry: (
            "/crds/" not in f"/{entry[0]}",
            install_rank(str(entry[2].get("kind", ""))),
        ),
    )
    return [(source, text) for source, text, _ in ordered]


def install_rank(kind: str) -> int:
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def load_existing(helm: Any, paths: list[str]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot read existing objects file {path}: {error}") from error
        for obj in split_documents(helm, text):
            if not obj.get("apiVersion") or not obj.get("kind"):
                raise UsageError(f"{path}: every existing object needs apiVersion and kind")
            if not obj.get("metadata", {}).get("name"):
                raise UsageError(f"{path}: every existing object needs metadata.name")
            objects.append(obj)
    return objects


def file_name(index: int, helm: Any, text: str) -> str:
    obj = helm.values_from_yaml(text)
    kind = str(obj.get("kind", "object")).lower()
    name = str(obj.get("metadata", {}).get("name", "unnamed"))
    safe = re.sub(r"[^A-Za-z0-9.-]", "_", name)
    return f"{index:03d}-{kind}-{safe}.yaml"


def command_render(helm: Any, args: argparse.Namespace) -> int:
    values = user_values(helm, args)
    with helm.Chart.load(args.chart) as chart:
        documents = rendered_documents(helm, chart, values, args)
    if args.output_dir:
        directory = Path(args.output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for index, (source, text) in enumerate(documents):
            path = directory / file_name(index, helm, text)
            path.write_text(f"# Source: {source}\n{text}", encoding="utf-8")
        print(f"wrote {len(documents)} manifests to {directory}", file=sys.stderr)
    elif args.json:
        objects = [helm.values_from_yaml(text) for _, text in documents]
        print(json.dumps(objects, indent=1))
    else:
        sys.stdout.write("".join(f"---\n# Source: {source}\n{text}" for source, text in documents))
    return 0


def command_lint(helm: Any, args: argparse.Namespace) -> int:
    values = user_values(helm, args)
    report = helm.lint(args.chart, values or None, strict=True, namespace=args.namespace)
    print(json.dumps(report, indent=2))
    findings = [
        message
        for message in report.get("messages", [])
        if message.get("severity", 0) >= SEVERITY_WARNING
    ]
    for message in findings:
        severity = SEVERITY_NAMES.get(message.get("severity", 0), "UNKNOWN")
        print(f"{severity} {message.get('path')}: {message.get('error')}", file=sys.stderr)
    for error in report.get("errors", []):
        print(f"ERROR {error}", file=sys.stderr)
    return EXIT_LINT_FINDINGS if findings or report.get("errors") else 0


def command_check(helm: Any, _args: argparse.Namespace) -> int:
    print(f"helm-python-sdk {helm.__version__}, Helm {helm.helm_sdk_version()}")
    return 0


# --- a throwaway API server for `lookup` ------------------------------------------


def plural(kind: str) -> str:
    """Resource name of a kind, the way the apiserver pluralizes the common cases."""
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    if lower.endswith(("s", "x", "ch")):
        return lower + "es"
    return lower + "s"


class FakeApiServer:
    """Serves discovery and GET of a fixed set of objects over HTTPS on 127.0.0.1.

    Enough for Helm's ``lookup``: it discovers the resource of a kind, then GETs one
    object or a list. Everything else is 404 or 405, so a chart that wrote to the
    cluster during a render would fail loudly.
    """

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self._tmp = tempfile.mkdtemp(prefix="kosmos-vc-render-")
        self._cert, self._key = self._self_signed_certificate()
        handler = self._handler()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._cert, self._key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def kubeconfig(self, namespace: str) -> str:
        port = self._server.server_address[1]
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "render",
                        "cluster": {
                            "server": f"https://127.0.0.1:{port}",
                            "certificate-authority": self._cert,
                        },
                    }
                ],
                "users": [{"name": "render", "user": {"token": "render-lookup"}}],
                "contexts": [
                    {
                        "name": "render",
                        "context": {"cluster": "render", "user": "render", "namespace": namespace},
                    }
                ],
                "current-context": "render",
            }
        )

    def _self_signed_certificate(self) -> tuple[str, str]:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise UsageError("--existing needs the openssl command to make the lookup server's certificate")
        cert, key = os.path.join(self._tmp, "tls.crt"), os.path.join(self._tmp, "tls.key")
        subprocess.run(
            [
                openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "1", "-subj", "/CN=render-lookup",
                "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", key, "-out", cert,
            ],
            check=True,
            capture_output=True,
        )
        return cert, key

    def _resources(self) -> dict[str, list[dict[str, Any]]]:
        """APIResourceList entries per group/version, from the kinds of the objects."""
        by_group_version: dict[str, dict[str, dict[str, Any]]] = {"v1": {}}
        for obj in self.objects:
            kinds = by_group_version.setdefault(obj["apiVersion"], {})
            kinds[obj["kind"]] = {
                "name": plural(obj["kind"]),
                "singularName": obj["kind"].lower(),
                "namespaced": bool(obj.get("metadata", {}).get("namespace")),
                "kind": obj["kind"],
                "verbs": ["get", "list"],
            }
        # Secrets are what the chart looks up; answer "not found" for them even when
        # no Secret exists, instead of "no such resource".
        by_group_version["v1"].setdefault(
            "Secret",
            {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret", "verbs": ["get", "list"]},
        )
        return {gv: list(kinds.values()) for gv, kinds in by_group_version.items()}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:  # keep stderr for real errors
                return

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status, body = server.answer(self.path.split("?", 1)[0])
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _refuse(self) -> None:
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_PATCH = do_DELETE = _refuse  # noqa: N815

        return Handler

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        resources = self._resources()
        if path == "/version":
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            groups = sorted({gv.split("/")[0] for gv in resources if "/" in gv})
            return 200, {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [
                            {"groupVersion": gv, "version": gv.split("/")[1]}
                            for gv in resources
                            if gv.startswith(group + "/")
                        ],
                    }
                    for group in groups
                ],
            }
        parts = [part for part in path.split("/") if part]
        if parts[:1] == ["api"]:
            group_version, rest = "v1", parts[2:] if parts[1:2] == ["v1"] else None
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            rest = None
        if rest is None or group_version not in resources:
            return not_found(path)
        if not rest:
            return 200, {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": resources[group_version],
            }
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource, name = rest[0], (rest[1] if len(rest) > 1 else None)
        kinds = {entry["name"]: entry["kind"] for entry in resources[group_version]}
        if resource not in kinds or len(rest) > 2:
            return not_found(path)
        matches = [
            obj
            for obj in self.objects
            if obj["apiVersion"] == group_version
            and obj["kind"] == kinds[resource]
            and (namespace is None or obj.get("metadata", {}).get("namespace") == namespace)
            and (name is None or obj["metadata"]["name"] == name)
        ]
        if name is None:
            return 200, {
                "kind": f"{kinds[resource]}List",
                "apiVersion": group_version,
                "metadata": {"resourceVersion": "1"},
                "items": matches,
            }
        if not matches:
            return not_found(path, resource, name)
        return 200, matches[0]


def not_found(path: str, resource: str = "", name: str = "") -> tuple[int, dict[str, Any]]:
    message = f'{resource} "{name}" not found' if name else f"the server could not find {path}"
    return 404, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "NotFound",
        "details": {"name": name, "kind": resource},
        "code": 404,
    }


# --- command line -------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)

    def common(command: argparse.ArgumentParser) -> None:
        command.add_argument("--chart", default=str(DEFAULT_CHART), help="chart directory")
        command.add_argument("-f", "--values", action="append", default=[], help="values file")
        command.add_argument("--set", action="append", default=[], help="like helm --set")
        command.add_argument("--set-string", action="append", default=[], help="like helm --set-string")
        command.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="release namespace")

    commands.add_parser("check", help="is the Helm engine available?")
    render = commands.add_parser("render", help="render the chart")
    common(render)
    render.add_argument("--release", default=DEFAULT_RELEASE, help="release name")
    render.add_argument("--existing", action="append", default=[], help="objects for lookup")
    render.add_argument("--no-crds", action="store_true", help="leave out crds/")
    render.add_argument("--output-dir", help="write one file per object here")
    render.add_argument("--json", action="store_true", help="print a JSON array of the objects")
    lint = commands.add_parser("lint", help="lint the chart (strict)")
    common(lint)
    return root


def main() -> int:
    args = parser().parse_args()
    helm = import_helm()
    handlers = {"check": command_check, "render": command_render, "lint": command_lint}
    try:
        return handlers[args.command](helm, args)
    except UsageError as error:
        print(f"render.py: {error}", file=sys.stderr)
        return EXIT_USAGE
    except helm.HelmError as error:
        print(f"render.py: the chart refused the values or failed to render:\n{error}", file=sys.stderr)
        return EXIT_CHART_REFUSED


if __name__ == "__main__":
    sys.exit(main())
