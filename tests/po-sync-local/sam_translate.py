#!/usr/bin/env python3
"""Translates the SAM template into plain CloudFormation, as `sam deploy` does, and prints it as JSON.

    .venv/bin/python tests/po-sync-local/sam_translate.py infra/template.yaml '{"NotificationSender": "a@example.com"}'

Used by the local pipeline (tests/src/stack_env.rs), which deploys the result into moto's CloudFormation and
reads each function's environment and event sources back, so the local functions run with the environment the
template gives them. Only what SAM itself does happens here: parse the YAML (with its !Ref, !Sub, ... tags),
point each function's local CodeUri at a placeholder S3 object (what `sam package` would upload), and run
aws-sam-translator (installed with SAM CLI). Everything else is in Rust.
"""

import json
import os
import sys

# aws-sam-translator asks boto3 for the region to fill AWS::Region in ARNs it builds; no AWS call is made.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from samcli.yamlhelper import yaml_parse  # noqa: E402  (SAM CLI's parser: it knows the CloudFormation tags)
from samtranslator.public.exceptions import InvalidDocumentException  # noqa: E402
from samtranslator.translator.transform import transform  # noqa: E402


class NoManagedPolicies:
    """The template names every IAM statement itself; SAM needs no AWS managed policy ARNs."""

    def load(self):
        return {}


def main(argv):
    if len(argv) not in (2, 3):
        print("usage: sam_translate.py TEMPLATE [PARAMETERS_JSON]", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        template = yaml_parse(f.read())
    parameters = json.loads(argv[2]) if len(argv) == 3 else {}
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") == "AWS::Serverless::Function":
            code_uri = resource.get("Properties", {}).get("CodeUri")
            if isinstance(code_uri, str) and not code_uri.startswith("s3://"):
                resource["Properties"]["CodeUri"] = f"s3://po-sync-local-code/{name}.zip"
    try:
        translated = transform(template, parameters, NoManagedPolicies())
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(f"sam_translate: {cause.message}", file=sys.stderr)
        return 1
    json.dump(translated, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
