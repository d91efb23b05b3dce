"""How much of the Data2CRM.API v1 contract crmgate serves, checked mechanically.

An operation of the reference document counts as served when crmgate's own OpenAPI document has
the same method on the same path (under /v1) and it matches: every reference parameter exists with
the same location, requiredness and type; crmgate requires nothing the reference does not; and
each success response has the reference's status code and a schema that carries every property
the reference's schema has, with the same types (crmgate may add properties); and a request body
with any property of the reference's body schema is accepted (not refused as unknown).

Beyond serving, the answers' conformance: for each served operation, the schema of its success
answer in crmgate's document is compared with the reference's, property by property ($refs
resolved on both sides), and every difference is listed with its kind (added, readOnly,
required, nullable, type, format, enum, missing, declared) and the reason crmgate differs on
purpose, where it has one: its additions, the readOnly marks and the properties it always sends
have a reason of their kind; any other difference has a reason only where crmgate's document gives
one on the property (``x-crmgate-differs``). A difference without a reason is a defect.
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


REASONS = {
    "added": "crmgate's addition beside the reference's properties",
    "readOnly": "set by the gateway or the CRM, never by a client: marked readOnly",
    "required": "crmgate always sends it",
}
EXTENSION = "x-crmgate-differs"


@dataclass(frozen=True)
class Difference:
    """One way an answer's schema in crmgate's document differs from the reference's."""

    field: str  # where in the answer: "[].user_id", "me.address[].street"
    kind: str
    detail: str
    reason: str | None  # why crmgate differs on purpose; None: it should not differ

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "kind": self.kind,
            "detail": self.detail,
            "reason": self.reason,
        }


@dataclass
class AnswerResult:
    method: str
    path: str
    operation_id: str
    status: str
    differences: list[Difference] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.differences

    @property
    def undeclared(self) -> list[Difference]:
        return [d for d in self.differences if d.reason is None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.upper(),
            "path": self.path,
            "operation_id": self.operation_id,
            "status": self.status,
            "equal": self.equal,
            "differences": [d.as_dict() for d in self.differences],
        }


@dataclass
class Coverage:
    operations: list[OperationResult]
    extensions: list[str]
    answers: list[AnswerResult] = field(default_factory=list)

    @property
    def answers_equal(self) -> list[AnswerResult]:
        return [a for a in self.answers if a.equal]

    @property
    def answers_undeclared(self) -> list[AnswerResult]:
        return [a for a in self.answers if a.undeclared]

    def deliberate(self) -> list[tuple[str, str, str, int]]:
        """(kind, property, reason, operations) for each difference crmgate makes on purpose."""
        found: Counter[tuple[str, str, str]] = Counter()
        for answer in self.answers:
            seen = {
                (d.kind, d.field.rsplit(".", 1)[-1].removeprefix("[]"), d.reason or "")
                for d in answer.differences
                if d.reason is not None
            }
            found.update(seen)
        return sorted(
            ((kind, name, reason, count) for (kind, name, reason), count in found.items()),
            key=lambda row: (-row[3], row[0], row[1]),
        )

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
            "answers": {
                "total": len(self.answers),
                "equal": len(self.answers_equal),
                "differ_on_purpose": len(self.answers)
                - len(self.answers_equal)
                - len(self.answers_undeclared),
                "differ_without_reason": len(self.answers_undeclared),
                "operations": [answer.as_dict() for answer in self.answers],
            },
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


def _nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(
        isinstance(v, dict) and v.get("type") == "null"
        for key in ("anyOf", "oneOf")
        for v in schema.get(key, [])
    )


