"""Parses an OpenMetrics exposition from stdin with the prometheus_client library's
parser and prints its samples as JSON lines: name, labels, value. Fails (exit 1)
on anything the parser refuses."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({
            "family": family.name,
            "type": family.type,
            "name": sample.name,
            "labels": sample.labels,
            "value": sample.value,
        }))
