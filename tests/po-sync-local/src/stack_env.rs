//! The functions' wiring as `infra/template.yaml` declares it, resolved by CloudFormation (moto's), so the local
//! pipeline runs each function with the environment the template gives it and feeds it from the queues the
//! template's `Events` name, instead of a hand-made copy that could drift from the template unseen.
//!
//! 1. **Translate**: `tests/po-sync-local/sam_translate.py` runs aws-sam-translator (what `sam deploy` does) and prints plain
//!    CloudFormation.
//! 2. **Read**: each `AWS::Lambda::Function` (its binary, from `Metadata.BuildProperties.Binary`; its
//!    `Environment.Variables`; its `LoggingConfig`) and each `AWS::Lambda::EventSourceMapping` (queue, function,
//!    batch size, `ReportBatchItemFailures`) SAM made of the template's `Events`.
//! 3. **Deploy a copy into moto's CloudFormation**, without what the local pipeline runs itself: the functions
//!    (they run under `cargo lambda watch`; a Lambda function in moto also breaks `/moto-api/data.json`), their
//!    event source mappings (the local poller plays them: moto's would consume the queues), and every resource
//!    that needs a function (the HTTP API, its permission, the function alarms, the dashboard). Every variable
//!    becomes a stack output, so CloudFormation resolves its `Ref`, `Fn::GetAtt`, `Fn::Sub` and parameters
//!    against the real queues, table and parameters of the stack.
//! 4. **Read the outputs back**: each function's variables, resolved.
//!
//! What moto cannot resolve is said, not guessed: a `Ref` to an `AWS::SecretsManager::Secret` resolves to
//! nothing in moto, so such a variable is reported in [`ResolvedFunction::secrets`] for the caller to replace
//! with inline credentials (`local.rs`); a variable that refers to something the local pipeline runs itself is
//! an error. [`check_function_env`] then reads each function's final environment with the function's own
//! configuration reader, so a variable the template forgets or renames fails here, naming it, before anything
//! starts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use po_sync_test_support::workspace_root;

/// The stack name the local pipeline deploys (the README's default stack name).
pub const STACK_NAME: &str = "po-sync";

/// The template the deployed system is built from.
pub fn default_template() -> PathBuf {
    workspace_root().join("infra/template.yaml")
}

/// One function as the template declares it (after SAM).
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    /// `ReconcileFunction`.
    pub logical_id: String,
    /// The binary `cargo lambda` builds and runs (`Metadata.BuildProperties.Binary`): `reconcile`.
    pub binary: String,
    /// `Environment.Variables`, in the template's order, unresolved.
    pub variables: Vec<(String, Value)>,
    /// `LoggingConfig.LogFormat` (`JSON` or `Text`), if set.
    pub log_format: Option<String>,
    /// `LoggingConfig.ApplicationLogLevel`, unresolved.
    pub log_level: Option<Value>,
    /// The template condition the function exists under (`ReconcileExsitedFunction`: `HasExsited`;
    /// `ReconcileFunction`: `HasAppZen`), if any.
    pub condition: Option<String>,
}

/// One event source mapping SAM made of a function's `Events` (`Type: SQS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSourceSpec {
    /// The mapping's logical id, e.g. `ReconcileFunctionWebhooks`.
    pub logical_id: String,
    pub queue_logical_id: String,
    pub function_logical_id: String,
    pub batch_size: i32,
    pub report_batch_item_failures: bool,
    /// The template condition the mapping exists under (SAM gives it its function's).
    pub condition: Option<String>,
}

/// The function and event-source parts of a translated template.
#[derive(Debug, Clone, PartialEq)]
pub struct Wiring {
    pub functions: Vec<FunctionSpec>,
    pub event_sources: Vec<EventSourceSpec>,
}

/// One function with its variables as CloudFormation resolved them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFunction {
    pub logical_id: String,
    /// The local pipeline's name for it, from its logical id: `reconcile-exsited` for `ReconcileExsitedFunction`
    /// (its stack name without the stack prefix, as the template's `FunctionName` spells it).
    pub name: String,
    pub binary: String,
    /// Every variable of `Environment.Variables` but the secret references, resolved, in the template's order;
    /// then what Lambda itself sets from `LoggingConfig` (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL`).
    pub env: Vec<(String, String)>,
    /// Variables holding a `Ref` to a Secrets Manager secret (variable, the secret's logical id): moto resolves
    /// them to nothing, so the caller passes the credentials another way.
    pub secrets: Vec<(String, String)>,
}

