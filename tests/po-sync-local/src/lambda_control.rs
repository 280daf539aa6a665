//! The part of Lambda's API po-sync-admin calls, for the local pipeline, in Lambda's REST-JSON shape:
//! `GetEventSourceMapping` and `UpdateEventSourceMapping` (`Enabled` only) over the mappings the local poller
//! plays (moto's own mappings would consume the queues, so the local pipeline leaves them out and plays them
//! itself), and `GetFunctionConfiguration` (name and environment) of the functions the local pipeline runs.
//! So `po-sync-admin pause`/`resume`/`status`/`verify` run against it through the real `aws-sdk-lambda`
//! client, pointed here with `AWS_ENDPOINT_URL_LAMBDA`. It is a stand-in of those three calls, not Lambda.

use crate::poller::EventSourceControls;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;

const MAPPING_PATH: &str = "/2015-03-31/event-source-mappings/{uuid}";
const FUNCTION_CONFIGURATION_PATH: &str = "/2015-03-31/functions/{name}/configuration";

/// A function's name and the environment the local pipeline runs it with.
pub type FunctionEnvs = Arc<Vec<(String, Vec<(String, String)>)>>;

#[derive(Clone)]
struct Stand {
    controls: EventSourceControls,
    functions: FunctionEnvs,
}

/// The stand-in's routes over the poller's switches and the functions' environments.
pub fn router(controls: EventSourceControls, functions: FunctionEnvs) -> Router {
    Router::new()
        .route(MAPPING_PATH, get(get_mapping).put(update_mapping))
        .route(FUNCTION_CONFIGURATION_PATH, get(get_function_configuration))
        .with_state(Stand { controls, functions })
}

/// A running stand-in; stops when dropped.
pub struct RunningLambdaControl {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for RunningLambdaControl {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves the stand-in on a free port of 127.0.0.1 in a background task.
pub async fn spawn(controls: EventSourceControls, functions: FunctionEnvs) -> std::io::Result<RunningLambdaControl> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(controls, functions))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(RunningLambdaControl { url, stop: Some(stop) })
}

async fn get_mapping(State(stand): State<Stand>, Path(uuid): Path<String>) -> Response {
    describe(&stand.controls, &uuid, StatusCode::OK)
}

async fn update_mapping(State(stand): State<Stand>, Path(uuid): Path<String>, Json(update): Json<Value>) -> Response {
    if let Some(enabled) = update.get("Enabled").and_then(Value::as_bool) {
        stand.controls.set_enabled(&uuid, enabled);
    }
    // Lambda answers an update with 202 and the mapping as it is now (`Disabling`, `Enabling`, …).
    describe(&stand.controls, &uuid, StatusCode::ACCEPTED)
}

async fn get_function_configuration(State(stand): State<Stand>, Path(name): Path<String>) -> Response {
    // Lambda takes a name or an ARN; the local functions are known by name.
    let name = name.rsplit(':').next().unwrap_or_default();
    match stand.functions.iter().find(|(function, _)| function == name) {
        Some((function, env)) => {
            let variables: serde_json::Map<String, Value> =
                env.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            Json(json!({
                "FunctionName": function,
                "FunctionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{function}"),
                "Environment": { "Variables": variables },
            }))
            .into_response()
        }
        None => not_found(format!(
            "Function not found: {name} (local functions: {})",
            stand.functions.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn not_found(message: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        [("x-amzn-errortype", "ResourceNotFoundException")],
        Json(json!({ "Type": "User", "message": message })),
    )
        .into_response()
}

fn describe(controls: &EventSourceControls, uuid: &str, status: StatusCode) -> Response {
    match (controls.state(uuid), controls.describe(uuid)) {
        (Some(state), Some((function, queue_arn))) => (
            status,
            Json(json!({
                "UUID": uuid,
                "State": state,
                "EventSourceArn": queue_arn,
                "FunctionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{function}"),
            })),
        )
            .into_response(),
        _ => not_found(format!(
            "The resource you requested does not exist. (local event source mappings: {})",
            controls.uuids().join(", ")
        )),
    }
}
