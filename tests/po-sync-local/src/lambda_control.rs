//! The part of Lambda's API that switches event source mappings, for the mappings the local poller plays:
//! `GetEventSourceMapping` and `UpdateEventSourceMapping` (`Enabled` only), in Lambda's REST-JSON shape. So
//! `po-sync-admin pause`/`resume`/`status` run against the local pipeline through the real `aws-sdk-lambda`
//! client, pointed here with `AWS_ENDPOINT_URL_LAMBDA` (moto's own mappings would consume the queues, so the
//! local pipeline leaves them out and plays them itself).

use crate::poller::EventSourceControls;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

const MAPPING_PATH: &str = "/2015-03-31/event-source-mappings/{uuid}";

/// The stand-in's routes over the poller's switches.
pub fn router(controls: EventSourceControls) -> Router {
    Router::new().route(MAPPING_PATH, get(get_mapping).put(update_mapping)).with_state(controls)
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
pub async fn spawn(controls: EventSourceControls) -> std::io::Result<RunningLambdaControl> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(controls))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(RunningLambdaControl { url, stop: Some(stop) })
}

async fn get_mapping(State(controls): State<EventSourceControls>, Path(uuid): Path<String>) -> Response {
    describe(&controls, &uuid, StatusCode::OK)
}

async fn update_mapping(
    State(controls): State<EventSourceControls>,
    Path(uuid): Path<String>,
    Json(update): Json<Value>,
) -> Response {
    if let Some(enabled) = update.get("Enabled").and_then(Value::as_bool) {
        controls.set_enabled(&uuid, enabled);
    }
    // Lambda answers an update with 202 and the mapping as it is now (`Disabling`, `Enabling`, …).
    describe(&controls, &uuid, StatusCode::ACCEPTED)
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
        _ => (
            StatusCode::NOT_FOUND,
            [("x-amzn-errortype", "ResourceNotFoundException")],
            Json(json!({
                "Type": "User",
                "message": format!("The resource you requested does not exist. (local event source mappings: {})", controls.uuids().join(", ")),
            })),
        )
            .into_response(),
    }
}