def _kind(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    return kind or ("object" if "properties" in schema else None)


def _answer_differences(
    ref: Any, ours: Any, ref_doc: _Resolver, our_doc: _Resolver, where: str, depth: int = 0
) -> list[Difference]:
    """How the answer schema ``ours`` differs from the reference's ``ref`` (see the module)."""
    if depth > 12:
        return []
    ref, ours = ref_doc.resolve(ref or {}), our_doc.resolve(ours or {})
    found: list[Difference] = []
    here = where or "(answer)"
    if _nullable(ours):
        found.append(Difference(here, "nullable", "null allowed; the reference has none", None))
    ref, ours = _nonnull(ref, ref_doc), _nonnull(ours, our_doc)
    declared = ours.get(EXTENSION)
    if declared:
        return [*found, Difference(here, "declared", "differs from the reference", declared)]
    if ours.get("readOnly") and not ref.get("readOnly"):
        found.append(Difference(here, "readOnly", "readOnly", REASONS["readOnly"]))
    ref_kind, our_kind = _kind(ref), _kind(ours)
    if ref_kind is None:
        return found
    if ref_kind != our_kind:
        detail = f"{our_kind or 'any value'}, the reference has {ref_kind}"
        return [*found, Difference(here, "type", detail, None)]
    if ref.get("format") != ours.get("format") and ref.get("format"):
        detail = f"format {ours.get('format')}, the reference has {ref['format']}"
        found.append(Difference(here, "format", detail, None))
    if "enum" in ref and sorted(map(str, ref["enum"])) != sorted(map(str, ours.get("enum", []))):
        found.append(Difference(here, "enum", "not the reference's list of values", None))
    if ref_kind == "array":
        found += _answer_differences(
            ref.get("items"), ours.get("items"), ref_doc, our_doc, f"{where}[]", depth + 1
        )
    elif ref_kind == "object":
        ref_properties = ref.get("properties", {})
        our_properties = ours.get("properties", {})
        prefix = f"{where}." if where else ""
        for name, ref_property in ref_properties.items():
            if name not in our_properties:
                found.append(Difference(prefix + name, "missing", "not in crmgate's", None))
                continue
            found += _answer_differences(
                ref_property, our_properties[name], ref_doc, our_doc, prefix + name, depth + 1
            )
        for name, our_property in our_properties.items():
            if name not in ref_properties:
                described = our_doc.resolve(our_property).get("description")
                found.append(Difference(prefix + name, "added", described or "", REASONS["added"]))
        for name in sorted(set(ours.get("required", [])) - set(ref.get("required", []))):
            found.append(Difference(prefix + name, "required", "required", REASONS["required"]))
    return found


def _answer(
    ref_op: dict[str, Any], our_op: dict[str, Any], ref_doc: _Resolver, our_doc: _Resolver
) -> tuple[str, list[Difference]] | None:
    """The success status whose answers are compared, and the differences; None when the
    reference's operation answers no JSON."""
    for code, response in sorted(ref_op.get("responses", {}).items()):
        if not code.startswith("2"):
            continue
        content = ref_doc.resolve(response or {}).get("content", {})
        ref_schema = content.get("application/json", {}).get("schema")
        if ref_schema is None:
            return None
        our_response = our_doc.resolve(our_op.get("responses", {}).get(code) or {})
        our_schema = our_response.get("content", {}).get("application/json", {}).get("schema")
        if our_schema is None:
            return code, [Difference("(answer)", "missing", "no JSON answer", None)]
        return code, _answer_differences(ref_schema, our_schema, ref_doc, our_doc, "")
    return None


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
    answers: list[AnswerResult] = []
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
                compared = _answer(ref_op, our_op, ref_doc, our_doc)
                if compared is not None:
                    status, differences = compared
                    answers.append(
                        AnswerResult(method, path, result.operation_id, status, differences)
                    )
            results.append(result)
    extensions = sorted(
        f"{method.upper()} {path}"
        for path, operations in ours.get("paths", {}).items()
        for method in METHODS
        if method in operations and (method, path) not in referenced
    )
    return Coverage(results, extensions, answers)


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
    lines.append("")
    lines += _render_answers(coverage, verbose)
    return "\n".join(lines)


def _render_answers(coverage: Coverage, verbose: bool) -> list[str]:
    answers, equal = coverage.answers, coverage.answers_equal
    undeclared = coverage.answers_undeclared
    lines = [
        f"Answers: of {len(answers)} served operations that answer JSON, {len(equal)} have the "
        f"reference's schema exactly, {len(answers) - len(equal) - len(undeclared)} differ only "
        f"on purpose, {len(undeclared)} differ without a reason."
    ]
    for answer in undeclared:
        lines.append(f"  {answer.method.upper()} {answer.path} ({answer.status})")
        lines += [f"    - {d.field}: {d.kind}: {d.detail}" for d in answer.undeclared]
    lines.append("Differences on purpose (kind, property, operations, why):")
    deliberate = coverage.deliberate()
    shown = deliberate if verbose else deliberate[:12]
    lines += [f"  {kind:<9} {name:<24} {count:>4}  {reason}" for kind, name, reason, count in shown]
    if len(shown) < len(deliberate):
        lines.append(f"  (+ {len(deliberate) - len(shown)} more; --verbose lists them)")
    if verbose:
        lines.append("Each operation's differences:")
        for answer in answers:
            state = "equal" if answer.equal else f"{len(answer.differences)} difference(s)"
            lines.append(f"  {answer.method.upper():<6} {answer.path} ({answer.status}): {state}")
            lines += [
                f"    - {d.field}: {d.kind}" + (f" ({d.detail})" if d.detail else "")
                for d in answer.differences
            ]
    return lines
