"""Properties of infra/template.yaml that a later edit must not quietly drop.

cfn-lint and `sam validate --lint` check that the template is *valid*; these tests check that it still says what
po-sync relies on: FIFO queues with dead-letter queues, partial batch responses, visibility timeouts that cover
the consumers, least-privilege IAM, JSON logs with retention, the webhook route and its access log, the alarms, the
functions' environment contract, reconcile's retained version ledger (DynamoDB, GetItem/PutItem on the table
only), the outputs the operator CLI reads by name, a reason on every checkov skip, and the dashboard and business
alarms, whose metric names, dimensions and values must be ones the code emits (infra/metrics.json, written from
shared/po-sync-aws/src/metrics.rs and kept equal to it by a Rust test).

Run: .venv/bin/python -m unittest discover -s infra/tests -v   (part of `make check-template` / `make test`)
"""

import json
import re
import unittest
from pathlib import Path

from cfnlint.decode import decode  # cfn-lint's own loader: understands !Ref, !Sub, !GetAtt, ...

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
# notify's e-mail promises how long a parked webhook is kept; the parked queue's retention must agree.
EMAIL_RS = Path(__file__).resolve().parents[2] / "shared" / "po-sync" / "src" / "email.rs"
# The metrics the functions emit (names, units, dimensions and their values), as shared/po-sync-aws/src/metrics.rs says.
METRICS_CATALOGUE = Path(__file__).resolve().parents[1] / "metrics.json"

WEBHOOK_ROUTE = "/webhooks/komet/po-reconciliation"
LOG_STREAM_SUFFIX = ":log-stream:*"

# Outputs the operator CLI reads by OutputKey -> the `!Ref` target each must have.
OPERATOR_OUTPUTS = {
    "LedgerTableName": "LedgerTable",
    "HistoryTableName": "HistoryTable",
    # SAM's logical id for the mapping of ReconcileFunction's Webhooks event: pause/resume switch it.
    "ReconcileEventSourceMappingId": "ReconcileFunctionWebhooks",
    "WebhookQueueUrl": "WebhookQueue",
    "WebhookDeadLetterQueueUrl": "WebhookDeadLetterQueue",
    "WebhookParkedQueueUrl": "WebhookParkedQueue",
    "NotificationQueueUrl": "NotificationQueue",
    "NotificationDeadLetterQueueUrl": "NotificationDeadLetterQueue",
}

# The environment-variable contract (docs/configuration.md); a template may set a subset.
ENV_CONTRACT = {
    "ingest": {
        "allowed": {"WEBHOOK_AUTH", "WEBHOOK_USERNAME", "WEBHOOK_PASSWORD", "WEBHOOK_TOKEN",
                    "WEBHOOK_SECRET_ARN", "QUEUE_URL", "MAX_BODY_BYTES", "RUST_LOG", "METRICS_NAMESPACE",
                    "ARCHIVE_BUCKET"},
        # ARCHIVE_BUCKET is optional for the binary, not for the stack: without it a PO too large for one SQS
        # message is refused (413) instead of stored under bodies/ with a claim check on the queue.
        "required": {"WEBHOOK_AUTH", "WEBHOOK_SECRET_ARN", "QUEUE_URL", "METRICS_NAMESPACE", "ARCHIVE_BUCKET"},
    },
    "reconcile": {
        "allowed": {"NOTIFY_QUEUE_URL", "RECONCILE_POLICY", "RECONCILE_TOLERANCE", "CURRENCY", "APPZEN_BASE_URL",
                    "APPZEN_API_KEY", "APPZEN_CUSTOMER_ID", "APPZEN_CUSTOMER_KEY", "APPZEN_SECRET_ARN",
                    "APPZEN_ENTITY_ID_FROM", "APPZEN_SUPPLIER_ID_FROM", "APPZEN_CHARGES_GL_CODE",
                    "APPZEN_TIMEOUT_MS", "APPZEN_MAX_ATTEMPTS", "LEDGER_TABLE_NAME", "RUST_LOG",
                    "METRICS_NAMESPACE", "ARCHIVE_BUCKET", "INVOICE_HOSTS", "INVOICE_MAX_BYTES",
                    "INVOICE_TIMEOUT_MS", "INVOICE_CONCURRENCY", "INVOICE_BUFFER_MIB", "WEBHOOK_QUEUE_URL",
                    "RETRY_SCHEDULE", "GROUP_CONCURRENCY", "OUTAGE_EMAIL_AFTER", "HISTORY_TABLE_NAME",
                    "HISTORY_RETENTION_DAYS"},
        # ARCHIVE_BUCKET is optional for the binary, not for the stack: without it invoices die with Komet's links.
        # WEBHOOK_QUEUE_URL likewise: without it a handed-back webhook waits the queue's visibility timeout, not
        # RetrySchedule, and the retry horizon shrinks to MaxReceiveCount x 12 minutes. HISTORY_TABLE_NAME too:
        # without it po-sync-admin history shows the kept bodies but no attempts.
        "required": {"NOTIFY_QUEUE_URL", "APPZEN_SECRET_ARN", "APPZEN_BASE_URL", "RECONCILE_POLICY", "CURRENCY",
                     "LEDGER_TABLE_NAME", "METRICS_NAMESPACE", "ARCHIVE_BUCKET", "INVOICE_HOSTS",
                     "WEBHOOK_QUEUE_URL", "RETRY_SCHEDULE", "HISTORY_TABLE_NAME", "HISTORY_RETENTION_DAYS"},
    },
    "notify": {
        "allowed": {"NOTIFY_FROM", "NOTIFY_TO", "NOTIFY_REPLY_TO", "NOTIFY_SUBJECT_PREFIX", "PARKED_QUEUE_URL",
                    "RUST_LOG", "METRICS_NAMESPACE", "ARCHIVE_BUCKET", "HISTORY_TABLE_NAME", "HISTORY_RETENTION_DAYS"},
        # PARKED_QUEUE_URL is optional for the binary, not for the stack: without it dead letters are lost.
        # HISTORY_TABLE_NAME likewise: without it a parked version's history ends at its last retry.
        "required": {"NOTIFY_FROM", "NOTIFY_TO", "PARKED_QUEUE_URL", "METRICS_NAMESPACE", "ARCHIVE_BUCKET",
                     "HISTORY_TABLE_NAME", "HISTORY_RETENTION_DAYS"},
    },
}


def schedule_seconds(template):
    """The default RetrySchedule's waits, in seconds (reconcile's RETRY_SCHEDULE grammar: 90s, 5m, 1h)."""
    units = {"s": 1, "m": 60, "h": 3600}
    return [int(step[:-1]) * units[step[-1]] for step in template["Parameters"]["RetrySchedule"]["Default"].split(",")]


def retry_horizon_seconds(template):
    """How long a webhook that fails every delivery waits before it is dead-lettered, with the defaults."""
    steps = schedule_seconds(template)
    receives = template["Parameters"]["MaxReceiveCount"]["Default"]
    return sum(steps[min(n, len(steps) - 1)] for n in range(receives))


def load_template():
    template, problems = decode(str(TEMPLATE))
    if problems:
        raise AssertionError(f"{TEMPLATE} does not parse: {problems}")
    return template


def target(value):
    """The logical id behind `!Ref X` / `!GetAtt X.Attr`, else None."""
    if isinstance(value, dict) and len(value) == 1:
        (key, argument), = value.items()
        if key == "Ref":
            return str(argument)
        if key == "Fn::GetAtt":
            return str(argument[0] if isinstance(argument, list) else str(argument).split(".")[0])
    return None


def as_list(value):
    return value if isinstance(value, list) else [value]