impl ResolvedFunction {
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One event source, resolved: which queue feeds which function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEventSource {
    pub queue_logical_id: String,
    pub queue_url: String,
    /// The function's local name ([`ResolvedFunction::name`]).
    pub function: String,
    /// The function's binary (what its `cargo lambda watch` runs).
    pub binary: String,
    pub batch_size: i32,
}

/// The deployed stack as the local pipeline needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedStack {
    pub stack_name: String,
    pub functions: Vec<ResolvedFunction>,
    pub event_sources: Vec<ResolvedEventSource>,
    /// Logical ids of the resources left out of the deployed copy (the local pipeline plays them).
    pub left_out: Vec<String>,
}

impl ResolvedStack {
    /// The deployed function named `name` ([`ResolvedFunction::name`]: `ingest`, `reconcile-exsited`).
    pub fn function(&self, name: &str) -> Result<&ResolvedFunction, String> {
        self.functions.iter().find(|f| f.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.functions.iter().map(|f| f.name.as_str()).collect();
            format!("the deployed template has no function {name:?} (it has {known:?})")
        })
    }

    /// A variable the local pipeline itself relies on (a queue, the ledger table): set and not blank.
    pub fn required_var(&self, function: &str, name: &str) -> Result<&str, String> {
        let resolved = self.function(function)?;
        resolved.var(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            format!(
                "the template gives {} (binary {}) no {name}, which the local pipeline needs to wire it",
                resolved.logical_id, resolved.binary
            )
        })
    }
}

// ---------------------------------------------------------------- 1. translate

