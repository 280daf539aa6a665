"""Properties of infra/template.yaml that a later edit must not quietly drop.

cfn-lint and `sam validate --lint` check that the template is *valid*; these tests check that it still says what
po-sync relies on: FIFO queues with dead-letter queues, partial batch responses, visibility timeouts that cover
the consumers, least-privilege IAM, JSON logs with retention, the webhook route and its access log, the alarms, the
functions' environment contract, reconcile's retained version ledger (DynamoDB, GetItem/PutItem on the table
only), the outputs the operator CLI reads by name, a reason on every checkov skip, and the dashboard and business
alarms, whose metric names, dimensions and values must be ones the code emits (infra/metrics.json, written from
shared/po-sync-aws/src/metrics.rs and kept equal to it by a Rust test). Destinations (appzen, exsited or both)
decides each destination's own resources: Exsited's queues, reconcile, notify, secret, alarms and outputs exist
when it names exsited (condition HasExsited), AppZen's secret, reconcile (role, log group, mapping), alarms and
outputs when it names appzen (HasAppZen); AppZen's webhook queues and notify are in every stack. Each side is held
to the same properties as the other, and named only where its condition holds (`!If [HasAppZen, X, !Ref
AWS::NoValue]` in a list is X in such a stack, a statement-level `!If` is that statement); the dashboard is
rendered for every Destinations value, with and without the no-webhook alarm.

Run: .venv/bin/python -m unittest discover -s infra/tests -v   (part of `make check-template` / `make test`)
"""

import copy
import itertools
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
# reconcile's configuration, whose defaults the stack's parameters repeat.
RECONCILE_CONFIG_RS = Path(__file__).resolve().parents[2] / "shared" / "po-sync" / "src" / "config" / "reconcile.rs"

WEBHOOK_ROUTE = "/webhooks/komet/po-reconciliation"
LOG_STREAM_SUFFIX = ":log-stream:*"

# Outputs the operator CLI reads by OutputKey -> the `!Ref` target each must have.
OPERATOR_OUTPUTS = {
    "LedgerTableName": "LedgerTable",
    "HistoryTableName": "HistoryTable",
    "WebhookQueueUrl": "WebhookQueue",
    "WebhookDeadLetterQueueUrl": "WebhookDeadLetterQueue",
    "WebhookParkedQueueUrl": "WebhookParkedQueue",
    "NotificationQueueUrl": "NotificationQueue",
    "NotificationDeadLetterQueueUrl": "NotificationDeadLetterQueue",
}
# AppZen's, in a stack whose Destinations names it (HasAppZen): verify and po read AppZen's settings from its
# reconcile, pause and resume switch its mapping; its secret is where a person puts AppZen's keys.
OPERATOR_APPZEN_OUTPUTS = {
    "AppZenSecretArn": "AppZenSecret",
    "ReconcileFunctionName": "ReconcileFunction",
    # SAM's logical id for the mapping of ReconcileFunction's Webhooks event: pause/resume switch it.
    "ReconcileEventSourceMappingId": "ReconcileFunctionWebhooks",
}
# Exsited's, in a stack whose Destinations names it (each output under its resource's condition): cancel and
# reactivate read Exsited's settings from its reconcile; its queues are redriven and replayed like AppZen's.
OPERATOR_EXSITED_OUTPUTS = {
    "ExsitedSecretArn": "ExsitedSecret",
    "ExsitedWebhookQueueUrl": "ExsitedWebhookQueue",
    "ExsitedWebhookDeadLetterQueueUrl": "ExsitedWebhookDeadLetterQueue",
    "ExsitedWebhookParkedQueueUrl": "ExsitedWebhookParkedQueue",
    "ReconcileExsitedFunctionName": "ReconcileExsitedFunction",
    # SAM's logical id for the mapping of ReconcileExsitedFunction's Webhooks event.
    "ReconcileExsitedEventSourceMappingId": "ReconcileExsitedFunctionWebhooks",
}

# Each of AppZen's outputs above and its Exsited twin.
DESTINATION_OUTPUT_TWINS = {
    "AppZenSecretArn": "ExsitedSecretArn",
    "ReconcileFunctionName": "ReconcileExsitedFunctionName",
    "ReconcileEventSourceMappingId": "ReconcileExsitedEventSourceMappingId",
}

# What only AppZen needs, in a stack whose Destinations names appzen (HasAppZen), and its Exsited twin (HasExsited)
# where Exsited has one. AppZen's webhook queues are not here: notify (in every stack) reads their DLQ.
APPZEN_ONLY = {
    "AppZenSecret": "ExsitedSecret",
    "ReconcileLogGroup": "ReconcileExsitedLogGroup",
    "ReconcileFunction": "ReconcileExsitedFunction",
    "ReconcileRole": "ReconcileExsitedRole",
    "ReconcileErrorsAlarm": "ReconcileExsitedErrorsAlarm",
    "ReconcileThrottlesAlarm": "ReconcileExsitedThrottlesAlarm",
    # On service=reconcile's metrics; the twins watch service=reconcile_exsited's.
    "AppZenRejectionsAlarm": "ExsitedRejectionsAlarm",
    "AppZenSetupAlarm": "ExsitedSetupAlarm",
    "ReconcileRetriesAlarm": "ReconcileExsitedRetriesAlarm",
}

# The functions behind each value of the metrics' `service` dimension (infra/metrics.json).
SERVICE_FUNCTIONS = {
    "ingest": ("IngestFunction",),
    "reconcile": ("ReconcileFunction",),
    "reconcile_exsited": ("ReconcileExsitedFunction",),
    "notify": ("NotifyFunction", "NotifyExsitedFunction"),
}

# Each destination's chain of webhook queues: its reconcile consumes the first, its notify the DLQ and parks into
# the last, which nobody consumes. One destination's webhooks never reach another's queues.
WEBHOOK_CHAINS = {
    "appzen": {"queue": "WebhookQueue", "dlq": "WebhookDeadLetterQueue", "parked": "WebhookParkedQueue",
               "reconcile": "ReconcileFunction", "notify": "NotifyFunction", "name": "webhooks"},
    "exsited": {"queue": "ExsitedWebhookQueue", "dlq": "ExsitedWebhookDeadLetterQueue",
                "parked": "ExsitedWebhookParkedQueue", "reconcile": "ReconcileExsitedFunction",
                "notify": "NotifyExsitedFunction", "name": "webhooks-exsited"},
}

# reconcile's variables whatever its destination (docs/configuration.md, "reconcile").
RECONCILE_COMMON = {"NOTIFY_QUEUE_URL", "RECONCILE_POLICY", "RECONCILE_TOLERANCE", "CURRENCY", "LEDGER_TABLE_NAME",
                    "RUST_LOG", "METRICS_NAMESPACE", "ARCHIVE_BUCKET", "INVOICE_HOSTS", "INVOICE_MAX_BYTES",
                    "INVOICE_TIMEOUT_MS", "INVOICE_CONCURRENCY", "INVOICE_BUFFER_MIB", "WEBHOOK_QUEUE_URL",
                    "RETRY_SCHEDULE", "GROUP_CONCURRENCY", "OUTAGE_EMAIL_AFTER", "HISTORY_TABLE_NAME",
                    "HISTORY_RETENTION_DAYS", "DESTINATION", "DESTINATIONS"}
# ARCHIVE_BUCKET is optional for the binary, not for the stack: without it invoices die with Komet's links.
# WEBHOOK_QUEUE_URL likewise: without it a handed-back webhook waits the queue's visibility timeout, not
# RetrySchedule, and the retry horizon shrinks to MaxReceiveCount x 12 minutes. HISTORY_TABLE_NAME too: without it
# po-sync-admin history shows the kept bodies but no attempts. DESTINATIONS too: without it each reconcile thinks
# it is the only destination, and a PO that does not add up is mailed once per destination.
RECONCILE_COMMON_REQUIRED = {"NOTIFY_QUEUE_URL", "RECONCILE_POLICY", "CURRENCY", "LEDGER_TABLE_NAME",
                             "METRICS_NAMESPACE", "ARCHIVE_BUCKET", "INVOICE_HOSTS", "WEBHOOK_QUEUE_URL",
                             "RETRY_SCHEDULE", "HISTORY_TABLE_NAME", "HISTORY_RETENTION_DAYS", "DESTINATIONS"}

NOTIFY_ALLOWED = {"NOTIFY_FROM", "NOTIFY_TO", "NOTIFY_REPLY_TO", "NOTIFY_SUBJECT_PREFIX", "PARKED_QUEUE_URL",
                  "RUST_LOG", "METRICS_NAMESPACE", "ARCHIVE_BUCKET", "HISTORY_TABLE_NAME", "HISTORY_RETENTION_DAYS",
                  "DESTINATION"}
NOTIFY_REQUIRED = {"NOTIFY_FROM", "NOTIFY_TO", "PARKED_QUEUE_URL", "METRICS_NAMESPACE", "ARCHIVE_BUCKET",
                   "HISTORY_TABLE_NAME", "HISTORY_RETENTION_DAYS"}