def sub_text(value):
    """The literal text of a resource ARN: a plain string or the format string of `!Sub`."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and list(value) == ["Fn::Sub"]:
        argument = value["Fn::Sub"]
        return str(argument[0] if isinstance(argument, list) else argument)
    return None


class TemplateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.template = load_template()
        cls.resources = cls.template["Resources"]
        cls.globals = cls.template.get("Globals", {}).get("Function", {})

    # -- helpers ------------------------------------------------------------------------------------------

    def of_type(self, resource_type):
        return {name: r for name, r in self.resources.items() if r["Type"] == resource_type}

    def functions(self):
        found = self.of_type("AWS::Serverless::Function")
        self.assertEqual(len(found), 3, "expected exactly the three functions")
        return found

    def function_named(self, binary):
        for name, function in self.functions().items():
            if function.get("Metadata", {}).get("BuildProperties", {}).get("Binary") == binary:
                return name, function
        self.fail(f"no function builds the {binary!r} binary")

    def effective(self, function, prop):
        return function["Properties"].get(prop, self.globals.get(prop))

    def sqs_event_sources(self):
        """(function name, event name, event properties) for every SQS trigger, SAM events and raw mappings."""
        sources = []
        for name, function in self.functions().items():
            for event_name, event in function["Properties"].get("Events", {}).items():
                if event["Type"] == "SQS":
                    sources.append((name, event_name, event["Properties"]))
        for name, mapping in self.of_type("AWS::Lambda::EventSourceMapping").items():
            sources.append((target(mapping["Properties"]["FunctionName"]), name, {
                **mapping["Properties"], "Queue": mapping["Properties"]["EventSourceArn"]}))
        return sources

    def policy_statements(self):
        """(where, statement) for every IAM statement in the template: roles, policies and SAM function Policies."""
        documents = []
        for name, role in self.of_type("AWS::IAM::Role").items():
            for policy in role["Properties"].get("Policies", []):
                documents.append((f"{name}/{policy['PolicyName']}", policy["PolicyDocument"]))
        for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for name, policy in self.of_type(kind).items():
                documents.append((name, policy["Properties"]["PolicyDocument"]))
        for name, function in self.functions().items():
            for policy in as_list(function["Properties"].get("Policies", [])):
                if isinstance(policy, dict) and "Statement" in policy:
                    documents.append((name, policy))
        statements = [(where, s) for where, doc in documents for s in as_list(doc["Statement"])]
        self.assertTrue(statements, "no IAM statements found at all")
        return statements

    # -- functions ----------------------------------------------------------------------------------------

    def test_functions_are_arm64_rust_built_by_cargo_lambda(self):
        for binary in ("ingest", "reconcile", "notify"):
            name, function = self.function_named(binary)
            with self.subTest(function=name):
                self.assertEqual(function["Metadata"]["BuildMethod"], "rust-cargolambda")
                self.assertEqual(self.effective(function, "Runtime"), "provided.al2023")
                self.assertEqual(self.effective(function, "Architectures"), ["arm64"])
                self.assertEqual(self.effective(function, "Handler"), "bootstrap")
                self.assertTrue((TEMPLATE.parent / function["Properties"]["CodeUri"] / "Cargo.toml").is_file(),
                                "CodeUri must point at the function's Cargo package")
                self.assertIsInstance(function["Properties"]["MemorySize"], int)
                self.assertIsInstance(function["Properties"]["Timeout"], int)

    def test_every_function_logs_json_to_its_own_group_with_retention(self):
        log_groups = self.of_type("AWS::Logs::LogGroup")
        used = []
        for name, function in self.functions().items():
            with self.subTest(function=name):
                logging = self.effective(function, "LoggingConfig")
                self.assertIsNotNone(logging, "LoggingConfig missing")
                self.assertEqual(logging.get("LogFormat"), "JSON")
                group = target(logging.get("LogGroup"))
                self.assertIn(group, log_groups, "LoggingConfig.LogGroup must !Ref a log group of this stack")
                self.assertIn("RetentionInDays", log_groups[group]["Properties"])
                used.append(group)
        self.assertEqual(len(set(used)), 3, "each function needs its own log group")

    def test_environment_follows_the_contract(self):
        for binary, contract in ENV_CONTRACT.items():
            name, function = self.function_named(binary)
            variables = set(function["Properties"].get("Environment", {}).get("Variables", {}))
            with self.subTest(function=name):
                self.assertLessEqual(variables, contract["allowed"], "unknown variable names")
                self.assertLessEqual(contract["required"], variables, "required variables missing")

    def test_functions_pass_secrets_by_arn_never_as_values(self):
        secrets = self.of_type("AWS::SecretsManager::Secret")
        self.assertEqual(len(secrets), 2)
        expectations = {"ingest": "WEBHOOK_SECRET_ARN", "reconcile": "APPZEN_SECRET_ARN"}
        for binary, variable in expectations.items():
            _, function = self.function_named(binary)
            self.assertIn(target(function["Properties"]["Environment"]["Variables"][variable]), secrets)
        for name, function in self.functions().items():
            variables = function["Properties"].get("Environment", {}).get("Variables", {})
            for secret_variable in ("WEBHOOK_PASSWORD", "WEBHOOK_TOKEN", "APPZEN_API_KEY", "APPZEN_CUSTOMER_KEY"):
                self.assertNotIn(secret_variable, variables, f"{name}: credentials belong in Secrets Manager")

    # -- HTTP API -----------------------------------------------------------------------------------------

    def test_ingest_serves_post_on_the_webhook_route_at_the_default_stage(self):
        _, ingest = self.function_named("ingest")
        routes = [e["Properties"] for e in ingest["Properties"]["Events"].values() if e["Type"] == "HttpApi"]
        self.assertEqual(len(routes), 1)
        route = routes[0]
        self.assertEqual(route["Path"], WEBHOOK_ROUTE)
        self.assertEqual(str(route["Method"]).upper(), "POST")
        api = target(route.get("ApiId"))
        self.assertEqual(self.resources[api]["Type"], "AWS::Serverless::HttpApi")
        self.assertIn(self.resources[api]["Properties"].get("StageName", "$default"), ("$default",),
                      "a named stage would put its name in front of the path")
        url = sub_text(self.template["Outputs"]["WebhookUrl"]["Value"])
        self.assertTrue(url.startswith("https://${%s}.execute-api." % api), url)
        self.assertTrue(url.endswith(".${AWS::URLSuffix}" + WEBHOOK_ROUTE), url)

    def test_webhook_api_writes_json_access_logs_to_its_own_group_with_retention(self):
        settings = self.resources["WebhookApi"]["Properties"].get("AccessLogSettings")
        self.assertIsNotNone(settings, "AccessLogSettings missing: throttled or rejected calls would leave no trace")
        group = target(settings["DestinationArn"])
        self.assertEqual(self.resources[group]["Type"], "AWS::Logs::LogGroup")
        self.assertIn("RetentionInDays", self.resources[group]["Properties"])
        function_groups = {target(self.effective(f, "LoggingConfig")["LogGroup"]) for f in self.functions().values()}
        self.assertNotIn(group, function_groups, "access logs get their own group")
        fields = json.loads(settings["Format"])
        for variable in ("$context.requestId", "$context.status", "$context.routeKey"):
            self.assertIn(variable, fields.values())

    # -- queues -------------------------------------------------------------------------------------------

    def test_all_queues_are_fifo_and_encrypted(self):
        queues = self.of_type("AWS::SQS::Queue")
        self.assertEqual(set(queues), {"WebhookQueue", "WebhookDeadLetterQueue", "WebhookParkedQueue",
                                       "NotificationQueue", "NotificationDeadLetterQueue"})
        for name, queue in queues.items():
            with self.subTest(queue=name):
                properties = queue["Properties"]
                self.assertIs(properties.get("FifoQueue"), True)
                self.assertTrue(str(sub_text(properties["QueueName"])).endswith(".fifo"))
                self.assertTrue(properties.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in properties,
                                "server-side encryption missing")

    def test_main_queues_dead_letter_after_max_receive_count(self):
        for queue, dead_letter_queue in (("WebhookQueue", "WebhookDeadLetterQueue"),
                                         ("NotificationQueue", "NotificationDeadLetterQueue")):
            with self.subTest(queue=queue):
                redrive = self.resources[queue]["Properties"].get("RedrivePolicy")
                self.assertIsNotNone(redrive, "RedrivePolicy missing")
                self.assertEqual(redrive["deadLetterTargetArn"], {"Fn::GetAtt": [dead_letter_queue, "Arn"]})
                self.assertEqual(redrive["maxReceiveCount"], {"Ref": "MaxReceiveCount"})
        # Deliveries spaced by RetrySchedule: the default waits a day and more before anything is parked.
        self.assertEqual(self.template["Parameters"]["MaxReceiveCount"]["Default"], 30)
        self.assertGreaterEqual(retry_horizon_seconds(self.template), 24 * 3600)

    def test_reconcile_spaces_retries_on_the_queue_it_reads(self):
        _, function = self.function_named("reconcile")
        variables = function["Properties"]["Environment"]["Variables"]
        self.assertEqual(variables["WEBHOOK_QUEUE_URL"], {"Ref": "WebhookQueue"})
        self.assertEqual(variables["RETRY_SCHEDULE"], {"Ref": "RetrySchedule"})
        schedule = self.template["Parameters"]["RetrySchedule"]
        self.assertRegex(schedule["Default"], schedule["AllowedPattern"])
        # Longer than the horizon, so a webhook is parked, never expired, when it cannot be delivered.
        retention = self.resources["WebhookQueue"]["Properties"]["MessageRetentionPeriod"]
        self.assertGreater(retention, retry_horizon_seconds(self.template))

    def test_dead_lettered_webhooks_end_in_the_parked_queue_which_notify_fills_and_nobody_consumes(self):
        dlq = self.resources["WebhookDeadLetterQueue"]["Properties"]
        self.assertEqual(dlq["RedrivePolicy"]["deadLetterTargetArn"], {"Fn::GetAtt": ["WebhookParkedQueue", "Arn"]},
                         "the webhook DLQ must dead-letter into the parked queue, never into the notifications DLQ")
        # A dead letter arrives with MaxReceiveCount receives already counted: the DLQ's own limit must be higher,
        # or SQS moves every dead letter on at notify's first receive, unmailed (ten times: its digits and a "0").
        self.assertEqual(dlq["RedrivePolicy"]["maxReceiveCount"], {"Fn::Sub": "${MaxReceiveCount}0"})

        parked = self.resources["WebhookParkedQueue"]["Properties"]
        self.assertTrue(sub_text(parked["QueueName"]).endswith("-webhooks-parked.fifo"))
        self.assertIs(parked.get("ContentBasedDeduplication"), False, "notify sets the deduplication id")
        self.assertNotIn("RedrivePolicy", parked, "the last stop: nothing may move parked webhooks on by itself")
        # A move task's source must be some queue's DLQ; RedriveAllowPolicy lets exactly the webhook DLQ be that.
        allow = parked["RedriveAllowPolicy"]
        self.assertEqual(allow["redrivePermission"], "byQueue")
        self.assertEqual(len(allow["sourceQueueArns"]), 1)
        source_arn = sub_text(allow["sourceQueueArns"][0])
        dlq_name = sub_text(dlq["QueueName"])
        self.assertEqual(source_arn, "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:" + dlq_name)

        days = int(re.search(r"PARKED_RETENTION_DAYS: u32 = (\d+);", EMAIL_RS.read_text()).group(1))
        self.assertEqual(parked["MessageRetentionPeriod"], days * 86400, "the e-mail promises this retention")

        _, notify = self.function_named("notify")
        self.assertEqual(target(notify["Properties"]["Environment"]["Variables"]["PARKED_QUEUE_URL"]),
                         "WebhookParkedQueue")
        consumed = {target(event["Queue"]) for _, _, event in self.sqs_event_sources()}
        self.assertNotIn("WebhookParkedQueue", consumed, "parked webhooks wait for a person's redrive")

    def test_outputs_name_both_ends_of_the_parked_webhook_redrive(self):
        outputs = self.template["Outputs"]
        self.assertEqual(outputs["WebhookParkedQueueArn"]["Value"], {"Fn::GetAtt": ["WebhookParkedQueue", "Arn"]})
        self.assertEqual(outputs["WebhookQueueArn"]["Value"], {"Fn::GetAtt": ["WebhookQueue", "Arn"]})

    def test_webhook_visibility_timeout_is_at_least_six_times_reconcile_timeout(self):
        _, reconcile = self.function_named("reconcile")
        visibility = self.resources["WebhookQueue"]["Properties"]["VisibilityTimeout"]
        self.assertGreaterEqual(visibility, 6 * reconcile["Properties"]["Timeout"])

    def test_every_consumed_queue_outlasts_its_consumer(self):
        for function_name, event_name, event in self.sqs_event_sources():
            queue = self.resources[target(event["Queue"])]["Properties"]
            timeout = self.effective(self.resources[function_name], "Timeout")
            with self.subTest(source=f"{function_name}.{event_name}"):
                self.assertGreaterEqual(queue.get("VisibilityTimeout", 30), 6 * timeout)

    def test_sqs_event_sources_report_batch_item_failures(self):
        sources = self.sqs_event_sources()
        consumed = {(self.resources[f]["Metadata"]["BuildProperties"]["Binary"], target(e["Queue"]))
                    for f, _, e in sources}
        self.assertEqual(consumed, {("reconcile", "WebhookQueue"), ("notify", "NotificationQueue"),
                                    ("notify", "WebhookDeadLetterQueue")})
        for function_name, event_name, event in sources:
            with self.subTest(source=f"{function_name}.{event_name}"):
                self.assertIn("ReportBatchItemFailures", event.get("FunctionResponseTypes", []))
                self.assertLessEqual(event.get("BatchSize", 10), 10, "FIFO event sources take at most 10")

    # -- IAM ----------------------------------------------------------------------------------------------

    def test_functions_use_the_stacks_roles_and_no_managed_policies(self):
        roles = self.of_type("AWS::IAM::Role")
        for name, function in self.functions().items():
            with self.subTest(function=name):
                self.assertIn(target(function["Properties"].get("Role")), roles,
                              "without an explicit role SAM attaches managed policies that grant on '*'")
                self.assertNotIn("Policies", function["Properties"])
        for name, role in roles.items():
            self.assertNotIn("ManagedPolicyArns", role["Properties"], name)

    def test_no_policy_grants_on_wildcard_resources_or_actions(self):
        for where, statement in self.policy_statements():
            with self.subTest(statement=f"{where}/{statement.get('Sid', '?')}"):
                self.assertNotIn("NotResource", statement)
                self.assertNotIn("NotAction", statement)
                for action in as_list(statement["Action"]):
                    self.assertNotIn("*", str(action), "wildcard action")
                for resource in as_list(statement["Resource"]):
                    text = sub_text(resource)
                    if text is None:
                        self.assertIsNotNone(target(resource), f"unrecognised resource {resource!r}")
                        continue
                    if (where, statement.get("Sid"), as_list(statement["Action"])) == (
                            "OperatorPolicy", "QueueAges", ["cloudwatch:GetMetricStatistics"]):
                        continue  # CloudWatch's metric reads take no resource: the one read-only exception
                    self.assertNotEqual(text.strip(), "*")
                    bucket_prefix = re.fullmatch(r"\$\{(\w+)\.Arn\}/[a-z]+/\*", text)
                    if bucket_prefix:
                        # The objects under one named prefix of one of this stack's buckets.
                        self.assertEqual(self.resources[bucket_prefix.group(1)]["Type"], "AWS::S3::Bucket", text)
                    elif "*" in text:
                        # Otherwise the single exception: Lambda names the log streams, so the stream part is a
                        # wildcard inside one named log group of this stack.
                        self.assertTrue(text.endswith(LOG_STREAM_SUFFIX), f"wildcard resource {text}")
                        self.assertEqual(text.count("*"), 1, text)
                        group = re.search(r":log-group:\$\{(\w+)\}:log-stream:\*$", text)
                        self.assertIsNotNone(group, f"log-stream wildcard outside a named group: {text}")
                        self.assertEqual(self.resources[group.group(1)]["Type"], "AWS::Logs::LogGroup")

    def test_roles_grant_exactly_their_queues_secrets_and_ses_identity(self):
        grants = {}
        for where, statement in self.policy_statements():
            role = where.split("/")[0]
            for action in as_list(statement["Action"]):
                for resource in as_list(statement["Resource"]):
                    ref = target(resource) or sub_text(resource)
                    grants.setdefault(role, set()).add((action, ref))

        def granted(role, action):
            return {r for a, r in grants[role] if a == action}

        self.assertEqual(granted("IngestRole", "sqs:SendMessage"), {"WebhookQueue"})
        self.assertEqual(granted("IngestRole", "secretsmanager:GetSecretValue"), {"WebhookSecret"})
        self.assertEqual(granted("ReconcileRole", "sqs:ReceiveMessage"), {"WebhookQueue"})
        self.assertEqual(granted("ReconcileRole", "sqs:SendMessage"), {"NotificationQueue"})
        self.assertEqual(granted("ReconcileRole", "secretsmanager:GetSecretValue"), {"AppZenSecret"})
        self.assertEqual(granted("NotifyRole", "sqs:ReceiveMessage"), {"NotificationQueue", "WebhookDeadLetterQueue"})
        self.assertEqual(granted("NotifyRole", "sqs:SendMessage"), {"WebhookParkedQueue"})
        # reconcile spaces the retries of the webhooks it hands back, on their own queue only.
        self.assertEqual(granted("ReconcileRole", "sqs:ChangeMessageVisibility"), {"WebhookQueue"})
        for role in ("IngestRole", "ReconcileRole", "NotifyRole"):
            self.assertFalse({a for a, _ in grants[role] if a.startswith("sqs:") and a not in {
                "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                *({"sqs:ChangeMessageVisibility"} if role == "ReconcileRole" else set())}}, role)
        self.assertFalse(granted("NotifyRole", "secretsmanager:GetSecretValue"))
        for action in ("ses:SendEmail", "ses:SendRawEmail"):
            identities = granted("NotifyRole", action)
            self.assertTrue(identities, action)
            for identity in identities:
                self.assertRegex(identity, r"^arn:\$\{AWS::Partition\}:ses:\$\{AWS::Region\}:\$\{AWS::AccountId\}"
                                           r":identity/\$\{\w+\}$")
        for role in ("IngestRole", "ReconcileRole"):
            self.assertFalse({a for a, _ in grants[role] if a.startswith("ses:")}, f"{role} must not send e-mail")

    # -- version ledger -----------------------------------------------------------------------------------

    def test_ledger_table_is_keyed_by_po_id_on_demand_recoverable_encrypted_and_retained(self):
        tables = self.of_type("AWS::DynamoDB::Table")
        self.assertEqual(set(tables), {"LedgerTable", "HistoryTable"})
        table = tables["LedgerTable"]
        # The ledger is what keeps AppZen from going back to an older PO version after a redrive.
        self.assertEqual(table.get("DeletionPolicy"), "Retain")
        self.assertEqual(table.get("UpdateReplacePolicy"), "Retain")
        properties = table["Properties"]
        self.assertNotIn("TableName", properties, "a fixed name would collide with the retained table on redeploy")
        self.assertEqual(properties["KeySchema"], [{"AttributeName": "poId", "KeyType": "HASH"}])
        self.assertEqual(properties["AttributeDefinitions"], [{"AttributeName": "poId", "AttributeType": "S"}])
        self.assertEqual(properties.get("BillingMode"), "PAY_PER_REQUEST")
        self.assertNotIn("ProvisionedThroughput", properties)
        self.assertIs(properties.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"), True)
        self.assertIs(properties.get("SSESpecification", {}).get("SSEEnabled"), True)

    def test_reconcile_is_told_the_ledger_table(self):
        _, reconcile = self.function_named("reconcile")
        self.assertEqual(reconcile["Properties"]["Environment"]["Variables"].get("LEDGER_TABLE_NAME"),
                         {"Ref": "LedgerTable"})

    def test_history_table_is_keyed_by_po_and_attempt_expires_with_the_kept_webhooks_and_is_encrypted(self):
        properties = self.resources["HistoryTable"]["Properties"]
        self.assertEqual(properties["KeySchema"], [{"AttributeName": "poId", "KeyType": "HASH"},
                                                   {"AttributeName": "attemptKey", "KeyType": "RANGE"}])
        self.assertEqual(properties["AttributeDefinitions"], [{"AttributeName": "poId", "AttributeType": "S"},
                                                              {"AttributeName": "attemptKey", "AttributeType": "S"}])
        self.assertEqual(properties["TimeToLiveSpecification"], {"AttributeName": "expiresAt", "Enabled": True})
        self.assertEqual(properties.get("BillingMode"), "PAY_PER_REQUEST")
        self.assertIs(properties.get("SSESpecification", {}).get("SSEEnabled"), True)
        self.assertNotIn("TableName", properties)
        variables = self.function_named("reconcile")[1]["Properties"]["Environment"]["Variables"]
        self.assertEqual(variables["HISTORY_TABLE_NAME"], {"Ref": "HistoryTable"})
        # A PO's attempts go when its kept bodies go.
        self.assertEqual(variables["HISTORY_RETENTION_DAYS"], {"Ref": "WebhookRetentionDays"})

    def test_only_reconcile_may_get_and_put_ledger_items_and_only_reconcile_and_notify_put_history_items(self):
        dynamodb = [(where, statement) for where, statement in self.policy_statements()
                    if any(str(a).lower().startswith("dynamodb:") for a in as_list(statement["Action"]))]
        found = sorted((where.split("/")[0], target(as_list(statement["Resource"])[0]), tuple(sorted(
            as_list(statement["Action"])))) for where, statement in dynamodb)
        self.assertEqual(found, [("NotifyRole", "HistoryTable", ("dynamodb:PutItem",)),
                                 ("OperatorPolicy", "HistoryTable", ("dynamodb:PutItem", "dynamodb:Query")),
                                 ("OperatorPolicy", "LedgerTable", ("dynamodb:GetItem", "dynamodb:Scan")),
                                 ("ReconcileRole", "HistoryTable", ("dynamodb:PutItem",)),
                                 ("ReconcileRole", "LedgerTable", ("dynamodb:GetItem", "dynamodb:PutItem"))],
                         "reconcile's ledger and history, notify's history, and the operator's reads (and its "
                         "replays' and redrives' history items); no function but reconcile writes the ledger")
        for where, statement in dynamodb:
            with self.subTest(statement=f"{where}/{statement.get('Sid', '?')}"):
                self.assertEqual(statement["Effect"], "Allow")
                table = target(as_list(statement["Resource"])[0])
                self.assertEqual(as_list(statement["Resource"]), [{"Fn::GetAtt": [table, "Arn"]}],
                                 "the table's ARN only: no index, no wildcard, no other table")
        # No other statement, role or policy so much as mentions DynamoDB or the tables.
        for where, other in self.policy_statements():
            if all(other is not statement for _, statement in dynamodb):
                with self.subTest(statement=f"{where}/{other.get('Sid', '?')}"):
                    self.assertNotIn("dynamodb", json.dumps(other).lower())
                    self.assertNotIn("ledgertable", json.dumps(other).lower())
                    self.assertNotIn("historytable", json.dumps(other).lower())
        for name, resource in self.resources.items():
            if resource["Type"].startswith("AWS::IAM::") and name not in ("ReconcileRole", "NotifyRole", "OperatorPolicy"):
                with self.subTest(resource=name):
                    self.assertNotIn("dynamodb", json.dumps(resource).lower())

    def test_the_operator_policy_grants_every_call_po_sync_admin_makes_on_this_stacks_resources(self):
        granted = {}
        for where, statement in self.policy_statements():
            if where == "OperatorPolicy":
                self.assertEqual(statement["Effect"], "Allow")
                for action in as_list(statement["Action"]):
                    granted.setdefault(str(action), []).extend(as_list(statement["Resource"]))
        admin = Path(__file__).resolve().parents[2] / "admin" / "src"
        named = set()
        for source in admin.rglob("*.rs"):
            named |= set(re.findall(r'"((?:sqs|dynamodb|s3|lambda|cloudformation|cloudwatch|secretsmanager):[A-Z]\w+)"',
                                    source.read_text()))
        self.assertIn("lambda:GetFunctionConfiguration", named, "the scan of admin/src found its calls")
        # Calls admin makes through po-sync-aws (its ports name them there), by IAM action name.
        through_ports = {"dynamodb:GetItem", "dynamodb:Scan", "dynamodb:Query", "dynamodb:PutItem", "s3:ListBucket",
                         "s3:GetObject", "s3:PutObject", "sqs:SendMessage", "secretsmanager:GetSecretValue"}
        # SQS's batch calls are authorised by the single action's name.
        needed = {a.replace("ChangeMessageVisibilityBatch", "ChangeMessageVisibility") for a in named | through_ports}
        self.assertEqual(needed - set(granted), set(), "po-sync-admin calls these and OperatorPolicy lacks them")
        self.assertEqual(set(granted) - needed, set(), "OperatorPolicy grants what po-sync-admin never calls")
        self.assertEqual(target(self.template["Outputs"]["OperatorPolicyArn"]["Value"]), "OperatorPolicy")

    def test_notify_records_parkings_in_the_history_with_its_retention(self):
        variables = self.function_named("notify")[1]["Properties"]["Environment"]["Variables"]
        self.assertEqual(variables["HISTORY_TABLE_NAME"], {"Ref": "HistoryTable"})
        self.assertEqual(variables["HISTORY_RETENTION_DAYS"], {"Ref": "WebhookRetentionDays"})

    # -- invoice archive ----------------------------------------------------------------------------------

    def test_archive_bucket_is_encrypted_private_tls_only_versioned_expiring_and_retained(self):
        bucket = self.resources["ArchiveBucket"]
        self.assertEqual(bucket["Type"], "AWS::S3::Bucket")
        self.assertEqual((bucket.get("DeletionPolicy"), bucket.get("UpdateReplacePolicy")), ("Retain", "Retain"))
        properties = bucket["Properties"]
        rule = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        self.assertIn(rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"], {"AES256", "aws:kms"})
        block = properties["PublicAccessBlockConfiguration"]
        self.assertEqual(block, {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                 "IgnorePublicAcls": True, "RestrictPublicBuckets": True})
        self.assertEqual(properties["VersioningConfiguration"]["Status"], "Enabled")
        expiring = [r for r in properties["LifecycleConfiguration"]["Rules"] if r.get("Prefix") == "invoices/"]
        self.assertEqual(len(expiring), 1)
        self.assertEqual(expiring[0]["Status"], "Enabled")
        self.assertEqual(expiring[0]["ExpirationInDays"], {"Ref": "InvoiceRetentionDays"})
        self.assertIn("InvoiceRetentionDays", self.template["Parameters"])
        policies = [r for r in self.of_type("AWS::S3::BucketPolicy").values()
                    if target(r["Properties"]["Bucket"]) == "ArchiveBucket"]
        self.assertEqual(len(policies), 1, "one bucket policy")
        statements = policies[0]["Properties"]["PolicyDocument"]["Statement"]
        tls = [st for st in statements if st["Effect"] == "Deny"
               and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)]
        self.assertEqual(len(tls), 1, "a deny of every request without TLS")
        self.assertEqual(tls[0]["Principal"], "*")
        self.assertEqual(as_list(tls[0]["Action"]), ["s3:*"])
        self.assertEqual(len(as_list(tls[0]["Resource"])), 2, "the bucket and its objects")

    def test_each_role_has_exactly_its_s3_grants_on_the_invoice_and_body_prefixes(self):
        # reconcile archives invoices and reads the claim-checked bodies ingest writes; notify reads invoices.
        s3 = {}
        for where, statement in self.policy_statements():
            actions = [str(a) for a in as_list(statement["Action"]) if str(a).lower().startswith("s3:")]
            if actions:
                self.assertEqual(statement["Effect"], "Allow", where)
                resources = [sub_text(r) for r in as_list(statement["Resource"])]
                s3.setdefault(where.split("/")[0], []).append((sorted(actions), resources))
        self.assertEqual({role: sorted(grants) for role, grants in s3.items()}, {
            "IngestRole": [(["s3:PutObject"], ["${ArchiveBucket.Arn}/webhooks/*", "${ArchiveBucket.Arn}/bodies/*"])],
            "ReconcileRole": [(["s3:GetObject"], ["${ArchiveBucket.Arn}/bodies/*"]),
                              (["s3:GetObject", "s3:PutObject"], ["${ArchiveBucket.Arn}/invoices/*"])],
            "NotifyRole": [(["s3:GetObject"], ["${ArchiveBucket.Arn}/invoices/*"])],
            # po-sync-admin: lists and reads the kept webhooks, stores a replay too large for SQS.
            "OperatorPolicy": [(["s3:GetObject"], ["${ArchiveBucket.Arn}/webhooks/*"]),
                               (["s3:ListBucket"], [None]),
                               (["s3:PutObject"], ["${ArchiveBucket.Arn}/bodies/*"])],
        })
        for binary in ("ingest", "reconcile", "notify"):
            _, function = self.function_named(binary)
            self.assertEqual(function["Properties"]["Environment"]["Variables"]["ARCHIVE_BUCKET"], {"Ref": "ArchiveBucket"})

    def test_claim_checked_bodies_expire_after_the_parked_queue_lets_go_of_their_claim_checks(self):
        rules = self.resources["ArchiveBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        bodies = [r for r in rules if r.get("Prefix") == "bodies/"
                  or r.get("Filter", {}).get("Prefix") == "bodies/"]
        self.assertEqual(len(bodies), 1, "one lifecycle rule for bodies/")
        rule = bodies[0]
        self.assertEqual(rule["Status"], "Enabled")
        self.assertEqual(rule["ExpirationInDays"], 30)
        # A parked claim check must still find its body when it is redriven: the body outlives the parked queue.
        parked_days = int(self.resources["WebhookParkedQueue"]["Properties"]["MessageRetentionPeriod"]) // 86400
        self.assertGreater(rule["ExpirationInDays"], parked_days)
        # The bucket is versioned: without this the expired bodies would stay as noncurrent versions.
        self.assertLessEqual(rule["NoncurrentVersionExpiration"]["NoncurrentDays"], 30)
        # No other expiring rule reaches into bodies/ (the invoice rule keeps PDFs for years).
        for other in rules:
            if other is not rule and ({"ExpirationInDays", "ExpirationDate", "NoncurrentVersionExpiration"} & set(other)):
                prefix = other.get("Prefix", other.get("Filter", {}).get("Prefix", ""))
                self.assertTrue(prefix and not "bodies/".startswith(prefix), other.get("Id"))

    def test_every_kept_webhook_expires_after_its_retention_and_outlives_the_parked_queue(self):
        rules = self.resources["ArchiveBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        kept = [r for r in rules if r.get("Prefix") == "webhooks/"]
        self.assertEqual(len(kept), 1, "one lifecycle rule for webhooks/")
        self.assertEqual(kept[0]["Status"], "Enabled")
        self.assertEqual(kept[0]["ExpirationInDays"], {"Ref": "WebhookRetentionDays"})
        self.assertLessEqual(kept[0]["NoncurrentVersionExpiration"]["NoncurrentDays"], 30)
        parameter = self.template["Parameters"]["WebhookRetentionDays"]
        self.assertEqual(parameter["Default"], 90)
        parked_days = int(self.resources["WebhookParkedQueue"]["Properties"]["MessageRetentionPeriod"]) // 86400
        self.assertGreater(parameter["MinValue"], parked_days, "a parked webhook can be replayed from its kept body")
        for other in rules:
            if other is not kept[0] and ({"ExpirationInDays", "NoncurrentVersionExpiration"} & set(other)):
                prefix = other.get("Prefix", "")
                self.assertTrue(prefix and not "webhooks/".startswith(prefix), other.get("Id"))

    def test_invoice_hosts_parameter_takes_domains_never_an_ip_address(self):
        import re as regex
        parameter = self.template["Parameters"]["InvoiceHosts"]
        pattern = regex.compile(parameter["AllowedPattern"])
        self.assertTrue(pattern.fullmatch(parameter["Default"]))
        for accepted in ["kometsales.com", "kometsales.com,files.example.org"]:
            self.assertTrue(pattern.fullmatch(accepted), accepted)
        # An address entry lifts the private-address guard (for a local test server only): never in the stack.
        for refused in ["127.0.0.1", "kometsales.com,10.0.0.1", "169.254.169.254", "localhost", "kometsales.com,"]:
            self.assertFalse(pattern.fullmatch(refused), refused)
        _, reconcile = self.function_named("reconcile")
        self.assertEqual(reconcile["Properties"]["Environment"]["Variables"]["INVOICE_HOSTS"], {"Ref": "InvoiceHosts"})

    # -- outputs ------------------------------------------------------------------------------------------

    def test_outputs_the_operator_cli_reads_by_name(self):
        outputs = self.template["Outputs"]
        for key, resource in OPERATOR_OUTPUTS.items():
            with self.subTest(output=key):
                self.assertIn(key, outputs)
                self.assertEqual(outputs[key]["Value"], {"Ref": resource})
        self.assertEqual(self.resources["LedgerTable"]["Type"], "AWS::DynamoDB::Table")
        for key in OPERATOR_OUTPUTS:
            if key.endswith("QueueUrl"):
                self.assertEqual(self.resources[OPERATOR_OUTPUTS[key]]["Type"], "AWS::SQS::Queue", key)

    # -- checkov ------------------------------------------------------------------------------------------

    def test_every_checkov_skip_names_a_check_and_says_why(self):
        skips = [(name, skip) for name, resource in self.resources.items()
                 for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])]
        self.assertTrue(skips)
        for name, skip in skips:
            with self.subTest(resource=name, check=skip.get("id")):
                self.assertRegex(skip.get("id", ""), r"^CKV_AWS_\d+$")
                self.assertGreaterEqual(len(skip.get("comment", "").split()), 8, "a skip needs its reason")

    # -- parameters ---------------------------------------------------------------------------------------

    def test_recipients_parameter_accepts_one_to_five_addresses(self):
        # CloudFormation matches AllowedPattern against the whole value (Java regex; this one is also valid Python).
        pattern = re.compile(self.template["Parameters"]["NotificationRecipients"]["AllowedPattern"])
        addresses = [f"buyer{i}@example.com" for i in range(6)]
        for count in range(1, 6):
            self.assertTrue(pattern.fullmatch(",".join(addresses[:count])), count)
        self.assertTrue(pattern.fullmatch("a@example.com,b.c+po@example.co.uk"))
        for wrong in ("", ",".join(addresses), "not-an-address", "a@example.com,", "a@example.com;b@example.com",
                      "a@example.com, b@example.com"):  # a space would end up inside an SES identity ARN
            self.assertFalse(pattern.fullmatch(wrong), wrong)

    def test_deploy_parameters_exist_with_safe_defaults(self):
        parameters = self.template["Parameters"]
        self.assertEqual(parameters["WebhookAuth"]["AllowedValues"], ["basic", "bearer"])
        self.assertEqual(parameters["ReconcilePolicy"]["Default"], "block")
        self.assertEqual(parameters["Currency"]["Default"], "USD")
        self.assertEqual(parameters["AppZenBaseUrl"]["Default"], "https://api.appzen.com")
        self.assertNotIn("Default", parameters["NotificationSender"])
        self.assertNotIn("Default", parameters["NotificationRecipients"])
        self.assertEqual(parameters["AlarmTopicArn"]["Default"], "")

    # -- alarms -------------------------------------------------------------------------------------------

    def alarmed(self):
        """{(namespace, metric, dimension target)} over every alarm, single-metric and metric-math."""
        found = set()
        for alarm in self.of_type("AWS::CloudWatch::Alarm").values():
            p = alarm["Properties"]
            metrics = [(p["Namespace"], p["MetricName"], p.get("Dimensions", []))] if "MetricName" in p else [
                (m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"],
                 m["MetricStat"]["Metric"].get("Dimensions", []))
                for m in p.get("Metrics", []) if "MetricStat" in m]
            for namespace, metric, dimensions in metrics:
                # po-sync's own namespace is the parameter; a plain dimension value is kept as it is.
                namespace = namespace if isinstance(namespace, str) else f"!Ref {target(namespace)}"
                for dimension in dimensions:
                    found.add((namespace, metric, target(dimension["Value"]) or dimension["Value"]))
            self.assertIn("AlarmActions", p, "every alarm notifies the optional SNS topic")
        return found

    def test_alarms_cover_dead_letters_errors_throttles_and_queue_age(self):
        alarmed = self.alarmed()
        for queue in ("WebhookDeadLetterQueue", "NotificationDeadLetterQueue"):
            self.assertIn(("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue), alarmed)
        self.assertIn(("AWS/SQS", "ApproximateAgeOfOldestMessage", "WebhookQueue"), alarmed)
        self.assertIn(("AWS/SQS", "ApproximateAgeOfOldestMessage", "WebhookParkedQueue"), alarmed)
        for name in self.functions():
            for metric in ("Errors", "Throttles"):
                self.assertIn(("AWS/Lambda", metric, name), alarmed)


    def test_a_parked_webhook_alarms_well_before_retention_deletes_it(self):
        retention = self.resources["WebhookParkedQueue"]["Properties"]["MessageRetentionPeriod"]
        ages = [a["Properties"] for a in self.of_type("AWS::CloudWatch::Alarm").values()
                if a["Properties"].get("MetricName") == "ApproximateAgeOfOldestMessage"
                and target(a["Properties"]["Dimensions"][0]["Value"]) == "WebhookParkedQueue"]
        self.assertEqual(len(ages), 1)
        alarm = ages[0]
        self.assertEqual(alarm["ComparisonOperator"], "GreaterThanThreshold")
        self.assertEqual(alarm["Threshold"], 10 * 86400)
        # Evaluated at most a day after crossing the threshold: days left to redrive when it fires.
        self.assertLessEqual(alarm["Threshold"] + alarm["Period"] * alarm["EvaluationPeriods"], retention - 3 * 86400)

    # -- metrics, dashboard and business alarms -----------------------------------------------------------

    def catalogue(self):
        """{metric name: its entry in infra/metrics.json}: what the code emits."""
        catalogue = json.loads(METRICS_CATALOGUE.read_text())
        self.assertEqual(catalogue["namespaceParameter"], "MetricsNamespace")
        self.assertEqual(catalogue["serviceDimension"], "service")
        return {metric["name"]: metric for metric in catalogue["metrics"]}

    def dashboard(self):
        """The dashboard body as JSON: `${X}` / `${X.Attr}` become "@X" / "@X.Attr"; the Sub's own variables
        (the optional alarm's entry) are expanded with the resource present."""
        dashboards = self.of_type("AWS::CloudWatch::Dashboard")
        self.assertEqual(list(dashboards), ["Dashboard"])
        body = dashboards["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        text, variables = (body[0], body[1]) if isinstance(body, list) else (body, {})
        for name, value in variables.items():
            # !If [condition, !Sub '...', ""]: the text when the resource exists.
            present = value["Fn::If"][1] if isinstance(value, dict) and "Fn::If" in value else value
            text = text.replace("${%s}" % name, sub_text(present) if not isinstance(present, str) else present)
        for reference in set(re.findall(r"\$\{([^}!]+)\}", text)):
            root = reference.split(".")[0]
            self.assertTrue(root in self.resources or root in self.template["Parameters"] or root.startswith("AWS::"),
                            f"the dashboard names ${{{reference}}}, which the template does not define")
        text = re.sub(r"\$\{([^}]+)\}", r"@\1", text)
        return json.loads(text)

    def dashboard_rows(self):
        """(widget title, namespace, metric, {dimension: value}, options) for every metric row of every widget."""
        rows = []
        for widget in self.dashboard()["widgets"]:
            properties = widget["properties"]
            for row in properties.get("metrics", []):
                options = row[-1] if isinstance(row[-1], dict) else {}
                fields = row[:-1] if options is row[-1] else row
                if not fields:  # an expression row
                    continue
                self.assertNotEqual(fields[0], ".", "spell metric rows out: the test reads each on its own")
                namespace, metric, pairs = fields[0], fields[1], fields[2:]
                self.assertEqual(len(pairs) % 2, 0, f"{properties.get('title')}: {row}")
                dimensions = dict(zip(pairs[::2], pairs[1::2]))
                effective = {"stat": properties.get("stat"), **options}
                rows.append((properties.get("title"), namespace, metric, dimensions, effective))
        self.assertTrue(rows)
        return rows

    def test_every_function_writes_its_metrics_to_the_namespace_parameter(self):
        parameter = self.template["Parameters"]["MetricsNamespace"]
        self.assertEqual(parameter["Default"], json.loads(METRICS_CATALOGUE.read_text())["defaultNamespace"])
        pattern = re.compile(parameter["AllowedPattern"])
        for good in ("po-sync", "po-sync-staging", "acme/po-sync", "po_sync.prod#2"):
            self.assertTrue(pattern.fullmatch(good), good)
        for bad in ("", "AWS/Lambda", "po sync", "x" * 256):  # as the functions refuse them (METRICS_NAMESPACE)
            self.assertFalse(pattern.fullmatch(bad), bad)
        for binary in ("ingest", "reconcile", "notify"):
            _, function = self.function_named(binary)
            self.assertEqual(function["Properties"]["Environment"]["Variables"]["METRICS_NAMESPACE"],
                             {"Ref": "MetricsNamespace"}, binary)

    def test_the_dashboard_shows_only_metrics_the_code_emits_with_their_dimensions(self):
        catalogue = self.catalogue()
        custom = [r for r in self.dashboard_rows() if not r[1].startswith("AWS/")]
        self.assertTrue(custom)
        for title, namespace, metric, dimensions, options in custom:
            with self.subTest(widget=title, metric=metric, dimensions=dimensions):
                self.assertEqual(namespace, "@MetricsNamespace", "the namespace is the parameter, never spelled out")
                self.assertIn(metric, catalogue, "not a metric the code emits")
                spec = catalogue[metric]
                expected = {"service"} | ({spec["dimension"]["name"]} if spec["dimension"] else set())
                self.assertEqual(set(dimensions), expected, "CloudWatch matches the whole dimension set")
                self.assertIn(dimensions["service"], spec["services"])
                if spec["dimension"]:
                    self.assertIn(dimensions[spec["dimension"]["name"]], spec["dimension"]["values"])
                if spec["kind"] == "counter":
                    self.assertEqual(options["stat"], "Sum", "a counter is shown as the count it adds up to")

    def test_the_dashboard_shows_every_metric_under_every_dimension_value(self):
        shown = {(r[2], r[3]["service"], tuple(sorted((k, v) for k, v in r[3].items() if k != "service")))
                 for r in self.dashboard_rows() if not r[1].startswith("AWS/")}
        for name, spec in self.catalogue().items():
            values = [()] if not spec["dimension"] else [((spec["dimension"]["name"], v),)
                                                          for v in spec["dimension"]["values"]]
            for service in spec["services"]:
                for value in values:
                    self.assertIn((name, service, value), shown, f"{name} for {service} {value} is never shown")
        latency = [r[4]["stat"] for r in self.dashboard_rows() if r[2] == "AppZenLatency"]
        self.assertLessEqual({"p50", "p99"}, set(latency), "AppZen latency as p50 and p99")

    def test_the_dashboard_shows_queue_depths_ages_dead_letters_and_the_functions(self):
        rows = [r for r in self.dashboard_rows() if r[1].startswith("AWS/")]
        seen = set()
        for title, namespace, metric, dimensions, _ in rows:
            with self.subTest(widget=title, metric=metric):
                (dimension, value), = dimensions.items()
                self.assertTrue(value.startswith("@"), "resources of this stack, by reference")
                resource = self.resources[value[1:].split(".")[0]]
                if namespace == "AWS/SQS":
                    self.assertEqual((dimension, resource["Type"]), ("QueueName", "AWS::SQS::Queue"))
                    self.assertTrue(value.endswith(".QueueName"))
                else:
                    self.assertEqual(namespace, "AWS/Lambda")
                    self.assertEqual((dimension, resource["Type"]), ("FunctionName", "AWS::Serverless::Function"))
                seen.add((namespace, metric, value[1:].split(".")[0]))
        for queue in self.of_type("AWS::SQS::Queue"):
            self.assertIn(("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue), seen, "depth / dead letters")
            self.assertIn(("AWS/SQS", "ApproximateAgeOfOldestMessage", queue), seen, "oldest-message age")
        for function in self.functions():
            for metric in ("Errors", "Throttles", "Duration"):
                self.assertIn(("AWS/Lambda", metric, function), seen)

    def test_the_dashboard_lists_every_alarm_and_the_stack_outputs_its_url(self):
        listed = set()
        for widget in self.dashboard()["widgets"]:
            if widget["type"] == "alarm":
                listed |= {arn[1:].removesuffix(".Arn") for arn in widget["properties"]["alarms"]}
        self.assertEqual(listed, set(self.of_type("AWS::CloudWatch::Alarm")))
        url = sub_text(self.template["Outputs"]["DashboardUrl"]["Value"])
        self.assertTrue(url.startswith("https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home?"), url)
        self.assertIn("region=${AWS::Region}", url)
        self.assertTrue(url.endswith("#dashboards/dashboard/${Dashboard}"), url)

    def filtered_metrics(self):
        """{metric name: metric filter} for the metrics the template's own log metric filters make."""
        found = {}
        for name, resource in self.of_type("AWS::Logs::MetricFilter").items():
            for transformation in resource["Properties"]["MetricTransformations"]:
                self.assertEqual(transformation["MetricNamespace"], {"Ref": "MetricsNamespace"}, name)
                found[transformation["MetricName"]] = resource
        return found

    def business_alarms(self):
        """{alarm name: properties} for the alarms on po-sync's own metrics, each checked against the catalogue
        (or, for a metric a log metric filter of the template makes, against that filter: no dimensions)."""
        catalogue = self.catalogue()
        filtered = self.filtered_metrics()
        found = {}
        for name, alarm in self.of_type("AWS::CloudWatch::Alarm").items():
            p = alarm["Properties"]
            # A single-metric alarm, or each metric of a metric-math alarm.
            metrics = [(p.get("Namespace"), p)] if "MetricName" in p else [
                (m["MetricStat"]["Metric"]["Namespace"],
                 {**m["MetricStat"]["Metric"], "Statistic": m["MetricStat"]["Stat"], "Period": m["MetricStat"]["Period"]})
                for m in p.get("Metrics", []) if "MetricStat" in m]
            for namespace, metric in metrics:
                if isinstance(namespace, str):
                    self.assertTrue(namespace.startswith("AWS/"), f"{name}: po-sync's namespace is the parameter")
                    continue
                self.assertEqual(namespace, {"Ref": "MetricsNamespace"}, name)
                self.assertIn("MetricName", metric, f"{name}: each business metric is named")
                if metric["MetricName"] in filtered:
                    self.assertNotIn(metric["MetricName"], catalogue, "one source per metric")
                    self.assertNotIn("Dimensions", metric, f"{name}: a metric filter's metric has no dimensions")
                    found[name] = (p, {}, alarm.get("Condition"))
                    continue
                with self.subTest(alarm=name):
                    spec = catalogue.get(metric["MetricName"])
                    self.assertIsNotNone(spec, f"{name}: {metric['MetricName']} is not a metric the code emits")
                    dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
                    expected = {"service"} | ({spec["dimension"]["name"]} if spec["dimension"] else set())
                    self.assertEqual(set(dimensions), expected, "CloudWatch matches the whole dimension set")
                    self.assertIn(dimensions["service"], spec["services"])
                    if spec["dimension"]:
                        self.assertIn(dimensions[spec["dimension"]["name"]], spec["dimension"]["values"])
                    self.assertEqual(metric["Statistic"], "Sum")
                # A metric-math alarm is listed once per metric it reads, with that metric's name and period.
                key = name if "MetricName" in p else f"{name}/{metric['MetricName']}/{dimensions}"
                found[key] = ({**p, **metric} if "MetricName" not in p else p, dimensions, alarm.get("Condition"))
        self.assertTrue(found)
        return found

    def test_appzen_rejections_alarm_counts_refused_pos_per_hour_against_a_parameter(self):
        alarms = [a for a in self.business_alarms().values()
                  if a[0]["MetricName"] == "Records" and a[1].get("outcome") == "rejected"]
        self.assertEqual(len(alarms), 1)
        p, _, _ = alarms[0]
        self.assertEqual((p["Period"], p["EvaluationPeriods"], p["ComparisonOperator"], p["TreatMissingData"]),
                         (3600, 1, "GreaterThanThreshold", "notBreaching"))
        self.assertEqual(p["Threshold"], {"Ref": "AppZenRejectionsAlarmThreshold"})
        self.assertGreaterEqual(self.template["Parameters"]["AppZenRejectionsAlarmThreshold"]["Default"], 1)

    def test_no_webhook_alarm_treats_silence_as_breaching_and_outlasts_a_weekend(self):
        alarms = [a for a in self.business_alarms().values() if a[0]["MetricName"] == "WebhooksAccepted"]
        self.assertEqual(len(alarms), 1)
        p, dimensions, condition = alarms[0]
        self.assertEqual(dimensions, {"service": "ingest"})
        self.assertEqual((p["ComparisonOperator"], p["Threshold"], p["TreatMissingData"], p["Period"]),
                         ("LessThanThreshold", 1, "breaching", 3600), "an hour without any accepted webhook breaches")
        hours = {"Ref": "NoWebhookAlarmHours"}
        self.assertEqual((p["EvaluationPeriods"], p["DatapointsToAlarm"]), (hours, hours), "every hour of the window")
        # 0 disables it.
        self.assertEqual(self.template["Conditions"][condition],
                         {"Fn::Not": [{"Fn::Equals": [{"Ref": "NoWebhookAlarmHours"}, "0"]}]})
        parameter = self.template["Parameters"]["NoWebhookAlarmHours"]
        self.assertEqual(parameter["MinValue"], 0)
        # Friday 17:00 to Monday 09:00 is 64 hours without POs for a business closed at weekends.
        self.assertGreater(parameter["Default"], 64, "the default must not fire every weekend")
        self.assertLessEqual(parameter["MaxValue"] * 3600, 7 * 86400, "CloudWatch evaluates at most 7 days")

    def test_reconcile_retries_alarm_wants_retries_sustained_across_redeliveries(self):
        alarms = [a for a in self.business_alarms().values()
                  if a[0]["MetricName"] == "Records" and a[1].get("outcome") == "retried"]
        self.assertEqual(len(alarms), 1)
        p, _, _ = alarms[0]
        self.assertEqual((p["ComparisonOperator"], p["Threshold"], p["TreatMissingData"]),
                         ("GreaterThanThreshold", 0, "notBreaching"))
        self.assertGreaterEqual(p["EvaluationPeriods"], 2, "one failed batch is not 'sustained'")
        self.assertEqual(p.get("DatapointsToAlarm", p["EvaluationPeriods"]), p["EvaluationPeriods"])
        # A failing record comes back after at most the schedule's longest wait: each period sees a return.
        self.assertGreaterEqual(p["Period"], max(schedule_seconds(self.template)))
        # And it fires well before the webhooks are dead-lettered (MaxReceiveCount deliveries).
        self.assertLess(p["Period"] * p["EvaluationPeriods"], retry_horizon_seconds(self.template) / 4)

    def test_what_komet_sees_alarms_at_once_ingest_s_503_and_api_gateway_s_429(self):
        alarms = self.business_alarms()
        refused = [a for a in alarms.values()
                   if a[0]["MetricName"] == "WebhooksRefused" and a[1].get("reason") == "queue_unavailable"]
        self.assertEqual(len(refused), 1)
        throttled = [a for a in alarms.values() if a[0]["MetricName"] == "WebhooksThrottled"]
        self.assertEqual(len(throttled), 1)
        for p, _, _ in refused + throttled:
            self.assertEqual((p["Threshold"], p["ComparisonOperator"], p["EvaluationPeriods"], p["Period"]),
                             (1, "GreaterThanOrEqualToThreshold", 1, 300), "the first one, within five minutes")
            self.assertEqual((p["Statistic"], p["TreatMissingData"]), ("Sum", "notBreaching"))
        # The 429s come from API Gateway's access log, where a throttled call is the only trace.
        filter_ = self.filtered_metrics()["WebhooksThrottled"]["Properties"]
        self.assertEqual(target(filter_["LogGroupName"]), "WebhookApiAccessLogGroup")
        self.assertEqual(filter_["FilterPattern"].replace(" ", ""), '{$.status="429"}')
        access_format = self.resources["WebhookApi"]["Properties"]["AccessLogSettings"]["Format"]
        self.assertIn('"status":"$context.status"', access_format)

    def test_appzen_setup_alarm_fires_within_minutes_on_credentials_or_endpoint_failures(self):
        alarms = {key: a for key, a in self.business_alarms().items() if key.startswith("AppZenSetupAlarm/")}
        causes = {a[1]["cause"] for a in alarms.values()}
        self.assertEqual(causes, {"credentials", "endpoint"})
        for p, dimensions, _ in alarms.values():
            self.assertEqual((p["MetricName"], dimensions["service"]), ("AppZenFailures", "reconcile"))
            self.assertEqual(p["Period"], 60)
        alarm = self.resources["AppZenSetupAlarm"]["Properties"]
        # The first failure of either kind, in one 1-minute period: within 5 minutes with EMF's delivery delay.
        self.assertEqual((alarm["EvaluationPeriods"], alarm["Threshold"], alarm["ComparisonOperator"]),
                         (1, 1, "GreaterThanOrEqualToThreshold"))
        self.assertEqual(alarm["TreatMissingData"], "notBreaching")
        returned = [m for m in alarm["Metrics"] if m.get("ReturnData")]
        self.assertEqual(len(returned), 1)
        self.assertEqual(returned[0]["Expression"].replace(" ", ""), "credentials+endpoint")


if __name__ == "__main__":
    unittest.main()
