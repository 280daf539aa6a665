//! Step 2, the SQS way: a message move task, where the endpoint implements it.

use super::*;

pub(super) async fn queue_arn(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<String, Error> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(aws("sqs:GetQueueAttributes"))?;
    output
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| Error::Failed(format!("SQS returned no QueueArn for {queue_url}")))
}

pub(super) enum Started {
    Task(String),
    /// The endpoint does not implement the action; why, in words.
    Unsupported(String),
}

/// Error codes with which a service says it does not know or support an action.
const UNSUPPORTED_CODES: [&str; 6] = [
    "InvalidAction",
    "UnknownOperationException",
    "UnsupportedOperation",
    "AWS.SimpleQueueService.UnsupportedOperation",
    "NotImplemented",
    "NotImplementedException",
];

/// Whether an error means "this endpoint does not implement the action", and why. moto 5.2.5 answers
/// StartMessageMoveTask with HTTP 500 and an HTML page (its NotImplementedError), so no AWS error code; an AWS
/// service always names its error, so a 500 without a code, or a 501, is read as "not implemented".
pub fn unsupported_reason(status: Option<u16>, code: Option<&str>) -> Option<String> {
    match (status, code) {
        (_, Some(code)) if UNSUPPORTED_CODES.contains(&code) => Some(format!("it answered {code}")),
        (Some(501), _) => Some("it answered HTTP 501 Not Implemented".to_owned()),
        (Some(500), None) => Some(
            "it answered HTTP 500 with no AWS error code, as moto does for an action it does not implement".to_owned(),
        ),
        _ => None,
    }
}

fn classify_start<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Option<String> {
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = match error {
        SdkError::ServiceError(_) => error.code(),
        _ => None,
    };
    match error {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => unsupported_reason(status, code),
        _ => None,
    }
}

/// Starts the move task, without the SDK's retries (an unimplemented action would be retried as a 500), but
/// trying again twice on throttling.
pub(super) async fn start_move_task(
    sqs: &aws_sdk_sqs::Client,
    source: &str,
    destination: &str,
) -> Result<Started, Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = sqs
            .start_message_move_task()
            .source_arn(source)
            .destination_arn(destination)
            .customize()
            .config_override(aws_sdk_sqs::config::Config::builder().retry_config(RetryConfig::disabled()))
            .send()
            .await;
        match result {
            Ok(output) => return Ok(Started::Task(output.task_handle().unwrap_or_default().to_owned())),
            Err(e) => {
                if let Some(reason) = classify_start(&e) {
                    return Ok(Started::Unsupported(reason));
                }
                let error = port_error("sqs:StartMessageMoveTask", e);
                if error.is_transient() && attempt < 3 {
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                    continue;
                }
                return Err(Error::Failed(format!("{error} (--method copy moves the messages client-side instead)")));
            }
        }
    }
}

/// Polls ListMessageMoveTasks until the task ends or the timeout passes (the task then goes on in SQS).
pub(super) async fn follow_move_task(
    sqs: &aws_sdk_sqs::Client,
    source: &str,
    handle: &str,
    why: String,
    options: &RedriveOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Movement, Error> {
    let deadline = Instant::now() + options.timeout;
    let mut movement =
        Movement { method: Method::MoveTask, why, moved: 0, to_move: None, complete: false, problem: None };
    loop {
        tokio::time::sleep(options.poll_interval).await;
        let listed = sqs.list_message_move_tasks().source_arn(source).max_results(10).send().await.map_err(|e| {
            Error::Failed(format!(
                "move task {handle} started, but following it failed: {}; check with aws sqs list-message-move-tasks \
                 --source-arn {source}",
                port_error("sqs:ListMessageMoveTasks", e)
            ))
        })?;
        // The most recent task is ours (only a RUNNING task shows its handle).
        let task = listed
            .results()
            .iter()
            .find(|t| t.task_handle() == Some(handle))
            .or_else(|| listed.results().iter().max_by_key(|t| t.started_timestamp()));
        if let Some(task) = task {
            movement.moved = task.approximate_number_of_messages_moved().max(0) as u64;
            movement.to_move = task.approximate_number_of_messages_to_move().map(|n| n.max(0) as u64);
            let of = movement.to_move.map_or_else(|| "?".to_owned(), |n| n.to_string());
            let status = task.status().unwrap_or("UNKNOWN");
            progress(&format!("moved {} of {of} ({status})", movement.moved));
            match status {
                "COMPLETED" => {
                    movement.complete = true;
                    return Ok(movement);
                }
                "FAILED" | "CANCELLED" => {
                    movement.problem = Some(format!(
                        "the move task {}{}",
                        status.to_lowercase(),
                        task.failure_reason().map(|r| format!(": {r}")).unwrap_or_default()
                    ));
                    return Ok(movement);
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            movement.problem = Some(format!(
                "still running after {} s; it goes on in SQS (aws sqs list-message-move-tasks --source-arn {source})",
                options.timeout.as_secs()
            ));
            return Ok(movement);
        }
    }
}