# The environment-variable contract (docs/configuration.md); a template may set a subset. "values": what a
# variable, when set, must be (a literal or the template's `!Ref`).
ENV_CONTRACT = {
    "ingest": {
        "allowed": {"WEBHOOK_AUTH", "WEBHOOK_USERNAME", "WEBHOOK_PASSWORD", "WEBHOOK_TOKEN",
                    "WEBHOOK_SECRET_ARN", "QUEUE_URL", "MAX_BODY_BYTES", "RUST_LOG", "METRICS_NAMESPACE",
                    "ARCHIVE_BUCKET", "DESTINATIONS", "EXSITED_QUEUE_URL"},
        # ARCHIVE_BUCKET is optional for the binary, not for the stack: without it a PO too large for one SQS
        # message is refused (413) instead of stored under bodies/ with a claim check on the queue. DESTINATIONS
        # and EXSITED_QUEUE_URL likewise: without them a stack with Exsited would never fill Exsited's queue
        # (EXSITED_QUEUE_URL is empty, so unread, in a stack without it).
        "required": {"WEBHOOK_AUTH", "WEBHOOK_SECRET_ARN", "QUEUE_URL", "METRICS_NAMESPACE", "ARCHIVE_BUCKET",
                     "DESTINATIONS", "EXSITED_QUEUE_URL"},
        "values": {"QUEUE_URL": {"Ref": "WebhookQueue"}, "DESTINATIONS": {"Ref": "Destinations"},
                   "EXSITED_QUEUE_URL": {"Fn::If": ["HasExsited", {"Ref": "ExsitedWebhookQueue"}, ""]}},
    },
    # reconcile sending to AppZen (DESTINATION unset or appzen): no EXSITED_* variable.
    "reconcile": {
        "allowed": RECONCILE_COMMON | {
            "APPZEN_BASE_URL", "APPZEN_API_KEY", "APPZEN_CUSTOMER_ID", "APPZEN_CUSTOMER_KEY", "APPZEN_SECRET_ARN",
            "APPZEN_ENTITY_ID_FROM", "APPZEN_SUPPLIER_ID_FROM", "APPZEN_CHARGES_GL_CODE", "APPZEN_TIMEOUT_MS",
            "APPZEN_MAX_ATTEMPTS"},
        "required": RECONCILE_COMMON_REQUIRED | {"APPZEN_SECRET_ARN", "APPZEN_BASE_URL"},
        "values": {"DESTINATION": "appzen", "DESTINATIONS": {"Ref": "Destinations"},
                   "APPZEN_SECRET_ARN": {"Ref": "AppZenSecret"}, "APPZEN_BASE_URL": {"Ref": "AppZenBaseUrl"},
                   "WEBHOOK_QUEUE_URL": {"Ref": "WebhookQueue"}},
    },
    # reconcile sending to Exsited (DESTINATION=exsited, docs/configuration.md "reconcile for Exsited"): the
    # APPZEN_* variables are not read, so none may be set.
    "reconcile-exsited": {
        "allowed": RECONCILE_COMMON | {
            "EXSITED_BASE_URL", "EXSITED_CLIENT_ID", "EXSITED_CLIENT_SECRET", "EXSITED_SECRET_ARN",
            "EXSITED_REDIRECT_URI", "EXSITED_TIMEOUT_MS", "EXSITED_CURRENCY", "EXSITED_ACCOUNT_MAP",
            "EXSITED_ITEM_MAP", "EXSITED_CHARGES_ITEM"},
        # EXSITED_CURRENCY defaults to USD whatever CURRENCY says, and the maps and charges item are what the
        # stack's parameters are for: each is set from its parameter.
        "required": RECONCILE_COMMON_REQUIRED | {"DESTINATION", "EXSITED_BASE_URL", "EXSITED_SECRET_ARN",
                                                 "EXSITED_CURRENCY", "EXSITED_ACCOUNT_MAP", "EXSITED_ITEM_MAP",
                                                 "EXSITED_CHARGES_ITEM"},
        "values": {"DESTINATION": "exsited", "DESTINATIONS": {"Ref": "Destinations"},
                   "EXSITED_BASE_URL": {"Ref": "ExsitedBaseUrl"}, "EXSITED_SECRET_ARN": {"Ref": "ExsitedSecret"},
                   "EXSITED_CURRENCY": {"Ref": "Currency"}, "EXSITED_ACCOUNT_MAP": {"Ref": "ExsitedAccountMap"},
                   "EXSITED_ITEM_MAP": {"Ref": "ExsitedItemMap"},
                   "EXSITED_CHARGES_ITEM": {"Ref": "ExsitedChargesItem"},
                   "WEBHOOK_QUEUE_URL": {"Ref": "ExsitedWebhookQueue"}},
        "forbidden_prefix": "APPZEN_",
    },
    "notify": {
        "allowed": NOTIFY_ALLOWED,
        # PARKED_QUEUE_URL is optional for the binary, not for the stack: without it dead letters are lost.
        # HISTORY_TABLE_NAME likewise: without it a parked version's history ends at its last retry.
        "required": NOTIFY_REQUIRED,
        "values": {"DESTINATION": "appzen", "PARKED_QUEUE_URL": {"Ref": "WebhookParkedQueue"}},
    },
    # notify for Exsited's dead letters: DESTINATION=exsited, so its e-mails and history name Exsited.
    "notify-exsited": {
        "allowed": NOTIFY_ALLOWED,
        "required": NOTIFY_REQUIRED | {"DESTINATION"},
        "values": {"DESTINATION": "exsited", "PARKED_QUEUE_URL": {"Ref": "ExsitedWebhookParkedQueue"}},
    },
}
# Which contract each function is held to (every function is in this table).
FUNCTION_CONTRACTS = {
    "IngestFunction": "ingest",
    "ReconcileFunction": "reconcile",
    "ReconcileExsitedFunction": "reconcile-exsited",
    "NotifyFunction": "notify",
    "NotifyExsitedFunction": "notify-exsited",
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


NO_VALUE = {"Ref": "AWS::NoValue"}


def evaluate(template, expression, parameters):
    """A condition's value (Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition) with these parameter values; a
    parameter not given has its default. Anything else is refused, not guessed at."""
    def value(node):
        if isinstance(node, dict) and list(node) == ["Ref"]:
            name = node["Ref"]
            return str(parameters[name] if name in parameters else template["Parameters"][name]["Default"])
        if isinstance(node, (str, int)):
            return str(node)
        raise AssertionError(f"not a value a condition may compare: {node!r}")

    (function, argument), = expression.items()
    if function == "Fn::Equals":
        return value(argument[0]) == value(argument[1])
    if function == "Fn::Not":
        return not evaluate(template, argument[0], parameters)
    if function == "Fn::And":
        return all(evaluate(template, a, parameters) for a in argument)
    if function == "Fn::Or":
        return any(evaluate(template, a, parameters) for a in argument)
    if function == "Condition":
        return evaluate(template, template["Conditions"][argument], parameters)
    raise AssertionError(f"a condition function this test does not know: {function}")


def stack_conditions(template, parameters):
    """{condition: its value} for every condition of the template, in a stack with these parameters."""
    return {name: evaluate(template, expression, parameters) for name, expression in template["Conditions"].items()}


def parameters_of(template, node):
    """The parameters a condition expression reads, following Condition to other conditions."""
    if isinstance(node, list):
        return set().union(set(), *(parameters_of(template, item) for item in node))
    if isinstance(node, dict):
        if list(node) == ["Ref"]:
            return {node["Ref"]}
        if list(node) == ["Condition"]:
            return parameters_of(template, template["Conditions"][node["Condition"]])
        return set().union(set(), *(parameters_of(template, item) for item in node.values()))
    return set()


def references(node, active=frozenset()):
    """(logical id, conditions) for every `!Ref X`, `!GetAtt X.A` and `${X}` / `${X.A}` of a `!Sub` in `node`,
    with the conditions of the `!If` branches it sits in (the false branch adds none). Also names parameters and
    pseudo parameters; the caller keeps what it knows."""
    if isinstance(node, list):
        for item in node:
            yield from references(item, active)
    elif isinstance(node, dict):
        if list(node) == ["Fn::If"]:
            condition, when_true, when_false = node["Fn::If"]
            yield from references(when_true, active | {condition})
            yield from references(when_false, active)
        elif list(node) == ["Fn::Sub"]:
            argument = node["Fn::Sub"]
            text, variables = (argument[0], argument[1]) if isinstance(argument, list) else (argument, {})
            for reference in re.findall(r"\$\{([^}!]+)\}", text):
                if reference.split(".")[0] not in variables:
                    yield reference.split(".")[0], active
            yield from references(variables, active)
        elif target(node) is not None:
            yield target(node), active
        else:
            for value in node.values():
                yield from references(value, active)


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
        self.assertEqual(set(found), {"IngestFunction", "ReconcileFunction", "NotifyFunction",
                                      "ReconcileExsitedFunction", "NotifyExsitedFunction"},
                         "expected the three functions and Exsited's reconcile and notify")
        return found

    def function_named(self, binary, condition=None):
        """The function built from `binary` that exists under `condition` (None: in every stack)."""
        for name, function in self.functions().items():
            if (function.get("Metadata", {}).get("BuildProperties", {}).get("Binary") == binary
                    and function.get("Condition") == condition):
                return name, function
        self.fail(f"no function builds the {binary!r} binary")

    def effective(self, function, prop):
        return function["Properties"].get(prop, self.globals.get(prop))

    def condition_of(self, name):
        """The condition under which the stack has the resource `name` (None: every stack). SAM's resources made
        from a function's event (<function><event>, e.g. ReconcileFunctionWebhooks) share their function's."""
        if name in self.resources:
            return self.resources[name].get("Condition")
        for function_name, function in self.of_type("AWS::Serverless::Function").items():
            events = function["Properties"].get("Events", {})
            if name.startswith(function_name) and name[len(function_name):] in events:
                return function.get("Condition")
        return None

    def conditional_entries(self, value):
        """[(entry, condition)] of a list the template reads resources or ARNs from (a statement's Resource, ...):
        a plain entry is there in every stack (None); `!If [C, X, !Ref AWS::NoValue]` is X, there under C, and
        every resource X names must exist exactly under C. Any other `!If` is refused, not guessed at."""
        entries = []
        for entry in as_list(value):
            if isinstance(entry, dict) and list(entry) == ["Fn::If"]:
                condition, present, absent = entry["Fn::If"]
                self.assertEqual(absent, NO_VALUE, f"only !If [C, X, !Ref AWS::NoValue] is understood: {entry!r}")
                self.assertIn(condition, self.template["Conditions"])
                named = [name for name, _ in references(present) if name in self.resources or self.condition_of(name)]
                self.assertTrue(named, f"a conditional entry names no resource of the stack: {entry!r}")
                for name in named:
                    self.assertEqual(self.condition_of(name), condition, f"{name} is granted under another condition")
                entries.append((present, condition))
            else:
                entries.append((entry, None))
        return entries

    def statement_resources(self, statement):
        """A statement's Resource entries, each as it is when present (see conditional_entries)."""
        return [entry for entry, _ in self.conditional_entries(statement["Resource"])]

    def role_of(self, function_name):
        return target(self.resources[function_name]["Properties"]["Role"])

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
        """(where, statement) for every IAM statement in the template: roles, policies and SAM function Policies;
        a statement-level `!If [C, S, !Ref AWS::NoValue]` is S (conditional_statements says under which C)."""
        return [(where, statement) for where, statement, _ in self.conditional_statements()]

    def conditional_statements(self):
        """(where, statement, condition) for every IAM statement: condition None for a statement of every stack
        (of every stack its role or policy is in), C for `!If [C, S, !Ref AWS::NoValue]`, whose resources must
        exist under C (and one at least only under C: a statement is made conditional for what it names)."""
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
        statements = []
        for where, document in documents:
            for statement in as_list(document["Statement"]):
                condition = None
                if isinstance(statement, dict) and list(statement) == ["Fn::If"]:
                    condition, statement, absent = statement["Fn::If"]
                    self.assertEqual(absent, NO_VALUE, f"{where}: only !If [C, S, !Ref AWS::NoValue] is understood")
                    self.assertIn(condition, self.template["Conditions"])
                    named = {self.condition_of(name) for name, _ in references(statement)
                             if name in self.resources or self.condition_of(name)}
                    self.assertLessEqual(named, {None, condition}, f"{where}/{statement.get('Sid')}")
                    self.assertIn(condition, named, f"{where}/{statement.get('Sid')}: nothing of {condition}'s")
                self.assertIn("Action", statement, f"{where}: {statement!r}")
                statements.append((where, statement, condition))
        self.assertTrue(statements, "no IAM statements found at all")
        return statements

    # -- functions ----------------------------------------------------------------------------------------

    def test_functions_are_arm64_rust_built_by_cargo_lambda(self):
        for name, function in self.functions().items():
            with self.subTest(function=name):
                self.assertEqual(function["Metadata"]["BuildMethod"], "rust-cargolambda")
                self.assertEqual(self.effective(function, "Runtime"), "provided.al2023")
                self.assertEqual(self.effective(function, "Architectures"), ["arm64"])
                self.assertEqual(self.effective(function, "Handler"), "bootstrap")
                self.assertTrue((TEMPLATE.parent / function["Properties"]["CodeUri"] / "Cargo.toml").is_file(),
                                "CodeUri must point at the function's Cargo package")
                self.assertIsInstance(function["Properties"]["MemorySize"], int)
                self.assertIsInstance(function["Properties"]["Timeout"], int)

    def test_each_destination_runs_the_same_binaries_only_in_a_stack_whose_destinations_name_it(self):
        # AppZen's reconcile exists when Destinations names appzen, Exsited's reconcile and notify when it names
        # exsited; notify (AppZen's dead letters, and every destination's notifications) is in every stack.
        for appzen, exsited, suffix, appzen_condition in (
                ("ReconcileFunction", "ReconcileExsitedFunction", "-reconcile-exsited", "HasAppZen"),
                ("NotifyFunction", "NotifyExsitedFunction", "-notify-exsited", None)):
            with self.subTest(function=exsited):
                a, e = self.resources[appzen], self.resources[exsited]
                self.assertEqual(e.get("Condition"), "HasExsited")
                self.assertEqual(a.get("Condition"), appzen_condition)
                self.assertEqual(e["Metadata"]["BuildProperties"], a["Metadata"]["BuildProperties"])
                self.assertEqual(e["Metadata"]["BuildMethod"], a["Metadata"]["BuildMethod"])
                for prop in ("CodeUri", "MemorySize", "Timeout"):
                    self.assertEqual(e["Properties"][prop], a["Properties"][prop], prop)
                self.assertEqual(e["Properties"]["FunctionName"], {"Fn::Sub": "${AWS::StackName}" + suffix})
                binary = a["Metadata"]["BuildProperties"]["Binary"]
                self.assertEqual(self.function_named(binary, "HasExsited")[0], exsited)
                self.assertEqual(self.function_named(binary, appzen_condition)[0], appzen)
        # Every stack has a reconcile: Destinations names at least one destination.
        for parameters, conditions in self.valid_stacks():
            with self.subTest(stack=parameters):
                self.assertTrue(any(self.exists(name, conditions) for name in ("ReconcileFunction",
                                                                               "ReconcileExsitedFunction")))

    def test_appzen_s_own_resources_exist_only_in_a_stack_whose_destinations_name_appzen(self):
        # What only AppZen needs is under HasAppZen, as its Exsited twin is under HasExsited, and nothing else is:
        # AppZen's webhook queues, notify and the shared resources are in every stack.
        self.assertEqual({n for n, r in self.resources.items() if r.get("Condition") == "HasAppZen"}, set(APPZEN_ONLY))
        for appzen, exsited in APPZEN_ONLY.items():
            with self.subTest(resource=appzen):
                self.assertEqual(self.resources[appzen].get("Condition"), "HasAppZen")
                if exsited is not None:
                    self.assertEqual(self.resources[exsited].get("Condition"), "HasExsited")
                    self.assertEqual(self.resources[exsited]["Type"], self.resources[appzen]["Type"])
                    for key in ("DeletionPolicy", "UpdateReplacePolicy"):
                        self.assertEqual(self.resources[exsited].get(key), self.resources[appzen].get(key), key)
        # SAM's mapping of AppZen's reconcile goes with it.
        self.assertEqual(self.condition_of("ReconcileFunctionWebhooks"), "HasAppZen")

    def test_every_reference_to_a_conditional_resource_is_under_its_condition(self):
        # A resource, output, policy statement or dashboard entry that names one of Exsited's resources in a stack
        # without Exsited, or one of AppZen's (its secret, reconcile, role, log group, mapping, alarms) in a stack
        # without AppZen, fails the deploy: each must be under the same condition, or in that condition's branch
        # of an !If (a list entry, a statement, a dashboard variable).
        places = [(f"Resources/{n}", r.get("Condition"), r) for n, r in self.resources.items()]
        places += [(f"Outputs/{n}", o.get("Condition"), o) for n, o in self.template["Outputs"].items()]
        checked = {}
        for where, condition, node in places:
            body = {k: v for k, v in node.items() if k != "Condition"}
            depends = [(name, frozenset()) for name in as_list(node.get("DependsOn", []))]
            for name, active in [*references(body), *depends]:
                needed = self.condition_of(name)
                if needed is None:
                    continue
                checked.setdefault(needed, set()).add(where)
                with self.subTest(place=where, reference=name):
                    self.assertTrue(needed == condition or needed in active,
                                    f"{name} exists only under {needed}")
        # Each destination's references were looked at, among them those of the shared resources (the operator
        # policy, the dashboard, ingest's and notify's roles) that name it conditionally.
        self.assertLessEqual({"HasAppZen", "HasExsited"}, set(checked))
        for condition in ("HasAppZen", "HasExsited"):
            self.assertLessEqual({"Resources/OperatorPolicy", "Resources/Dashboard"}, checked[condition], condition)
        self.assertIn("Resources/IngestRole", checked["HasExsited"])

    def test_every_resource_naming_one_of_appzen_s_is_in_a_stack_with_appzen(self):
        # Rendered per stack: in a stack whose Destinations is exsited, no resource or output of that stack names
        # anything of AppZen's own, however it is reached (a plain reference, an !If of another condition).
        for parameters, conditions in self.valid_stacks():
            if conditions["HasAppZen"]:
                continue
            with self.subTest(stack=parameters):
                present = [(f"Resources/{n}", r) for n, r in self.resources.items() if self.exists(n, conditions)]
                present += [(f"Outputs/{n}", o) for n, o in self.template["Outputs"].items()
                            if o.get("Condition") is None or conditions[o["Condition"]]]
                self.assertTrue(present)
                for where, node in present:
                    body = {k: v for k, v in node.items() if k != "Condition"}
                    named = [name for name, active in references(body) if all(conditions[c] for c in active)]
                    named += as_list(node.get("DependsOn", []))
                    for name in named:
                        self.assertNotEqual(self.condition_of(name), "HasAppZen",
                                            f"{where} names {name} in a stack without AppZen")

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
                self.assertEqual(log_groups[group].get("Condition"), function.get("Condition"))
                # Lambda's own name for a function's group, so nothing else ever writes there.
                self.assertEqual(sub_text(log_groups[group]["Properties"]["LogGroupName"]),
                                 "/aws/lambda/" + sub_text(function["Properties"]["FunctionName"]))
                used.append(group)
        self.assertEqual(len(set(used)), len(self.functions()), "each function needs its own log group")

    def test_each_role_writes_the_logs_of_exactly_the_functions_that_use_it(self):
        written = {}
        for where, statement in self.policy_statements():
            if "logs:PutLogEvents" in as_list(statement["Action"]):
                for resource in self.statement_resources(statement):
                    group = re.fullmatch(r"arn:\$\{AWS::Partition\}:logs:\$\{AWS::Region\}:\$\{AWS::AccountId\}"
                                         r":log-group:\$\{(\w+)\}:log-stream:\*", sub_text(resource) or "")
                    self.assertIsNotNone(group, f"{where}: {resource!r}")
                    written.setdefault(where.split("/")[0], set()).add(group.group(1))
        expected = {}
        for name, function in self.functions().items():
            group = target(self.effective(function, "LoggingConfig")["LogGroup"])
            expected.setdefault(self.role_of(name), set()).add(group)
        self.assertEqual(written, expected)

    def test_environment_follows_the_contract(self):
        self.assertEqual(set(FUNCTION_CONTRACTS), set(self.functions()), "every function has its contract")
        for name, contract_name in FUNCTION_CONTRACTS.items():
            contract = ENV_CONTRACT[contract_name]
            function = self.resources[name]
            environment = function["Properties"].get("Environment", {}).get("Variables", {})
            variables = set(environment)
            with self.subTest(function=name, contract=contract_name):
                self.assertLessEqual(variables, contract["allowed"], "unknown variable names")
                self.assertLessEqual(contract["required"], variables, "required variables missing")
                for variable, value in contract.get("values", {}).items():
                    if variable in environment:
                        self.assertEqual(environment[variable], value, variable)
                prefix = contract.get("forbidden_prefix")
                if prefix:
                    self.assertEqual({v for v in variables if v.startswith(prefix)}, set(),
                                     f"{prefix}* variables are another destination's")

    def test_functions_pass_secrets_by_arn_never_as_values(self):
        secrets = self.of_type("AWS::SecretsManager::Secret")
        self.assertEqual(set(secrets), {"WebhookSecret", "AppZenSecret", "ExsitedSecret"})
        expectations = {("IngestFunction", "WEBHOOK_SECRET_ARN"): "WebhookSecret",
                        ("ReconcileFunction", "APPZEN_SECRET_ARN"): "AppZenSecret",
                        ("ReconcileExsitedFunction", "EXSITED_SECRET_ARN"): "ExsitedSecret"}
        passed = {}
        for name, function in self.functions().items():
            variables = function["Properties"].get("Environment", {}).get("Variables", {})
            for secret_variable in ("WEBHOOK_PASSWORD", "WEBHOOK_TOKEN", "APPZEN_API_KEY", "APPZEN_CUSTOMER_KEY",
                                    "EXSITED_CLIENT_ID", "EXSITED_CLIENT_SECRET"):
                self.assertNotIn(secret_variable, variables, f"{name}: credentials belong in Secrets Manager")
            for variable, value in variables.items():
                if variable.endswith("_SECRET_ARN"):
                    passed[(name, variable)] = target(value)
        self.assertEqual(passed, expectations, "each secret goes to its one function, by ARN")
        # A destination's secret is in the stack exactly when its reconcile is.
        for (function, _), secret in expectations.items():
            self.assertEqual(secrets[secret].get("Condition"), self.resources[function].get("Condition"), secret)
        self.assertEqual(secrets["AppZenSecret"].get("Condition"), "HasAppZen")
        self.assertEqual(secrets["ExsitedSecret"].get("Condition"), "HasExsited")
        # The placeholders hold the keys the functions read, empty until a person puts the real ones.
        self.assertEqual(json.loads(secrets["AppZenSecret"]["Properties"]["SecretString"]),
                         {"api_key": "", "customer_id": "", "customer_key": ""})
        self.assertEqual(json.loads(secrets["ExsitedSecret"]["Properties"]["SecretString"]),
                         {"client_id": "", "client_secret": ""})
        for key in ("DeletionPolicy", "UpdateReplacePolicy", "Metadata"):
            self.assertEqual(secrets["ExsitedSecret"].get(key), secrets["AppZenSecret"].get(key), key)

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
                                       "NotificationQueue", "NotificationDeadLetterQueue", "ExsitedWebhookQueue",
                                       "ExsitedWebhookDeadLetterQueue", "ExsitedWebhookParkedQueue"})
        for name, queue in queues.items():
            with self.subTest(queue=name):
                properties = queue["Properties"]
                self.assertIs(properties.get("FifoQueue"), True)
                self.assertTrue(str(sub_text(properties["QueueName"])).endswith(".fifo"))
                self.assertTrue(properties.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in properties,
                                "server-side encryption missing")

    def test_exsited_queues_are_appzen_s_under_their_own_names_and_the_exsited_condition(self):
        # The same FIFO order, encryption, deduplication, retention and redrive as AppZen's three queues (so the
        # retry horizon, the parked webhooks' 14 days and the body expiry hold for Exsited too), but its own queues:
        # nothing of Exsited's dead-letters into AppZen's chain or back.
        appzen, exsited = WEBHOOK_CHAINS["appzen"], WEBHOOK_CHAINS["exsited"]
        renamed = {appzen[role]: exsited[role] for role in ("queue", "dlq", "parked")}

        def as_exsited(node):
            text = json.dumps(node)
            for old, new in renamed.items():
                text = text.replace(f'"{old}"', f'"{new}"')
            return json.loads(text.replace("}-%s" % appzen["name"], "}-%s" % exsited["name"]))

        for role in ("queue", "dlq", "parked"):
            a, e = self.resources[appzen[role]], self.resources[exsited[role]]
            with self.subTest(queue=exsited[role]):
                self.assertEqual(e.get("Condition"), "HasExsited")
                for key in ("DeletionPolicy", "UpdateReplacePolicy", "Metadata"):
                    self.assertEqual(e.get(key), a.get(key), key)
                expected = as_exsited({k: v for k, v in a["Properties"].items() if k != "VisibilityTimeout"})
                self.assertEqual({k: v for k, v in e["Properties"].items() if k != "VisibilityTimeout"}, expected)
                # Its own consumer's timeout decides it (test_every_consumed_queue_outlasts_its_consumer).
                self.assertEqual("VisibilityTimeout" in e["Properties"], "VisibilityTimeout" in a["Properties"])
        self.assertTrue(sub_text(self.resources[exsited["queue"]]["Properties"]["QueueName"]).endswith(
            "-webhooks-exsited.fifo"))

    def test_main_queues_dead_letter_after_max_receive_count(self):
        for queue, dead_letter_queue in (("WebhookQueue", "WebhookDeadLetterQueue"),
                                         ("ExsitedWebhookQueue", "ExsitedWebhookDeadLetterQueue"),
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
        for destination, chain in WEBHOOK_CHAINS.items():
            with self.subTest(destination=destination):
                function = self.resources[chain["reconcile"]]
                variables = function["Properties"]["Environment"]["Variables"]
                self.assertEqual(variables["WEBHOOK_QUEUE_URL"], {"Ref": chain["queue"]})
                self.assertEqual(variables["RETRY_SCHEDULE"], {"Ref": "RetrySchedule"})
                consumed = [target(e["Queue"]) for f, _, e in self.sqs_event_sources() if f == chain["reconcile"]]
                self.assertEqual(consumed, [chain["queue"]], "the queue it reads is the one it spaces retries on")
                # Longer than the horizon, so a webhook is parked, never expired, when it cannot be delivered.
                retention = self.resources[chain["queue"]]["Properties"]["MessageRetentionPeriod"]
                self.assertGreater(retention, retry_horizon_seconds(self.template))
        schedule = self.template["Parameters"]["RetrySchedule"]
        self.assertRegex(schedule["Default"], schedule["AllowedPattern"])

    def test_dead_lettered_webhooks_end_in_the_parked_queue_which_notify_fills_and_nobody_consumes(self):
        for destination, chain in WEBHOOK_CHAINS.items():
            with self.subTest(destination=destination):
                self.check_parked_chain(chain)

    def check_parked_chain(self, chain):
        dlq = self.resources[chain["dlq"]]["Properties"]
        self.assertEqual(dlq["RedrivePolicy"]["deadLetterTargetArn"], {"Fn::GetAtt": [chain["parked"], "Arn"]},
                         "the webhook DLQ must dead-letter into its own parked queue, never into the notifications "
                         "DLQ or another destination's")
        # A dead letter arrives with MaxReceiveCount receives already counted: the DLQ's own limit must be higher,
        # or SQS moves every dead letter on at notify's first receive, unmailed (ten times: its digits and a "0").
        self.assertEqual(dlq["RedrivePolicy"]["maxReceiveCount"], {"Fn::Sub": "${MaxReceiveCount}0"})

        parked = self.resources[chain["parked"]]["Properties"]
        self.assertTrue(sub_text(parked["QueueName"]).endswith("-%s-parked.fifo" % chain["name"]))
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

        # The notify that reads this DLQ parks into this parked queue: a redrive sends them back to this
        # destination only.
        notify = self.resources[chain["notify"]]
        self.assertEqual(target(notify["Properties"]["Environment"]["Variables"]["PARKED_QUEUE_URL"]), chain["parked"])
        readers = {f for f, _, event in self.sqs_event_sources() if target(event["Queue"]) == chain["dlq"]}
        self.assertEqual(readers, {chain["notify"]})
        consumed = {target(event["Queue"]) for _, _, event in self.sqs_event_sources()}
        self.assertNotIn(chain["parked"], consumed, "parked webhooks wait for a person's redrive")

    def test_outputs_name_both_ends_of_the_parked_webhook_redrive(self):
        outputs = self.template["Outputs"]
        for destination, chain in WEBHOOK_CHAINS.items():
            prefix = "" if destination == "appzen" else "Exsited"
            with self.subTest(destination=destination):
                for output, queue in ((f"{prefix}WebhookParkedQueueArn", chain["parked"]),
                                      (f"{prefix}WebhookQueueArn", chain["queue"])):
                    self.assertEqual(outputs[output]["Value"], {"Fn::GetAtt": [queue, "Arn"]})
                    self.assertEqual(outputs[output].get("Condition"), self.condition_of(queue))

    def test_webhook_visibility_timeout_is_at_least_six_times_reconcile_timeout(self):
        for destination, chain in WEBHOOK_CHAINS.items():
            with self.subTest(destination=destination):
                reconcile = self.resources[chain["reconcile"]]
                visibility = self.resources[chain["queue"]]["Properties"]["VisibilityTimeout"]
                self.assertGreaterEqual(visibility, 6 * reconcile["Properties"]["Timeout"])

    def test_every_consumed_queue_outlasts_its_consumer(self):
        for function_name, event_name, event in self.sqs_event_sources():
            queue = self.resources[target(event["Queue"])]["Properties"]
            timeout = self.effective(self.resources[function_name], "Timeout")
            with self.subTest(source=f"{function_name}.{event_name}"):
                self.assertGreaterEqual(queue.get("VisibilityTimeout", 30), 6 * timeout)

    def test_sqs_event_sources_report_batch_item_failures(self):
        sources = self.sqs_event_sources()
        consumed = {(f, target(e["Queue"])) for f, _, e in sources}
        self.assertEqual(consumed, {("ReconcileFunction", "WebhookQueue"), ("NotifyFunction", "NotificationQueue"),
                                    ("NotifyFunction", "WebhookDeadLetterQueue"),
                                    ("ReconcileExsitedFunction", "ExsitedWebhookQueue"),
                                    ("NotifyExsitedFunction", "ExsitedWebhookDeadLetterQueue")})
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
                # A conditional entry (!If [C, X, !Ref AWS::NoValue]) is held to the same rules as X.
                for resource in self.statement_resources(statement):
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
                for resource in self.statement_resources(statement):
                    ref = target(resource) or sub_text(resource)
                    grants.setdefault(role, set()).add((action, ref))

        def granted(role, action):
            return {r for a, r in grants[role] if a == action}

        # ingest puts each webhook on every destination's queue.
        self.assertEqual(granted("IngestRole", "sqs:SendMessage"), {"WebhookQueue", "ExsitedWebhookQueue"})
        self.assertEqual(granted("IngestRole", "secretsmanager:GetSecretValue"), {"WebhookSecret"})
        # Each reconcile consumes its own destination's queue and reads its own destination's secret only.
        self.assertEqual(granted("ReconcileRole", "sqs:ReceiveMessage"), {"WebhookQueue"})
        self.assertEqual(granted("ReconcileRole", "sqs:SendMessage"), {"NotificationQueue"})
        self.assertEqual(granted("ReconcileRole", "secretsmanager:GetSecretValue"), {"AppZenSecret"})
        self.assertEqual(granted("ReconcileExsitedRole", "sqs:ReceiveMessage"), {"ExsitedWebhookQueue"})
        self.assertEqual(granted("ReconcileExsitedRole", "sqs:SendMessage"), {"NotificationQueue"})
        self.assertEqual(granted("ReconcileExsitedRole", "secretsmanager:GetSecretValue"), {"ExsitedSecret"})
        # notify and notify-exsited (one role) read the notifications and each destination's DLQ, and park into
        # each destination's parked queue (which of them a function uses is its event and PARKED_QUEUE_URL).
        self.assertEqual(granted("NotifyRole", "sqs:ReceiveMessage"),
                         {"NotificationQueue", "WebhookDeadLetterQueue", "ExsitedWebhookDeadLetterQueue"})
        self.assertEqual(granted("NotifyRole", "sqs:SendMessage"), {"WebhookParkedQueue", "ExsitedWebhookParkedQueue"})
        self.assertEqual({self.role_of(f) for f in ("NotifyFunction", "NotifyExsitedFunction")}, {"NotifyRole"})
        self.assertEqual(self.role_of("ReconcileExsitedFunction"), "ReconcileExsitedRole")
        self.assertEqual(self.role_of("ReconcileFunction"), "ReconcileRole")
        # A role is in the stack exactly when a function using it is: under its functions' condition when they
        # share one (each reconcile's), else in every stack (notify's, which notify-exsited also uses).
        for role in self.of_type("AWS::IAM::Role"):
            users = {self.resources[f].get("Condition") for f in self.functions() if self.role_of(f) == role}
            with self.subTest(role=role):
                self.assertTrue(users, "a role no function uses")
                self.assertEqual(self.resources[role].get("Condition"), users.pop() if len(users) == 1 else None)
        self.assertEqual(self.resources["ReconcileRole"].get("Condition"), "HasAppZen")
        self.assertEqual(self.resources["ReconcileExsitedRole"].get("Condition"), "HasExsited")
        # reconcile spaces the retries of the webhooks it hands back, on their own queue only.
        self.assertEqual(granted("ReconcileRole", "sqs:ChangeMessageVisibility"), {"WebhookQueue"})
        self.assertEqual(granted("ReconcileExsitedRole", "sqs:ChangeMessageVisibility"), {"ExsitedWebhookQueue"})
        # What a consumer needs of its queue besides ReceiveMessage, on exactly the queues it receives from.
        for role in ("ReconcileRole", "ReconcileExsitedRole", "NotifyRole"):
            for action in ("sqs:DeleteMessage", "sqs:GetQueueAttributes"):
                self.assertEqual(granted(role, action), granted(role, "sqs:ReceiveMessage"), f"{role} {action}")
        reconciles = ("ReconcileRole", "ReconcileExsitedRole")
        for role in ("IngestRole", "NotifyRole", *reconciles):
            self.assertFalse({a for a, _ in grants[role] if a.startswith("sqs:") and a not in {
                "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                *({"sqs:ChangeMessageVisibility"} if role in reconciles else set())}}, role)
        self.assertFalse(granted("IngestRole", "sqs:ReceiveMessage"))
        self.assertFalse(granted("NotifyRole", "secretsmanager:GetSecretValue"))
        self.assertEqual(set(self.of_type("AWS::IAM::Role")),
                         {"IngestRole", "ReconcileRole", "ReconcileExsitedRole", "NotifyRole"})
        for action in ("ses:SendEmail", "ses:SendRawEmail"):
            identities = granted("NotifyRole", action)
            self.assertTrue(identities, action)
            for identity in identities:
                self.assertRegex(identity, r"^arn:\$\{AWS::Partition\}:ses:\$\{AWS::Region\}:\$\{AWS::AccountId\}"
                                           r":identity/\$\{\w+\}$")
        for role in ("IngestRole", *reconciles):
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
        # One table for both destinations: reconcile-exsited keys its items exsited#<PO id>.
        for name in ("ReconcileFunction", "ReconcileExsitedFunction"):
            self.assertEqual(self.resources[name]["Properties"]["Environment"]["Variables"].get("LEDGER_TABLE_NAME"),
                             {"Ref": "LedgerTable"}, name)

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
        for name in ("ReconcileFunction", "ReconcileExsitedFunction"):
            variables = self.resources[name]["Properties"]["Environment"]["Variables"]
            self.assertEqual(variables["HISTORY_TABLE_NAME"], {"Ref": "HistoryTable"}, name)
            # A PO's attempts go when its kept bodies go.
            self.assertEqual(variables["HISTORY_RETENTION_DAYS"], {"Ref": "WebhookRetentionDays"}, name)

    def test_only_reconcile_may_get_and_put_ledger_items_and_only_reconcile_and_notify_put_history_items(self):
        dynamodb = [(where, statement) for where, statement in self.policy_statements()
                    if any(str(a).lower().startswith("dynamodb:") for a in as_list(statement["Action"]))]
        found = sorted((where.split("/")[0], target(self.statement_resources(statement)[0]), tuple(sorted(
            as_list(statement["Action"])))) for where, statement in dynamodb)
        self.assertEqual(found, [("NotifyRole", "HistoryTable", ("dynamodb:PutItem",)),
                                 ("OperatorPolicy", "HistoryTable", ("dynamodb:PutItem", "dynamodb:Query")),
                                 # po reads one PO and verify scans them; PutItem is for po-sync-admin cancel and
                                 # reactivate, which record an Exsited PO's cancellation in its ledger item (the
                                 # template documents it on the statement; listed here for that reason only).
                                 ("OperatorPolicy", "LedgerTable",
                                  ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Scan")),
                                 ("ReconcileExsitedRole", "HistoryTable", ("dynamodb:PutItem",)),
                                 ("ReconcileExsitedRole", "LedgerTable", ("dynamodb:GetItem", "dynamodb:PutItem")),
                                 ("ReconcileRole", "HistoryTable", ("dynamodb:PutItem",)),
                                 ("ReconcileRole", "LedgerTable", ("dynamodb:GetItem", "dynamodb:PutItem"))],
                         "each reconcile's ledger and history, notify's history, and the operator's reads (its "
                         "replays' and redrives' history items, cancel's and reactivate's ledger items); no "
                         "function but the two reconciles writes the ledger")
        for where, statement in dynamodb:
            with self.subTest(statement=f"{where}/{statement.get('Sid', '?')}"):
                self.assertEqual(statement["Effect"], "Allow")
                table = target(as_list(statement["Resource"])[0])
                self.assertEqual(as_list(statement["Resource"]), [{"Fn::GetAtt": [table, "Arn"]}],
                                 "the table's ARN only, in every stack: no index, no wildcard, no other table")
        # No other statement, role or policy so much as mentions DynamoDB or the tables.
        for where, other in self.policy_statements():
            if all(other is not statement for _, statement in dynamodb):
                with self.subTest(statement=f"{where}/{other.get('Sid', '?')}"):
                    self.assertNotIn("dynamodb", json.dumps(other).lower())
                    self.assertNotIn("ledgertable", json.dumps(other).lower())
                    self.assertNotIn("historytable", json.dumps(other).lower())
        for name, resource in self.resources.items():
            if resource["Type"].startswith("AWS::IAM::") and name not in (
                    "ReconcileRole", "ReconcileExsitedRole", "NotifyRole", "OperatorPolicy"):
                with self.subTest(resource=name):
                    self.assertNotIn("dynamodb", json.dumps(resource).lower())

    def test_the_operator_policy_grants_every_call_po_sync_admin_makes_on_this_stacks_resources(self):
        granted = {}
        for where, statement in self.policy_statements():
            if where == "OperatorPolicy":
                self.assertEqual(statement["Effect"], "Allow")
                for action in as_list(statement["Action"]):
                    granted.setdefault(str(action), []).extend(as_list(statement["Resource"]))
        admin = Path(__file__).resolve().parents[2] / "shared" / "po-sync-admin" / "src"
        named = set()
        for source in admin.rglob("*.rs"):
            named |= set(re.findall(r'"((?:sqs|dynamodb|s3|lambda|cloudformation|cloudwatch|secretsmanager):[A-Z]\w+)"',
                                    source.read_text()))
        self.assertIn("lambda:GetFunctionConfiguration", named, "the scan of shared/po-sync-admin/src found its calls")
        # Calls admin makes through po-sync-aws (its ports name them there), by IAM action name.
        through_ports = {"dynamodb:GetItem", "dynamodb:Scan", "dynamodb:Query", "dynamodb:PutItem", "s3:ListBucket",
                         "s3:GetObject", "s3:PutObject", "sqs:SendMessage", "secretsmanager:GetSecretValue"}
        # SQS's batch calls are authorised by the single action's name.
        needed = {a.replace("ChangeMessageVisibilityBatch", "ChangeMessageVisibility") for a in named | through_ports}
        self.assertEqual(needed - set(granted), set(), "po-sync-admin calls these and OperatorPolicy lacks them")
        self.assertEqual(set(granted) - needed, set(), "OperatorPolicy grants what po-sync-admin never calls")
        self.assertEqual(target(self.template["Outputs"]["OperatorPolicyArn"]["Value"]), "OperatorPolicy")

    def test_the_operator_policy_grants_on_exsited_s_resources_only_what_it_grants_on_appzen_s(self):
        # In a stack with Exsited, the operator does to Exsited's queues, secret and reconcile what it does to
        # AppZen's (status, replay, redrive; verify and po read a destination with its reconcile's settings), and
        # nothing more; without Exsited, nothing of Exsited's is granted. AppZen's own secret and reconcile are
        # granted only in a stack with AppZen (HasAppZen), its queues (in every stack) in every stack.
        mirror = {"WebhookQueue": "ExsitedWebhookQueue", "WebhookDeadLetterQueue": "ExsitedWebhookDeadLetterQueue",
                  "WebhookParkedQueue": "ExsitedWebhookParkedQueue", "AppZenSecret": "ExsitedSecret",
                  "ReconcileFunction": "ReconcileExsitedFunction",
                  "ReconcileFunctionWebhooks": "ReconcileExsitedFunctionWebhooks"}

        def named(entry):
            """The resource an entry grants on: its `!Ref`/`!GetAtt`, or the one resource its ARN `!Sub` names."""
            found = {name for name, _ in references(entry) if name in self.resources or self.condition_of(name)}
            return target(entry) or (found.pop() if len(found) == 1 else None)

        mirrored, appzen_granted = set(), set()
        for where, statement, statement_condition in self.conditional_statements():
            if where != "OperatorPolicy":
                continue
            entries = self.conditional_entries(statement["Resource"])
            with self.subTest(statement=statement.get("Sid")):
                appzen = {named(e) for e, c in entries if c in (None, "HasAppZen")} - {None}
                exsited = {named(e) for e, c in entries if c == "HasExsited"}
                self.assertEqual({c for _, c in entries} - {None, "HasAppZen", "HasExsited"}, set())
                self.assertEqual(exsited, {mirror[r] for r in appzen if r in mirror})
                for entry, condition in entries:
                    # conditional_entries holds an !If entry's resources to its condition; a plain entry's too.
                    if target(entry):
                        self.assertEqual(condition, self.condition_of(target(entry)), entry)
                mirrored |= exsited
                appzen_granted |= {r for r in appzen if r in mirror}
        self.assertEqual(mirrored, set(mirror.values()))
        self.assertEqual(appzen_granted, set(mirror))
        # pause and resume switch each destination's reconcile mapping (Exsited's given by --event-source-mapping),
        # each in a stack that has it.
        pauses = [s for w, s, c in self.conditional_statements() if w == "OperatorPolicy"
                  and "lambda:UpdateEventSourceMapping" in as_list(s["Action"])]
        self.assertEqual(len(pauses), 1)
        mappings = [(sub_text(r), c) for r, c in self.conditional_entries(pauses[0]["Resource"])]
        arn = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:event-source-mapping:${%s}"
        self.assertEqual(mappings, [(arn % "ReconcileFunctionWebhooks", "HasAppZen"),
                                    (arn % "ReconcileExsitedFunctionWebhooks", "HasExsited")])
        for name in ("ReconcileFunctionWebhooks", "ReconcileExsitedFunctionWebhooks"):
            self.assertEqual(dict(mappings)[arn % name], self.condition_of(name))

    def test_every_policy_statement_names_a_resource_in_every_stack(self):
        # IAM refuses a statement whose Resource list is empty: with one destination, a list of conditional
        # entries (each destination's reconcile, its secret) must still keep one, or the statement must go too.
        for parameters, conditions in self.valid_stacks():
            for where, statement, statement_condition in self.conditional_statements():
                if statement_condition is not None and not conditions[statement_condition]:
                    continue
                with self.subTest(stack=parameters, statement=f"{where}/{statement.get('Sid', '?')}"):
                    present = [e for e, c in self.conditional_entries(statement["Resource"])
                               if c is None or conditions[c]]
                    self.assertTrue(present, "no resource left in this stack")

    def test_notify_records_parkings_in_the_history_with_its_retention(self):
        for name in ("NotifyFunction", "NotifyExsitedFunction"):
            variables = self.resources[name]["Properties"]["Environment"]["Variables"]
            self.assertEqual(variables["HISTORY_TABLE_NAME"], {"Ref": "HistoryTable"}, name)
            self.assertEqual(variables["HISTORY_RETENTION_DAYS"], {"Ref": "WebhookRetentionDays"}, name)

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
                resources = [sub_text(r) for r in self.statement_resources(statement)]
                s3.setdefault(where.split("/")[0], []).append((sorted(actions), resources))
        self.assertEqual({role: sorted(grants) for role, grants in s3.items()}, {
            "IngestRole": [(["s3:PutObject"], ["${ArchiveBucket.Arn}/webhooks/*", "${ArchiveBucket.Arn}/bodies/*"])],
            "ReconcileRole": [(["s3:GetObject"], ["${ArchiveBucket.Arn}/bodies/*"]),
                              (["s3:GetObject", "s3:PutObject"], ["${ArchiveBucket.Arn}/invoices/*"])],
            "ReconcileExsitedRole": [(["s3:GetObject"], ["${ArchiveBucket.Arn}/bodies/*"]),
                                     (["s3:GetObject", "s3:PutObject"], ["${ArchiveBucket.Arn}/invoices/*"])],
            "NotifyRole": [(["s3:GetObject"], ["${ArchiveBucket.Arn}/invoices/*"])],
            # po-sync-admin: lists and reads the kept webhooks, stores a replay too large for SQS.
            "OperatorPolicy": [(["s3:GetObject"], ["${ArchiveBucket.Arn}/webhooks/*"]),
                               (["s3:ListBucket"], [None]),
                               (["s3:PutObject"], ["${ArchiveBucket.Arn}/bodies/*"])],
        })
        for name, function in self.functions().items():
            self.assertEqual(function["Properties"]["Environment"]["Variables"]["ARCHIVE_BUCKET"],
                             {"Ref": "ArchiveBucket"}, name)

    def parked_days(self):
        """The longest any parked queue keeps a webhook, in days (every destination's parked queue)."""
        return max(int(self.resources[chain["parked"]]["Properties"]["MessageRetentionPeriod"]) // 86400
                   for chain in WEBHOOK_CHAINS.values())

    def test_claim_checked_bodies_expire_after_the_parked_queue_lets_go_of_their_claim_checks(self):
        rules = self.resources["ArchiveBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        bodies = [r for r in rules if r.get("Prefix") == "bodies/"
                  or r.get("Filter", {}).get("Prefix") == "bodies/"]
        self.assertEqual(len(bodies), 1, "one lifecycle rule for bodies/")
        rule = bodies[0]
        self.assertEqual(rule["Status"], "Enabled")
        self.assertEqual(rule["ExpirationInDays"], 30)
        # A parked claim check must still find its body when it is redriven: the body outlives the parked queues.
        self.assertGreater(rule["ExpirationInDays"], self.parked_days())
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
        self.assertGreater(parameter["MinValue"], self.parked_days(),
                           "a parked webhook can be replayed from its kept body")
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
        for name in ("ReconcileFunction", "ReconcileExsitedFunction"):
            self.assertEqual(self.resources[name]["Properties"]["Environment"]["Variables"]["INVOICE_HOSTS"],
                             {"Ref": "InvoiceHosts"}, name)

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
            self.assertNotIn("Condition", outputs[key], "in every stack")
        for key, resource in OPERATOR_EXSITED_OUTPUTS.items():
            with self.subTest(output=key):
                self.assertIn(key, outputs)
                self.assertEqual(outputs[key]["Value"], {"Ref": resource})
                self.assertEqual(outputs[key].get("Condition"), "HasExsited")
                self.assertEqual(self.condition_of(resource), "HasExsited")
                if key.endswith("QueueUrl"):
                    self.assertEqual(self.resources[resource]["Type"], "AWS::SQS::Queue", key)
        for key, resource in OPERATOR_APPZEN_OUTPUTS.items():
            with self.subTest(output=key):
                self.assertIn(key, outputs)
                self.assertEqual(outputs[key]["Value"], {"Ref": resource})
                self.assertEqual(outputs[key].get("Condition"), "HasAppZen")
                self.assertEqual(self.condition_of(resource), "HasAppZen")
        # Each destination's secret, reconcile and mapping, under the same names but for the destination's.
        renamed = {resource: OPERATOR_EXSITED_OUTPUTS[DESTINATION_OUTPUT_TWINS[key]]
                   for key, resource in OPERATOR_APPZEN_OUTPUTS.items()}
        for appzen, exsited in DESTINATION_OUTPUT_TWINS.items():
            with self.subTest(output=exsited):
                self.assertEqual(outputs[exsited]["Value"], {"Ref": renamed[target(outputs[appzen]["Value"])]})
        # The mappings' outputs are SAM's <function><event> for each reconcile's only SQS event.
        for function in ("ReconcileFunction", "ReconcileExsitedFunction"):
            self.assertEqual(list(self.resources[function]["Properties"]["Events"]), ["Webhooks"], function)

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

    def test_destinations_default_to_appzen_and_exsited_needs_its_tenant(self):
        parameters = self.template["Parameters"]
        destinations = parameters["Destinations"]
        # An existing stack keeps AppZen only, and nothing of Exsited's, until someone chooses otherwise.
        self.assertEqual(destinations["Default"], "appzen")
        self.assertIn(destinations["Default"], destinations["AllowedValues"])
        # Either destination alone, or both; each set once (the first named mails a mismatch: ingest's order).
        offered = [frozenset(value.split(",")) for value in destinations["AllowedValues"]]
        self.assertEqual(sorted(offered, key=sorted),
                         sorted([frozenset({"appzen"}), frozenset({"exsited"}), frozenset({"appzen", "exsited"})],
                                key=sorted))
        for value in destinations["AllowedValues"]:
            names = value.split(",")
            self.assertEqual(len(set(names)), len(names), value)
            # Each destination's side is in the stack exactly when the value names it.
            conditions = stack_conditions(self.template, {"Destinations": value})
            self.assertEqual(conditions["HasAppZen"], "appzen" in names, value)
            self.assertEqual(conditions["HasExsited"], "exsited" in names, value)
        # With exsited named, the tenant is required (the default is empty, so it is not in a stack without it).
        rule = self.template["Rules"]["ExsitedNeedsItsTenant"]
        self.assertEqual(rule["RuleCondition"], self.template["Conditions"]["HasExsited"])
        for value in destinations["AllowedValues"]:
            self.assertEqual(evaluate(self.template, rule["RuleCondition"], {"Destinations": value}),
                             "exsited" in value.split(","), value)
        self.assertEqual([a["Assert"] for a in rule["Assertions"]],
                         [{"Fn::Not": [{"Fn::Equals": [{"Ref": "ExsitedBaseUrl"}, ""]}]}])
        base_url = parameters["ExsitedBaseUrl"]
        self.assertEqual(base_url["Default"], "")
        pattern = re.compile(base_url["AllowedPattern"])
        for good in ("", "https://acme.exsited.com", "https://acme.exsited.com/"):
            self.assertTrue(pattern.fullmatch(good), good)
        for bad in ("http://acme.exsited.com", "acme.exsited.com", "https://", "https://acme exsited.com"):
            self.assertFalse(pattern.fullmatch(bad), bad)
        # Empty maps: the Komet code is the Exsited id, as reconcile does without the variable.
        for name in ("ExsitedAccountMap", "ExsitedItemMap"):
            pattern = re.compile(parameters[name]["AllowedPattern"])
            self.assertEqual(parameters[name]["Default"], "", name)
            for good in ("", "V1=100", "V1=100,V2=200"):
                self.assertTrue(pattern.fullmatch(good), f"{name}: {good}")
            for bad in ("V1", "V1=", "=100", "V1=100,", "V1=100, V2=200", "V1=1=2"):
                self.assertFalse(pattern.fullmatch(bad), f"{name}: {bad}")
        charges = parameters["ExsitedChargesItem"]
        code_default = re.search(r'DEFAULT_EXSITED_CHARGES_ITEM: &str = "([^"]+)";', RECONCILE_CONFIG_RS.read_text())
        self.assertEqual(charges["Default"], code_default.group(1), "the stack's default is the code's")
        self.assertTrue(re.fullmatch(charges["AllowedPattern"], charges["Default"]))

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
        for queue in ("WebhookDeadLetterQueue", "ExsitedWebhookDeadLetterQueue", "NotificationDeadLetterQueue"):
            self.assertIn(("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue), alarmed)
        for chain in WEBHOOK_CHAINS.values():
            self.assertIn(("AWS/SQS", "ApproximateAgeOfOldestMessage", chain["queue"]), alarmed)
            self.assertIn(("AWS/SQS", "ApproximateAgeOfOldestMessage", chain["parked"]), alarmed)
        for name in self.functions():
            for metric in ("Errors", "Throttles"):
                self.assertIn(("AWS/Lambda", metric, name), alarmed)

    def test_exsited_s_alarms_are_appzen_s_on_exsited_s_resources(self):
        # Each of Exsited's alarms watches what its AppZen twin watches, with the same thresholds, periods and
        # actions, on Exsited's queue or function, and exists exactly when that resource does.
        renamed = {"WebhookQueue": "ExsitedWebhookQueue", "WebhookDeadLetterQueue": "ExsitedWebhookDeadLetterQueue",
                   "WebhookParkedQueue": "ExsitedWebhookParkedQueue", "ReconcileFunction": "ReconcileExsitedFunction",
                   "NotifyFunction": "NotifyExsitedFunction"}
        twins = {"WebhookDeadLetterAlarm": "ExsitedWebhookDeadLetterAlarm",
                 "WebhookQueueAgeAlarm": "ExsitedWebhookQueueAgeAlarm",
                 "WebhookParkedAgeAlarm": "ExsitedWebhookParkedAgeAlarm",
                 "ReconcileErrorsAlarm": "ReconcileExsitedErrorsAlarm",
                 "NotifyErrorsAlarm": "NotifyExsitedErrorsAlarm",
                 "ReconcileThrottlesAlarm": "ReconcileExsitedThrottlesAlarm",
                 "NotifyThrottlesAlarm": "NotifyExsitedThrottlesAlarm"}
        # Twins on the functions' own metrics: the same alarm on reconcile-exsited's series.
        business_twins = {"AppZenRejectionsAlarm": "ExsitedRejectionsAlarm",
                          "ReconcileRetriesAlarm": "ReconcileExsitedRetriesAlarm"}
        alarms = self.of_type("AWS::CloudWatch::Alarm")
        self.assertEqual({n for n, a in alarms.items() if a.get("Condition") == "HasExsited"},
                         set(twins.values()) | set(business_twins.values()) | {"ExsitedSetupAlarm"})
        # The setup alarm: AppZen's, on Exsited's failures metric of reconcile-exsited's series.
        a = copy.deepcopy(self.resources["AppZenSetupAlarm"]["Properties"])
        e = copy.deepcopy(self.resources["ExsitedSetupAlarm"]["Properties"])
        self.assertEqual(self.resources["ExsitedSetupAlarm"].get("Condition"), "HasExsited")
        a.pop("AlarmDescription"), e.pop("AlarmDescription")
        for metric in a["Metrics"] + e["Metrics"]:
            metric.pop("Label", None)
        text = json.dumps(a).replace('"AppZenFailures"', '"ExsitedFailures"').replace('"reconcile"', '"reconcile_exsited"')
        self.assertEqual(e, json.loads(text))
        for appzen, exsited in business_twins.items():
            with self.subTest(alarm=exsited):
                a = copy.deepcopy(self.resources[appzen]["Properties"])
                e = copy.deepcopy(self.resources[exsited]["Properties"])
                self.assertEqual(self.resources[appzen].get("Condition"), "HasAppZen")
                self.assertEqual(self.resources[exsited].get("Condition"), "HasExsited")
                a.pop("AlarmDescription"), e.pop("AlarmDescription")
                a["Dimensions"] = [{**d, "Value": "reconcile_exsited"} if d["Name"] == "service" else d
                                   for d in a["Dimensions"]]
                self.assertEqual(e, a)
        for appzen, exsited in twins.items():
            with self.subTest(alarm=exsited):
                a = copy.deepcopy(self.resources[appzen]["Properties"])
                e = copy.deepcopy(self.resources[exsited]["Properties"])
                # Each exists when what it watches does: AppZen's queues are in every stack, its reconcile only
                # in a stack with AppZen; Exsited's queues and functions only in a stack with Exsited.
                watched, = {name for name, _ in references(a) if name in renamed}
                self.assertEqual(self.resources[appzen].get("Condition"), self.condition_of(watched))
                self.assertEqual(self.resources[exsited].get("Condition"), self.condition_of(renamed[watched]))
                a.pop("AlarmDescription"), e.pop("AlarmDescription")
                if "Metrics" in a:  # the metric-math alarm's label names its queue
                    for metric in a["Metrics"] + e["Metrics"]:
                        metric.pop("Label", None)
                text = json.dumps(a)
                for old, new in renamed.items():
                    text = text.replace(f'"{old}"', f'"{new}"')
                self.assertEqual(e, json.loads(text))

    def test_every_alarm_exists_exactly_when_what_it_watches_does(self):
        # An alarm on a resource of one destination goes with it (a dimension naming it would fail the deploy);
        # an alarm on a function's own metrics (dimension service) goes with that function, so a stack without
        # AppZen has no alarm on AppZen's reconcile sitting at INSUFFICIENT_DATA forever; an alarm on what every
        # stack has is in every stack (or under a condition of its own parameter, never a destination's).
        def service_condition(service):
            conditions = {self.condition_of(f) for f in SERVICE_FUNCTIONS[service]}
            return conditions.pop() if len(conditions) == 1 else None

        self.assertEqual(set(SERVICE_FUNCTIONS), {s for m in self.catalogue().values() for s in m["services"]})
        self.assertEqual({f for fs in SERVICE_FUNCTIONS.values() for f in fs}, set(self.functions()))
        for name, alarm in self.of_type("AWS::CloudWatch::Alarm").items():
            p = alarm["Properties"]
            metrics = [p] if "MetricName" in p else [m["MetricStat"]["Metric"] for m in p["Metrics"] if "MetricStat" in m]
            needed = set()
            for metric in metrics:
                for dimension in metric.get("Dimensions", []):
                    if target(dimension["Value"]) in self.resources:
                        needed.add(self.condition_of(target(dimension["Value"])))
                    elif dimension["Name"] == "service":
                        needed.add(service_condition(dimension["Value"]))
            needed.discard(None)
            with self.subTest(alarm=name):
                self.assertLessEqual(len(needed), 1, needed)
                if needed:
                    self.assertEqual(alarm.get("Condition"), needed.pop())
                else:
                    self.assertNotIn(alarm.get("Condition"), {"HasAppZen", "HasExsited"})
        for name in ("AppZenRejectionsAlarm", "AppZenSetupAlarm", "ReconcileRetriesAlarm", "ReconcileErrorsAlarm",
                     "ReconcileThrottlesAlarm"):
            self.assertEqual(self.resources[name].get("Condition"), "HasAppZen", name)

    def test_a_parked_webhook_alarms_well_before_retention_deletes_it(self):
        for destination, chain in WEBHOOK_CHAINS.items():
            with self.subTest(destination=destination):
                retention = self.resources[chain["parked"]]["Properties"]["MessageRetentionPeriod"]
                ages = [a["Properties"] for a in self.of_type("AWS::CloudWatch::Alarm").values()
                        if a["Properties"].get("MetricName") == "ApproximateAgeOfOldestMessage"
                        and target(a["Properties"]["Dimensions"][0]["Value"]) == chain["parked"]]
                self.assertEqual(len(ages), 1)
                alarm = ages[0]
                self.assertEqual(alarm["ComparisonOperator"], "GreaterThanThreshold")
                self.assertEqual(alarm["Threshold"], 10 * 86400)
                # Evaluated at most a day after crossing the threshold: days left to redrive when it fires.
                self.assertLessEqual(alarm["Threshold"] + alarm["Period"] * alarm["EvaluationPeriods"],
                                     retention - 3 * 86400)

    # -- metrics, dashboard and business alarms -----------------------------------------------------------

    def catalogue(self):
        """{metric name: its entry in infra/metrics.json}: what the code emits."""
        catalogue = json.loads(METRICS_CATALOGUE.read_text())
        self.assertEqual(catalogue["namespaceParameter"], "MetricsNamespace")
        self.assertEqual(catalogue["serviceDimension"], "service")
        return {metric["name"]: metric for metric in catalogue["metrics"]}

    def dashboard_body(self):
        dashboards = self.of_type("AWS::CloudWatch::Dashboard")
        self.assertEqual(list(dashboards), ["Dashboard"])
        body = dashboards["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        return (body[0], body[1]) if isinstance(body, list) else (body, {})

    def dashboard_stacks(self):
        """valid_stacks(), once it is sure they vary every parameter the dashboard's variables depend on and give
        each of the variables' conditions both values."""
        _, variables = self.dashboard_body()
        conditions = {v["Fn::If"][0] for v in variables.values() if isinstance(v, dict) and "Fn::If" in v}
        self.assertLessEqual({"HasAppZen", "HasExsited", "HasNoWebhookAlarm"}, conditions)
        read = parameters_of(self.template, [{"Condition": c} for c in conditions])
        stacks = self.valid_stacks()
        self.assertLessEqual(read, set().union(*(p for p, _ in stacks)), "a parameter the rendering does not vary")
        for condition in conditions:
            self.assertEqual({c[condition] for _, c in stacks}, {True, False}, condition)
        return stacks

    def valid_stacks(self):
        """[(parameters, {condition: value})]: every value Destinations allows, each with NoWebhookAlarmHours at
        its default and at 0; the other parameters at their defaults."""
        hours = self.template["Parameters"]["NoWebhookAlarmHours"]["Default"]
        stacks = []
        for destinations, alarm_hours in itertools.product(
                self.template["Parameters"]["Destinations"]["AllowedValues"], (hours, 0)):
            parameters = {"Destinations": destinations, "NoWebhookAlarmHours": alarm_hours}
            stacks.append((parameters, stack_conditions(self.template, parameters)))
        return stacks

    def exists(self, name, stack):
        """Whether resource `name` is in a stack with these conditions (a condition not named: true)."""
        condition = self.condition_of(name)
        return condition is None or stack.get(condition, True)

    def dashboard(self, stack=None):
        """The dashboard body as JSON: `${X}` / `${X.Attr}` become "@X" / "@X.Attr"; the Sub's own variables
        (the optional resources' entries, each `!If [C, !Sub '...', ""]`) are expanded as in a stack with the
        conditions `stack` (default: every condition true, so every resource present)."""
        stack = stack or {}
        text, variables = self.dashboard_body()
        for name, value in variables.items():
            if isinstance(value, dict) and "Fn::If" in value:
                condition, present, absent = value["Fn::If"]
                self.assertEqual(absent, "", f"{name}: the text without the resource is empty")
                value = present if stack.get(condition, True) else absent
            text = text.replace("${%s}" % name, value if isinstance(value, str) else sub_text(value))
        for reference in set(re.findall(r"\$\{([^}!]+)\}", text)):
            root = reference.split(".")[0]
            self.assertTrue(root in self.resources or root in self.template["Parameters"] or root.startswith("AWS::"),
                            f"the dashboard names ${{{reference}}}, which the template does not define")
            self.assertTrue(root not in self.resources or self.exists(root, stack),
                            f"the dashboard names ${{{reference}}} in a stack without it: {stack}")
        text = re.sub(r"\$\{([^}]+)\}", r"@\1", text)
        return json.loads(text)

    def dashboard_rows(self, stack=None):
        """(widget title, namespace, metric, {dimension: value}, options) for every metric row of every widget."""
        rows = []
        for widget in self.dashboard(stack)["widgets"]:
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
        for name, function in self.functions().items():
            self.assertEqual(function["Properties"]["Environment"]["Variables"]["METRICS_NAMESPACE"],
                             {"Ref": "MetricsNamespace"}, name)

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
        # Rendered as each stack would have it (valid JSON, naming only that stack's resources: dashboard()),
        # for appzen, exsited and both, with and without the no-webhook alarm.
        stacks = self.dashboard_stacks()
        self.assertEqual({p["Destinations"] for p, _ in stacks},
                         set(self.template["Parameters"]["Destinations"]["AllowedValues"]))
        self.assertEqual(len(stacks), 6)
        for parameters, stack in stacks:
            with self.subTest(stack=parameters):
                self.check_dashboard_shows_the_stack_s_queues_and_functions(stack)

    def check_dashboard_shows_the_stack_s_queues_and_functions(self, stack):
        rows = [r for r in self.dashboard_rows(stack) if r[1].startswith("AWS/")]
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
            if self.exists(queue, stack):
                self.assertIn(("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue), seen, "depth / dead letters")
                self.assertIn(("AWS/SQS", "ApproximateAgeOfOldestMessage", queue), seen, "oldest-message age")
        for function in self.functions():
            if self.exists(function, stack):
                for metric in ("Errors", "Throttles", "Duration", "Invocations"):
                    self.assertIn(("AWS/Lambda", metric, function), seen)

    def test_the_dashboard_lists_every_alarm_and_the_stack_outputs_its_url(self):
        for parameters, stack in self.dashboard_stacks():
            listed = []
            for widget in self.dashboard(stack)["widgets"]:
                if widget["type"] == "alarm":
                    listed += [arn[1:].removesuffix(".Arn") for arn in widget["properties"]["alarms"]]
            self.assertEqual(len(listed), len(set(listed)), f"{parameters}: an alarm listed twice")
            self.assertEqual(set(listed), {a for a in self.of_type("AWS::CloudWatch::Alarm") if self.exists(a, stack)},
                             parameters)
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
        self.assertEqual(sorted(a[1]["service"] for a in alarms), ["reconcile", "reconcile_exsited"],
                         "one per destination's reconcile")
        for p, _, _ in alarms:
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
        self.assertEqual(sorted(a[1]["service"] for a in alarms), ["reconcile", "reconcile_exsited"],
                         "one per destination's reconcile")
        for p, _, _ in alarms:
            self.assert_retries_sustained(p)

    def assert_retries_sustained(self, p):
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
