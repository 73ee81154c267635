"""The SDK a service (policy enforcement point) uses to ask pdx for a decision."""

from streams.client.policy_client import (
    Denied,
    PolicyClient,
    PolicyDenied,
    StepUpRequired,
    SyncPolicyClient,
    timeout_decision,
)

__all__ = ["Denied", "PolicyClient", "PolicyDenied", "StepUpRequired", "SyncPolicyClient", "timeout_decision"]