/// The Python with aws-sam-translator: `$PO_SYNC_PYTHON`, else the project's `.venv`, else `python3`.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("PO_SYNC_PYTHON") {
        return path.into();
    }
    let venv = workspace_root().join(".venv/bin/python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

/// The template translated by aws-sam-translator into plain CloudFormation.
pub fn translate(template: &Path, parameters: &[(String, String)]) -> Result<Value, String> {
    let params: Map<String, Value> = parameters.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let script = workspace_root().join("tests/po-sync-local/sam_translate.py");
    let output =
        Command::new(python()).arg(&script).arg(template).arg(Value::Object(params).to_string()).output().map_err(
            |e| {
                format!(
                    "cannot run {} {}: {e} (`scripts/bootstrap` installs SAM CLI into .venv)",
                    python().display(),
                    script.display()
                )
            },
        )?;
    if !output.status.success() {
        return Err(format!(
            "translating {} with aws-sam-translator failed ({}): {}",
            template.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("sam_translate.py printed something that is not JSON: {e}"))
}

// ---------------------------------------------------------------- 2. read

fn resources(template: &Value) -> Result<&Map<String, Value>, String> {
    template.get("Resources").and_then(Value::as_object).ok_or_else(|| "the template has no Resources".to_owned())
}

fn resource_type(resource: &Value) -> &str {
    resource.get("Type").and_then(Value::as_str).unwrap_or_default()
}

/// The logical id a `{"Ref": X}` or `{"Fn::GetAtt": [X, ...]}` (or `"X.Attr"`) names.
fn target_of(value: &Value) -> Option<String> {
    let object = value.as_object()?;
    if let Some(Value::String(name)) = object.get("Ref") {
        return Some(name.clone());
    }
    match object.get("Fn::GetAtt")? {
        Value::Array(parts) => parts.first().and_then(Value::as_str).map(str::to_owned),
        Value::String(dotted) => dotted.split('.').next().map(str::to_owned),
        _ => None,
    }
}

/// Reads the functions and SQS event source mappings of a translated template.
pub fn read_wiring(template: &Value) -> Result<Wiring, String> {
    let resources = resources(template)?;
    let mut functions = Vec::new();
    let mut event_sources = Vec::new();
    for (logical_id, resource) in resources {
        match resource_type(resource) {
            "AWS::Lambda::Function" => {
                let binary = resource
                    .pointer("/Metadata/BuildProperties/Binary")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{logical_id} has no Metadata.BuildProperties.Binary: which binary is it?"))?
                    .to_owned();
                let properties = resource.get("Properties").cloned().unwrap_or(Value::Null);
                let variables = match properties.pointer("/Environment/Variables") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Object(variables)) => variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    Some(other) => return Err(format!("{logical_id}: Environment.Variables is not a map: {other}")),
                };
                functions.push(FunctionSpec {
                    logical_id: logical_id.clone(),
                    binary,
                    variables,
                    log_format: properties
                        .pointer("/LoggingConfig/LogFormat")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    log_level: properties.pointer("/LoggingConfig/ApplicationLogLevel").cloned(),
                    condition: condition_of(resource),
                });
            }
            "AWS::Lambda::EventSourceMapping" => {
                let properties = resource.get("Properties").cloned().unwrap_or(Value::Null);
                let queue = properties.get("EventSourceArn").and_then(target_of);
                let function = properties.get("FunctionName").and_then(target_of);
                let (Some(queue_logical_id), Some(function_logical_id)) = (queue, function) else {
                    return Err(format!(
                        "{logical_id}: the local poller only plays event sources whose EventSourceArn is a queue of \
                         this stack (Fn::GetAtt QUEUE.Arn) and whose FunctionName is a function of this stack"
                    ));
                };
                if resource_type(&resources[&queue_logical_id]) != "AWS::SQS::Queue" {
                    return Err(format!("{logical_id}: {queue_logical_id} is not an SQS queue"));
                }
                let batch_size = match properties.get("BatchSize") {
                    None => 10,
                    Some(value) => value
                        .as_i64()
                        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| format!("{logical_id}: BatchSize {value} is not a number"))?,
                };
                let report_batch_item_failures = properties
                    .get("FunctionResponseTypes")
                    .and_then(Value::as_array)
                    .is_some_and(|types| types.iter().any(|t| t == "ReportBatchItemFailures"));
                event_sources.push(EventSourceSpec {
                    logical_id: logical_id.clone(),
                    queue_logical_id,
                    function_logical_id,
                    batch_size,
                    report_batch_item_failures,
                    condition: condition_of(resource),
                });
            }
            _ => {}
        }
    }
    Ok(Wiring { functions, event_sources })
}

/// The condition a resource exists under (`Condition: HasExsited`), if any.
fn condition_of(resource: &Value) -> Option<String> {
    resource.get("Condition").and_then(Value::as_str).map(str::to_owned)
}

/// The local name of a function: its logical id without `Function`, in kebab case (`ReconcileExsitedFunction`:
/// `reconcile-exsited`).
pub fn function_name(logical_id: &str) -> String {
    let base = logical_id.strip_suffix("Function").unwrap_or(logical_id);
    let mut name = String::with_capacity(base.len() + 4);
    for (i, c) in base.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('-');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// An output that exists when `condition` holds (a conditional function's variables, its queue's URL).
fn output(value: Value, condition: Option<&String>) -> Value {
    match condition {
        Some(condition) => json!({ "Value": value, "Condition": condition }),
        None => json!({ "Value": value }),
    }
}

/// Every logical id (resource or parameter) a value refers to: `Ref`, `Fn::GetAtt` and `Fn::Sub`'s `${X}` /
/// `${X.Attr}` (not `${!Literal}`, not the pseudo-parameters `${AWS::...}`).
pub fn references(value: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    collect_references(value, &mut found);
    found
}

fn collect_references(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object {
                match (key.as_str(), inner) {
                    ("Ref", Value::String(name)) => {
                        if !name.starts_with("AWS::") {
                            found.insert(name.clone());
                        }
                    }
                    ("Fn::GetAtt", _) => {
                        if let Some(name) = target_of(&json!({ "Fn::GetAtt": inner })) {
                            found.insert(name);
                        }
                    }
                    ("Fn::Sub", Value::String(text)) => sub_references(text, found),
                    ("Fn::Sub", Value::Array(parts)) => {
                        let names: BTreeSet<String> = parts
                            .get(1)
                            .and_then(Value::as_object)
                            .map(|vars| vars.keys().cloned().collect())
                            .unwrap_or_default();
                        if let Some(Value::String(text)) = parts.first() {
                            let mut in_text = BTreeSet::new();
                            sub_references(text, &mut in_text);
                            found.extend(in_text.into_iter().filter(|name| !names.contains(name)));
                        }
                        if let Some(vars) = parts.get(1) {
                            collect_references(vars, found);
                        }
                    }
                    _ => collect_references(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, found)),
        _ => {}
    }
}

fn sub_references(text: &str, found: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        if !inner.starts_with('!')
            && !inner.starts_with("AWS::")
            && let Some(name) = inner.split('.').next().filter(|n| !n.is_empty())
        {
            found.insert(name.to_owned());
        }
        rest = &after[end + 1..];
    }
}

