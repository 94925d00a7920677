"""Parses a Prometheus exposition from stdin with the prometheus_client library's
parser (argv[1]: "openmetrics", or "text" for the older 0.0.4 format) and prints its
samples as JSON lines: name, labels, value. Fails (exit 1) on anything the parser
refuses."""

import json
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

parse = {"openmetrics": openmetrics_families, "text": text_families}[sys.argv[1]]
for family in parse(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({
            "family": family.name,
            "type": family.type,
            "name": sample.name,
            "labels": sample.labels,
            "value": sample.value,
        }))
