"""How much of the Data2CRM.API v1 contract crmgate serves, checked mechanically.

An operation of the reference document counts as served when crmgate's own OpenAPI document has
the same method on the same path (under /v1) and it matches: every reference parameter exists with
the same location, requiredness and type; crmgate requires nothing the reference does not; and
each success response has the reference's status code and a schema that carries every property
the reference's schema has, with the same types (crmgate may add properties); and a request body
with any property of the reference's body schema is accepted (not refused as unknown).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

REFERENCE = Path(__file__).with_name("data2crm-api-v1.openapi.json")
PREFIX = "/v1"
METHODS = ("get", "put", "post", "delete", "patch")


@dataclass
class OperationResult:
    method: str
    path: str
    operation_id: str
    tag: str
    served: bool
    problems: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return self.served and not self.problems


@dataclass
class Coverage:
    operations: list[OperationResult]
    extensions: list[str]

    @property
    def total(self) -> int:
        return len(self.operations)

    @property
    def served(self) -> list[OperationResult]:
        return [op for op in self.operations if op.served]

    @property
    def matching(self) -> list[OperationResult]:
        return [op for op in self.operations if op.matches]

    @property
    def mismatched(self) -> list[OperationResult]:
        return [op for op in self.operations if op.served and op.problems]

    def by_tag(self) -> list[tuple[str, int, int]]:
        totals = Counter(op.tag for op in self.operations)
        served = Counter(op.tag for op in self.operations if op.matches)
        return [(tag, served[tag], totals[tag]) for tag in sorted(totals)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "served": len(self.matching),
            "mismatched": [
                {"method": op.method.upper(), "path": op.path, "problems": op.problems}
                for op in self.mismatched
            ],
            "operations": [
                {
                    "method": op.method.upper(),
                    "path": op.path,
                    "operation_id": op.operation_id,
                    "served": op.matches,
                }
                for op in self.operations
            ],
            "extensions": self.extensions,
        }


@cache
def load_reference() -> dict[str, Any]:
    """The reference document (cached: treat it as read-only)."""
    return json.loads(REFERENCE.read_text())  # type: ignore[no-any-return]


class _Resolver:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, node: Any) -> Any:
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            seen += 1
            if seen > 50:
                raise ValueError("reference loop")
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node


def _nonnull(schema: dict[str, Any], resolver: _Resolver) -> dict[str, Any]:
    schema = resolver.resolve(schema)
    for key in ("anyOf", "oneOf"):
        variants = [
            resolver.resolve(v)
            for v in schema.get(key, [])
            if resolver.resolve(v).get("type") != "null"
        ]
        if len(variants) == 1:
            return _nonnull(variants[0], resolver)
    return schema


def _schema_problems(
    ref: Any, ours: Any, ref_doc: _Resolver, our_doc: _Resolver, where: str, depth: int = 0
) -> list[str]:
    if depth > 8:
        return []
    ref = _nonnull(ref or {}, ref_doc)
    ours = _nonnull(ours or {}, our_doc)
    ref_type = ref.get("type") or ("object" if "properties" in ref else None)
    our_type = ours.get("type") or ("object" if "properties" in ours else None)
    if ref_type is None:
        return []
    if our_type is None and not any(
        k in ours for k in ("anyOf", "oneOf", "allOf", "enum", "const")
    ):
        return []  # ours accepts any value here
    if ref_type != our_type:
        return [f"{where}: type {our_type} where the reference has {ref_type}"]
    problems: list[str] = []
    if ref_type == "array":
        problems += _schema_problems(
            ref.get("items"), ours.get("items"), ref_doc, our_doc, f"{where}[]", depth + 1
        )
    elif ref_type == "object":
        our_properties = ours.get("properties", {})
        for name, ref_property in ref.get("properties", {}).items():
            if name not in our_properties:
                problems.append(f"{where}.{name}: missing")
                continue
            problems += _schema_problems(
                ref_property, our_properties[name], ref_doc, our_doc, f"{where}.{name}", depth + 1
            )
    return problems


def _parameters(
    operation: dict[str, Any], resolver: _Resolver
) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for parameter in operation.get("parameters", []):
        parameter = resolver.resolve(parameter)
        name = parameter["name"].lower() if parameter["in"] == "header" else parameter["name"]
        found[(parameter["in"], name)] = parameter
    return found


def _body_problems(
    ref_op: dict[str, Any], our_op: dict[str, Any], ref_doc: _Resolver, our_doc: _Resolver
) -> list[str]:
    """A body the reference accepts must be accepted: every reference property is known."""
    ref_body = ref_doc.resolve(ref_op.get("requestBody") or {})
    ref_schema = ref_body.get("content", {}).get("application/json", {}).get("schema")
    if ref_schema is None:
        return []
    our_body = our_doc.resolve(our_op.get("requestBody") or {})
    our_schema = our_body.get("content", {}).get("application/json", {}).get("schema")
    if our_schema is None:
        return ["request body: none accepted where the reference has one"]
    ref_schema, our_schema = _nonnull(ref_schema, ref_doc), _nonnull(our_schema, our_doc)
    problems: list[str] = []
    our_properties = our_schema.get("properties", {})
    closed = our_schema.get("additionalProperties") is False
    for name, ref_property in ref_schema.get("properties", {}).items():
        if name not in our_properties:
            if closed:
                problems.append(f"request body.{name}: refused, the reference accepts it")
            continue
        problems += _schema_problems(
            ref_property, our_properties[name], ref_doc, our_doc, f"request body.{name}"
        )
    return problems


def _operation_problems(
    ref_op: dict[str, Any], our_op: dict[str, Any], ref_doc: _Resolver, our_doc: _Resolver
) -> list[str]:
    problems: list[str] = []
    ref_params = _parameters(ref_op, ref_doc)
    our_params = _parameters(our_op, our_doc)
    for key, ref_param in ref_params.items():
        where, name = key[0], ref_param["name"]
        ours = our_params.get(key)
        if ours is None:
            problems.append(f"{where} parameter {name}: missing")
            continue
        if bool(ref_param.get("required")) != bool(ours.get("required")):
            problems.append(
                f"{where} parameter {name}: required={bool(ours.get('required'))}, "
                f"reference says {bool(ref_param.get('required'))}"
            )
        problems += _schema_problems(
            ref_param.get("schema"),
            ours.get("schema"),
            ref_doc,
            our_doc,
            f"{where} parameter {name}",
        )
    for key, our_param in our_params.items():
        if key not in ref_params and our_param.get("required"):
            problems.append(f"{key[0]} parameter {our_param['name']}: required, not in reference")
    problems += _body_problems(ref_op, our_op, ref_doc, our_doc)
    ref_success = {code for code in ref_op.get("responses", {}) if code.startswith("2")}
    our_success = {code for code in our_op.get("responses", {}) if code.startswith("2")}
    if ref_success and not ref_success & our_success:
        problems.append(
            f"success status {sorted(our_success)}, reference says {sorted(ref_success)}"
        )
    for code in sorted(ref_success & our_success):
        ref_content = ref_doc.resolve(ref_op["responses"][code]).get("content", {})
        our_content = our_doc.resolve(our_op["responses"][code]).get("content", {})
        ref_schema = ref_content.get("application/json", {}).get("schema")
        if ref_schema is None:
            continue
        our_schema = our_content.get("application/json", {}).get("schema")
        if our_schema is None:
            problems.append(f"response {code}: no JSON body where the reference has one")
            continue
        problems += _schema_problems(ref_schema, our_schema, ref_doc, our_doc, f"response {code}")
    return problems


def compare(ours: dict[str, Any], reference: dict[str, Any] | None = None) -> Coverage:
    reference = reference or load_reference()
    ref_doc, our_doc = _Resolver(reference), _Resolver(ours)
    results: list[OperationResult] = []
    referenced: set[tuple[str, str]] = set()
    for path, operations in reference["paths"].items():
        for method in METHODS:
            ref_op = operations.get(method)
            if ref_op is None:
                continue
            our_path = PREFIX + path
            referenced.add((method, our_path))
            our_op = ours.get("paths", {}).get(our_path, {}).get(method)
            result = OperationResult(
                method=method,
                path=path,
                operation_id=ref_op.get("operationId", ""),
                tag=(ref_op.get("tags") or ["other"])[0],
                served=our_op is not None,
            )
            if our_op is not None:
                result.problems = _operation_problems(ref_op, our_op, ref_doc, our_doc)
            results.append(result)
    extensions = sorted(
        f"{method.upper()} {path}"
        for path, operations in ours.get("paths", {}).items()
        for method in METHODS
        if method in operations and (method, path) not in referenced
    )
    return Coverage(results, extensions)


def render(coverage: Coverage, *, verbose: bool = False) -> str:
    lines = [
        f"crmgate serves {len(coverage.matching)} of the {coverage.total} operations of the "
        f"Data2CRM.API v1 contract ({100 * len(coverage.matching) / coverage.total:.1f}%)."
    ]
    if coverage.mismatched:
        lines.append(f"{len(coverage.mismatched)} routed operation(s) do not match the contract:")
        for op in coverage.mismatched:
            lines.append(f"  {op.method.upper()} {op.path}")
            lines += [f"    - {problem}" for problem in op.problems]
    lines.append("")
    lines.append(f"{'tag':<28} served / total")
    for tag, served, total in coverage.by_tag():
        if verbose or served:
            lines.append(f"{tag:<28} {served:>6} / {total}")
    if not verbose:
        untouched = sum(1 for _, served, _ in coverage.by_tag() if not served)
        lines.append(f"(+ {untouched} tags with nothing served yet; --verbose lists them)")
    if verbose:
        lines.append("")
        lines.append("served operations:")
        lines += [f"  {op.method.upper():<6} {op.path}" for op in coverage.matching]
    if coverage.extensions:
        lines.append("")
        lines.append("crmgate additions (not in the contract):")
        lines += [f"  {extension}" for extension in coverage.extensions]
    return "\n".join(lines)