fn depends_on(resource: &Value) -> Vec<String> {
    match resource.get("DependsOn") {
        Some(Value::String(name)) => vec![name.clone()],
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// The resources to leave out of the deployed copy: the functions, their event source mappings, and every
/// resource that refers to one of them (directly or through another left-out resource).
pub fn left_out(template: &Value) -> Result<BTreeSet<String>, String> {
    let resources = resources(template)?;
    let mut out: BTreeSet<String> = resources
        .iter()
        .filter(|(_, r)| matches!(resource_type(r), "AWS::Lambda::Function" | "AWS::Lambda::EventSourceMapping"))
        .map(|(id, _)| id.clone())
        .collect();
    // Bounded: each round leaves out at least one more resource, or stops.
    for _round in 0..=resources.len() {
        let before = out.len();
        for (id, resource) in resources {
            if out.contains(id) {
                continue;
            }
            let mut needs = references(resource);
            needs.extend(depends_on(resource));
            if needs.iter().any(|n| out.contains(n)) {
                out.insert(id.clone());
            }
        }
        if out.len() == before {
            break;
        }
    }
    Ok(out)
}

/// Where each resolved value comes back: output key → what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OutputOf {
    Variable { function: usize, name: String },
    LogLevel { function: usize },
    Queue { logical_id: String },
}

/// The template to deploy, where each output's value goes, and each function's secret references.
type Deployable = (Value, BTreeMap<String, OutputOf>, Vec<Vec<(String, String)>>);

/// The copy of the translated template to deploy: without what [`left_out`] names, without the outputs that
/// refer to it, and with one output per variable (but secret references), per log level and per event-source
/// queue.
fn deployable(template: &Value, wiring: &Wiring, left_out: &BTreeSet<String>) -> Result<Deployable, String> {
    let resources = resources(template)?;
    let mut copy = template.clone();
    let kept: Map<String, Value> =
        resources.iter().filter(|(id, _)| !left_out.contains(*id)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut outputs: Map<String, Value> = template
        .get("Outputs")
        .and_then(Value::as_object)
        .map(|outputs| {
            outputs
                .iter()
                .filter(|(_, output)| !references(output).iter().any(|n| left_out.contains(n)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut plan = BTreeMap::new();
    let mut secrets = Vec::new();
    let is_secret =
        |name: &String| resources.get(name).is_some_and(|r| resource_type(r) == "AWS::SecretsManager::Secret");
    for (index, function) in wiring.functions.iter().enumerate() {
        let mut function_secrets = Vec::new();
        for (position, (name, value)) in function.variables.iter().enumerate() {
            let refs = references(value);
            if let Some(secret) = refs.iter().find(|n| is_secret(n)) {
                function_secrets.push((name.clone(), secret.clone()));
                continue;
            }
            if let Some(local) = refs.iter().find(|n| left_out.contains(*n)) {
                return Err(format!(
                    "{}'s {name} refers to {local}, which the local pipeline runs itself (not deployed into moto)",
                    function.logical_id
                ));
            }
            let key = format!("PoSyncLocalEnv{index}x{position}");
            outputs.insert(key.clone(), output(value.clone(), function.condition.as_ref()));
            plan.insert(key, OutputOf::Variable { function: index, name: name.clone() });
        }
        if let (Some(level), true) = (&function.log_level, function.log_format.as_deref() == Some("JSON")) {
            let key = format!("PoSyncLocalLogLevel{index}");
            outputs.insert(key.clone(), output(level.clone(), function.condition.as_ref()));
            plan.insert(key, OutputOf::LogLevel { function: index });
        }
        secrets.push(function_secrets);
    }
    for source in &wiring.event_sources {
        let key = format!("PoSyncLocalQueue{}", source.queue_logical_id);
        outputs.insert(key.clone(), output(json!({ "Ref": source.queue_logical_id }), source.condition.as_ref()));
        plan.insert(key, OutputOf::Queue { logical_id: source.queue_logical_id.clone() });
    }
    copy["Resources"] = Value::Object(kept);
    copy["Outputs"] = Value::Object(outputs);
    Ok((copy, plan, secrets))
}

// ---------------------------------------------------------------- 3. and 4. deploy, read back

/// Deploys `template` (the project's SAM template, or a copy) into the CloudFormation at `config`'s endpoint
/// and reads each function's environment and event sources back.
pub async fn deploy(
    config: &aws_config::SdkConfig,
    template: &Path,
    parameters: &[(String, String)],
) -> Result<ResolvedStack, String> {
    let translated = translate(template, parameters)?;
    let wiring = read_wiring(&translated)?;
    if wiring.functions.is_empty() {
        return Err(format!("{} declares no function", template.display()));
    }
    for source in &wiring.event_sources {
        if !source.report_batch_item_failures {
            return Err(format!(
                "{}: the local poller plays SQS event sources with FunctionResponseTypes [ReportBatchItemFailures] \
                 only, as the functions are written for",
                source.logical_id
            ));
        }
    }
    let left_out = left_out(&translated)?;
    let (copy, plan, secrets) = deployable(&translated, &wiring, &left_out)?;
    let outputs = create_stack(config, STACK_NAME, &copy, parameters).await?;

    let mut functions: Vec<ResolvedFunction> = wiring
        .functions
        .iter()
        .zip(secrets)
        .map(|(f, secrets)| ResolvedFunction {
            logical_id: f.logical_id.clone(),
            name: function_name(&f.logical_id),
            binary: f.binary.clone(),
            env: Vec::new(),
            secrets,
        })
        .collect();
    let mut queues: HashMap<String, String> = HashMap::new();
    // In the plan's key order, which is not the template's: put each function's variables back in order below.
    let mut values: BTreeMap<(usize, usize), (String, String)> = BTreeMap::new();
    // A function whose condition is false (Exsited's with Destinations=appzen, AppZen's reconcile with
    // Destinations=exsited) has none of its outputs.
    let deployed: Vec<bool> = (0..wiring.functions.len())
        .map(|index| {
            wiring.functions[index].condition.is_none()
                || plan.iter().any(|(key, what)| {
                    outputs.contains_key(key)
                        && matches!(what, OutputOf::Variable { function, .. } | OutputOf::LogLevel { function } if *function == index)
                })
        })
        .collect();
    for (key, what) in &plan {
        let value = outputs.get(key).cloned();
        match what {
            OutputOf::Variable { function, .. } | OutputOf::LogLevel { function } if !deployed[*function] => {}
            OutputOf::Queue { .. } if value.is_none() => {}
            OutputOf::Variable { function, name } => {
                let value = value.ok_or_else(|| {
                    format!(
                        "CloudFormation (moto) resolved no value for {}'s {name} ({})",
                        wiring.functions[*function].logical_id,
                        wiring.functions[*function]
                            .variables
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.to_string())
                            .unwrap_or_default()
                    )
                })?;
                let position = wiring.functions[*function].variables.iter().position(|(n, _)| n == name).unwrap_or(0);
                values.insert((*function, position), (name.clone(), value));
            }
            OutputOf::LogLevel { function } => {
                if let Some(level) = value.filter(|v| !v.is_empty()) {
                    values.insert((*function, usize::MAX), ("AWS_LAMBDA_LOG_LEVEL".to_owned(), level));
                }
            }
            OutputOf::Queue { logical_id } => {
                let url =
                    value.ok_or_else(|| format!("CloudFormation (moto) resolved no URL for the queue {logical_id}"))?;
                queues.insert(logical_id.clone(), url);
            }
        }
    }
    for ((function, _), variable) in values {
        functions[function].env.push(variable);
    }
    for (function, spec) in functions.iter_mut().zip(&wiring.functions) {
        // What Lambda sets itself from LoggingConfig (its application log level travels as AWS_LAMBDA_LOG_LEVEL).
        if let Some(format) = &spec.log_format {
            let position =
                function.env.iter().position(|(n, _)| n == "AWS_LAMBDA_LOG_LEVEL").unwrap_or(function.env.len());
            function.env.insert(position, ("AWS_LAMBDA_LOG_FORMAT".to_owned(), format.clone()));
        }
    }
    let mut event_sources = Vec::new();
    for source in &wiring.event_sources {
        let (index, function) = wiring
            .functions
            .iter()
            .enumerate()
            .find(|(_, f)| f.logical_id == source.function_logical_id)
            .ok_or_else(|| format!("{}: no function {}", source.logical_id, source.function_logical_id))?;
        if !deployed[index] {
            continue;
        }
        let queue_url = queues.get(&source.queue_logical_id).cloned().ok_or_else(|| {
            format!("CloudFormation (moto) resolved no URL for the queue {}", source.queue_logical_id)
        })?;
        event_sources.push(ResolvedEventSource {
            queue_logical_id: source.queue_logical_id.clone(),
            queue_url,
            function: function_name(&function.logical_id),
            binary: function.binary.clone(),
            batch_size: source.batch_size,
        });
    }
    let functions = functions.into_iter().zip(deployed).filter_map(|(f, deployed)| deployed.then_some(f)).collect();
    Ok(ResolvedStack {
        stack_name: STACK_NAME.to_owned(),
        functions,
        event_sources,
        left_out: left_out.into_iter().collect(),
    })
}

/// Creates the stack and waits (at most 2 minutes) until it is complete; returns its outputs.
async fn create_stack(
    config: &aws_config::SdkConfig,
    name: &str,
    template: &Value,
    parameters: &[(String, String)],
) -> Result<HashMap<String, String>, String> {
    use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
    let cfn = aws_sdk_cloudformation::Client::new(config);
    let mut request = cfn
        .create_stack()
        .stack_name(name)
        .template_body(template.to_string())
        .capabilities(Capability::CapabilityIam)
        .capabilities(Capability::CapabilityNamedIam)
        .capabilities(Capability::CapabilityAutoExpand);
    for (key, value) in parameters {
        request = request.parameters(Parameter::builder().parameter_key(key).parameter_value(value).build());
    }
    request.send().await.map_err(|e| format!("CreateStack: {}", aws_sdk_cloudformation::Error::from(e)))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let described = cfn
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .map_err(|e| format!("DescribeStacks: {}", aws_sdk_cloudformation::Error::from(e)))?;
        let stack = described.stacks().first().ok_or_else(|| format!("stack {name} vanished"))?;
        match stack.stack_status() {
            Some(StackStatus::CreateComplete) => {
                return Ok(stack
                    .outputs()
                    .iter()
                    .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value().unwrap_or_default().to_owned())))
                    .collect());
            }
            Some(StackStatus::CreateInProgress) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            status => {
                return Err(format!(
                    "stack {name} ended {status:?}: {}",
                    stack.stack_status_reason().unwrap_or("no reason given")
                ));
            }
        }
    }
}

// ---------------------------------------------------------------- the functions' own check

/// Reads a function's final environment with the function's own configuration reader (and the metrics
/// namespace every function reads), as its cold start would: a variable the template forgot or renamed fails
/// here with the function's own message, naming it.
pub fn check_function_env(binary: &str, env: &[(String, String)]) -> Result<(), String> {
    let map: HashMap<String, String> = env.iter().cloned().collect();
    let checked = match binary {
        "ingest" => po_sync::config::ingest::IngestConfig::from_env(&map).map(|_| ()),
        "reconcile" => po_sync::config::reconcile::ReconcileConfig::from_env(&map).map(|_| ()),
        "notify" => po_sync::config::notify::NotifyConfig::from_env(&map).map(|_| ()),
        other => {
            return Err(format!(
                "the template has a function {other:?} the local pipeline does not know how to check (tests/src/stack_env.rs)"
            ));
        }
    };
    checked.and_then(|()| po_sync_aws::metrics::namespace(&map).map(|_| ())).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Value {
        json!({
            "Resources": {
                "Secret": { "Type": "AWS::SecretsManager::Secret" },
                "Queue": { "Type": "AWS::SQS::Queue", "Properties": { "QueueName": { "Fn::Sub": "${AWS::StackName}-q.fifo" } } },
                "Table": { "Type": "AWS::DynamoDB::Table" },
                "Fn": {
                    "Type": "AWS::Lambda::Function",
                    "Metadata": { "BuildProperties": { "Binary": "reconcile" } },
                    "Properties": {
                        "Environment": { "Variables": {
                            "QUEUE_URL": { "Ref": "Queue" },
                            "SECRET_ARN": { "Ref": "Secret" },
                            "TABLE": { "Fn::Sub": "${Table}" },
                            "LEVEL": { "Ref": "Level" }
                        } },
                        "LoggingConfig": { "LogFormat": "JSON", "ApplicationLogLevel": { "Ref": "Level" } }
                    }
                },
                "FnQueue": {
                    "Type": "AWS::Lambda::EventSourceMapping",
                    "Properties": {
                        "EventSourceArn": { "Fn::GetAtt": ["Queue", "Arn"] },
                        "FunctionName": { "Ref": "Fn" },
                        "BatchSize": 5,
                        "FunctionResponseTypes": ["ReportBatchItemFailures"]
                    }
                },
                "Alarm": { "Type": "AWS::CloudWatch::Alarm", "Properties": { "Dimensions": [{ "Value": { "Ref": "Fn" } }] } },
                "AlarmOnAlarm": { "Type": "AWS::CloudWatch::Alarm", "Properties": { "X": { "Fn::Sub": ["${A}", { "A": { "Fn::GetAtt": "Alarm.Arn" } }] } } },
                "QueueAlarm": { "Type": "AWS::CloudWatch::Alarm", "DependsOn": "Queue", "Properties": { "X": { "Fn::Sub": "${Queue.QueueName} ${!Fn}" } } }
            },
            "Outputs": {
                "FnName": { "Value": { "Ref": "Fn" } },
                "QueueUrl": { "Value": { "Ref": "Queue" } }
            }
        })
    }

    #[test]
    fn references_follow_ref_getatt_and_sub_but_not_literals_or_pseudo_parameters() {
        let found = references(&json!({
            "a": { "Ref": "A" }, "b": { "Fn::GetAtt": "B.Arn" }, "c": { "Fn::GetAtt": ["C", "Arn"] },
            "d": { "Fn::Sub": "${D} ${E.Arn} ${!NotThis} ${AWS::Region}" },
            "f": { "Fn::Sub": ["${F} ${Local}", { "Local": { "Ref": "G" } }] }, "h": { "Ref": "AWS::StackName" }
        }));
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["A", "B", "C", "D", "E", "F", "G"]);
    }

    #[test]
    fn functions_their_mappings_and_whatever_needs_them_are_left_out() {
        let out = left_out(&template()).unwrap();
        assert_eq!(out.into_iter().collect::<Vec<_>>(), ["Alarm", "AlarmOnAlarm", "Fn", "FnQueue"]);
    }

    #[test]
    fn the_wiring_is_read_from_the_translated_template() {
        let wiring = read_wiring(&template()).unwrap();
        assert_eq!(wiring.functions.len(), 1);
        let function = &wiring.functions[0];
        assert_eq!((function.logical_id.as_str(), function.binary.as_str()), ("Fn", "reconcile"));
        assert_eq!(
            function.variables.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["LEVEL", "QUEUE_URL", "SECRET_ARN", "TABLE"]
        );
        assert_eq!(function.log_format.as_deref(), Some("JSON"));
        assert_eq!(
            wiring.event_sources,
            [EventSourceSpec {
                logical_id: "FnQueue".into(),
                queue_logical_id: "Queue".into(),
                function_logical_id: "Fn".into(),
                batch_size: 5,
                report_batch_item_failures: true,
                condition: None,
            }]
        );
    }

    #[test]
    fn the_deployed_copy_outputs_each_variable_but_secrets_and_drops_outputs_of_what_is_left_out() {
        let template = template();
        let wiring = read_wiring(&template).unwrap();
        let out = left_out(&template).unwrap();
        let (copy, plan, secrets) = deployable(&template, &wiring, &out).unwrap();
        let kept: BTreeSet<&str> = copy["Resources"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(kept, BTreeSet::from(["Queue", "QueueAlarm", "Secret", "Table"]));
        let outputs = copy["Outputs"].as_object().unwrap();
        assert!(!outputs.contains_key("FnName") && outputs.contains_key("QueueUrl"));
        let variables: BTreeSet<&str> = plan
            .values()
            .filter_map(|p| match p {
                OutputOf::Variable { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(variables, BTreeSet::from(["LEVEL", "QUEUE_URL", "TABLE"]));
        assert!(plan.values().any(|p| *p == OutputOf::LogLevel { function: 0 }));
        assert!(plan.values().any(|p| *p == OutputOf::Queue { logical_id: "Queue".into() }));
        assert_eq!(secrets, [vec![("SECRET_ARN".to_owned(), "Secret".to_owned())]]);
    }

    #[test]
    fn a_conditional_function_s_outputs_carry_its_condition_so_moto_leaves_them_out_with_it() {
        let mut template = template();
        template["Resources"]["Fn"]["Condition"] = json!("HasExsited");
        template["Resources"]["FnQueue"]["Condition"] = json!("HasExsited");
        let wiring = read_wiring(&template).unwrap();
        assert_eq!(wiring.functions[0].condition.as_deref(), Some("HasExsited"));
        let out = left_out(&template).unwrap();
        let (copy, plan, _) = deployable(&template, &wiring, &out).unwrap();
        for (key, _) in plan {
            assert_eq!(copy["Outputs"][&key]["Condition"], "HasExsited", "{key}");
        }
    }

    #[test]
    fn a_function_s_local_name_is_its_logical_id_in_kebab_case() {
        assert_eq!(function_name("ReconcileExsitedFunction"), "reconcile-exsited");
        assert_eq!(function_name("IngestFunction"), "ingest");
        assert_eq!(function_name("Fn"), "fn");
    }

    #[test]
    fn a_variable_naming_something_the_local_pipeline_runs_is_refused() {
        let mut template = template();
        template["Resources"]["Fn"]["Properties"]["Environment"]["Variables"]["SELF"] =
            json!({ "Fn::GetAtt": ["Alarm", "Arn"] });
        let wiring = read_wiring(&template).unwrap();
        let out = left_out(&template).unwrap();
        let error = deployable(&template, &wiring, &out).unwrap_err();
        assert!(error.contains("SELF refers to Alarm"), "{error}");
    }

    #[test]
    fn each_function_is_checked_with_its_own_configuration_reader() {
        let env =
            |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let error = check_function_env(
            "reconcile",
            &env(&[
                ("NOTIFY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/n.fifo"),
                ("APPZEN_API_KEY", "k"),
                ("APPZEN_CUSTOMER_ID", "c"),
                ("APPZEN_CUSTOMER_KEY", "ck"),
            ]),
        )
        .unwrap_err();
        assert_eq!(error, "configuration LEDGER_TABLE_NAME: is required but not set");
        assert!(
            check_function_env("notify", &env(&[("NOTIFY_FROM", "a@example.com"), ("NOTIFY_TO", "b@example.com")]))
                .is_ok()
        );
        let error = check_function_env(
            "notify",
            &env(&[("NOTIFY_FROM", "a@example.com"), ("NOTIFY_TO", "b@example.com"), ("METRICS_NAMESPACE", "AWS/x")]),
        )
        .unwrap_err();
        assert!(error.contains("METRICS_NAMESPACE"), "{error}");
        assert!(check_function_env("archive", &[]).unwrap_err().contains("does not know"));
    }
}
