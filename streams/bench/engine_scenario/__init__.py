"""Benchmark scenario files (pdx YAML, Cedar, Rego); a package so the files ship as package data."""
