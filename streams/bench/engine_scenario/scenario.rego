# The benchmark scenario in Rego (same semantics as policies.yaml). Query: data.pdx.bench.decision
# rego-cpp has no net.cidr_contains, so IPv4 ranges are compared as integers (IPv6 is never trusted here,
# which matches the scenario: its trusted networks are IPv4 only).
package pdx.bench

import rego.v1

default decision := "deny"

decision := "allow" if {
	count(denies) == 0
	count(allows) > 0
}

m2m_kinds := {"service_account", "workload"}

allowed_sensitivity := {"public", "internal", "confidential"}

ip_int(ip) := n if {
	parts := split(ip, ".")
	count(parts) == 4
	n := ((to_number(parts[0]) * 256 + to_number(parts[1])) * 256 + to_number(parts[2])) * 256 + to_number(parts[3])
}

trusted_net if {
	n := ip_int(input.context.source_ip)
	n >= 167772160 # 10.0.0.0
	n <= 184549375 # 10.255.255.255
}

trusted_net if {
	n := ip_int(input.context.source_ip)
	n >= 2886729728 # 172.16.0.0
	n <= 2887778303 # 172.31.255.255
}

fresh_token if {
	input.context.now_s - input.context.token_issued_at_s <= 900
}

ok_sensitivity if {
	allowed_sensitivity[input.resource.sensitivity]
}

agent_prod_db if {
	startswith(input.action, "db:")
	input.resource.type == "database"
	input.identity.kind == "agent"
	input.resource.environment == "production"
}

bounded if {
	input.context.requested_ttl_s > 0
}

repo_approved if {
	input.resource.repository in input.identity.approved_repositories
}

denies contains "identity_not_active" if input.identity.status != "active"

denies contains "agent_not_tagged_for_production" if {
	agent_prod_db
	not "production" in input.identity.tags
}

denies contains "time_bound_required" if {
	agent_prod_db
	not bounded
}

allows contains "agent_production_time_bounded" if {
	agent_prod_db
	"production" in input.identity.tags
	bounded
}

denies contains "untrusted_network" if {
	input.action == "api:call"
	m2m_kinds[input.identity.kind]
	not trusted_net
}

denies contains "stale_token" if {
	input.action == "api:call"
	m2m_kinds[input.identity.kind]
	not fresh_token
}

denies contains "sensitivity_too_high" if {
	input.action == "api:call"
	m2m_kinds[input.identity.kind]
	not ok_sensitivity
}

allows contains "m2m_call_allowed" if {
	input.action == "api:call"
	m2m_kinds[input.identity.kind]
	trusted_net
	fresh_token
	ok_sensitivity
}

allows contains "config_read" if {
	input.action == "config:read"
	input.resource.type == "config"
	input.identity.kind == "agent"
}

denies contains "repository_not_approved" if {
	input.action == "secrets:read"
	input.resource.type == "secret"
	input.identity.kind == "service_account"
	not repo_approved
}

allows contains "deployment_secret" if {
	input.action == "secrets:read"
	input.resource.type == "secret"
	input.identity.kind == "service_account"
	repo_approved
}
