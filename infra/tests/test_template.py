"""Properties of infra/template.yaml that a later edit must not quietly drop.

cfn-lint and `sam validate --lint` check that the template is *valid*; these tests check that it still says what
po-sync relies on: FIFO queues with dead-letter queues, partial batch responses, visibility timeouts that cover
the consumers, least-privilege IAM, JSON logs with retention, the webhook route and its access log, the alarms, the
functions' environment contract, reconcile's retained version ledger (DynamoDB, GetItem/PutItem on the table
only), the outputs the operator CLI reads by name, and a reason on every checkov skip.

Run: .venv/bin/python -m unittest discover -s infra/tests -v   (part of `make check-template` / `make test`)
"""

import json
import re
import unittest
from pathlib import Path

from cfnlint.decode import decode  # cfn-lint's own loader: understands !Ref, !Sub, !GetAtt, ...

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
# notify's e-mail promises how long a parked webhook is kept; the parked queue's retention must agree.
EMAIL_RS = Path(__file__).resolve().parents[2] / "shared" / "src" / "email.rs"

WEBHOOK_ROUTE = "/webhooks/komet/po-reconciliation"
LOG_STREAM_SUFFIX = ":log-stream:*"

# Outputs the operator CLI reads by OutputKey -> the `!Ref` target each must have.
OPERATOR_OUTPUTS = {
    "LedgerTableName": "LedgerTable",
    "WebhookQueueUrl": "WebhookQueue",
    "WebhookDeadLetterQueueUrl": "WebhookDeadLetterQueue",
    "WebhookParkedQueueUrl": "WebhookParkedQueue",
    "NotificationQueueUrl": "NotificationQueue",
    "NotificationDeadLetterQueueUrl": "NotificationDeadLetterQueue",
}

# The environment-variable contract (docs: README "Configuration"); a template may set a subset.
ENV_CONTRACT = {
    "ingest": {
        "allowed": {"WEBHOOK_AUTH", "WEBHOOK_USERNAME", "WEBHOOK_PASSWORD", "WEBHOOK_TOKEN",
                    "WEBHOOK_SECRET_ARN", "QUEUE_URL", "MAX_BODY_BYTES", "RUST_LOG"},
        "required": {"WEBHOOK_AUTH", "WEBHOOK_SECRET_ARN", "QUEUE_URL"},
    },
    "reconcile": {
        "allowed": {"NOTIFY_QUEUE_URL", "RECONCILE_POLICY", "RECONCILE_TOLERANCE", "CURRENCY", "APPZEN_BASE_URL",
                    "APPZEN_API_KEY", "APPZEN_CUSTOMER_ID", "APPZEN_CUSTOMER_KEY", "APPZEN_SECRET_ARN",
                    "APPZEN_ENTITY_ID_FROM", "APPZEN_SUPPLIER_ID_FROM", "APPZEN_CHARGES_GL_CODE",
                    "APPZEN_TIMEOUT_MS", "APPZEN_MAX_ATTEMPTS", "LEDGER_TABLE_NAME", "RUST_LOG"},
        "required": {"NOTIFY_QUEUE_URL", "APPZEN_SECRET_ARN", "APPZEN_BASE_URL", "RECONCILE_POLICY", "CURRENCY",
                     "LEDGER_TABLE_NAME"},
    },
    "notify": {
        "allowed": {"NOTIFY_FROM", "NOTIFY_TO", "NOTIFY_REPLY_TO", "NOTIFY_SUBJECT_PREFIX", "PARKED_QUEUE_URL",
                    "RUST_LOG"},
        # PARKED_QUEUE_URL is optional for the binary, not for the stack: without it dead letters are lost.
        "required": {"NOTIFY_FROM", "NOTIFY_TO", "PARKED_QUEUE_URL"},
    },
}


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
        self.assertEqual(self.template["Parameters"]["MaxReceiveCount"]["Default"], 5)

    def test_dead_lettered_webhooks_end_in_the_parked_queue_which_notify_fills_and_nobody_consumes(self):
        dlq = self.resources["WebhookDeadLetterQueue"]["Properties"]
        self.assertEqual(dlq["RedrivePolicy"]["deadLetterTargetArn"], {"Fn::GetAtt": ["WebhookParkedQueue", "Arn"]},
                         "the webhook DLQ must dead-letter into the parked queue, never into the notifications DLQ")
        self.assertEqual(dlq["RedrivePolicy"]["maxReceiveCount"], {"Ref": "MaxReceiveCount"})

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
                    self.assertNotEqual(text.strip(), "*")
                    if "*" in text:
                        # The single exception: Lambda names the log streams, so the stream part is a wildcard
                        # inside one named log group of this stack.
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
        for role in ("IngestRole", "ReconcileRole", "NotifyRole"):
            self.assertFalse({a for a, _ in grants[role] if a.startswith("sqs:") and a not in {
                "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}}, role)
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
        self.assertEqual(set(tables), {"LedgerTable"})
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

    def test_only_reconcile_may_get_and_put_ledger_items_on_the_table_itself(self):
        dynamodb = [(where, statement) for where, statement in self.policy_statements()
                    if any(str(a).lower().startswith("dynamodb:") for a in as_list(statement["Action"]))]
        self.assertEqual([where.split("/")[0] for where, _ in dynamodb], ["ReconcileRole"],
                         "exactly one DynamoDB statement, in reconcile's role")
        _, statement = dynamodb[0]
        self.assertEqual(statement["Effect"], "Allow")
        self.assertEqual(sorted(as_list(statement["Action"])), ["dynamodb:GetItem", "dynamodb:PutItem"])
        self.assertEqual(as_list(statement["Resource"]), [{"Fn::GetAtt": ["LedgerTable", "Arn"]}],
                         "the table's ARN only: no index, no wildcard, no other table")
        # No other statement, role or policy so much as mentions DynamoDB or the table.
        for where, other in self.policy_statements():
            if other is not statement:
                with self.subTest(statement=f"{where}/{other.get('Sid', '?')}"):
                    self.assertNotIn("dynamodb", json.dumps(other).lower())
                    self.assertNotIn("ledgertable", json.dumps(other).lower())
        for name, resource in self.resources.items():
            if resource["Type"].startswith("AWS::IAM::") and name != "ReconcileRole":
                with self.subTest(resource=name):
                    self.assertNotIn("dynamodb", json.dumps(resource).lower())

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
                for dimension in dimensions:
                    found.add((namespace, metric, target(dimension["Value"])))
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


if __name__ == "__main__":
    unittest.main()
