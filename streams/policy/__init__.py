"""The pdx policy language and decision engine. Imports nothing from Kafka.

    ps = load_policy_dir("policies")            # validate YAML → PolicySet (raises PolicyValidationError)
    content = ps.to_bundle_content()            # canonical JSON; bundle_version(content) = sha256 hex
    bundle = compile_bundle(content)            # what a worker does with a published bundle
    decision = evaluate(bundle, request, identity, approvals, now)
"""

from streams.model import AccessRequest, Decision, MonitorOutcome, Reason, RequestContext, Resource
from streams.policy.compiler import BundleHolder, CompiledBundle, compile_bundle
from streams.policy.evaluator import BUILTIN_CODES, evaluate
from streams.policy.explain import Explanation, explain
from streams.policy.lint import lint_policy_set
from streams.policy.loader import (
    PolicySet,
    PolicyValidationError,
    Problem,
    bundle_version,
    canonical_json,
    load_policy_dir,
    policy_set_from_documents,
    validate_content_obj,
    validate_policy_dir,
)
from streams.policy.testing import RequestCase, TestReport, build_request_case, run_policy_tests

__all__ = [
    "BUILTIN_CODES",
    "AccessRequest",
    "BundleHolder",
    "CompiledBundle",
    "Decision",
    "Explanation",
    "MonitorOutcome",
    "PolicySet",
    "PolicyValidationError",
    "Problem",
    "Reason",
    "RequestCase",
    "RequestContext",
    "Resource",
    "TestReport",
    "build_request_case",
    "bundle_version",
    "canonical_json",
    "compile_bundle",
    "evaluate",
    "explain",
    "lint_policy_set",
    "load_policy_dir",
    "policy_set_from_documents",
    "run_policy_tests",
    "validate_content_obj",
    "validate_policy_dir",
]
